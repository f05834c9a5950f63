"""Fixtures of the service tests: the project's own small model (loaded once), the example scene
it knows, and helpers to run the app in-process or behind a real uvicorn server."""

from __future__ import annotations

import base64
import contextlib
import threading
import time

import pytest


@pytest.fixture(scope="session")
def mini():
    import openofa

    return openofa.load(None)


@pytest.fixture(scope="session")
def example_png() -> bytes:
    from openofa.serve.app import _example_png

    return _example_png()


@pytest.fixture(scope="session")
def example_b64(example_png) -> str:
    return base64.b64encode(example_png).decode()


@pytest.fixture(scope="module")
def client(mini):
    from fastapi.testclient import TestClient

    from openofa.serve import ServeSettings, create_app

    with TestClient(create_app(mini, ServeSettings(max_wait_ms=1))) as c:
        yield c


@contextlib.contextmanager
def running_server(app):
    """``app`` behind a real uvicorn server on a free local port, in a thread; yields the base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class Gated:
    """The model behind a gate: model calls wait until ``gate`` is set (to fill the queue or run
    past the time limit on purpose); everything else is the real model's."""

    def __init__(self, ofa) -> None:
        self._ofa = ofa
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __getattr__(self, name):
        return getattr(self._ofa, name)

    def stream(self, *args, **kwargs):
        self.entered.set()
        self.gate.wait(30)
        return self._ofa.stream(*args, **kwargs)
