import json

import pytest

from persodose.outputs import atomic_dir, atomic_file, write_provenance


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as work:
            (work / "half.txt").write_text("x")
            raise RuntimeError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_existing_only_on_success(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(ValueError):
        with atomic_dir(out) as work:
            (work / "new.txt").write_text("new")
            raise ValueError
    assert (out / "old.txt").exists()
    with atomic_dir(out) as work:
        (work / "new.txt").write_text("new")
    assert (out / "new.txt").exists() and not (out / "old.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_file(tmp_path):
    target = tmp_path / "a.json"
    with pytest.raises(KeyError):
        with atomic_file(target) as tmp:
            tmp.write_text("{}")
            raise KeyError
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_file(target) as tmp:
        tmp.write_text("{}")
    assert target.read_text() == "{}"


def test_provenance_has_versions_and_settings(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class S:
        seed: int = 3

    write_provenance(tmp_path / "p.json", "unit-test", settings=S(), inputs={"ct": tmp_path})
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["settings"] == {"seed": 3}
    assert doc["versions"]["numpy"]
    assert doc["inputs"]["ct"] == str(tmp_path)
