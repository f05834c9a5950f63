"""The web page at ``/``, in headless Chromium (Debian's package, installed by scripts/test.sh):
with the project's own model it shows the answer of a task and draws its boxes on the image."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from openofa.serve import ServeSettings, create_app
from serve_support import running_server

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=20000"]


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "headless Chromium is needed: apt-get install chromium (scripts/test.sh installs it)"
    return path


@pytest.fixture(scope="module")
def page_url(mini):
    with running_server(create_app(mini, ServeSettings(max_wait_ms=1))) as url:
        yield url


def browse(chromium, tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


def test_the_page_is_served_without_the_network(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="task"' in r.text and "v1/tasks" in r.text
    assert "http://" not in r.text and "https://" not in r.text  # no outside scripts or fonts
    assert client.get("/example.png").content.startswith(b"\x89PNG")


def test_the_page_shows_the_grounding_answer(chromium, page_url, tmp_path, mini, example_png):
    done = browse(chromium, tmp_path, "--dump-dom", f"{page_url}/?task=ground&text=the+red+square&autorun=1")
    assert '<body data-state="done">' in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    box = mini.ground(example_png, "the red square")
    assert f'<output id="result">{" ".join(f"{v:.1f}" for v in box)}</output>' in done.stdout


def test_a_screenshot_shows_the_detected_boxes_drawn_on_the_image(chromium, page_url, tmp_path, mini, example_png):
    shot = tmp_path / "page.png"
    browse(chromium, tmp_path, "--window-size=1000,900", f"--screenshot={shot}", f"{page_url}/?task=detect&autorun=1")
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    objects = {o["label"]: o["box"] for o in mini.detect(example_png)}
    scale = 480 / 256  # the page shows the 256-pixel scene 480 pixels wide
    for color, label in (((255, 0, 255), "large red square"), ((0, 180, 255), "large blue circle")):
        ys, xs = np.nonzero((np.abs(pixels - color) < 40).all(axis=-1))  # the box's outline in its colour
        assert len(xs) > 300, f"no {label} box in the screenshot"
        x1, y1, x2, y2 = objects[label]
        assert abs((xs.max() - xs.min()) - (x2 - x1) * scale) < 12
        assert abs((ys.max() - ys.min()) - (y2 - y1) * scale) < 12
