"""The allow-list unpickler: data loads, OmegaConf/fairseq objects become inert records, code is
refused before anything runs, broken files give one-line errors."""

from __future__ import annotations

import argparse
import builtins
import collections
import io
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from openofa.errors import OFAError
from openofa.checkpoints.safe_pickle import StandIn, _RestrictedPickleModule, load_pt, scan_globals, to_plain


def _data():
    return {
        "args": argparse.Namespace(arch="ofa_tiny", lr=[1e-4], bpe="gpt2"),
        "np_f64": np.float64(1.5),
        "np_i64": np.int64(7),
        "np_f32": np.float32(0.25),
        "dtype": np.dtype("float16"),
        "array": np.arange(4, dtype=np.int32),
        "od": collections.OrderedDict(b=torch.ones(3), a=torch.zeros(2, dtype=torch.long)),
        "set": {1, 2},
        "frozen": frozenset({"x"}),
        "complex": 1 + 2j,
        "half": torch.arange(4, dtype=torch.float16),
        "param": torch.nn.Parameter(torch.ones(2)),
        "none": None,
        "bytes": b"\x00\x01",
    }


def _check_data(obj):
    assert isinstance(obj["args"], argparse.Namespace) and obj["args"].arch == "ofa_tiny"
    assert obj["np_f64"] == 1.5 and obj["np_i64"] == 7 and obj["np_f32"] == np.float32(0.25)
    assert obj["dtype"] == np.dtype("float16")
    assert obj["array"].tolist() == [0, 1, 2, 3]
    assert list(obj["od"]) == ["b", "a"] and torch.equal(obj["od"]["b"], torch.ones(3))
    assert obj["set"] == {1, 2} and obj["frozen"] == frozenset({"x"}) and obj["complex"] == 1 + 2j
    assert obj["half"].dtype == torch.float16
    assert obj["bytes"] == b"\x00\x01"
    plain = to_plain(obj)
    assert plain["args"] == {"arch": "ofa_tiny", "lr": [1e-4], "bpe": "gpt2"}
    assert type(plain["np_f64"]) is float and type(plain["np_i64"]) is int
    assert plain["array"] == [0, 1, 2, 3] and plain["dtype"] == "float16"
    assert type(plain["od"]) is dict


def test_plain_data_loads(tmp_path):
    path = tmp_path / "data.pt"
    torch.save(_data(), path)
    _check_data(load_pt(path))


