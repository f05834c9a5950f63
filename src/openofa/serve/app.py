"""The FastAPI app: one endpoint per registered task (``POST /v1/<task>``, built from the task's
fields as the CLI builds its flags), the OpenAI-compatible ``POST /v1/chat/completions``, the web
page at ``/``, ``/health``, ``/ready``, ``/metrics`` and the OpenAPI docs at ``/docs``.

Every answer to bad input is a 4xx with ``{"error": "<one line>"}``; the service keeps serving.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from openofa.errors import OFAError
from openofa.serve import chat, fields
from openofa.serve.batcher import Batcher, QueueFull
from openofa.serve.guard import Guard
from openofa.serve.images import TooLarge, image_from_bytes, image_from_text
from openofa.serve.metrics import CONTENT_TYPE_LATEST, Metrics
from openofa.serve.settings import ServeSettings
from openofa.tasks import TASKS, Task

log = logging.getLogger("openofa.serve")


class Refused(Exception):
    """A request answered with ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


def create_app(ofa, settings: ServeSettings | None = None) -> FastAPI:
    """The service of a loaded model (:class:`openofa.OFA`) under ``settings``."""
    settings = settings or ServeSettings()
    metrics = Metrics(settings.max_batch)
    batcher = Batcher(ofa, settings.max_batch, settings.max_wait_ms, settings.queue_size, on_batch=metrics.on_batch)
    metrics.queue_depth.set_function(lambda: batcher.depth)
    trained = ofa.trained_tasks()
    runs = {name for name in TASKS if (trained is None or name in trained or ofa.any_task)
            and ofa.model.config.language in TASKS[name].languages}

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        batcher.stop()

    app = FastAPI(title="openofa", version=_version(),
                  description="OFA vision-language tasks: one endpoint per task, an OpenAI-compatible chat "
                              "endpoint, batching of concurrent requests. Serving " + ofa.describe(),
                  lifespan=lifespan)
    app.state.batcher, app.state.metrics, app.state.settings, app.state.ofa = batcher, metrics, settings, ofa
    batcher.start()  # also without the lifespan (an app mounted in another framework)

    @app.exception_handler(Refused)
    async def refused(request, exc: Refused):
        return _error(exc.status, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return _error(exc.status_code, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        return _error(422, f"{'.'.join(map(str, first.get('loc', ())))}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def crashed(request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); the service goes on")

    async def answer(task: str, inputs: dict[str, Any], options: dict[str, Any], arrived: float):
        """Queue one input; ``(result, batch_size)``, or Refused (429, 504, 422)."""
        try:
            future = batcher.submit(task, inputs, options)
        except QueueFull as e:
            raise Refused(429, f"the service is busy ({e}); retry later")
        left = settings.request_timeout - (time.monotonic() - arrived)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), max(left, 0.001))
        except asyncio.TimeoutError:
            raise Refused(504, f"no answer within the request time limit ({settings.request_timeout:g} s)")
        except OFAError as e:
            raise Refused(422, str(e))

    async def image_of(value, label: str = "image"):
        """A decoded image from an upload ``(bytes, filename)`` or a string (off the event loop)."""
        try:
            if isinstance(value, tuple):
                return await run_in_threadpool(image_from_bytes, value[0], settings, label)
            return await run_in_threadpool(image_from_text, value, settings, label)
        except TooLarge as e:
            raise Refused(413, str(e))
        except OFAError as e:
            raise Refused(422, str(e))

    def add_task(spec: type[Task]) -> None:
        async def endpoint(request: Request) -> Response:
            arrived = request.scope.get("state", {}).get("arrived", time.monotonic())
            if spec.name not in runs:
                raise Refused(422, f"{spec.name}: this model does not run {spec.name} "
                                   f"(it runs {', '.join(sorted(runs))})")
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            try:
                if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
                    try:
                        form = await request.form(max_files=4, max_fields=64, max_part_size=settings.max_body_bytes)
                    except Exception as e:  # the multipart parser's own errors
                        raise OFAError(f"cannot read the form: {getattr(e, 'detail', None) or e}") from None
                    values = await fields.from_form(spec, form)
                elif ctype in ("application/json", ""):
                    values = fields.from_json(spec, await request.body())
                else:
                    raise Refused(415, f"send application/json or multipart/form-data, not {ctype}")
                name = None
                for f in spec.inputs:
                    if f.type == "image" and f.name in values:
                        if isinstance(values[f.name], tuple):
                            name = values[f.name][1]
                        values[f.name] = await image_of(values[f.name], f.name)
                inputs, options = fields.split(spec, values)
            except OFAError as e:
                raise Refused(422, str(e))
            result, size = await answer(spec.name, inputs, options, arrived)
            body = {"input": name, **result} if name else dict(result)
            return JSONResponse(_jsonable(body), headers={"X-Batch-Size": str(size)})

        endpoint.__name__ = spec.name.replace("-", "_")
        app.add_api_route(f"/v1/{spec.name}", endpoint, methods=["POST"], summary=spec.help,
                          description=f"{spec.help}. Answers as `ofa {spec.name} --json`: "
                                      f"the prediction is `{spec.output}`.",
                          tags=["tasks"], openapi_extra={"requestBody": fields.openapi_body(spec)})

    for spec in TASKS.values():
        add_task(spec)

    @app.post("/v1/chat/completions", tags=["openai"],
              summary="OpenAI-compatible chat: an image_url part and text, answered by captioning or VQA")
    async def chat_completions(request: Request):
        arrived = request.scope.get("state", {}).get("arrived", time.monotonic())
        try:
            task, image, question, model = chat.parse(await request.body())
        except OFAError as e:
            raise Refused(422, str(e))
        if task not in runs:
            raise Refused(422, f"{task}: this model does not run {task}")
        inputs = {"image": await image_of(image, "image_url")}
        if question is not None and task == "vqa":
            inputs["question"] = question
        result, size = await answer(task, inputs, {}, arrived)
        content = str(result[TASKS[task].output])
        return JSONResponse(chat.answer(content, model, task), headers={"X-Batch-Size": str(size)})

    @app.get("/v1/tasks", tags=["service"], summary="the tasks, their fields, and whether this model runs them")
    async def tasks():
        return {name: {"help": spec.help, "runs": name in runs, "output": spec.output, "draws": spec.draws,
                       "fields": [{"name": f.name, "type": f.type, "help": f.help, "required": f.required,
                                   "default": f.default, "choices": list(f.choices),
                                   "option": f in spec.options} for f in fields.task_fields(spec)]}
                for name, spec in TASKS.items()}

    @app.get("/health", tags=["service"], summary="the process is up")
    async def health():
        return {"status": "ok"}

    @app.get("/ready", tags=["service"], summary="the model is loaded and the batcher runs")
    async def ready():
        if not batcher.running:
            return _error(503, "not ready: the batcher is not running")
        return {"status": "ready", "model": ofa.describe(), "tasks": sorted(runs), "queue": batcher.depth}

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics")
    async def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse(resources.files("openofa.serve").joinpath("page.html").read_text(encoding="utf-8"))

    @app.get("/example.png", include_in_schema=False)
    async def example():
        return Response(_example_png(), media_type="image/png")

    known = {route.path for route in app.routes}
    app.add_middleware(Guard, settings=settings, metrics=metrics,
                       endpoint_of=lambda path: path if path in known else "other")
    return app


def _jsonable(value):
    """A result as strict JSON: a score of -inf or NaN becomes null (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@functools.lru_cache(maxsize=1)
def _example_png() -> bytes:
    """The example scene of ``ofa demo`` (what the project's own model knows), as PNG bytes."""
    import tempfile
    from pathlib import Path

    from openofa.mini.demo import example_image

    with tempfile.TemporaryDirectory() as tmp:
        return example_image(Path(tmp) / "example.png").read_bytes()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openofa")
    except PackageNotFoundError:
        return "0"
