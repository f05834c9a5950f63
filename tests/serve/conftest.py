"""Fixtures of the service tests: the project's own small model (loaded once), the example scene
it knows, and the app in-process (helpers in serve_support.py)."""

from __future__ import annotations

import base64

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
