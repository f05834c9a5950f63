"""Exporting a model to other runtimes: ONNX graphs run by onnxruntime (``docs/onnx.md``).

``export_onnx(ofa, folder)`` writes the graphs; ``load_onnx(folder)`` returns an
:class:`~openofa.OFA` whose tasks run on them. onnx and onnxruntime come with the ``onnx`` extra.
"""

from openofa.export.onnx import export_onnx


def load_onnx(folder, **kwargs):
    """See :func:`openofa.export.onnx_runtime.load_onnx`."""
    from openofa.export.onnx_runtime import load_onnx as load

    return load(folder, **kwargs)


__all__ = ["export_onnx", "load_onnx"]
