"""Tests of persodose.dl.evaluate through ``persodose evaluate`` (in-process)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("h5py")

from persodose.cli.main import main  # noqa: E402
from persodose.dl.evaluate import score_sample, summarise  # noqa: E402
from persodose.metrics import voxel  # noqa: E402
from tests.dl.test_train import make_dataset  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = make_dataset(root / "ds")
    out = root / "w.pt"
    assert main(["train", "residual-cnn3d", "--data", str(data), "--out", str(out), "--device", "cpu",
                 "--epochs", "2", "--threads", "1"]) == 0
    return data, out


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("persodose: error:") and "\n" not in err and "Traceback" not in err, err
    return err


def test_evaluate_writes_json_and_markdown(trained, tmp_path, capsys):
    data, weights = trained
    out = tmp_path / "metrics"
    assert main(["evaluate", "residual-cnn3d", "--test", str(data), "--weights", str(weights), "--out", str(out),
                 "--device", "cpu"]) == 0
    shown = capsys.readouterr().out
    assert "| channel | MAE | ME | MRAE (%) | RMSE | NRMSE | SSIM | PSNR (dB) | gamma 3 %/3 mm (%) |" in shown
    result = json.loads((out / "metrics.json").read_text())
    assert result["n_samples"] == 4 and result["kind"] == "density-led"  # 2 test patients x 2 samples
    assert result["provenance"]["sha256"] == json.loads(Path(f"{weights}.json").read_text())["sha256"]
    assert {r["patient"] for r in result["per_sample"]} == {"p006", "p007"}
    assert (out / "metrics.md").read_text().count("\n| 0 |") == 1
    assert (out / "figures.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # this synthetic dataset records no voxel size, so gamma is not computed (null), not invented
    assert "gamma_pass_percent" in result["channels"][0] and result["channels"][0]["gamma_pass_percent"] is None

    # the per-sample scores are persodose.metrics.voxel's on the network's own prediction
    from persodose.dl.evaluate import predict
    from persodose.dl.networks import build_network
    from persodose.dl.train import open_data

    x, y, _ = open_data(data).load_split("test")
    _, _, model = build_network("residual-cnn3d")
    model.load_state_dict(torch.load(weights, weights_only=True))
    pred = predict(model, x, device="cpu")
    first = result["per_sample"][0]
    assert first["mae"] == pytest.approx(voxel.mae(y[0, 0], pred[0, 0]), rel=1e-6)
    assert first["ssim"] == pytest.approx(voxel.ssim(y[0, 0], pred[0, 0]), rel=1e-6)
    assert first["mrae_percent"] == pytest.approx(voxel.mrae(y[0, 0], pred[0, 0]), rel=1e-6)
    mean_rmse = np.mean([r["rmse"] for r in result["per_sample"]])
    assert result["channels"][0]["rmse"] == pytest.approx(mean_rmse)


def test_structure_errors_by_hand():
    from persodose.dl.evaluate import structure_errors, summarise_structures

    lab = np.zeros((2, 2, 4), int)
    lab[..., :2], lab[..., 2:] = 1, 40  # 8 voxels each
    lab[0, 0, 3] = 0  # background is never a structure
    target = np.where(lab == 1, 1.0, 2.0)
    pred = np.where(lab == 1, 1.1, 1.5)
    pred[0, 0, 3] = 99.0
    rows = structure_errors(target, pred, lab, {1: "liver", 40: "lesion_liver_1"})
    by = {r["name"]: r for r in rows}
    assert set(by) == {"liver", "lesion_liver_1"}
    assert by["liver"]["n_voxels"] == 8 and by["lesion_liver_1"]["n_voxels"] == 7
    assert by["liver"]["re_percent"] == pytest.approx(10.0) and by["liver"]["rae_percent"] == pytest.approx(10.0)
    assert by["lesion_liver_1"]["re_percent"] == pytest.approx(-25.0)
    assert by["lesion_liver_1"]["lesion"] and not by["liver"]["lesion"]
    assert [r["name"] for r in structure_errors(target, pred, lab, None, min_voxels=8)] == ["label_1"]
    # two samples of the liver: RE +10 % and -30 % -> mean RE -10 %, mean RAE 20 %, largest 30 %
    second = structure_errors(target, np.where(lab == 1, 0.7, 2.0), lab, {1: "liver", 40: "lesion_liver_1"})
    table, summary = summarise_structures([{**r, "channel": 0} for r in rows + second])
    liver = next(t for t in table if t["name"] == "liver")
    assert (liver["n_samples"], liver["mean_re_percent"], liver["mean_rae_percent"], liver["max_rae_percent"]) == \
        (2, pytest.approx(-10.0), pytest.approx(20.0), pytest.approx(30.0))
    assert summary["0"]["organs"]["n_structures"] == 1 and summary["0"]["lesions"]["mean_rae_percent"] == \
        pytest.approx(12.5)  # lesion: RAE 25 % and 0 %


def test_segmentation_scores_by_hand():
    from persodose.dl.evaluate import segmentation_scores, summarise_segmentation

    ref = np.array([1, 1, 0, 0, 2, 2, 2, 2], float).reshape(2, 2, 2)
    pred = np.array([1, 0, 1, 0, 2, 2, 2, 0.2], float).reshape(2, 2, 2)  # 0.2 rounds to background
    rows = {r["name"]: r for r in segmentation_scores(ref, pred, {1: "liver", 2: "spleen"})}
    assert set(rows) == {"liver", "spleen"}
    liver, spleen = rows["liver"], rows["spleen"]
    assert (liver["dice"], liver["jaccard"], liver["precision"], liver["recall"]) == \
        (pytest.approx(0.5), pytest.approx(1 / 3), pytest.approx(0.5), pytest.approx(0.5))
    assert (spleen["dice"], spleen["jaccard"], spleen["precision"], spleen["recall"]) == \
        (pytest.approx(6 / 7), pytest.approx(0.75), pytest.approx(1.0), pytest.approx(0.75))
    mean = summarise_segmentation([{**r, "channel": 0} for r in rows.values()] +
                                  [{"channel": 0, "name": "liver", "dice": 1.0, "jaccard": 1.0, "precision": 1.0,
                                    "recall": 1.0}])
    assert next(m for m in mean if m["name"] == "liver")["dice"] == pytest.approx(0.75)


def test_evaluate_adds_organ_and_lesion_metrics_when_the_data_has_labels(trained, tmp_path, capsys):
    from persodose.dl.evaluate import predict
    from persodose.dl.networks import build_network
    from persodose.dl.train import open_data

    _, weights = trained
    data = make_dataset(tmp_path / "lab", labels=True)  # same samples as the training data, with labels
    out = tmp_path / "m"
    assert main(["evaluate", "residual-cnn3d", "--test", str(data), "--weights", str(weights), "--out", str(out),
                 "--device", "cpu"]) == 0
    shown = capsys.readouterr().out
    assert "## Organs and lesions" in shown and "| 0 | lesion_liver_1 | 4 |" in shown
    result = json.loads((out / "metrics.json").read_text())
    assert {t["name"] for t in result["structures"]} == {"liver", "lesion_liver_1"}
    assert "segmentation" not in result  # a dose channel is not a label map
    x, y, _ = open_data(data).load_split("test")
    _, _, model = build_network("residual-cnn3d")
    model.load_state_dict(torch.load(weights, weights_only=True))
    pred = predict(model, x, device="cpu")
    res = [100 * (pred[i, 0, :, :, :3].mean() - y[i, 0, :, :, :3].mean()) / y[i, 0, :, :, :3].mean()
           for i in range(y.shape[0])]
    liver = next(t for t in result["structures"] if t["name"] == "liver")
    assert liver["mean_re_percent"] == pytest.approx(float(np.mean(res)), rel=1e-4)
    assert liver["mean_rae_percent"] == pytest.approx(float(np.mean(np.abs(res))), rel=1e-4)
    assert result["structure_summary"]["0"]["lesions"]["n_structures"] == 1


def test_score_of_a_perfect_and_a_biased_prediction():
    t = np.random.default_rng(1).random((5, 5, 5)) + 0.5
    perfect = score_sample(t, t)
    assert perfect.mae == 0 and perfect.me == 0 and perfect.ssim == pytest.approx(1.0) and perfect.psnr_db == math.inf
    biased = score_sample(t, t + 0.1)
    assert biased.me == pytest.approx(0.1) and biased.mae == pytest.approx(0.1) and biased.rmse == pytest.approx(0.1)
    # an all-zero target: no relative error and no data range (NaN, left out of the means)
    zero = score_sample(np.zeros((5, 5, 5)), np.full((5, 5, 5), 0.1))
    assert math.isnan(zero.mrae_percent) and math.isnan(zero.psnr_db) and math.isnan(zero.ssim)
    assert zero.mae == pytest.approx(0.1)
    mean = summarise([perfect, biased])
    assert mean.me == pytest.approx(0.05)


def test_evaluate_bad_inputs_exit_2(trained, tmp_path, capsys):
    data, weights = trained
    no_test = make_dataset(tmp_path / "notest", splits=("train", "val"))
    other = make_dataset(tmp_path / "other", kind="ct-dose", splits=("test",))
    corrupt = tmp_path / "corrupt.pt"
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(raw))
    Path(f"{corrupt}.json").write_text(Path(f"{weights}.json").read_text())
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    cases = [
        ((data, weights, "--sha256", "0" * 64), "does not match"),
        ((data, corrupt), "does not match"),
        ((data, junk), "not a readable PyTorch weights file"),
        ((data, tmp_path / "missing.pt"), "no such file"),
        ((no_test, weights), "no patient in the 'test' split"),
        ((other, weights), "of kind 'ct-dose'"),
    ]
    for (ds, w, *extra), expected in cases:
        assert main(["evaluate", "residual-cnn3d", "--test", str(ds), "--weights", str(w), "--device", "cpu",
                     *extra]) == 2
        assert expected in _one_error_line(capsys)
    side = json.loads(Path(f"{weights}.json").read_text())
    side["network"] = "another-net"
    relabelled = tmp_path / "other-net.pt"
    relabelled.write_bytes(weights.read_bytes())
    Path(f"{relabelled}.json").write_text(json.dumps(side))
    assert main(["evaluate", "residual-cnn3d", "--test", str(data), "--weights", str(relabelled)]) == 2
    assert "are for network 'another-net'" in _one_error_line(capsys)
    wide = tmp_path / "wide.pt"
    torch.save({"head.weight": torch.zeros(3)}, wide)
    assert main(["evaluate", "residual-cnn3d", "--test", str(data), "--weights", str(wide)]) == 2
    assert "do not fit network" in _one_error_line(capsys)


def test_gamma_pass_rate_of_a_prediction():
    """3 %/3 mm global with a 10 % cut-off: a perfect prediction passes everywhere, a uniform
    +2 % offset too (inside the dose criterion), +10 % on a flat field nowhere (no voxel within
    3 mm can compensate on a flat field), and without a voxel size gamma is not computed."""
    t = np.ones((7, 7, 7))
    assert score_sample(t, t, (2.0, 2.0, 2.0)).gamma_pass_percent == pytest.approx(100.0)
    assert score_sample(t, 1.02 * t, (2.0, 2.0, 2.0)).gamma_pass_percent == pytest.approx(100.0)
    assert score_sample(t, 1.10 * t, (2.0, 2.0, 2.0)).gamma_pass_percent == pytest.approx(0.0)
    assert math.isnan(score_sample(t, t).gamma_pass_percent)
    assert math.isnan(score_sample(np.zeros((7, 7, 7)), t, (2.0, 2.0, 2.0)).gamma_pass_percent)
