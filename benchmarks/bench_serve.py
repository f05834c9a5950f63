"""The service under load: ``ofa serve`` with the project's own small model in its own process,
driven by ``--clients`` concurrent clients for ``--requests`` captioning requests of 16 different
scenes, against one client calling the same service one request at a time, and against the Python
API called one image at a time in this process (no HTTP).

Reports errors (the run fails on any), throughput, p50/p99 latency, the batch sizes the service
formed, and the server's peak memory (VmHWM) after each of three equal load rounds: the peak must
settle (the third round within 5% of the second), not grow with the number of requests.

    python benchmarks/bench_serve.py                  # 50 clients, 400 requests
    python benchmarks/bench_serve.py --clients 8 --requests 100
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import statistics
import subprocess
import sys
import time

import httpx


def _scenes(n: int) -> list[bytes]:
    from openofa.mini.scenes import make_scene

    out = []
    for seed in range(n):
        buf = io.BytesIO()
        make_scene(seed, (256, 256)).image.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def _drive(url: str, images: list[bytes], requests: int, clients: int) -> tuple[list[float], int, float, list[int]]:
    """``requests`` captions from ``clients`` concurrent clients: (latencies, errors, seconds, batch sizes)."""
    latencies: list[float] = []
    sizes: list[int] = []
    errors = 0
    next_index = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors, next_index
        while next_index < requests:
            i = next_index
            next_index += 1
            start = time.perf_counter()
            try:
                r = await http.post("/v1/caption", files={"image": (f"{i}.png", images[i % len(images)], "image/png")})
                ok = r.status_code == 200
                if ok:
                    sizes.append(int(r.headers.get("x-batch-size", 1)))
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - start)
            errors += not ok

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return latencies, errors, time.perf_counter() - start, sizes


def _report(name: str, latencies: list[float], seconds: float, errors: int, sizes: list[int] | None = None) -> None:
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    batches = f"  mean batch {statistics.mean(sizes):4.1f}, max {max(sizes):2d}" if sizes else ""
    print(f"{name:34s} {len(latencies) / seconds:7.1f} req/s  p50 {1000 * q[49]:7.1f} ms  p99 {1000 * q[98]:7.1f} ms"
          f"  errors {errors}{batches}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=10)
    ap.add_argument("--model", help="a checkpoint (default: the project's own small model)")
    args = ap.parse_args(argv)
    images = _scenes(16)
    port = _free_port()
    cmd = [sys.executable, "-m", "openofa.cli", "serve", "--port", str(port), "--max-batch", str(args.max_batch),
           "--max-wait-ms", str(args.max_wait_ms), "--queue-size", str(max(64, 2 * args.clients))]
    if args.model:
        cmd += ["--model", args.model]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    failed = False
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.2)
        asyncio.run(_drive(url, images, 2 * len(images), 1))  # warm-up
        print(f"{args.requests} caption requests, 16 scenes of 256x256, max batch {args.max_batch}, "
              f"max wait {args.max_wait_ms:g} ms, {os.cpu_count()} cores")
        lat, err, sec, sizes = asyncio.run(_drive(url, images, args.requests, args.clients))
        _report(f"HTTP, {args.clients} concurrent clients", lat, sec, err, sizes)
        peaks = [_peak_mib(server.pid)]
        failed |= err > 0
        for _ in range(2):  # the same load twice again: the peak must settle, not grow per request
            lat2, err2, _, _ = asyncio.run(_drive(url, images, args.requests, args.clients))
            failed |= err2 > 0
            peaks.append(_peak_mib(server.pid))
        single = min(args.requests, 100)
        lat1, err1, sec1, _ = asyncio.run(_drive(url, images, single, 1))
        _report("HTTP, one request at a time", lat1, sec1, err1)
        failed |= err1 > 0
    finally:
        server.terminate()
        server.wait(30)
    import openofa

    m = openofa.load(args.model)
    m.caption(images[0])
    times = []
    start = time.perf_counter()
    for i in range(single):
        t = time.perf_counter()
        m.caption(images[i % len(images)])
        times.append(time.perf_counter() - t)
    _report("Python API, one image at a time", times, time.perf_counter() - start, 0)
    bounded = peaks[2] <= peaks[1] * 1.05
    print("server peak memory: " + ", ".join(f"{p:.0f} MiB after {(i + 1) * args.requests} requests"
                                             for i, p in enumerate(peaks)) + f" ({'bounded' if bounded else 'GREW'})")
    return 1 if failed or not bounded else 0


if __name__ == "__main__":
    sys.exit(main())
