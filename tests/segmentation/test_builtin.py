"""The ``builtin`` segmenter: class mapping, training on labelled pairs, resume, inference, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

from persodose.grid import Grid, Kind  # noqa: E402
from persodose.io.image import write_image  # noqa: E402
from persodose.segmentation.builtin import (UNetConfig, absorb_lesions, isotropic_reference,  # noqa: E402
                                            organ_classes)
from persodose.segmentation.training import SegmenterTrainSettings, find_pairs, train_segmenter  # noqa: E402


def test_organ_classes_groups_lesions_and_others():
    lab = np.zeros((5, 5, 9), np.int64)
    lab[:, :, 0:3] = 7     # liver
    lab[2, 2, 1] = 40      # a liver lesion inside it
    lab[:, :, 4] = 15      # spine -> bone group
    lab[:, :, 5] = 19      # red marrow -> bone group
    lab[:, :, 6:] = 3      # muscle -> nothing
    names = {7: "liver", 40: "lesion_liver_1", 15: "spine", 19: "red_marrow", 3: "muscle"}
    cls = organ_classes(lab, names, ("liver", "bone"))
    assert cls.dtype == np.uint8
    assert (cls[:, :, 0:3] == 1).all()          # the lesion joined the liver
    assert (cls[:, :, 4:6] == 2).all()
    assert (cls[:, :, 6:] == 0).all()
    assert absorb_lesions(lab, {7: "liver"}) is lab  # no lesion: unchanged


def test_isotropic_reference_covers_the_same_extent():
    g = Grid(np.zeros((10, 20, 30), np.float32), (2.5, 1.5, 1.0), (-10.0, 5.0, 100.0), np.eye(3), Kind.CT)
    ref = isotropic_reference(g, 3.0)
    assert ref.spacing_zyx_mm == (3.0, 3.0, 3.0)
    assert ref.shape == (8, 10, 10)
    lo_old = g.index_to_physical(np.array([-0.5, -0.5, -0.5]))
    lo_new = ref.index_to_physical(np.array([-0.5, -0.5, -0.5]))
    np.testing.assert_allclose(lo_old, lo_new)


def test_unet_config_refuses_bad_architecture():
    from persodose.errors import InputError

    with pytest.raises(InputError, match="multiple of 4"):
        UNetConfig(classes=("liver",), channels=(4, 8, 16), patch_voxels=18)
    with pytest.raises(InputError, match="no class twice"):
        UNetConfig(classes=("liver", "liver"))


def _phantom_pair(folder, name, rng, shift):
    """A water cylinder with a denser 'liver' ball and a bony 'spine' rod, 6 mm voxels."""
    z, y, x = np.mgrid[0:20, 0:24, 0:24]
    body = (y - 12) ** 2 + (x - 12) ** 2 < 10 ** 2
    hu = np.where(body, 0.0, -1000.0) + rng.normal(0, 10, body.shape)
    liver = (z - 10) ** 2 + (y - 10 - shift) ** 2 + (x - 8) ** 2 < 5 ** 2
    spine = ((y - 17) ** 2 + (x - 12) ** 2 < 2 ** 2) & body
    hu[liver] = 60 + rng.normal(0, 10, int(liver.sum()))
    hu[spine] = 900.0
    lab = np.zeros(body.shape, np.uint8)
    lab[body] = 1
    lab[liver] = 7
    lab[spine] = 15
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    write_image(Grid(hu.astype(np.float32), (6.0, 6.0, 6.0), kind=Kind.CT), folder / "images" / f"{name}.nii.gz")
    write_image(Grid(lab, (6.0, 6.0, 6.0), kind=Kind.LABELS), folder / "labels" / f"{name}.nii.gz")
    (folder / "labels" / f"{name}.nii.gz.json").write_text(json.dumps({"1": "body", "7": "liver", "15": "spine"}))
    return hu, lab


TINY = dict(steps=60, val_every=30, batch_size=2, lr=5e-3, seed=3, threads=1, device="cpu", patch_voxels=16,
            channels=(8, 16), res_units=1, voxel_mm=6.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("segtrain")
    rng = np.random.default_rng(0)
    for i, shift in enumerate((-1, 0, 1)):
        _phantom_pair(root, f"case_{i}", rng, shift)
    out = root / "model.pt"
    side = train_segmenter(root / "images", root / "labels", out, SegmenterTrainSettings(**TINY))
    return root, out, side


def test_training_learns_a_learnable_task_and_records_how(trained):
    from persodose.dl.datasets import sha256_file

    root, out, side = trained
    assert side["unet"]["classes"] == ["liver", "bone"]
    assert side["sha256"] == sha256_file(out) and side["size_bytes"] == out.stat().st_size
    assert [d["split"] for d in side["data"]] == ["train", "train", "val"]
    assert all(len(d["image_sha256"]) == 64 for d in side["data"])
    assert side["epochs"] == 2 and len(side["history"]) == 2
    # a sphere 60 HU above water and a 900 HU rod: 60 steps of a tiny net must find both
    assert 1 - side["final_validation_loss"] > 0.75, side["history"]
    assert (root / "model.pt.loss.csv").read_text().startswith("epoch,step,train_loss,val_mean_dice")


class _Stop(Exception):
    pass


def test_resume_gives_the_uninterrupted_result(trained, tmp_path):
    import torch

    root, out, side = trained

    def stop(row):
        raise _Stop()

    cut = tmp_path / "cut.pt"
    with pytest.raises(_Stop):  # killed after the first validation (step 30 of 60)
        train_segmenter(root / "images", root / "labels", cut, SegmenterTrainSettings(**TINY), progress=stop)
    assert not cut.exists() and torch.load(f"{cut}.ckpt", weights_only=True)["step"] == 30
    again = train_segmenter(root / "images", root / "labels", cut, SegmenterTrainSettings(**TINY), resume=True)
    assert again["history"][0]["val_mean_dice"] == side["history"][0]["val_mean_dice"]
    assert [h["val_mean_dice"] for h in again["history"]] == [h["val_mean_dice"] for h in side["history"]]
    a, b = torch.load(cut, weights_only=True), torch.load(out, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed, data, threads: same weights
    with pytest.raises(Exception, match="not a checkpoint of these settings"):
        train_segmenter(root / "images", root / "labels", cut, SegmenterTrainSettings(**{**TINY, "seed": 4}),
                        resume=True)


def test_fine_tuning_starts_from_the_given_weights_and_keeps_their_unet(trained, tmp_path):
    from persodose.dl.datasets import sha256_file
    from persodose.errors import InputError

    root, out, side = trained
    few = {**TINY, "steps": 2, "val_every": 2, "lr": 1e-6}
    fresh = train_segmenter(root / "images", root / "labels", tmp_path / "fresh.pt", SegmenterTrainSettings(**few))
    # the architecture left at the defaults: taken from the weights (8-16 channels, 16^3 patch, 6 mm)
    arch = {k: v for k, v in few.items() if k not in ("channels", "res_units", "patch_voxels", "voxel_mm")}
    tuned = train_segmenter(root / "images", root / "labels", tmp_path / "tuned.pt",
                            SegmenterTrainSettings(**arch, init_weights=str(out)))
    assert tuned["unet"] == side["unet"] and tuned["train_settings"]["channels"] == [8, 16]
    assert tuned["init_weights"]["sha256"] == sha256_file(out)
    assert tuned["init_weights"]["training_command"] == side["training_command"]
    # 2 steps at 1e-6 leave the trained weights' Dice; from a random start they reach nothing like it
    trained_dice = 1 - side["final_validation_loss"]
    assert abs((1 - tuned["final_validation_loss"]) - trained_dice) < 0.02
    assert 1 - fresh["final_validation_loss"] < trained_dice - 0.2, (fresh["history"], side["history"])
    with pytest.raises(InputError, match="their channels is"):
        train_segmenter(root / "images", root / "labels", tmp_path / "x.pt",
                        SegmenterTrainSettings(**{**few, "channels": (4, 8)}, init_weights=str(out)))
    with pytest.raises(InputError, match="their classes are liver, bone"):
        train_segmenter(root / "images", root / "labels", tmp_path / "x.pt",
                        SegmenterTrainSettings(**few, classes=("liver",), init_weights=str(out)))
    with pytest.raises(InputError, match="no such file"):
        train_segmenter(root / "images", root / "labels", tmp_path / "x.pt",
                        SegmenterTrainSettings(**few, init_weights=str(tmp_path / "none.pt")))


def test_segment_through_the_registry_on_the_ct_grid(trained):
    from persodose.segmentation import segment
    from persodose.io.image import read_image
    from persodose.metrics.segmentation import dice

    root, out, _ = trained
    ct = read_image(root / "images" / "case_2.nii.gz", kind=Kind.CT)
    # the CT on a finer grid than the model's: labels come back on the CT's own grid
    fine = ct.resample_to(Grid(np.zeros((30, 36, 36), np.float32), (4.0, 4.0, 4.0), ct.origin_xyz_mm
                                - np.array([1.0, 1.0, 1.0]), kind=Kind.CT), "linear")
    result = segment(fine, "builtin", settings={"weights": str(out)})
    labels, names = result.labels, result.names
    assert labels.same_geometry(fine)
    assert names == {1: "liver", 2: "bone"}
    truth = read_image(root / "labels" / "case_2.nii.gz", kind=Kind.LABELS).resample_to(labels, "nearest")
    assert dice(labels.array == 1, truth.array == 7) > 0.7


def test_bad_pairs_are_one_line_errors(tmp_path):
    from persodose.errors import InputError

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(InputError, match="no image"):
        find_pairs(tmp_path / "images", tmp_path / "labels")
    (tmp_path / "images" / "a.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="no label map for a"):
        find_pairs(tmp_path / "images", tmp_path / "labels")
    with pytest.raises(InputError, match="not a folder"):
        find_pairs(tmp_path / "nope", tmp_path / "labels")


def test_cli_train_segmenter(trained, tmp_path):
    from persodose.cli.main import main

    root, _, _ = trained
    before = {p: p.read_bytes() for p in (root / "images").iterdir()}
    out = tmp_path / "cli.pt"
    rc = main(["train", "segmenter", "--images", str(root / "images"), "--labels", str(root / "labels"),
               "--out", str(out), "--steps", "2", "--val-every", "2", "--voxel-mm", "6", "--threads", "1"])
    assert rc == 0 and out.is_file() and json.loads(open(f"{out}.json").read())["epochs"] == 1
    assert {p: p.read_bytes() for p in (root / "images").iterdir()} == before
    tuned = tmp_path / "tuned.pt"
    rc = main(["train", "segmenter", "--images", str(root / "images"), "--labels", str(root / "labels"),
               "--out", str(tuned), "--steps", "2", "--val-every", "2", "--threads", "1", "--init-weights", str(out)])
    doc = json.loads(open(f"{tuned}.json").read())
    assert rc == 0 and doc["init_weights"]["weights"] == str(out) and f"--init-weights {out}" in doc["training_command"]
    before_w = out.read_bytes()
    assert main(["train", "segmenter", "--images", str(root / "images"), "--labels", str(root / "labels"),
                 "--out", str(out), "--steps", "2", "--init-weights", str(out)]) == 2  # --out would overwrite it
    assert out.read_bytes() == before_w
    assert main(["train", "segmenter", "--labels", str(root / "labels"), "--out", str(tmp_path / "x.pt")]) == 2
    assert main(["train", "segmenter", "--images", str(root / "images"), "--labels", str(root / "labels"),
                 "--out", str(tmp_path / "y.pt"), "--resume"]) == 2


def test_keep_largest_components_drops_islands_of_single_organs_only():
    from persodose.segmentation.builtin import keep_largest_components

    cls = np.zeros((10, 10, 30), np.uint8)
    cls[2:6, 2:6, 2:8] = 1      # liver, main part
    cls[2:4, 2:4, 20:22] = 1    # a liver island far away
    cls[7:9, 7:9, 2:4] = 2      # bone, two parts: both kept
    cls[7:9, 7:9, 25:27] = 2
    out = keep_largest_components(cls, ("liver", "bone"))
    assert (out[2:6, 2:6, 2:8] == 1).all() and (out[2:4, 2:4, 20:22] == 0).all()
    assert (out == 2).sum() == (cls == 2).sum()
    assert (cls[2:4, 2:4, 20:22] == 1).all()  # the input is not modified
