"""``ofa serve``: load a model and serve it with uvicorn (see ``docs/serving.md``).

Its flags are declared here without importing FastAPI, so ``ofa --help`` works on an
installation without the ``serve`` extra; running the command then says what to install.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

from openofa.errors import OFAError
from openofa.serve.settings import ServeSettings

DEFAULTS = ServeSettings()


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="serve the model over HTTP (every task, OpenAI-compatible chat, a web page)",
                       description="Serve a model over HTTP: POST /v1/<task>, POST /v1/chat/completions, the web "
                                   "page at /, /docs, /health, /ready, /metrics. Needs pip install openofa[serve].")
    p.add_argument("--model", "-m", help="official .pt, Hugging Face folder, or our folder "
                   "(default: the project's own small model)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16", "int8", "int8-bf16", "auto"],
                   help="as for the other commands (int8, int8-bf16: the image trunk in static int8, CPU)")
    p.add_argument("--calibration", action="append", metavar="PATH",
                   help="with --dtype int8 or int8-bf16: an image or a folder of images (repeatable) like the "
                        "ones the service will get, for the int8 trunk's activation ranges")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--zero-shot", action="store_true")
    p.add_argument("--any-task", action="store_true")
    p.add_argument("--image-size", type=int)
    g = p.add_argument_group("batching and limits")
    g.add_argument("--max-batch", type=int, default=DEFAULTS.max_batch, help="requests per model call at most")
    g.add_argument("--max-wait-ms", type=float, default=DEFAULTS.max_wait_ms,
                   help="how long a batch's first request waits for others")
    g.add_argument("--queue-size", type=int, default=DEFAULTS.queue_size,
                   help="requests waiting at most (429 beyond)")
    g.add_argument("--max-body-bytes", type=int, default=DEFAULTS.max_body_bytes, help="413 beyond")
    g.add_argument("--max-pixels", type=int, default=DEFAULTS.max_pixels, help="pixels of one image at most (422 beyond)")
    g.add_argument("--request-timeout", type=float, default=DEFAULTS.request_timeout,
                   help="seconds a request may take (504 beyond)")
    g = p.add_argument_group("security")
    g.add_argument("--api-key", help="require this key (Authorization: Bearer KEY or X-API-Key); better given "
                                     "as the environment variable OFA_API_KEY, which the process list does not show")
    g.add_argument("--allow-urls", action="store_true", help="fetch http(s) image URLs given in requests")
    g.add_argument("--fetch-timeout", type=float, default=DEFAULTS.fetch_timeout,
                   help="seconds to fetch one image URL at most")
    return p


def settings_of(args: argparse.Namespace) -> ServeSettings:
    try:
        return ServeSettings.from_env(**{k: getattr(args, k) for k in ServeSettings.names() if hasattr(args, k)})
    except ValueError as e:
        raise OFAError(str(e)) from None


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from openofa.serve.app import create_app
    except ImportError as e:
        raise OFAError(f"ofa serve needs the serve extra ({e.name} is missing): pip install 'openofa[serve]'") from None
    from openofa.api import OFA

    settings = settings_of(args)
    if not _loopback(args.host) and not settings.api_key:
        print(f"warning: serving on {args.host} without an API key: anyone who reaches this address can use "
              "the model (set OFA_API_KEY)", file=sys.stderr)
    from openofa.vision.calibration import calibration_files

    ofa = OFA.load(args.model, ema=args.ema, device=args.device, dtype=args.dtype, image_size=args.image_size,
                   zero_shot=args.zero_shot, any_task=args.any_task,
                   calibration=calibration_files(args.calibration))
    print(f"model: {ofa.describe()}", file=sys.stderr)
    app = create_app(ofa, settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
