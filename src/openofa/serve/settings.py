"""The service's limits and switches, one dataclass shared by ``ofa serve``, the app factory and
the Ray deployment. Every default is the safe one: local address only, no remote URLs, no key
needed only because nothing but this machine can reach it."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields


@dataclass
class ServeSettings:
    #: most requests answered by one model call
    max_batch: int = 8
    #: how long the first request of a batch waits for others (milliseconds)
    max_wait_ms: float = 10.0
    #: requests waiting for the model at most; one more is answered 429
    queue_size: int = 64
    #: bytes of one request body at most (413 above)
    max_body_bytes: int = 20 * 1024 * 1024
    #: pixels (width x height) of one image at most (422 above), checked before decoding
    max_pixels: int = 40_000_000
    #: seconds a request may take from arrival to answer (504 after)
    request_timeout: float = 60.0
    #: when set, requests must send ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``
    api_key: str | None = None
    #: fetch ``http(s)://`` image URLs given in a request (off: they are refused)
    allow_urls: bool = False
    #: seconds to fetch one image URL at most
    fetch_timeout: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_batch", "queue_size", "max_body_bytes", "max_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_wait_ms", "request_timeout", "fetch_timeout"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {getattr(self, name)!r}")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_env(cls, **given) -> "ServeSettings":
        """Settings from keyword arguments, with the API key from ``OFA_API_KEY`` when not given
        (a key on the command line shows in the process list)."""
        if given.get("api_key") is None and os.environ.get("OFA_API_KEY"):
            given["api_key"] = os.environ["OFA_API_KEY"]
        return cls(**{k: v for k, v in given.items() if v is not None})
