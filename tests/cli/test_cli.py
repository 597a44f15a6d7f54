import json

import numpy as np
import pytest

from persodose.grid import Grid, Kind
from persodose.io.image import write_image


def assert_clean_error(proc, *words):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("persodose: error:")
    for w in words:
        assert w in lines[0], lines[0]


def test_help_lists_commands(cli_subprocess):
    proc = cli_subprocess("--help")
    assert proc.returncode == 0
    for name in ("info", "series", "density", "phantom", "demo"):
        assert name in proc.stdout


def test_info_json(cli):
    proc = cli("info", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["versions"]["pydicom"] and data["cpu_count"] >= 1
    assert isinstance(data["gpus"], list)


def test_missing_input_is_exit_2_and_writes_nothing(cli_subprocess, tmp_path):
    out = tmp_path / "dens.nii.gz"
    proc = cli_subprocess("density", "--ct", tmp_path / "nope", "--out", out)
    assert_clean_error(proc, "does not exist", "nope")
    assert not out.exists()


def test_not_dicom_is_exit_2(cli, tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"hello, not a DICOM file" * 10)
    proc = cli("density", "--ct", junk, "--out", tmp_path / "d.nii.gz")
    assert_clean_error(proc, "junk.dcm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.dcm"]


def test_nan_ct_is_exit_2(cli, tmp_path):
    arr = np.zeros((4, 4, 4), np.float32)
    arr[1, 1, 1] = np.nan
    path = write_image(Grid(arr, kind=Kind.CT), tmp_path / "ct.nii.gz")
    proc = cli("density", "--ct", path, "--out", tmp_path / "d.nii.gz")
    assert_clean_error(proc, "NaN")
    assert not (tmp_path / "d.nii.gz").exists()


def test_density_from_nifti(cli, tmp_path):
    arr = np.full((4, 5, 6), -1000.0, np.float32)
    arr[1:3, 1:4, 1:5] = 40.0
    arr[2, 2, 2] = 1200.0
    src = write_image(Grid(arr, (2, 2, 2), kind=Kind.CT), tmp_path / "ct.nii.gz")
    before = src.read_bytes()
    proc = cli("density", "--ct", src, "--out", tmp_path / "d.nii.gz", "--materials-out", tmp_path / "m.nii.gz")
    assert proc.returncode == 0, proc.stderr
    from persodose.io.image import read_image

    d = read_image(tmp_path / "d.nii.gz")
    assert d.kind is Kind.DENSITY
    assert d.array[0, 0, 0] < 0.01 and 1.0 < d.array[1, 1, 1] < 1.07 and 1.6 < d.array[2, 2, 2] < 2.0
    table = json.loads((tmp_path / "m.nii.gz.json").read_text())
    assert len(table) >= 10
    assert src.read_bytes() == before  # the input is never modified


def test_unknown_tracer_and_voxel(cli, tmp_path):
    assert_clean_error(cli("phantom", "--out", tmp_path / "p", "--tracer", "xyz"), "tracer")
    assert_clean_error(cli("phantom", "--out", tmp_path / "p", "--voxel-mm", "0.1"), "voxel")
    assert not (tmp_path / "p").exists()


def test_nuclide_command(cli):
    proc = cli("nuclide", "177Lu", "--json", "--lines")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["name"] == "Lu-177"
    assert doc["half_life_s"] == pytest.approx(6.647 * 86400, rel=1e-4)
    energies = [round(p["energy_mev"] * 1000) for p in doc["photon_lines"]]
    assert 208 in energies and 113 in energies
    assert_clean_error(cli("nuclide", "Xx-999"), "Xx-999")


def test_phantom_series_density_on_dicom(cli, tmp_path):
    """The CLI path a physicist takes: write a patient, list its series, convert its CT."""
    patient = tmp_path / "patient"
    proc = cli("phantom", "--out", patient, "--voxel-mm", "10", "--seed", "2")
    assert proc.returncode == 0, proc.stderr
    proc = cli("series", patient)
    assert proc.returncode == 0, proc.stderr
    assert "CT" in proc.stdout and "NM" in proc.stdout and "MISSING" not in proc.stdout
    proc = cli("density", "--ct", patient / "ct", "--out", tmp_path / "density.nii.gz",
               "--materials-out", tmp_path / "materials.nii.gz")
    assert proc.returncode == 0, proc.stderr
    from persodose.io.image import read_image

    dens = read_image(tmp_path / "density.nii.gz")
    lab = read_image(patient / "nifti" / "labels.nii.gz")
    assert dens.same_geometry(lab)
    names = json.loads((patient / "manifest.json").read_text())["label_names"]
    inv = {v: int(k) for k, v in names.items()}
    lung = np.median(dens.array[lab.array == inv["lung_left"]])
    liver = np.median(dens.array[lab.array == inv["liver"]])
    assert 0.15 < lung < 0.5 and 1.0 < liver < 1.1
    prov = json.loads((tmp_path / "density.nii.gz.provenance.json").read_text())
    assert prov["command"] == "density" and prov["inputs"]["series_uid"]
    # the whole patient directory holds one CT series among the SPECT ones: that one is used
    proc = cli("density", "--ct", patient, "--out", tmp_path / "whole.nii.gz")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(read_image(tmp_path / "whole.nii.gz").array, dens.array)


def test_mc_command_end_to_end(cli, tmp_path):
    """density -> mc on a small phantom: dose, uncertainty and provenance; bad input exits 2."""
    from persodose.grid import Grid, Kind

    n, mm = 12, 4.0
    ct = np.full((n, n, n), 40.0, np.float32)
    ct[:, :, :3] = -800.0  # lung-like slab
    ct_path = write_image(Grid(ct, (mm,) * 3, kind=Kind.CT), tmp_path / "ct.nii.gz")
    proc = cli("density", "--ct", ct_path, "--out", tmp_path / "d.nii.gz", "--materials-out", tmp_path / "m.nii.gz")
    assert proc.returncode == 0, proc.stderr
    tia = np.zeros((n, n, n), np.float32)
    tia[5:7, 5:7, 5:7] = 1e9  # Bq s
    tia_path = write_image(Grid(tia, (mm,) * 3, kind=Kind.TIA), tmp_path / "tia.nii.gz")
    out = tmp_path / "mc"
    proc = cli("mc", "--density", tmp_path / "d.nii.gz", "--materials", tmp_path / "m.nii.gz", "--tia", tia_path,
               "--nuclide", "Lu-177", "--decays", "20000", "--batches", "4", "--out", out)
    assert proc.returncode == 0, proc.stderr
    from persodose.io.image import read_image

    dose = read_image(out / "dose.nii.gz")
    assert dose.kind is Kind.DOSE and dose.array[6, 6, 6] > 0
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["nuclide"] == "Lu-177" and prov["decays_simulated"] == 20000
    assert prov["backend"]["name"] == "numba-cpu" and prov["settings"]["chunks_per_batch"] == 32
    bal = prov["energy_balance_mev_per_decay"]
    assert bal["deposited_mev"] + bal["escaped_mev"] == pytest.approx(bal["emitted_mev"], rel=1e-6)
    # mean dose in the source cube ~ electron energy x decays / mass (electrons stay local at 4 mm)
    mass_kg = 8 * (0.4**3) * float(read_image(tmp_path / "d.nii.gz").array[6, 6, 6]) / 1000
    e_j = 0.1479 * 1.602176634e-13 * 8e9
    assert float(dose.array[5:7, 5:7, 5:7].mean()) == pytest.approx(e_j / mass_kg, rel=0.1)
    # bad input: unknown nuclide, zero decays, a dose file as TIA
    base = ["mc", "--density", tmp_path / "d.nii.gz", "--materials", tmp_path / "m.nii.gz", "--out", tmp_path / "x"]
    assert_clean_error(cli(*base, "--tia", tia_path, "--nuclide", "Qq-1", "--decays", "10"), "Qq-1")
    assert_clean_error(cli(*base, "--tia", tia_path, "--nuclide", "Lu-177", "--decays", "0"))
    assert_clean_error(cli(*base, "--tia", out / "dose.nii.gz", "--nuclide", "Lu-177", "--decays", "10"), "Bq s")
    assert_clean_error(cli(*base, "--tia", tia_path, "--nuclide", "Lu-177", "--decays", "10", "--backend", "opencl"),
                       "opencl")
    assert not (tmp_path / "x").exists()


def test_every_monte_carlo_command_refuses_cuda_without_a_gpu_before_working(cli, tmp_path):
    """--backend cuda on a machine without a GPU: one line, exit 2, nothing written (mc, kernel, ct, internal)."""
    from persodose.mc.gpu import cuda_available

    if cuda_available():
        pytest.skip("this machine has a GPU")
    x = tmp_path / "x"
    missing = tmp_path / "not_read.nii.gz"  # the backend is checked before any input is read
    for args in (["mc", "--density", missing, "--materials", missing, "--tia", missing, "--nuclide", "Lu-177",
                  "--decays", "10", "--out", x, "--backend", "cuda"],
                 ["kernel", "--nuclide", "Lu-177", "--voxel-mm", "4", "--size", "3", "--out", x / "k.txt",
                  "--backend", "cuda"],
                 ["ct", "--ct", missing, "--out", x, "--backend", "cuda"],
                 ["internal", "--ct", missing, "--emission", missing, "--nuclide", "Lu-177", "--out", x,
                  "--mc-backend", "cuda"]):
        assert_clean_error(cli(*args), "GPU")
    assert not x.exists()


def test_compare_command(cli, tmp_path):
    from persodose.grid import Grid, Kind

    rng = np.random.default_rng(0)
    ref = np.zeros((12, 16, 16), np.float32)
    ref[3:9, 4:12, 4:12] = 2.0
    ref += 0.1
    paths = {}
    for name, arr in {"ref": ref, "same": ref.copy(), "scaled": ref * 1.1,
                      "r1": ref * rng.normal(1, 0.05, ref.shape), "r2": ref * rng.normal(1, 0.05, ref.shape)}.items():
        paths[name] = write_image(Grid(arr.astype(np.float32), (4, 4, 4), kind=Kind.DOSE), tmp_path / f"{name}.nii.gz")
    lab = np.zeros(ref.shape, np.uint16)
    lab[3:9, 4:12, 4:12] = 1
    lpath = write_image(Grid(lab, (4, 4, 4), kind=Kind.LABELS), tmp_path / "lab.nii.gz")
    (tmp_path / "lab.nii.gz.json").write_text(json.dumps({"1": "liver"}))
    proc = cli("compare", "--reference", paths["ref"], "--test", paths["same"], "--gamma")
    assert proc.returncode == 0, proc.stderr
    assert "MAE 0 " in proc.stdout and "pass rate: 100.0%" in proc.stdout
    out = tmp_path / "cmp"
    proc = cli("compare", "--reference", paths["ref"], "--test", paths["scaled"], "--labels", lpath,
               "--realisation", paths["r1"], "--realisation", paths["r2"], "--out", out)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "comparison.json").read_text())
    assert doc["organs"][0]["name"] == "liver" and doc["organs"][0]["re_percent"] == pytest.approx(10.0, rel=1e-4)
    assert 4.0 < doc["ensemble_noise_percent"] < 9.0  # 5 % multiplicative noise
    assert (out / "joint_histogram.png").exists()
    other = write_image(Grid(ref[:, :, :8].copy(), (4, 4, 4), kind=Kind.DOSE), tmp_path / "small.nii.gz")
    assert_clean_error(cli("compare", "--reference", paths["ref"], "--test", other), "geometr")


