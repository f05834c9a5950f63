"""``ofa serve``: bad settings and a bad model end with one line and status 2 before anything is
served; a good command serves on this machine's address."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest


def ofa(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "openofa.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"}, **kwargs)


def test_bad_settings_and_a_missing_model_are_one_line_errors(tmp_path):
    r = ofa("serve", "--max-batch", "0")
    assert r.returncode == 2 and r.stderr.strip() == "error: max_batch must be a positive integer, got 0"
    r = ofa("serve", "--model", str(tmp_path / "nothing.pt"))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    r = ofa("serve", "--dtype", "int8", "--calibration", str(tmp_path / "missing"))
    assert r.returncode == 2 and r.stderr.strip() == f"error: --calibration: {tmp_path / 'missing'}: no such file or folder"


@pytest.mark.parametrize("dtype", ["fp32", "int8"])
def test_ofa_serve_answers_on_the_local_address(example_png, dtype):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "openofa.cli", "serve", "--port", str(port), "--dtype", dtype],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "ofa serve did not start"
            time.sleep(0.1)
        r = httpx.post(url + "/v1/caption", files={"image": ("scene.png", example_png, "image/png")})
        if dtype == "fp32":
            assert r.json()["caption"] == "a large red square and a large blue circle"
        else:  # the int8 trunk: judged by quality, so any caption of the scene's words
            assert set(r.json()["caption"].split()) <= set("a and large small red blue square circle".split())
        # the listening socket of that port is bound to 127.0.0.1 (0100007F in /proc/net/tcp), not 0.0.0.0
        rows = [line.split() for line in open("/proc/net/tcp").read().splitlines()[1:]]
        bound = [r[1].split(":")[0] for r in rows if r[3] == "0A" and int(r[1].split(":")[1], 16) == port]
        assert bound == ["0100007F"]
    finally:
        server.terminate()
        server.wait(30)
