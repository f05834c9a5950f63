"""Security and bad input: the service binds to this machine by default, takes an optional API
key, never opens a path or URL a request names unless allowed, and answers malformed, huge,
truncated and non-image uploads with a 4xx and a one-line reason, and keeps serving."""

from __future__ import annotations

import http.server
import io
import threading
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from openofa.serve import ServeSettings, create_app
from serve_support import Gated


def one_line_error(r, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    message = r.json()["error"]
    assert message and "\n" not in message and "Traceback" not in message
    return message


def test_binds_to_this_machine_by_default():
    from openofa.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.api_key is None and not args.allow_urls


def test_api_key(mini, example_png, monkeypatch):
    with TestClient(create_app(mini, ServeSettings(api_key="s3cret"))) as c:
        upload = {"image": ("a.png", example_png, "image/png")}
        assert "API key" in one_line_error(c.post("/v1/caption", files=upload), 401)
        one_line_error(c.post("/v1/caption", files=upload, headers={"Authorization": "Bearer wrong"}), 401)
        one_line_error(c.get("/metrics"), 401)
        assert c.post("/v1/caption", files=upload, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.post("/v1/caption", files=upload, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/health").status_code == 200 and c.get("/ready").status_code == 200
    monkeypatch.setenv("OFA_API_KEY", "from-env")
    assert ServeSettings.from_env().api_key == "from-env"


def test_a_request_never_opens_a_file_of_the_server(client, tmp_path, example_png):
    secret = tmp_path / "secret.png"
    secret.write_bytes(example_png)  # a real image: only opening the path could make it work
    for value in (str(secret), f"file://{secret}", "../../etc/passwd", "/etc/passwd"):
        message = one_line_error(client.post("/v1/caption", json={"image": value}), 422)
        assert "cannot name a file" in message or "only http(s)" in message, message
    r = client.post("/v1/chat/completions", json={"model": str(secret), "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": str(secret)}}]}]})
    one_line_error(r, 422)


@pytest.fixture
def image_site(example_png):
    """A local web server with /scene.png and /slow.png (answers after 6 s)."""
    import time

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/slow.png":
                time.sleep(6)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(example_png)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_urls_are_fetched_only_when_allowed_and_within_the_fetch_timeout(client, mini, image_site, example_png):
    url = image_site + "/scene.png"
    assert "--allow-urls" in one_line_error(client.post("/v1/caption", json={"image": url}), 422)
    with TestClient(create_app(mini, ServeSettings(allow_urls=True, fetch_timeout=2.0))) as c:
        r = c.post("/v1/caption", json={"image": url})
        assert r.status_code == 200 and r.json()["caption"] == mini.caption(example_png)
        assert "cannot fetch" in one_line_error(c.post("/v1/caption", json={"image": image_site + "/slow.png"}), 422)


def _png(size) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_uploads_get_a_reason_and_the_service_keeps_serving(mini, example_png, example_b64):
    settings = ServeSettings(max_body_bytes=200_000, max_pixels=300 * 300, max_wait_ms=1)
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 0, 0)).save(jpeg, format="JPEG")
    cases = [  # (what, request keyword arguments, status, words of the reason)
        ("invalid JSON", dict(content=b'{"image": ', headers={"content-type": "application/json"}), 422, "not valid JSON"),
        ("a JSON list", dict(json=[example_b64]), 422, "JSON object"),
        ("an unknown field", dict(json={"image": example_b64, "colour": "red"}), 422, "unknown field"),
        ("no image", dict(json={}), 422, "no image"),
        ("an image of the wrong type", dict(json={"image": 12}), 422, "image"),
        ("bad base64", dict(json={"image": "!!!not base64!!!" * 40}), 422, "base64"),
        ("an empty upload", dict(files={"image": ("a.png", b"", "image/png")}), 422, "empty"),
        ("a text file", dict(files={"image": ("a.png", b"just some text\n" * 50, "image/png")}), 422, "not an image"),
        ("a truncated PNG", dict(files={"image": ("a.png", example_png[: len(example_png) // 2], "image/png")}), 422,
         "truncated"),
        ("a truncated JPEG", dict(files={"image": ("a.jpg", jpeg.getvalue()[:300], "image/jpeg")}), 422, "truncated"),
        ("too many pixels", dict(files={"image": ("big.png", _png((400, 400)), "image/png")}), 422, "pixels"),
        ("a huge body", dict(files={"image": ("huge.png", b"\x89PNG" + b"0" * 300_000, "image/png")}), 413,
         "larger than"),
        ("a broken multipart body", dict(content=b"--xx\r\nnonsense", headers={"content-type": "multipart/form-data"}),
         422, "form"),
        ("an unsupported content type", dict(content=b"hello", headers={"content-type": "text/plain"}), 415,
         "multipart"),
    ]
    with TestClient(create_app(mini, settings), raise_server_exceptions=False) as c:
        for what, kwargs, status, words in cases:
            message = one_line_error(c.post("/v1/caption", **kwargs), status)
            assert words in message, (what, message)
        question = {"image": example_b64, "question": 7}
        assert "question must be a string" in one_line_error(c.post("/v1/vqa", json=question), 422)
        assert "empty" in one_line_error(c.post("/v1/vqa", json={"image": example_b64, "question": " "}), 422)
        assert "mode" in one_line_error(c.post("/v1/vqa", json={"image": example_b64, "question": "what?",
                                                                 "mode": "guess"}), 422)
        r = c.post("/v1/caption", files={"image": ("ok.png", example_png, "image/png")})
        assert r.status_code == 200 and r.json()["caption"] == mini.caption(example_png)
        assert c.get("/ready").status_code == 200


def test_a_full_queue_is_429_and_a_late_answer_504(mini, example_png):
    gated = Gated(mini)
    settings = ServeSettings(max_batch=1, max_wait_ms=0, queue_size=1, request_timeout=1.0)
    upload = {"image": ("a.png", example_png, "image/png")}
    with TestClient(create_app(gated, settings)) as c:
        results = {}
        first = threading.Thread(target=lambda: results.setdefault("first", c.post("/v1/caption", files=upload)))
        first.start()
        assert gated.entered.wait(10)  # the first request is in the model call; the queue is empty
        second = threading.Thread(target=lambda: results.setdefault("second", c.post("/v1/caption", files=upload)))
        second.start()
        deadline = time.monotonic() + 10
        while c.app.state.batcher.depth < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "busy" in one_line_error(c.post("/v1/caption", files=upload), 429)
        first.join()
        second.join()
        assert "time limit" in one_line_error(results["first"], 504)
        assert "time limit" in one_line_error(results["second"], 504)
        gated.gate.set()
        r = c.post("/v1/caption", files=upload)
        assert r.status_code == 200 and r.json()["caption"] == mini.caption(example_png)
