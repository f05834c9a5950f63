"""The ASGI layer in front of every route: the body-size limit, the API key, and the request
metrics (count by endpoint and status, latency).

The body is read here, up to ``max_body_bytes`` (413 as soon as the Content-Length or the bytes
received say more), and handed to the app whole, so no route ever parses an unbounded body.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Callable

from openofa.serve.metrics import Metrics
from openofa.serve.settings import ServeSettings

#: paths anyone may read without the API key: liveness, readiness, the page, the task list and the docs
OPEN_PATHS = frozenset({"/", "/health", "/ready", "/example.png", "/docs", "/openapi.json", "/v1/tasks"})


async def send_error(send, status: int, message: str, headers: list | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Wraps the app: ``endpoint_of(path)`` names a path for the metrics (a fixed set of names)."""

    def __init__(self, app, settings: ServeSettings, metrics: Metrics, endpoint_of: Callable[[str], str]) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.endpoint_of = endpoint_of

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        scope.setdefault("state", {})["arrived"] = start
        endpoint = self.endpoint_of(scope["path"])
        status = {"code": 500}

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, sending)
        finally:
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.monotonic() - start)

    async def _guarded(self, scope, receive, send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.settings.api_key and scope["path"] not in OPEN_PATHS and not self._authorised(headers):
            await send_error(send, 401, "missing or wrong API key (send Authorization: Bearer <key> or X-API-Key)",
                             [(b"www-authenticate", b"Bearer")])
            return
        limit = self.settings.max_body_bytes
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                await send_error(send, 400, "bad Content-Length header")
                return
            if int(length) > limit:
                await send_error(send, 413, f"request body of {length} bytes is larger than this service "
                                            f"accepts ({limit} bytes)")
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await send_error(send, 413, f"request body is larger than this service accepts ({limit} bytes)")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _authorised(self, headers: dict[str, str]) -> bool:
        given = headers.get("x-api-key")
        auth = headers.get("authorization", "")
        if given is None and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        return given is not None and hmac.compare_digest(given.encode(), str(self.settings.api_key).encode())
