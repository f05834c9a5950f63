"""The model as a web service: ``ofa serve`` (FastAPI + uvicorn), see ``docs/serving.md``.

* :mod:`~openofa.serve.settings` the limits and switches, :mod:`~openofa.serve.app` the app factory,
  :mod:`~openofa.serve.guard` body limit / API key / request metrics, :mod:`~openofa.serve.fields`
  a task's request from its fields, :mod:`~openofa.serve.images` images of a request,
  :mod:`~openofa.serve.batcher` dynamic batching, :mod:`~openofa.serve.chat` the OpenAI-compatible
  chat endpoint, :mod:`~openofa.serve.metrics` Prometheus metrics, ``page.html`` the web page,
  :mod:`~openofa.serve.command` ``ofa serve``.

Needs the ``serve`` extra (``pip install openofa[serve]``); importing this package does not.
"""

from openofa.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]


def create_app(ofa, settings: ServeSettings | None = None):
    """The FastAPI app serving ``ofa`` (see :func:`openofa.serve.app.create_app`)."""
    from openofa.serve.app import create_app as make

    return make(ofa, settings)
