"""Dynamic batching: concurrent requests share model calls, and a batched answer is the answer
the request gets alone."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from openofa.serve import ServeSettings, create_app
from openofa.serve.batcher import Batcher, QueueFull
from serve_support import Gated, running_server


def test_eight_concurrent_clients_form_batches_larger_than_one(mini, example_png):
    questions = ["what shape is the blue object?", "what shape is the red object?", "what color is the circle?",
                 "what color is the square?"] * 2
    alone = [mini.vqa(example_png, q) for q in questions]
    app = create_app(mini, ServeSettings(max_batch=8, max_wait_ms=500))
    with running_server(app) as url:
        start = threading.Barrier(8)

        def client(question):
            with httpx.Client(base_url=url, timeout=60) as http:
                start.wait()
                return http.post("/v1/vqa", data={"question": question},
                                 files={"image": ("scene.png", example_png, "image/png")})

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(client, questions))
        metrics = httpx.get(url + "/metrics").text
    assert [r.status_code for r in answers] == [200] * 8
    assert [r.json()["answer"] for r in answers] == alone
    sizes = [int(r.headers["x-batch-size"]) for r in answers]
    assert max(sizes) > 1, sizes
    calls = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("openofa_batch_size_count")))
    assert calls < 8, metrics  # fewer model calls than requests


class Recorder:
    """A stand-in model that records each call's inputs and options."""

    def __init__(self):
        self.calls = []

    def stream(self, task, inputs, batch_size, skip_bad, **options):
        self.calls.append((task, [i["n"] for i in inputs], options))
        return [(i, {"n": item["n"]}) for i, item in enumerate(inputs)]


def test_a_batch_holds_one_task_with_one_set_of_options_at_most_max_batch():
    model = Recorder()
    batcher = Batcher(model, max_batch=3, max_wait_ms=200, queue_size=16)
    jobs = [("caption", {}), ("vqa", {}), ("caption", {}), ("caption", {"beam_size": 2}), ("caption", {}),
            ("caption", {})]
    futures = [batcher.submit(task, {"n": n}, options) for n, (task, options) in enumerate(jobs)]
    batcher.start()  # every request is queued before the first batch forms
    try:
        assert [f.result(10) for f in futures] == [({"n": n}, size) for n, size in enumerate([3, 1, 3, 1, 3, 1])]
    finally:
        batcher.stop()
    assert model.calls == [("caption", [0, 2, 4], {}), ("vqa", [1], {}), ("caption", [3], {"beam_size": 2}),
                           ("caption", [5], {})]


def test_the_queue_is_bounded_and_a_cancelled_request_frees_its_place(mini):
    gated = Gated(mini)
    batcher = Batcher(gated, max_batch=1, max_wait_ms=0, queue_size=2)
    batcher.start()
    try:
        running = batcher.submit("caption", {"image": b"x"})
        assert gated.entered.wait(10)
        waiting = [batcher.submit("caption", {"image": b"x"}) for _ in range(2)]
        with pytest.raises(QueueFull):
            batcher.submit("caption", {"image": b"x"})
        assert batcher.depth == 2 and waiting[0].cancel()
        assert batcher.depth == 1
        batcher.submit("caption", {"image": b"x"})
    finally:
        gated.gate.set()
        time.sleep(0.05)
        batcher.stop()
    assert running.exception(10) is not None  # b"x" is no image: the input's own one-line error