def test_legacy_torch_format_loads(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save(_data(), path, _use_new_zipfile_serialization=False)
    _check_data(load_pt(path))


def test_protocol_4_uses_the_restricted_fallback(tmp_path):
    path = tmp_path / "p4.pt"
    torch.save(_data(), path, pickle_protocol=4)
    _check_data(load_pt(path))


@pytest.mark.parametrize("protocol", [2, 4])
def test_omegaconf_and_fairseq_objects_become_records(tmp_path, fake_omegaconf, protocol):
    path = tmp_path / "omega.pt"
    with fake_omegaconf() as fk:
        cfg = fk.DictConfig({
            "common": {"log_format": fk.LogFormat.json, "seed": 7},
            "model": {"_name": "ofa_tiny", "layers": [1, 2]},
            "ns": argparse.Namespace(x=1),
        })
        torch.save({"cfg": cfg, "w": torch.ones(2)}, path, pickle_protocol=protocol)
    assert "omegaconf" not in sys.modules and "fairseq" not in sys.modules
    names, _ = scan_globals(path)
    assert "omegaconf.dictconfig.DictConfig" in names and "fairseq.dataclass.constants.LogFormat" in names

    obj = load_pt(path)
    assert "omegaconf" not in sys.modules and "fairseq" not in sys.modules
    cfg = obj["cfg"]
    assert isinstance(cfg, StandIn) and cfg._ofa_global == "omegaconf.dictconfig.DictConfig"
    assert to_plain(cfg) == {
        "common": {"log_format": "json", "seed": 7},
        "model": {"_name": "ofa_tiny", "layers": [1, 2]},
        "ns": {"x": 1},
    }
    assert cfg["model"]["_name"] == "ofa_tiny" and "common" in cfg and len(cfg) == 3
    assert cfg.get("missing", 5) == 5
    assert torch.equal(obj["w"], torch.ones(2))


class _Evil:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _evil_payloads(marker):
    cmd = f"touch {marker}"
    return {
        "os.system": _Evil(os.system, cmd),
        "builtins.eval": _Evil(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        "builtins.exec": _Evil(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.Popen": _Evil(subprocess.Popen, ["touch", str(marker)]),
        "subprocess.call": _Evil(subprocess.call, ["touch", str(marker)]),
        "getattr": _Evil(getattr, 1, "real"),
    }


@pytest.mark.parametrize("name", sorted(_evil_payloads("x")))
@pytest.mark.parametrize("protocol", [2, 4])
def test_code_is_refused_and_never_runs(tmp_path, name, protocol):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    payload = _evil_payloads(marker)[name]
    torch.save({"model": {"w": torch.ones(1)}, "x": payload}, path, pickle_protocol=protocol)
    with pytest.raises(OFAError) as err:
        load_pt(path)
    msg = str(err.value)
    assert str(path) in msg and "refusing" in msg and "\n" not in msg
    assert payload.func.__name__ in msg or "system" in msg
    assert not marker.exists()


def _torch_zip_with_pickle(tmp_path, body: bytes):
    """A real torch zip archive whose data.pkl is replaced by ``body``."""
    src = tmp_path / "ok.pt"
    torch.save({"a": 1}, src)
    out = tmp_path / "crafted.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zout:
        for n in zin.namelist():
            zout.writestr(n, body if n.endswith("data.pkl") else zin.read(n))
    return out


def test_hidden_stack_global_is_refused_by_the_fallback(tmp_path):
    # the module/name strings are separated from STACK_GLOBAL by other opcodes, so the static
    # scan cannot name the global; torch's unpickler cannot read protocol 4; the restricted one refuses
    marker = tmp_path / "PWNED"
    cmd = f"touch {marker}".encode()
    body = (b"\x80\x04" + b"\x8c\x05posix" + b"\x8c\x06system" + b")0" + b"\x93"
            + b"\x8c" + bytes([len(cmd)]) + cmd + b"\x85R.")
    path = _torch_zip_with_pickle(tmp_path, body)
    assert scan_globals(path) == ([], True)
    with pytest.raises(OFAError, match="posix.system"):
        load_pt(path)
    assert not marker.exists()


def test_restricted_unpickler_refuses_globals_and_class_builds():
    with pytest.raises(pickle.UnpicklingError):
        _RestrictedPickleModule.load(io.BytesIO(pickle.dumps(os.system, protocol=2)))
    # BUILD with slot state applied to an allowed *class* would set attributes on it
    body = b"\x80\x02cargparse\nNamespace\nN}X\x03\x00\x00\x00zapK\x01s\x86b."
    with pytest.raises(pickle.UnpicklingError):
        _RestrictedPickleModule.load(io.BytesIO(body))
    assert not hasattr(argparse.Namespace, "zap")


def test_broken_files_give_one_line_errors(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.randn(1000)}, good)
    data = good.read_bytes()
    cases = {
        "empty.pt": b"",
        "random.pt": os.urandom(4096),
        "truncated.pt": data[: len(data) // 2],
        "text.pt": b"hello world\n",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    zip_path = tmp_path / "notorch.pt"
    with zipfile.ZipFile(zip_path, "w") as z:
        z.writestr("readme.txt", "not a checkpoint")
    for path in [tmp_path / n for n in cases] + [zip_path, tmp_path / "missing.pt", tmp_path]:
        with pytest.raises(OFAError) as err:
            load_pt(path)
        msg = str(err.value)
        assert str(path) in msg and "\n" not in msg, msg


def test_corrupt_tensor_data_is_an_error(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"w": torch.randn(1000)}, path)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("data.pkl"))
    # damage the pickle body itself (inside the archive, central directory intact)
    off = info.header_offset
    name_len = int.from_bytes(raw[off + 26: off + 28], "little")
    extra_len = int.from_bytes(raw[off + 28: off + 30], "little")
    start = off + 30 + name_len + extra_len
    assert raw[start] == 0x80  # the PROTO opcode: we are at the pickle
    raw[start + 2: start + 12] = b"\xff" * 10
    path.write_bytes(bytes(raw))
    with pytest.raises(OFAError) as err:
        load_pt(path)
    assert str(path) in str(err.value)
