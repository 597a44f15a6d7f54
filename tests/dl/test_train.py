"""Tests of persodose.dl.networks and persodose.dl.train through ``persodose train`` (in-process).

A tiny residual CNN trains on a tiny generated dataset (the ``persodose-dataset/1`` format,
written here with h5py); a run stopped after epoch 2 and resumed gives bit for bit the
weights and loss history of an uninterrupted 4-epoch run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
h5py = pytest.importorskip("h5py")

from persodose.cli.main import main  # noqa: E402
from persodose.dl import networks  # noqa: E402
from persodose.dl.train import TrainSettings, batches, open_data, train, weights_entry  # noqa: E402
from persodose.errors import InputError  # noqa: E402

SPLITS = ("train",) * 4 + ("val",) * 2 + ("test",) * 2


def make_dataset(root: Path, kind: str = "density-led", splits=SPLITS, n: int = 2, shape=(6, 6, 6),
                 in_channels: int = 2, out_channels: int = 1, seed: int = 0, labels: bool = False,
                 prefix: str = "p") -> Path:
    """A tiny dataset: density and activity in, a smoothed activity / density 'dose' out; with
    ``labels`` each sample also carries a label map (x < 3: 'liver', else 'lesion_liver_1')."""
    from scipy import ndimage

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    patients = []
    for i, split in enumerate(splits):
        dens = 1.0 + 0.1 * rng.standard_normal((n, 1) + tuple(shape))
        act = rng.random((n, 1) + tuple(shape)) ** 3
        x = np.concatenate([dens, act, dens], axis=1)[:, :in_channels].astype(np.float32)
        y = np.stack([ndimage.uniform_filter(a[0], 3) / d[0] for a, d in zip(act, dens)])[:, None]
        y = np.repeat(y, out_channels, axis=1).astype(np.float32)
        name = f"shard_{i:05d}.h5"
        with h5py.File(root / name, "w") as f:
            f["inputs"] = x
            f["targets"] = y
            if labels:
                lab = np.ones((n,) + tuple(shape), np.uint16) * 7
                lab[..., shape[2] // 2:] = 40
                f["labels"] = lab
                f.attrs["label_names_json"] = json.dumps({"7": "liver", "40": "lesion_liver_1"})
        patients.append({"id": f"{prefix}{i:03d}", "seed": seed + i, "split": split, "shard": name, "n": n,
                         "sha256": hashlib.sha256((root / name).read_bytes()).hexdigest()})
    manifest = {"format": "persodose-dataset/1", "kind": kind, "settings": {}, "seed": seed, "patients": patients,
                "input_shape": [in_channels, *shape], "target_shape": [out_channels, *shape]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "ds")


def _train(data: Path, out: Path, *extra: str) -> int:
    return main(["train", "residual-cnn3d", "--data", str(data), "--out", str(out), "--device", "cpu",
                 "--seed", "3", "--threads", "1", "--batch-size", "2", *extra])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("persodose: error:") and "\n" not in err and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- the resume contract
def test_resumed_training_equals_uninterrupted_run(data, tmp_path, capsys):
    full, halves, killed = tmp_path / "full" / "w.pt", tmp_path / "halves" / "w.pt", tmp_path / "killed" / "w.pt"
    assert _train(data, full, "--epochs", "4") == 0
    # stopped after epoch 2, then resumed to 4
    assert _train(data, halves, "--epochs", "2") == 0
    assert _train(data, halves, "--epochs", "4", "--resume") == 0

    # killed by an exception after epoch 2 of a 4-epoch run, then resumed from its checkpoint
    class Killed(Exception):
        pass

    def kill(epoch, history):
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        train("residual-cnn3d", data, killed, TrainSettings(epochs=4, seed=3, threads=1, device="cpu"),
              after_epoch=kill)
    assert not killed.exists() and Path(f"{killed}.ckpt").is_file()
    assert _train(data, killed, "--epochs", "4", "--resume") == 0

    ref = torch.load(full, weights_only=True)
    ref_side = json.loads(Path(f"{full}.json").read_text())
    assert [h["epoch"] for h in ref_side["history"]] == [1, 2, 3, 4]
    assert ref_side["history"][-1]["val_loss"] < ref_side["history"][0]["val_loss"]  # it learns
    for other in (halves, killed):
        got = torch.load(other, weights_only=True)
        assert got.keys() == ref.keys()
        assert all(torch.equal(ref[k], got[k]) for k in ref)
        side = json.loads(Path(f"{other}.json").read_text())
        assert side["history"] == ref_side["history"]
        assert side["sha256"] == ref_side["sha256"]
    ck_full = torch.load(f"{full}.ckpt", weights_only=True)
    ck_killed = torch.load(f"{killed}.ckpt", weights_only=True)
    assert all(torch.equal(ck_full["model"][k], ck_killed["model"][k]) for k in ck_full["model"])
    assert torch.equal(ck_full["rng"]["loader"], ck_killed["rng"]["loader"])


def test_streamed_training_equals_training_in_memory(data, tmp_path):
    """--memory-budget-mb 0 streams the samples from the shards: the same bits as in memory,
    and a streamed run killed after epoch 1 resumes (in memory) to the same result."""
    mem, streamed, mixed = tmp_path / "mem" / "w.pt", tmp_path / "str" / "w.pt", tmp_path / "mix" / "w.pt"
    assert _train(data, mem, "--epochs", "3") == 0
    assert _train(data, streamed, "--epochs", "3", "--memory-budget-mb", "0") == 0
    assert _train(data, mixed, "--epochs", "1", "--memory-budget-mb", "0") == 0
    assert _train(data, mixed, "--epochs", "3", "--resume", "--memory-budget-mb", "4096") == 0
    ref = torch.load(mem, weights_only=True)
    for other in (streamed, mixed):
        got = torch.load(other, weights_only=True)
        assert all(torch.equal(ref[k], got[k]) for k in ref), other
        assert json.loads(Path(f"{other}.json").read_text())["history"] == \
            json.loads(Path(f"{mem}.json").read_text())["history"]


def test_shard_samples_read_what_load_split_reads(data):
    from persodose.dl.datasets import ShardSamples

    ds = open_data(data)
    x, y, _ = ds.load_split("train")
    src = ShardSamples(ds.opened, "train")
    assert len(src) == x.shape[0] and src.nbytes == x.nbytes + y.nbytes
    src.MAX_OPEN = 1  # reopen shards as they are visited
    for i in (3, 0, 5, 1):
        xi, yi = src[i]
        assert np.array_equal(xi, x[i]) and np.array_equal(yi, y[i])
    assert np.array_equal(np.concatenate([a for a, _ in src.iter_shards()]), x)
    with pytest.raises(IndexError):
        src[len(src)]
    src.close()


def test_training_reports_its_progress(data, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="persodose"):
        train("residual-cnn3d", data, tmp_path / "w.pt", TrainSettings(epochs=2, seed=3, threads=1, device="cpu"))
    lines = [r.getMessage() for r in caplog.records]
    steps = 2 * (open_data(data).opened.count("train") // 2)  # 2 epochs of batches of 2 (a last 1 dropped)
    assert any(m.startswith("training residual-cnn3d (in memory): ") and m.endswith(" steps, ETA 0 s")
               and m.split(": ")[1].startswith(f"{steps}/{steps}") for m in lines), lines
    assert any(m.startswith("epoch 2/2: train loss") for m in lines)


def test_outputs_sidecar_and_curves(data, tmp_path):
    out = tmp_path / "w.pt"
    assert _train(data, out, "--epochs", "2", "--patience", "5", "--plateau-factor", "0.5") == 0
    side = json.loads(Path(f"{out}.json").read_text())
    entry = weights_entry(f"{out}.json")  # the sidecar holds a registrable WeightsEntry
    assert entry.network == "residual-cnn3d" and entry.seed == 3 and entry.epochs == 2
    assert entry.sha256 == hashlib.sha256(out.read_bytes()).hexdigest() and entry.size_bytes == out.stat().st_size
    assert "persodose train residual-cnn3d" in entry.training_command and "--seed 3" in entry.training_command
    assert side["data"]["kind"] == "density-led"
    assert {p["split"] for p in side["data"]["patients"]} == {"train", "val", "test"}
    best = min(side["history"], key=lambda h: h["val_loss"])
    assert side["best_epoch"] == best["epoch"] and side["final_validation_loss"] == best["val_loss"]
    x, y, _ = open_data(data).load_split("train")
    assert side["input_scale"] == pytest.approx(np.sqrt(np.mean(x.astype(float) ** 2, axis=(0, 2, 3, 4))), rel=1e-6)
    assert side["target_scale"] == pytest.approx([np.sqrt(np.mean(y.astype(float) ** 2))], rel=1e-6)
    assert torch.load(out, weights_only=True)["target_scale"].flatten().tolist() == side["target_scale"]
    rows = Path(f"{out}.loss.csv").read_text().splitlines()
    assert rows[0] == "epoch,train_loss,val_loss,lr" and len(rows) == 3
    assert Path(f"{out}.loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_units_of_the_data_do_not_change_the_training(tmp_path):
    """Targets in mGy instead of Gy: the same normalised losses, outputs 1000 times larger."""
    gy = make_dataset(tmp_path / "gy", splits=("train", "train", "val"))
    mgy = make_dataset(tmp_path / "mgy", splits=("train", "train", "val"))
    for shard in mgy.glob("shard_*.h5"):
        with h5py.File(shard, "r+") as f:
            f["targets"][...] = f["targets"][...] * 1000.0
    manifest = json.loads((mgy / "manifest.json").read_text())
    for p in manifest["patients"]:
        p["sha256"] = hashlib.sha256((mgy / p["shard"]).read_bytes()).hexdigest()
    (mgy / "manifest.json").write_text(json.dumps(manifest))
    s = TrainSettings(epochs=2, seed=0, threads=1, device="cpu")
    a, b = train("residual-cnn3d", gy, tmp_path / "a.pt", s), train("residual-cnn3d", mgy, tmp_path / "b.pt", s)
    assert [h["val_loss"] for h in b.history] == pytest.approx([h["val_loss"] for h in a.history], rel=1e-4)
    _, _, model_a = networks.build_network("residual-cnn3d")
    _, _, model_b = networks.build_network("residual-cnn3d")
    model_a.load_state_dict(a.state_dict)
    model_b.load_state_dict(b.state_dict)
    x = torch.from_numpy(open_data(gy).load_split("val")[0])
    with torch.no_grad():
        assert torch.allclose(model_b(x), 1000.0 * model_a(x), rtol=1e-3, atol=1e-3)


def test_early_stopping_on_patience(data, tmp_path):
    res = train("residual-cnn3d", data, tmp_path / "w.pt",
                TrainSettings(epochs=30, lr=0.5, seed=0, threads=1, device="cpu", patience=1))
    # a learning rate of 0.5 does not improve for long: the patience of 1 ends the run early
    assert res.stopped_early and len(res.history) < 30
    assert len(res.history) == res.best_epoch + 1


# ----------------------------------------------------------------------------- user mistakes
def test_bad_inputs_exit_2_with_one_line(data, tmp_path, capsys):
    other_kind = make_dataset(tmp_path / "ct", kind="ct-dose", splits=("train", "val"))
    three_ch = make_dataset(tmp_path / "c3", in_channels=3, splits=("train", "val"))
    no_val = make_dataset(tmp_path / "noval", splits=("train", "train", "test"))
    cases = [
        ((other_kind, "--epochs", "1"), "of kind 'ct-dose'"),
        ((three_ch, "--epochs", "1"), "takes 2 input"),
        ((no_val, "--epochs", "1"), "no patient in the 'val' split"),
        ((tmp_path / "nothing", "--epochs", "1"), "no such folder"),
        ((data, "--epochs", "1", "--resume"), "no checkpoint"),
        ((data, "--epochs", "1", "--batch-size", "1"), "--batch-size"),
    ]
    for (ds, *extra), expected in cases:
        out = tmp_path / "bad" / "w.pt"
        assert main(["train", "residual-cnn3d", "--data", str(ds), "--out", str(out), "--device", "cpu",
                     "--threads", "1", *extra]) == 2
        assert expected in _one_error_line(capsys)
        assert not out.exists()
    assert main(["train", "no-such-net", "--data", str(data), "--out", str(tmp_path / "x.pt")]) == 2
    assert "known: " in _one_error_line(capsys)


def test_resume_from_another_networks_checkpoint_is_refused(data, tmp_path, capsys):
    saved = networks.NETWORKS.snapshot()
    try:
        networks.register_network("test-other-cnn3d", lambda s: networks.residual_cnn3d(s),
                                  dataset_kind="density-led", in_channels=2, out_channels=1,
                                  settings=networks.ResidualCNN3DSettings)
        out = tmp_path / "w.pt"
        assert main(["train", "test-other-cnn3d", "--data", str(data), "--out", str(out), "--device", "cpu",
                     "--epochs", "1", "--threads", "1"]) == 0
        capsys.readouterr()
        assert _train(data, out, "--epochs", "2", "--resume") == 2
        assert "network 'test-other-cnn3d'" in _one_error_line(capsys)
        assert _train(data, out, "--epochs", "2", "--resume", "--network-option", "width=4") == 2
        _one_error_line(capsys)
    finally:
        networks.NETWORKS.restore(saved)
    assert "test-other-cnn3d" not in networks.available_networks()


def test_fine_tuning_starts_from_the_given_weights(data, tmp_path, capsys):
    """--init-weights: the run starts with the given network (its val loss on the same data is the
    one it was saved with, its scales are kept, not recomputed from the new data); recorded in the
    sidecar and kept through a resume; weights of another shape are refused in one line."""
    base = tmp_path / "base.pt"
    assert _train(data, base, "--epochs", "2") == 0
    base_side = json.loads(Path(f"{base}.json").read_text())
    other = make_dataset(tmp_path / "other", seed=5)
    tuned = tmp_path / "tuned.pt"
    assert _train(data, tuned, "--epochs", "1", "--init-weights", str(base), "--lr", "1e-4") == 0
    side = json.loads(Path(f"{tuned}.json").read_text())
    init = side["initialised_from"]
    assert init["sha256"] == base_side["sha256"] and init["file"] == str(base)
    assert init["validation_loss_before"] == pytest.approx(base_side["final_validation_loss"], rel=1e-6)
    assert side["input_scale"] == base_side["input_scale"]
    # on other data the scales stay the base's, and the start is the base network on that data
    t2 = tmp_path / "t2.pt"
    assert _train(other, t2, "--epochs", "1", "--init-weights", str(base)) == 0
    assert _train(other, t2, "--epochs", "2", "--resume") == 0
    side2 = json.loads(Path(f"{t2}.json").read_text())
    assert side2["input_scale"] == base_side["input_scale"] and side2["initialised_from"]["sha256"] == init["sha256"]
    assert side2["training_command"].endswith(f"--init-weights {base}")  # the resumed run's command says it too
    fresh = tmp_path / "fresh.pt"
    assert _train(other, fresh, "--epochs", "1") == 0
    assert json.loads(Path(f"{fresh}.json").read_text())["input_scale"] != base_side["input_scale"]
    capsys.readouterr()
    assert _train(data, tmp_path / "bad.pt", "--init-weights", str(base), "--network-option", "width=4") == 2
    assert "not weights of 'residual-cnn3d'" in _one_error_line(capsys)
    assert _train(data, tmp_path / "bad2.pt", "--init-weights", str(tmp_path / "missing.pt")) == 2
    _one_error_line(capsys)


def test_merged_dataset_holds_both_and_trains_like_them(data, tmp_path, capsys):
    """dataset merge: every patient of both, splits, seeds and checksums kept, sources untouched;
    training on the merge equals training on a dataset written with those shards directly;
    mismatched or overlapping datasets and a used output folder are refused in one line."""
    more = make_dataset(tmp_path / "more", splits=("train",) * 3, seed=9, prefix="q")
    before = {f.name: f.read_bytes() for f in sorted(more.iterdir())}
    merged = tmp_path / "merged"
    assert main(["dataset", "merge", str(data), str(more), "--out", str(merged)]) == 0
    assert {f.name: f.read_bytes() for f in sorted(more.iterdir())} == before
    m = json.loads((merged / "manifest.json").read_text())
    src = [e for d in (data, more) for e in json.loads((d / "manifest.json").read_text())["patients"]]
    assert [e["id"] for e in m["patients"]] == [e["id"] for e in src]
    assert [(e["split"], e["seed"], e["sha256"]) for e in m["patients"]] == [(e["split"], e["seed"], e["sha256"])
                                                                          for e in src]
    assert len(m["merged_from"]) == 2 and m["complete"]
    d = open_data(merged)
    assert len(d.split_ids("train")) == 7 and len(d.split_ids("val")) == 2
    # the same shards written as one dataset by hand train to the same bits
    by_hand = tmp_path / "by_hand"
    by_hand.mkdir()
    for e in m["patients"]:
        (by_hand / e["shard"]).write_bytes((merged / e["shard"]).read_bytes())
    (by_hand / "manifest.json").write_text(json.dumps({**m, "merged_from": None}))
    assert _train(merged, tmp_path / "a.pt", "--epochs", "1") == 0
    assert _train(by_hand, tmp_path / "b.pt", "--epochs", "1") == 0
    assert json.loads((tmp_path / "a.pt.json").read_text())["sha256"] == \
        json.loads((tmp_path / "b.pt.json").read_text())["sha256"]
    capsys.readouterr()
    assert main(["dataset", "merge", str(data), str(data), "--out", str(tmp_path / "dup")]) == 2
    assert "more than one" in _one_error_line(capsys)
    other_shape = make_dataset(tmp_path / "shape", splits=("train",), shape=(4, 4, 4), prefix="r")
    assert main(["dataset", "merge", str(data), str(other_shape), "--out", str(tmp_path / "x")]) == 2
    assert "differ in input_shape" in _one_error_line(capsys)
    assert main(["dataset", "merge", str(data), str(more), "--out", str(merged)]) == 2
    _one_error_line(capsys)
    assert not (tmp_path / "dup").exists() or not any((tmp_path / "dup").iterdir())


def test_resume_with_other_settings_is_refused(data, tmp_path, capsys):
    out = tmp_path / "w.pt"
    assert _train(data, out, "--epochs", "1") == 0
    capsys.readouterr()
    assert _train(data, out, "--epochs", "2", "--resume", "--lr", "0.01") == 2
    assert "lr" in _one_error_line(capsys)
    Path(f"{out}.ckpt").write_bytes(b"not a checkpoint")
    assert _train(data, out, "--epochs", "2", "--resume") == 2
    assert "not a readable persodose checkpoint" in _one_error_line(capsys)


def test_corrupt_shard_is_refused(tmp_path):
    ds = make_dataset(tmp_path / "ds", splits=("train", "val"))
    shard = ds / "shard_00000.h5"
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="(?i)sha-?256"):
        open_data(ds)


# ----------------------------------------------------------------------------- units
def test_network_registry_and_shapes():
    assert "residual-cnn3d" in networks.available_networks()
    spec, settings, model = networks.build_network("residual-cnn3d", {"width": "4"})
    assert settings.width == 4 and spec.dataset_kind == "density-led"
    x = torch.zeros((2, 2, 5, 6, 7))
    assert model(x).shape == (2, 1, 5, 6, 7)
    with pytest.raises(InputError, match="known: .*residual-cnn3d"):
        networks.get_network("nope")
    with pytest.raises(InputError, match="does not fit"):
        networks.check_shapes(spec, (2, 2, 6, 6), (1, 2, 6, 6))


def test_batches_never_leave_a_batch_of_one():
    assert batches(5, 2) == [slice(0, 2), slice(2, 5)]
    assert batches(4, 2) == [slice(0, 2), slice(2, 4)]
    assert batches(1, 2) == [slice(0, 1)]


def test_weights_list_and_check(data, tmp_path, capsys):
    assert main(["weights", "list"]) == 0
    assert "dblurdosenet-lu177  network=dblurdosenet" in capsys.readouterr().out
    out = tmp_path / "w.pt"
    assert _train(data, out, "--epochs", "1") == 0
    capsys.readouterr()
    assert main(["weights", "check", str(out)]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
    raw = bytearray(out.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    out.write_bytes(bytes(raw))
    assert main(["weights", "check", str(out)]) == 2  # FILE.json's sha256 no longer matches
    assert "does not match" in _one_error_line(capsys)
    assert main(["weights", "check", str(tmp_path / "missing.pt")]) == 2
    assert "no such file" in _one_error_line(capsys)
