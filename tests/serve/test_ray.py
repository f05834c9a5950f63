"""On a local Ray instance: the service as a Ray Serve deployment answers as the app does, and
Ray Data batch inference writes what one process's ``ofa <task> --json`` prints, and resumes."""

from __future__ import annotations

import json
import socket

import httpx
import pytest


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_serve_deployment_answers_as_the_app(local_ray, mini, example_png):
    from ray import serve

    from openofa.serve.ray import app

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:  # arguments as `serve run openofa.serve.ray:app num_replicas=2 ...` passes them: strings
        serve.run(app({"num_replicas": "2", "num_cpus": "0.5", "max_batch": "4", "max_wait_ms": "20"}),
                  route_prefix="/", blocking=False)
        url = f"http://127.0.0.1:{port}"
        r = httpx.post(url + "/v1/caption", files={"image": ("scene.png", example_png, "image/png")}, timeout=120)
        assert r.status_code == 200 and r.json()["caption"] == mini.caption(example_png)
        r = httpx.post(url + "/v1/caption", json={"image": "/etc/passwd"}, timeout=60)
        assert r.status_code == 422 and "cannot name a file" in r.json()["error"]
        assert httpx.get(url + "/ready", timeout=60).json()["status"] == "ready"
    finally:
        serve.shutdown()
    with pytest.raises(ValueError, match="unknown argument"):
        app({"replicas": "2"})


def test_ray_data_writes_what_one_process_prints_and_resumes(local_ray, mini, tmp_path):
    from openofa.mini.scenes import make_scene
    from openofa.serve import ray_data

    names = []
    for seed in range(5):
        path = tmp_path / f"scene{seed}.png"
        make_scene(seed, (128, 128)).image.save(path)
        names.append(str(path))
    items = [{"_name": n, "image": n} for n in names]
    alone = [{"input": n, **r} for n, r in zip(names, mini.run("caption", [{"image": n} for n in names]))]

    def same(lines):
        assert [line["index"] for line in lines] == list(range(5))
        got = [{k: v for k, v in line.items() if k != "index"} for line in lines]
        assert [{**g, "score": None} for g in got] == [{**a, "score": None} for a in alone]
        assert all(abs(g["score"] - a["score"]) < 1e-4 for g, a in zip(got, alone))

    import pyarrow.parquet as pq

    folder = ray_data.run("caption", items, tmp_path / "parquet", actors=2, batch_size=2, num_cpus=0.5)
    rows = [r for part in folder.glob("part-*.parquet") for r in pq.read_table(part).to_pylist()]
    same([json.loads(r["line"]) for r in sorted(rows, key=lambda r: r["index"])])

    # a JSONL run stopped after two results (and half a line): started again, it runs only the rest
    out = tmp_path / "captions.jsonl"
    kept = [json.dumps({"index": 0, **alone[0]}), json.dumps({"index": 1, **alone[1], "caption": "written before"})]
    out.write_text("\n".join(kept) + '\n{"index": 4, "inp')
    ray_data.run("caption", items, out, actors=2, batch_size=2, num_cpus=0.5)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[1]["caption"] == "written before"
    lines[1]["caption"] = alone[1]["caption"]
    same(lines)  # the whole file, in input order
