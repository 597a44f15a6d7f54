"""Tests of the built-in virtual patient (persodose.phantoms)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from persodose.errors import InputError
from persodose.grid import Kind
from persodose.phantoms import (LABELS, REFERENCE_MASS_G, make_virtual_patient,
                                write_virtual_patient)
from persodose.phantoms.imaging import (PET_SENSITIVITY_CPS_PER_MBQ, decay_factor_to_start,
                                        pet_image_from_counts)
from persodose.phantoms.kinetics import ICRP107_HALF_LIFE_S, TACModel

NAME_TO_LABEL = {n: k for k, n in LABELS.items()}


@pytest.fixture(scope="module")
def lu8():
    return make_virtual_patient("lu177-dotatate", voxel_mm=8.0, seed=0)


@pytest.fixture(scope="module")
def fdg8():
    return make_virtual_patient("fdg", voxel_mm=8.0, seed=0)


@pytest.fixture(scope="module")
def lu4():
    return make_virtual_patient("lu177-dotatate", voxel_mm=4.0, seed=0)


def organ_sums(grid, labels):
    s = np.bincount(labels.ravel(), weights=grid.array.ravel().astype(np.float64),
                    minlength=max(LABELS) + 1)
    return {n: float(s[k]) for k, n in LABELS.items()}


# ----------------------------------------------------------------------------- anatomy
def test_deterministic_for_a_seed_and_different_for_another(lu8):
    again = make_virtual_patient("lu177-dotatate", voxel_mm=8.0, seed=0)
    assert np.array_equal(lu8.labels.array, again.labels.array)
    assert np.array_equal(lu8.ct.array, again.ct.array)
    for a, b in zip(lu8.frames, again.frames):
        assert np.array_equal(a.image.array, b.image.array)
    other = make_virtual_patient("lu177-dotatate", voxel_mm=8.0, seed=1)
    assert not np.array_equal(lu8.ct.array, other.ct.array)
    assert not np.array_equal(lu8.labels.array, other.labels.array)
    assert not np.array_equal(lu8.frames[0].image.array, other.frames[0].image.array)


@pytest.mark.parametrize("seed", [0, 3])
def test_every_label_present(seed, lu8):
    vp = lu8 if seed == 0 else make_virtual_patient("lu177-dotatate", voxel_mm=8.0, seed=seed)
    present = set(np.unique(vp.labels.array).tolist())
    missing = [n for k, n in LABELS.items() if k not in present]
    assert not missing
    assert vp.labels.kind is Kind.LABELS and vp.labels.array.dtype == np.uint16


def test_geometry_lps_head_superior(lu8):
    lab = lu8.labels.array
    brain_z = np.nonzero(lab == NAME_TO_LABEL["brain"])[0].mean()
    bladder_z = np.nonzero(lab == NAME_TO_LABEL["bladder"])[0].mean()
    assert brain_z > bladder_z  # head at high z index = superior (+z in LPS)
    liver_x = np.nonzero(lab == NAME_TO_LABEL["liver"])[2].mean()
    spleen_x = np.nonzero(lab == NAME_TO_LABEL["spleen"])[2].mean()
    assert liver_x < spleen_x  # liver on the patient's right = -x in LPS
    spine_y = np.nonzero(lab == NAME_TO_LABEL["spine"])[1].mean()
    heart_y = np.nonzero(lab == NAME_TO_LABEL["heart"])[1].mean()
    assert spine_y > heart_y  # spine posterior = +y
    assert lu8.ct.shape == (132, 64, 64)


def test_organ_masses_match_icrp89_at_4mm(lu4):
    m = lu4.organ_masses_g
    got = {"liver": m["liver"], "spleen": m["spleen"], "kidneys": m["kidney_left"] + m["kidney_right"],
           "lungs": m["lung_left"] + m["lung_right"], "heart": m["heart"], "brain": m["brain"],
           "bladder": m["bladder"], "stomach": m["stomach"]}
    for organ, ref in REFERENCE_MASS_G.items():
        assert abs(got[organ] / ref - 1.0) < 0.15, (organ, got[organ], ref)
    assert lu4.ct.shape == (264, 128, 128)


def test_hu_ranges_per_tissue(lu4):
    ct, lab = lu4.ct.array, lu4.labels.array
    ranges = {"liver": (50, 70), "spleen": (40, 60), "kidney_left": (25, 45), "muscle": (35, 55),
              "skin_fat": (-120, -60), "lung_left": (-850, -650), "lung_right": (-850, -650),
              "brain": (25, 45), "bladder": (-5, 15), "heart": (30, 50), "red_marrow": (200, 450),
              "spine": (700, 1400), "pelvis": (700, 1400)}
    for name, (lo, hi) in ranges.items():
        med = float(np.median(ct[lab == NAME_TO_LABEL[name]]))
        assert lo <= med <= hi, (name, med)
    assert abs(float(np.median(ct[lab == 0])) + 1000) < 30
    sd = float(np.std(ct[lab == NAME_TO_LABEL["liver"]]))
    assert 8 <= sd <= 20  # ~12 HU noise
    assert lu4.ct.kind is Kind.CT and lu4.ct.array.dtype == np.float32


# ----------------------------------------------------------------------------- kinetics
def _numerical_tia(model: TACModel) -> float:
    t_end = 40.0 * model.phys_half_life_s
    t = np.concatenate([[0.0], np.geomspace(1.0, t_end, 200_000)])
    a = model.activity_bq(t)
    tail = float(a[-1]) / (math.log(2) / model.phys_half_life_s)
    return float(np.trapezoid(a, t)) + tail


@pytest.mark.parametrize("which", ["lu8", "fdg8"])
def test_tia_is_the_integral_of_the_tac(which, request):
    vp = request.getfixturevalue(which)
    sums = organ_sums(vp.truth_tia, vp.labels.array)
    for name, model in vp.organ_tac.items():
        ana = model.tia_bq_s()
        assert ana > 0
        assert abs(_numerical_tia(model) / ana - 1.0) < 0.005, name
        assert abs(sums[name] / ana - 1.0) < 1e-4, name  # voxel TIA sums to the organ TIA
    assert vp.truth_tia.kind is Kind.TIA


@pytest.mark.parametrize("which", ["lu8", "fdg8"])
def test_truth_activity_follows_the_tac_and_mass_balance(which, request):
    vp = request.getfixturevalue(which)
    for fr, act in zip(vp.frames, vp.truth_activity):
        sums = organ_sums(act, vp.labels.array)
        for name, model in vp.organ_tac.items():
            assert sums[name] == pytest.approx(float(model.activity_bq(fr.mid_time_s)), rel=1e-4)
        assert fr.truth.to_activity().total() == pytest.approx(act.total(), rel=1e-5)
    # no negative activity and never more than what was injected (decay removed)
    t = np.linspace(0.0, 30 * 86400.0 if vp.nuclide == "Lu-177" else 7200.0, 5000)
    lam = math.log(2) / vp.half_life_s
    total = sum(m.activity_bq(t) for m in vp.organ_tac.values()) * np.exp(lam * t)
    assert np.all(total <= vp.injected_activity_bq * (1 + 1e-9))
    for name, m in vp.organ_tac.items():
        assert np.all(m.activity_bq(t) >= -1e-6 * vp.injected_activity_bq), name


def test_lu177_kinetics_are_clinically_plausible(lu8):
    vol = {n: float(np.count_nonzero(lu8.labels.array == k)) * 0.512 for k, n in LABELS.items()}
    t24 = 24 * 3600.0
    conc = {n: float(m.activity_bq(t24)) / vol[n] for n, m in lu8.organ_tac.items()}
    normal = ["liver", "kidney_left", "kidney_right", "muscle", "body", "heart", "lung_left", "brain"]
    assert all(conc["spleen"] > conc[n] for n in normal)  # spleen: highest normal organ
    assert conc["lesion_liver"] > conc["spleen"]
    ia = lu8.injected_activity_bq
    kid = (lu8.organ_tac["kidney_left"].activity_bq(t24) + lu8.organ_tac["kidney_right"].activity_bq(t24))
    assert 0.01 < kid / ia < 0.025
    assert lu8.injected_activity_bq == 7.4e9
    assert lu8.half_life_s == pytest.approx(574300.8, rel=1e-4)
    assert [round(f.start_s / 3600) for f in lu8.frames] == [4, 24, 96, 168]


# ----------------------------------------------------------------------------- emission
def test_spect_counts_match_sensitivity_activity_duration(lu8):
    for fr in lu8.frames:
        img = fr.image
        assert img.kind is Kind.COUNTS and fr.modality == "NM"
        assert np.all(img.array >= 0)
        assert img.spacing_zyx_mm == pytest.approx((9.6, 9.6, 9.6))
        integral = sum(m.integral_bq_s(fr.start_s, fr.start_s + fr.duration_s)
                       for m in lu8.organ_tac.values())
        expected = fr.calibration_cps_per_mbq * 1e-6 * integral
        total = img.total()
        # Poisson (3 sd) + up to 3 % lost at the field edges by the blur / resampling
        assert expected * 0.97 - 3 * math.sqrt(expected) < total < expected * 1.003 + 3 * math.sqrt(expected)


def test_spect_clinical_count_level(lu4):
    fr = lu4.frames[0]
    assert 1e7 < fr.image.total() < 1e8  # 20-min SPECT of 7.4 GBq at 4 h
    assert fr.image.spacing_zyx_mm == pytest.approx((4.8, 4.8, 4.8))
    assert 8 <= fr.calibration_cps_per_mbq <= 20


def test_pet_decay_correction_by_hand():
    t_half = ICRP107_HALF_LIFE_S["F-18"]
    lam = math.log(2) / t_half
    duration, start = 600.0, 1800.0
    a_start = 1.0e6  # Bq in one 1-mL voxel at the frame start
    counts_exact = 1e-2 * a_start * (1 - math.exp(-lam * duration)) / lam  # S = 1e-2 cps/Bq
    img = pet_image_from_counts(np.full((1, 1, 1), counts_exact), 1e-2, duration, start, t_half, 1.0)
    assert float(img[0, 0, 0]) == pytest.approx(a_start, rel=1e-5)
    assert decay_factor_to_start(t_half, duration) == pytest.approx(
        lam * duration / (1 - math.exp(-lam * duration)))


def test_pet_frames_are_decay_corrected_to_frame_start(fdg8):
    assert len(fdg8.frames) == 13
    assert fdg8.frames[-1].start_s + fdg8.frames[-1].duration_s == pytest.approx(3600.0)
    lam = math.log(2) / fdg8.half_life_s
    for fr in fdg8.frames[-5:]:
        assert fr.modality == "PT" and fr.image.kind is Kind.ACTIVITY_CONCENTRATION
        assert fr.calibration_cps_per_mbq is None
        integral = sum(m.integral_bq_s(fr.start_s, fr.start_s + fr.duration_s)
                       for m in fdg8.organ_tac.values())
        by_hand = integral / fr.duration_s * lam * fr.duration_s / (1 - math.exp(-lam * fr.duration_s))
        assert fr.image.to_activity().total() == pytest.approx(by_hand, rel=0.01)
        # decay-corrected to the start: above the (non-corrected) mid-frame truth total
        assert fr.image.to_activity().total() > fr.truth.to_activity().total()
    assert fdg8.injected_activity_bq == pytest.approx(3.5e6 * 73.0)
    # brain and bladder rise, blood pool (heart) falls after the first minutes
    brain = fdg8.organ_tac["brain"]
    assert brain.activity_bq(3000.0) > brain.activity_bq(300.0)
    assert fdg8.organ_tac["bladder"].activity_bq(3000.0) > fdg8.organ_tac["bladder"].activity_bq(300.0)
    heart = fdg8.organ_tac["heart"]
    assert heart.activity_bq(30.0) > heart.activity_bq(3000.0)


def test_pet_sensitivity_is_clinical():
    assert 5_000 <= PET_SENSITIVITY_CPS_PER_MBQ <= 20_000


# ----------------------------------------------------------------------------- CT headers
def test_ct_tags_follow_attenuation(lu8):
    tags = lu8.ct_tags
    nz = lu8.ct.shape[0]
    for key in ("kvp", "xray_tube_current_ma", "exposure_time_ms", "ctdivol_mgy", "spiral_pitch_factor",
                "total_collimation_mm", "single_collimation_mm", "rotation_time_s", "filter_type",
                "convolution_kernel", "manufacturer", "model"):
        assert key in tags, key
    ma = np.array(tags["xray_tube_current_ma"])
    wed = np.array(tags["water_equivalent_diameter_mm"])
    assert ma.shape == (nz,) and len(tags["ctdivol_mgy"]) == nz
    assert ma.min() >= 20 and ma.max() <= 500
    order = np.argsort(wed)
    assert np.all(np.diff(ma[order]) >= -0.05)  # monotonic in WED (values rounded to 0.01)
    free = (ma > 20) & (ma < 500)
    assert np.corrcoef(np.log(ma[free]), wed[free])[0, 1] > 0.999
    h = lu8.ct.origin_xyz_mm[2] + np.arange(nz) * 8.0 + 1760.0
    lungs = ma[(h > 1250) & (h < 1350)].mean()
    assert ma[(h > 1390) & (h < 1445)].mean() > lungs
    assert ma[(h > 890) & (h < 990)].mean() > lungs
    assert 150 <= ma[(h > 1040) & (h < 1120)].mean() <= 250  # abdomen of a reference patient
    ctdi = np.array(tags["ctdivol_mgy"])
    assert np.allclose(ctdi, 0.07 * ma * tags["rotation_time_s"] / tags["spiral_pitch_factor"], rtol=1e-3)
    json.dumps(tags)


# ----------------------------------------------------------------------------- writing
def test_write_nifti_and_manifest(lu8, tmp_path):
    out = tmp_path / "vp"
    manifest_path = write_virtual_patient(lu8, out)
    doc = json.loads(manifest_path.read_text())
    assert doc["tracer"] == "lu177-dotatate" and doc["nuclide"] == "Lu-177" and doc["seed"] == 0
    assert len(doc["frames"]) == 4
    for fr in doc["frames"]:
        assert (out / fr["image_path"]).exists() and (out / fr["truth_path"]).exists()
        assert fr["calibration_cps_per_mbq"] == lu8.frames[0].calibration_cps_per_mbq
        assert set(fr["organ_true_activity_bq"]) == set(lu8.organ_tac)
    for name in ("ct", "labels", "truth_tia"):
        assert (out / "nifti" / f"{name}.nii.gz").exists()
    assert doc["organ_tia_bq_s"]["liver"] == pytest.approx(lu8.organ_tac["liver"].tia_bq_s())
    from persodose.io.image import read_image

    ct = read_image(out / "nifti" / "ct.nii.gz")
    assert ct.shape == lu8.ct.shape
    assert np.allclose(ct.origin_xyz_mm, lu8.ct.origin_xyz_mm, atol=1e-3)


def test_write_dicom(fdg8, tmp_path):
    pytest.importorskip("persodose.io.dicom_write")
    import pydicom

    out = tmp_path / "pet_vp"
    doc = json.loads(write_virtual_patient(fdg8, out).read_text())
    assert doc["dicom"]["written"] is True
    ct_files = sorted((out / "ct").glob("*"))
    assert len(ct_files) == fdg8.ct.shape[0]
    pet_dirs = sorted((out / "pet").iterdir())
    assert len(pet_dirs) == 13
    study = {pydicom.dcmread(ct_files[0], stop_before_pixels=True).StudyInstanceUID}
    for d in pet_dirs[:2]:
        f = sorted(d.glob("*"))[0]
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        study.add(ds.StudyInstanceUID)
        assert ds.FrameOfReferenceUID == doc["dicom"]["frame_of_reference_uid"]
    assert len(study) == 1


def test_bad_arguments_raise_input_error():
    with pytest.raises(InputError):
        make_virtual_patient("tc99m-mdp")
    with pytest.raises(InputError):
        make_virtual_patient("fdg", voxel_mm=0.0)
