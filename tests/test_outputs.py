import json

import pytest

from persodose.errors import InputError
from persodose.outputs import OUTPUT_MARKER, atomic_dir, atomic_file, check_output_paths, write_provenance


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
    with atomic_dir(out) as work:
        (work / "old.txt").write_text("old")
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


def test_atomic_dir_never_replaces_a_folder_it_did_not_write(tmp_path):
    out = tmp_path / "patient"
    out.mkdir()
    (out / "slice1.dcm").write_bytes(b"precious")
    with pytest.raises(InputError, match="did not write"):
        with atomic_dir(out) as work:
            (work / "dose.nii.gz").write_text("x")
    assert (out / "slice1.dcm").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["patient"]
    with atomic_dir(tmp_path / "new") as work:
        pass
    assert (tmp_path / "new" / OUTPUT_MARKER).is_file()


@pytest.mark.parametrize("out_rel, word", [
    ("ct", "is the input"),            # the same folder
    (".", "contains the input"),       # a parent of the input
    ("ct/dose", "sits inside the input"),
    ("ct/a.dcm", "is the input"),      # a file input
])
def test_outputs_that_touch_an_input_are_refused(tmp_path, out_rel, word):
    (tmp_path / "ct").mkdir()
    (tmp_path / "ct" / "a.dcm").write_bytes(b"x")
    inputs = {"--ct": tmp_path / "ct"} if out_rel != "ct/a.dcm" else {"--ct": tmp_path / "ct" / "a.dcm"}
    with pytest.raises(InputError, match=word) as info:
        check_output_paths(inputs, output_dirs={"--out": tmp_path / out_rel})
    assert "--out" in str(info.value) and "--ct" in str(info.value)


def test_symlinked_output_onto_an_input_is_refused(tmp_path):
    (tmp_path / "ct").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "ct")
    with pytest.raises(InputError, match="is the input"):
        check_output_paths({"--ct": tmp_path / "ct"}, output_dirs={"--out": tmp_path / "link"})


def test_two_outputs_at_one_path_and_unwritable_places(tmp_path):
    f = tmp_path / "d.nii.gz"
    with pytest.raises(InputError, match="--out .* and --materials-out"):
        check_output_paths({}, output_files={"--out": f, "--materials-out": f})
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_output_paths({}, output_dirs={"--out": tmp_path / "afile" / "sub" / "out"})
    with pytest.raises(InputError, match="exists and is not a folder"):
        check_output_paths({}, output_dirs={"--out": tmp_path / "afile"})
    with pytest.raises(InputError, match="not writable"):
        check_output_paths({}, output_dirs={"--out": "/proc/persodose-out"})
    check_output_paths({}, output_dirs={"--out": tmp_path / "a" / "b"}, output_files={"--x": tmp_path / "c.json"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # the checks create nothing