def test_ctrl_c_says_so_exits_130_and_leaves_nothing(tmp_path):
    """SIGINT in the middle of a Monte Carlo run: exit 130, the message, no output, no temporary."""
    import signal
    import subprocess
    import sys
    import time

    from persodose.physics.materials import default_materials, materials_table

    dens = Grid(np.full((12, 12, 12), 1.0, np.float32), (5.0, 5.0, 5.0), kind=Kind.DENSITY)
    mats = Grid(np.full((12, 12, 12), 2, np.uint8), (5.0, 5.0, 5.0), kind=Kind.MATERIAL)
    tia = Grid(np.ones((12, 12, 12), np.float32), (5.0, 5.0, 5.0), kind=Kind.TIA)
    write_image(dens, tmp_path / "d.nii.gz")
    write_image(mats, tmp_path / "m.nii.gz")
    (tmp_path / "m.nii.gz.json").write_text(json.dumps(materials_table(default_materials())))
    write_image(tia, tmp_path / "t.nii.gz")
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.Popen([sys.executable, "-m", "persodose.cli.main", "mc", "--tia", str(tmp_path / "t.nii.gz"),
                             "--density", str(tmp_path / "d.nii.gz"), "--materials", str(tmp_path / "m.nii.gz"),
                             "--nuclide", "Lu-177", "--decays", "50000000", "--batches", "200",
                             "--out", str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8.0)
    assert proc.poll() is None, proc.communicate()  # still simulating
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; nothing was written" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
