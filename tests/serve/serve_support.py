"""Helpers of the service tests: a real uvicorn server in a thread, and a model behind a gate."""

from __future__ import annotations

import contextlib
import threading
import time


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
