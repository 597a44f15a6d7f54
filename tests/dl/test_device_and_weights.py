"""Tests of persodose.dl: device choice, the weights registry and the lazy-import rule."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from persodose.dl import (MANIFEST_PATH, WeightsEntry, list_weights, load_weights, parse_device, read_manifest,
                          sha256_file, verify_weights)
from persodose.errors import InputError


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------- lazy imports
def test_importing_dl_and_segmentation_does_not_import_torch():
    code = (
        "import sys\n"
        "import numpy as np\n"
        "import persodose.dl, persodose.segmentation\n"
        "from persodose.grid import Grid, Kind\n"
        "persodose.dl.list_weights(); persodose.dl.parse_device('cuda:1')\n"
        "persodose.segmentation.available_segmenters()\n"
        "ct = np.full((4, 24, 24), -1000.0, np.float32); ct[:, 4:20, 4:20] = 40.0\n"
        "persodose.segmentation.segment(Grid(ct, kind=Kind.CT))\n"
        "print(sorted(m for m in ('torch', 'monai') if m in sys.modules), 'scipy.ndimage' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # neither torch nor MONAI was imported (and the segmenter did run: scipy.ndimage was)
    assert out.stdout.strip() == "[] True"


# ----------------------------------------------------------------------------- devices
@pytest.mark.parametrize("spec, expected", [("auto", "auto"), (" CPU ", "cpu"), ("cuda", "cuda:0"),
                                            ("cuda:2", "cuda:2")])
def test_parse_device(spec, expected):
    assert parse_device(spec) == expected


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:-1", "cuda:x", "mps0", ""])
def test_parse_device_refuses_other_forms(spec):
    with pytest.raises(InputError, match="auto, cpu, cuda, cuda:N") as exc:
        parse_device(spec)
    _one_line(exc)


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def test_select_device_without_cuda(torch, monkeypatch):
    from persodose.dl import select_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto") == torch.device("cpu")
    for spec in ("cuda", "cuda:0"):
        with pytest.raises(InputError, match="sees no CUDA device; use 'cpu' or 'auto'") as exc:
            select_device(spec)
        _one_line(exc)


def test_select_device_with_cuda(torch, monkeypatch):
    from persodose.dl import select_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert select_device("auto") == torch.device("cuda:0")
    assert select_device("cuda:1") == torch.device("cuda:1")
    assert select_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError, match=r"'cuda:2' does not exist: PyTorch sees 2 CUDA device\(s\)") as exc:
        select_device("cuda:2")
    _one_line(exc)


@pytest.mark.gpu
def test_select_device_on_a_real_gpu(torch):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from persodose.dl import select_device

    dev = select_device("auto")
    assert dev.type == "cuda"
    assert torch.ones(2, device=dev).sum().item() == 2.0


# ----------------------------------------------------------------------------- weights
def test_every_shipped_weights_file_matches_its_manifest_entry():
    assert MANIFEST_PATH.is_file()
    raw = json.loads(MANIFEST_PATH.read_text())
    assert [e["name"] for e in raw] == [e.name for e in list_weights()]
    for entry in list_weights():
        v = verify_weights(entry.name)  # size and SHA-256 of the file against the manifest
        assert v.sha256 == entry.sha256 and v.path.stat().st_size == entry.size_bytes


@pytest.fixture
def tiny_weights(torch, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save({"conv.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "conv.bias": torch.zeros(2)},
               path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _entry(name, file, sha, size, **kw):
    return {"name": name, "file": file, "sha256": sha, "size_bytes": size,
            "training_command": "persodose dl train --epochs 2 --seed 7", "seed": 7,
            "data_manifest": "virtual patients 0-3, 10 mm", "epochs": 2, "final_validation_loss": 0.125, **kw}


def _manifest(tmp_path, entries):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(entries))
    return path


def test_user_file_by_path_accepted_with_and_without_checksum(torch, tiny_weights):
    path, sha = tiny_weights
    assert sha256_file(path) == sha
    loaded = load_weights(path)
    assert loaded.sha256 == sha and loaded.entry is None and loaded.size_bytes == path.stat().st_size
    assert torch.equal(loaded.state_dict["conv.weight"], torch.arange(6.0).reshape(2, 3))
    assert load_weights(str(path), expected_sha256=sha.upper()).sha256 == sha
    assert verify_weights(path).provenance()["sha256"] == sha


def test_user_file_with_wrong_checksum_or_damaged_is_refused(tiny_weights):
    path, sha = tiny_weights
    with pytest.raises(InputError, match="does not match the expected.*refusing") as exc:
        load_weights(path, expected_sha256="0" * 64)
    _one_line(exc)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="refusing"):
        load_weights(path, expected_sha256=sha)
    with pytest.raises(InputError, match="64 hexadecimal"):
        load_weights(path, expected_sha256="abc")


def test_missing_file_or_unknown_name_is_refused(tmp_path):
    with pytest.raises(InputError, match="no such file, and not a registered name") as exc:
        load_weights(tmp_path / "absent.pt")
    _one_line(exc)
    with pytest.raises(InputError, match=r"registered: dblurdosenet-lu177, kernel-dnn-f18, kernel-dnn-lu177, segmenter-virtual-3mm\)"):
        verify_weights("dblurdosenet-v1")


def test_a_file_that_is_not_torch_weights_is_one_line(torch, tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("not weights\n" * 3)
    with pytest.raises(InputError, match="not a readable PyTorch weights file") as exc:
        load_weights(path)
    _one_line(exc)


def test_registered_weights_loaded_by_name_and_checked(torch, tiny_weights, tmp_path):
    path, sha = tiny_weights
    size = path.stat().st_size
    manifest = _manifest(tmp_path, [_entry("tiny", "tiny.pt", sha, size, network="unet3d")])
    (entry,) = list_weights(manifest)
    assert isinstance(entry, WeightsEntry) and entry.epochs == 2 and entry.seed == 7
    loaded = load_weights("tiny", manifest=manifest)
    assert loaded.entry == entry and loaded.path == path
    assert loaded.provenance()["weights"]["training_command"].startswith("persodose dl train")
    with pytest.raises(InputError, match="differs from the registry's"):
        load_weights("tiny", expected_sha256="1" * 64, manifest=manifest)
    # the same size, one byte changed: the checksum refuses it
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"'tiny' .*does not match.*refusing") as exc:
        load_weights("tiny", manifest=manifest)
    _one_line(exc)
    path.write_bytes(bytes(data) + b"\0")
    with pytest.raises(InputError, match="the registry says"):
        verify_weights("tiny", manifest=manifest)
    path.unlink()
    with pytest.raises(InputError, match="file .* is missing"):
        verify_weights("tiny", manifest=manifest)


@pytest.mark.parametrize("change, pattern", [
    ({"sha256": "xyz"}, "64 hexadecimal"),
    ({"file": "../../etc/passwd"}, "relative path inside"),
    ({"file": "/abs/tiny.pt"}, "relative path inside"),
    ({"size_bytes": 0}, "size_bytes must be a positive integer"),
    ({"epochs": 1.5}, "epochs must be a positive integer"),
    ({"final_validation_loss": float("nan")}, "finite"),
    ({"training_command": " "}, "how it was made"),
    ({"learning_rate": 0.1}, r"unknown field\(s\) learning_rate"),
])
def test_bad_manifest_entries_are_refused(tmp_path, change, pattern):
    manifest = _manifest(tmp_path, [_entry("tiny", "tiny.pt", "a" * 64, 10) | change])
    with pytest.raises(InputError, match=pattern) as exc:
        read_manifest(manifest)
    assert "entry 0" in _one_line(exc)


def test_manifest_structure_errors(tmp_path):
    e = _entry("tiny", "tiny.pt", "a" * 64, 10)
    with pytest.raises(InputError, match="listed twice"):
        read_manifest(_manifest(tmp_path, [e, e]))
    with pytest.raises(InputError, match=r"missing field\(s\) seed"):
        read_manifest(_manifest(tmp_path, [{k: v for k, v in e.items() if k != "seed"}]))
    with pytest.raises(InputError, match="JSON list"):
        read_manifest(_manifest(tmp_path, {"weights": []}))
    bad = tmp_path / "broken.json"
    bad.write_text("[{")
    with pytest.raises(InputError, match="cannot read"):
        read_manifest(bad)
