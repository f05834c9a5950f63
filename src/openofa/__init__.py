"""openofa: OFA vision-language models in plain PyTorch.

    import openofa
    m = openofa.load("caption_base_best.pt")
    m.caption("photo.jpg")
"""

__version__ = "0.1.0"

__all__ = ["load", "OFA", "OFAConfig", "get_config", "OFAError", "__version__"]


def __getattr__(name):  # lazy: `import openofa` stays cheap until a model is needed
    if name in ("load", "OFA"):
        from openofa import api

        return getattr(api, name)
    if name in ("OFAConfig", "get_config"):
        from openofa import config

        return getattr(config, name)
    if name == "OFAError":
        from openofa.errors import OFAError

        return OFAError
    raise AttributeError(f"module 'openofa' has no attribute {name!r}")
