"""The same service as a Ray Serve deployment: every replica loads the model once and runs the
app of :func:`openofa.serve.app.create_app` (its own dynamic batching, limits and metrics)::

    serve run openofa.serve.ray:app model=caption_base_best.pt num_replicas=2 max_batch=16

``app`` is a Ray Serve application builder: its ``key=value`` arguments are ``model``, the
replica settings ``num_replicas`` and ``num_cpus`` (per replica), the model-loading settings
``device`` and ``dtype``, and every :class:`~openofa.serve.settings.ServeSettings` field
(``max_batch``, ``max_wait_ms``, ``queue_size``, ``request_timeout``, ``api_key``, ...).
Needs the ``ray`` extra (``pip install openofa[ray]``).
"""

from __future__ import annotations

from typing import Any

from ray import serve

from openofa.serve.settings import ServeSettings

#: the builder's arguments that are not ServeSettings fields
REPLICA_ARGS = ("model", "num_replicas", "num_cpus", "device", "dtype")


@serve.ingress()
class OFAService:
    """One replica: the model, loaded once, behind the FastAPI app (built after ``__init__``)."""

    def __init__(self, model: str | None = None, settings: dict[str, Any] | None = None, device: str = "cpu",
                 dtype: str = "fp32") -> None:
        from openofa.api import OFA

        self.ofa = OFA.load(model, device=device, dtype=dtype)
        self.settings = ServeSettings.from_env(**(settings or {}))

    def __serve_build_asgi_app__(self):
        from openofa.serve.app import create_app

        return create_app(self.ofa, self.settings)


def _typed(name: str, value: Any) -> Any:
    """A command line's ``key=value`` string as the setting's type."""
    if not isinstance(value, str):
        return value
    default = getattr(ServeSettings(), name, None) if name in ServeSettings.names() else None
    if isinstance(default, bool) or name == "allow_urls":
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int) or name in ("num_replicas",):
        return int(value)
    if isinstance(default, float) or name == "num_cpus":
        return float(value)
    return value


def app(args: dict[str, Any] | None = None):
    """The Ray Serve application of ``args`` (see the module's docstring)."""
    args = {k: _typed(k, v) for k, v in dict(args or {}).items()}
    unknown = sorted(set(args) - set(REPLICA_ARGS) - set(ServeSettings.names()))
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(unknown)}; expected "
                         f"{', '.join(REPLICA_ARGS + tuple(ServeSettings.names()))}")
    settings = {k: v for k, v in args.items() if k in ServeSettings.names()}
    ServeSettings(**settings)  # a bad value fails here, before any replica starts
    deployment = serve.deployment(OFAService, name="openofa").options(
        num_replicas=int(args.get("num_replicas", 1)),
        ray_actor_options={"num_cpus": float(args.get("num_cpus", 1))})
    return deployment.bind(args.get("model"), settings, args.get("device", "cpu"), args.get("dtype", "fp32"))
