"""Shared fixtures for the checkpoint tests: a small "micro" config (fast to write and read in
every layout) and the recipe weights of it and of ofa_tiny."""

from __future__ import annotations

from pathlib import Path

import pytest

from openofa.config import get_config
from openofa.checkpoints.recipe import recipe_state_dict

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden"


def micro_config(**overrides):
    """Tiny with one layer per stack and small tables: same key structure, ~1/20 of the bytes; the
    released files' flags (disable_entangle), which every layout, the Hugging Face port's too, can hold."""
    base = dict(
        encoder_layers=1, decoder_layers=2, vocab_size=700, num_bins=100, code_dict_size=64,
        image_bucket_size=8, token_bucket_size=32, max_source_positions=64, max_target_positions=64,
        disable_entangle=True,
    )
    base.update(overrides)
    return get_config("tiny", **base)


@pytest.fixture(scope="session")
def micro():
    config = micro_config()
    return config, recipe_state_dict(config)


@pytest.fixture(scope="session")
def tiny():
    config = get_config("tiny")
    return config, recipe_state_dict(config)


@pytest.fixture(scope="session")
def golden_dir():
    return GOLDEN


# ---- stand-ins for omegaconf / fairseq classes, importable only while a test pickles them -----

_FAKE_MODULES = (
    "omegaconf", "omegaconf.base", "omegaconf.nodes", "omegaconf.dictconfig", "omegaconf.listconfig",
    "fairseq", "fairseq.dataclass", "fairseq.dataclass.constants",
)


class _Fakes:
    """Classes that pickle the way OmegaConf 2.0 containers and fairseq enums do."""

    def __init__(self):
        import dataclasses
        import enum
        import typing
        from collections import defaultdict

        @dataclasses.dataclass
        class Metadata:
            ref_type: typing.Any
            object_type: typing.Any
            optional: bool
            key: typing.Any
            flags: dict = dataclasses.field(default_factory=dict)
            resolver_cache: dict = dataclasses.field(default_factory=lambda: defaultdict(dict))

        @dataclasses.dataclass
        class ContainerMetadata(Metadata):
            key_type: typing.Any = None
            element_type: typing.Any = None

        class AnyNode:
            def __init__(self, value, key=None, parent=None):
                self.__dict__.update(_val=value, _parent=parent,
                                     _metadata=Metadata(typing.Any, None, True, key))

            def __getstate__(self):
                return dict(self.__dict__)

            def __setstate__(self, d):
                self.__dict__.update(d)

        class DictConfig:
            def __init__(self, content, parent=None):
                meta = ContainerMetadata(typing.Any, dict, True, None, key_type=typing.Any, element_type=typing.Any)
                self.__dict__.update(_metadata=meta, _parent=parent, _content={})
                for k, v in content.items():
                    if isinstance(v, dict):
                        v = DictConfig(v, parent=self)
                    elif isinstance(v, list):
                        v = ListConfig(v, parent=self)
                    else:
                        v = AnyNode(v, key=k, parent=self)
                    self._content[k] = v

            def __getstate__(self):
                return dict(self.__dict__)

            def __setstate__(self, d):
                self.__dict__.update(d)

        class ListConfig(DictConfig):
            def __init__(self, content, parent=None):
                meta = ContainerMetadata(typing.List, list, True, None, element_type=typing.Any)
                self.__dict__.update(_metadata=meta, _parent=parent, _content=[AnyNode(v, parent=self) for v in content])

        LogFormat = enum.Enum("LogFormat", {"json": "json", "simple": "simple"}, module="fairseq.dataclass.constants")

        self.homes = {
            "omegaconf.base": {"Metadata": Metadata, "ContainerMetadata": ContainerMetadata},
            "omegaconf.nodes": {"AnyNode": AnyNode},
            "omegaconf.dictconfig": {"DictConfig": DictConfig},
            "omegaconf.listconfig": {"ListConfig": ListConfig},
            "fairseq.dataclass.constants": {"LogFormat": LogFormat},
        }
        for module, classes in self.homes.items():
            for name, cls in classes.items():
                if name != "LogFormat":
                    cls.__module__, cls.__qualname__ = module, name
        self.DictConfig, self.ListConfig, self.LogFormat = DictConfig, ListConfig, LogFormat


class _FakeModules:
    def __enter__(self):
        import sys
        import types

        for name in _FAKE_MODULES:
            assert name not in sys.modules, f"{name} is really imported; the fake would shadow it"
        fakes = _Fakes()
        for name in _FAKE_MODULES:
            module = types.ModuleType(name)
            for attr, obj in fakes.homes.get(name, {}).items():
                setattr(module, attr, obj)
            sys.modules[name] = module
        return fakes

    def __exit__(self, *exc):
        import sys

        for name in _FAKE_MODULES:
            sys.modules.pop(name, None)


@pytest.fixture
def fake_omegaconf():
    """``with fake_omegaconf() as fk:`` makes ``omegaconf.*`` / ``fairseq.*`` importable (as fakes)
    for pickling; they are gone again after the block, so loading cannot import them."""
    return _FakeModules
