"""Scan protocol awareness (issue 19): head or body, the CTDI phantom, Dw and SSDE.

Real images: two head CT slices that pydicom ships (``J2K_pixelrep_mismatch.dcm``, skull base
with sinuses and mastoids, Body Part Examined HEAD; ``693_J2KI.dcm``, cranial vault, Filter
Type HEAD FILTER) and one body slice (``CT_small.dcm``, a 128 x 128 crop of the back, Filter
Type LARGE BOWTIE FIL). pydicom has no real CT *series*; each series here is one real slice
copied to 5 positions 5 mm apart along its slice normal (Image Position Patient and Slice
Location stepped, new SOP Instance UIDs), its Filter Type, Body Part Examined, Protocol Name and descriptions removed.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from persodose.ct.protocol import (ProtocolHeaders, decide_protocol, looks_like_head, patient_size,
                                   read_protocol_headers, size_specific_dose, ssde_factor,
                                   water_equivalent_diameter_mm)
from persodose.errors import InputError
from persodose.grid import Kind, make_grid

STRIP = ("FilterType", "BodyPartExamined", "ProtocolName", "SeriesDescription", "StudyDescription",
         "RequestedProcedureDescription", "PerformedProcedureStepDescription")


def _testfile(name: str) -> Path:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} not installed")
    ds = pydicom.dcmread(path)
    try:
        ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - no decoder for this transfer syntax here
        pytest.skip(f"cannot decode {name}: {exc}")
    return Path(path)


def _series_from_slice(src: Path, out: Path, n: int = 5, step_mm: float = 5.0, strip=STRIP, **set_) -> Path:
    """``n`` copies of one real slice at stepped z, headers in ``strip`` removed, ``set_`` set."""
    import pydicom
    from pydicom.uid import generate_uid

    out.mkdir(parents=True)
    series_uid, frame_uid = generate_uid(), generate_uid()
    for k in range(n):
        ds = pydicom.dcmread(src)
        for kw in strip:
            if kw in ds:
                delattr(ds, kw)
        for kw, v in set_.items():
            setattr(ds, kw, v)
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        normal = np.cross(iop[:3], iop[3:])  # along the slice normal (one image is oblique)
        ipp = np.array([float(v) for v in ds.ImagePositionPatient]) + k * step_mm * normal
        ds.ImagePositionPatient = [round(float(v), 4) for v in ipp]
        ds.SliceLocation = round(float(ipp[2]), 4)
        ds.InstanceNumber = k + 1
        ds.SeriesInstanceUID = series_uid
        if "FrameOfReferenceUID" not in ds:  # 693_J2KI.dcm has none; the RT Dose output needs one
            ds.FrameOfReferenceUID = frame_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(out / f"ct_{k:03d}.dcm")
    return out


def _read(path: Path):
    from persodose.io.dicom import read_ct

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_ct(path)


def _decide(series):
    return decide_protocol(read_protocol_headers(series.info), patient_size(series.grid))


# ----------------------------------------------------------------------------- rules from headers
def test_phantom_code_is_trusted_first_and_a_16cm_body_scan_is_body():
    head_code = dict(phantom_code="113690", phantom_meaning="IEC Head Dosimetry Phantom")
    body_code = dict(phantom_code="113691", phantom_meaning="IEC Body Dosimetry Phantom")
    p = decide_protocol(ProtocolHeaders(**body_code, filter_type="HEAD FILTER", body_part="HEAD"))
    assert (p.region, p.ctdi_phantom_mm) == ("body", 320.0) and "CTDIPhantomTypeCode" in p.region_rule
    p = decide_protocol(ProtocolHeaders(**head_code, body_part="CHEST"))  # a child's chest in the 16 cm phantom
    assert (p.region, p.ctdi_phantom_mm) == ("body", 160.0) and "16 cm" in p.region_rule
    p = decide_protocol(ProtocolHeaders(**head_code))
    assert (p.region, p.ctdi_phantom_mm, p.ctdi_phantom_rule) == ("head", 160.0, "CTDIPhantomTypeCodeSequence")
    # the code meaning alone (no code value) still says which phantom
    p = decide_protocol(ProtocolHeaders(phantom_meaning="IEC Head Dosimetry Phantom"))
    assert p.ctdi_phantom_mm == 160.0


@pytest.mark.parametrize("headers,region,rule", [
    (dict(filter_type="HEAD FILTER", body_part="CHEST"), "head", "FilterType"),
    (dict(filter_type="BODY FILTER", body_part="HEAD"), "body", "FilterType"),
    (dict(filter_type="WEDGE_2", body_part="HEAD"), "head", "BodyPartExamined"),
    (dict(body_part="ABDOMEN", protocol_name="Routine Brain"), "body", "BodyPartExamined"),
    (dict(protocol_name="Routine Brain", series_description="Thorax 1.0"), "head", "ProtocolName"),
    (dict(protocol_name="HEADNECK CHEST", series_description="CAP abdomen"), "body", "SeriesDescription"),
    (dict(series_description="Schaedel nativ"), "head", "SeriesDescription"),
])
def test_header_rules_in_order_of_trust(headers, region, rule):
    p = decide_protocol(ProtocolHeaders(**headers))
    assert p.region == region and p.region_rule.startswith(rule)
    assert p.ctdi_phantom_mm == (160.0 if region == "head" else 320.0)


def test_user_overrides_win():
    h = ProtocolHeaders(phantom_code="113691", filter_type="BODY")
    p = decide_protocol(h, bowtie_override="head", ctdi_phantom_mm=160.0)
    assert (p.region, p.region_rule, p.ctdi_phantom_mm, p.ctdi_phantom_rule) == ("head", "--bowtie head", 160.0,
                                                                                  "--ctdi-phantom")
    with pytest.raises(InputError, match="16 or 32"):
        decide_protocol(h, ctdi_phantom_mm=250.0)
    # nothing says anything: body by default, said so
    assert decide_protocol(ProtocolHeaders()).region_rule.startswith("default")


# ----------------------------------------------------------------------------- Dw and SSDE
def test_dw_of_a_water_disc_is_its_diameter_and_the_couch_does_not_count():
    n, px = 256, 1.0
    yy, xx = np.mgrid[:n, :n] - n / 2 + 0.5
    s = np.full((n, n), -1000.0)
    s[np.hypot(yy, xx) < 100] = 0.0  # 200 mm water disc
    s[230:240, 20:236] = 200.0  # a couch, apart from the patient
    assert water_equivalent_diameter_mm(s, px * px) == pytest.approx(200.0, rel=0.01)
    # a lung-like hole of -700 HU (filled into the contour): the water-equivalent area shrinks
    hole = np.hypot(yy, xx - 40) < 40
    s2 = s.copy()
    s2[hole] = -700.0
    expect = 2 * math.sqrt((math.pi * 100**2 - 0.7 * hole.sum()) / math.pi)
    assert water_equivalent_diameter_mm(s2, px * px) == pytest.approx(expect, rel=0.01)


def test_ssde_factors_are_the_aapm204_fits():
    # AAPM Report 204 exponential fits, Dw in cm: 3.704369 exp(-0.03671937 Dw) (32 cm phantom),
    # 1.874799 exp(-0.03871313 Dw) (16 cm phantom).
    assert float(ssde_factor(280.0, 320.0)) == pytest.approx(3.704369 * math.exp(-0.03671937 * 28.0), rel=1e-9)
    assert float(ssde_factor(160.0, 160.0)) == pytest.approx(1.874799 * math.exp(-0.03871313 * 16.0), rel=1e-9)
    assert float(ssde_factor(280.0, 320.0)) == pytest.approx(1.33, abs=0.01)  # ~1.0 near the 32 cm phantom's Dw
    assert np.isnan(ssde_factor(500.0, 320.0)) and np.isnan(ssde_factor(50.0, 160.0))
    with pytest.raises(InputError):
        ssde_factor(200.0, 250.0)
    size = patient_size(_disc_ct(120.0))
    sd = size_specific_dose(size, 10.0, 320.0)
    assert sd.dw_mean_mm == pytest.approx(240.0, rel=0.02)
    assert sd.ssde_mgy == pytest.approx(10.0 * float(ssde_factor(sd.dw_mean_mm, 320.0)), rel=1e-9)
    assert sd.to_dict()["dw_mm_per_slice"][0] == pytest.approx(240.0, rel=0.02)


def _disc_ct(radius_mm: float, n: int = 128, px: float = 2.5, nz: int = 4):
    yy, xx = (np.mgrid[:n, :n] - n / 2 + 0.5) * px
    s = np.where(np.hypot(yy, xx) < radius_mm, 0.0, -1000.0).astype(np.float32)
    g = make_grid((nz, n, n), (5.0, px, px), kind=Kind.CT)
    return g.with_array(np.repeat(s[None], nz, 0))


# ----------------------------------------------------------------------------- real head CT images
@pytest.mark.parametrize("name", ["693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm"])
def test_real_head_ct_without_filter_type_or_body_part_is_a_head(name, tmp_path):
    series = _read(_series_from_slice(_testfile(name), tmp_path / "head"))
    assert series.grid.shape[0] == 5
    h = read_protocol_headers(series.info)
    assert (h.filter_type, h.body_part, h.protocol_name) == ("", "", "")
    p = _decide(series)
    assert p.region == "head" and p.region_rule.startswith("patient"), p.region_rule
    assert p.ctdi_phantom_mm == 160.0
    head, why = looks_like_head(patient_size(series.grid))
    assert head and "Dw 1" in why  # an adult head: Dw 16-19 cm


def test_real_head_ct_with_its_headers_is_decided_by_them(tmp_path):
    src = _testfile("J2K_pixelrep_mismatch.dcm")  # Body Part Examined HEAD
    series = _read(_series_from_slice(src, tmp_path / "h", strip=("FilterType",)))
    p = _decide(series)
    assert p.region == "head" and p.region_rule.startswith("BodyPartExamined")
    src = _testfile("693_J2KI.dcm")  # Filter Type HEAD FILTER
    series = _read(_series_from_slice(src, tmp_path / "f", strip=()))
    p = _decide(series)
    assert p.region == "head" and p.region_rule.startswith("FilterType")


def test_real_body_ct_is_body(tmp_path):
    src = _testfile("CT_small.dcm")  # Filter Type LARGE BOWTIE FIL
    p = _decide(_read(_series_from_slice(src, tmp_path / "b", strip=())))
    assert p.region == "body" and p.region_rule.startswith("FilterType")
    p = _decide(_read(_series_from_slice(src, tmp_path / "s")))
    assert p.region == "body" and p.region_rule.startswith("patient") and "image border" in p.region_rule


def test_phantom_code_sequence_is_read_from_the_file(tmp_path):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "113690", "DCM", "IEC Head Dosimetry Phantom"
    series = _read(_series_from_slice(_testfile("CT_small.dcm"), tmp_path / "c", CTDIPhantomTypeCodeSequence=[item]))
    h = read_protocol_headers(series.info)
    assert (h.phantom_code, h.phantom_meaning) == ("113690", "IEC Head Dosimetry Phantom")
    assert _decide(series).ctdi_phantom_mm == 160.0


# ----------------------------------------------------------------------------- virtual patients
@pytest.fixture(scope="module")
def vp():
    pytest.importorskip("scipy")
    from persodose.phantoms import make_virtual_patient

    return make_virtual_patient(voxel_mm=8)


def _subgrid(ct, k0, k1):
    from persodose.grid import Grid

    origin = ct.index_to_physical(np.array([[k0, 0, 0]], float))[0]
    return Grid(np.asarray(ct.array)[k0:k1], ct.spacing_zyx_mm, tuple(origin), ct.direction_xyz, ct.kind, ct.unit)


@pytest.mark.parametrize("z_range,region", [((-160.0, 0.0), "head"), ((-600.0, -300.0), "body"),
                                            ((-1000.0, -700.0), "body")])
def test_virtual_patient_ranges_without_headers(vp, z_range, region):
    ct = _subgrid(vp.ct, *_index_range(vp.ct, *z_range))
    p = decide_protocol(ProtocolHeaders(), patient_size(ct))
    assert p.region == region and p.from_patient, p.region_rule


def _index_range(ct, z_lo, z_hi):
    z = ct.index_to_physical(np.array([[k, 0, 0] for k in range(ct.shape[0])], float))[:, 2]
    idx = np.nonzero((z >= z_lo) & (z <= z_hi))[0]
    return int(idx.min()), int(idx.max()) + 1


def _small_patient():
    from persodose.phantoms.anatomy import AnatomyParams
    from persodose.phantoms.kinetics import KineticParams
    from persodose.phantoms.virtual_patient import PatientVariation, make_virtual_patient

    var = PatientVariation(anatomy=AnatomyParams(height_scale=0.6, width_scale=0.6, fat_extra_mm=-9.0),
                           kinetics=KineticParams(),
                           patient={"sex": "M", "age_y": 6.0, "weight_kg": 20.0, "height_m": 1.06})
    return make_virtual_patient(voxel_mm=8, variation=var)


def test_small_patient_body_scan_in_the_16cm_phantom():
    child = _small_patient()
    size = patient_size(child.ct)
    assert 100.0 < np.median(size.dw_mm[size.dw_mm > 0]) < 160.0  # a child's trunk: as small as a head
    # the image alone: body (lungs, no skull ring over most slices)
    assert decide_protocol(ProtocolHeaders(), size).region == "body"
    # the scanner says 16 cm phantom and a body filter: body scan, 16 cm phantom
    p = decide_protocol(ProtocolHeaders(phantom_code="113690", phantom_meaning="IEC Head Dosimetry Phantom",
                                        filter_type="BODY"), size)
    assert (p.region, p.bowtie, p.ctdi_phantom_mm) == ("body", "body", 160.0)
    sd = size_specific_dose(size, 5.0, p.ctdi_phantom_mm)
    assert sd.ssde_mgy == pytest.approx(5.0 * 1.874799 * math.exp(-0.03871313 * sd.dw_mean_mm / 10), rel=1e-9)
    # the same CTDIvol in the 32 cm phantom would give about twice the SSDE
    assert size_specific_dose(size, 5.0, 320.0).ssde_mgy > 1.8 * sd.ssde_mgy


# ----------------------------------------------------------------------------- workflow and CLI
def test_workflow_on_a_real_head_ct_uses_the_head_bowtie_and_16cm_phantom(tmp_path):
    pytest.importorskip("spekpy")
    pytest.importorskip("xraylib")
    from persodose.mc.engine import MCSettings
    from persodose.workflows.ct import CT_TRANSPORT, ct_dose, write_ct_outputs

    series = _read(_series_from_slice(_testfile("693_J2KI.dcm"), tmp_path / "head", n=5))
    ov = {"pitch": 1.0, "total_collimation_mm": 20.0, "rotation_time_s": 1.0, "ctdivol_mgy": 50.0}
    lines = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = ct_dose(series.grid, series.info, overrides=ov, n_photons=6000, ctdi_photons=6000,
                      dose_voxel_mm=10.0, settings=MCSettings(n_batches=2, transport=CT_TRANSPORT), log=lines.append)
    assert res.acquisition.bowtie == "head" and res.ctdi.diameter_mm == 160.0
    assert res.acquisition.provenance["bowtie"] == "derived"
    assert res.protocol.region_rule.startswith("patient")
    assert any("scan type: head (patient" in ln for ln in lines)
    # decided from the image: one warning, naming the command-line override that exists
    msgs = [str(w.message) for w in caught if "bowtie" in str(w.message)]
    assert len(msgs) == 1 and "--bowtie head|body" in msgs[0] and "patient" in msgs[0]
    sd = res.size_dose
    assert 150.0 < sd.dw_mean_mm < 190.0 and sd.ctdivol_mgy == 50.0
    assert sd.ssde_mgy == pytest.approx(50.0 * float(ssde_factor(sd.dw_mean_mm, 160.0)), rel=1e-9)
    write_ct_outputs(res, tmp_path / "out")
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert prov["protocol"]["region"] == "head" and prov["size_specific_dose"]["ctdi_phantom_mm"] == 160.0
    assert len(prov["size_specific_dose"]["dw_mm_per_slice"]) == 5
    assert "Scan type and size-specific dose" in (tmp_path / "out" / "report.html").read_text()
