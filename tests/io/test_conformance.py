"""DICOM conformance of everything persodose writes (issue 18).

The virtual patient's CT, NM (SPECT) and PET series, and the SEG, RT Structure Set and
RT Dose written on its CT are checked

* by the validators where they are installed: ``dciodvfy`` and ``dcentvfy`` (dicom3tools,
  Debian package ``dicom3tools``), ``dcmftest`` / ``dcmdump`` (dcmtk, package ``dcmtk``) and
  pixelmed's parser (``libpixelmed-java``); a test whose binary is missing is skipped with
  the reason;
* by pydicom everywhere: the attributes the validators asked for, DS lengths, UID roots and
  one Study Date/Time per study.

The Debian ``dciodvfy`` aborts (an assertion in its pixel-data code, exit 134) on every RT
Dose with 32-bit pixel data, pydicom's own ``rtdose.dcm`` included, so the RT Dose is read
by dcmtk and its header is validated by ``dciodvfy`` on a copy whose pixel data are
re-encoded in 16 bits (Bits Allocated 16 is allowed by the RT Dose module, PS3.3 C.8.8.3;
the other attributes are the file's own).
"""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from persodose.errors import InputError
from persodose.grid import Kind
from persodose.io import dicom_write as dw

#: DICOM's own UIDs (SOP classes, transfer syntaxes, the Study Component Management class).
_STANDARD_UID_PREFIX = "1.2.840.10008."

#: Radiopharmaceutical Radiation Dose SR Storage (PS3.4 B.5): the record of an administration.
_RRDSR = "1.2.840.10008.5.1.4.1.1.88.68"


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A 10-mm Lu-177 virtual patient (CT + 4 SPECT), a 10-mm FDG one (CT + PET frames),
    and SEG, RT Structure Set and RT Dose on the first's CT: RECORD with a treatment record
    (an administration's dose SR), and RECORD without one (what the workflows write; it is
    written as PLAN_OVERVIEW)."""
    from persodose.io.rtdose import write_rtdose
    from persodose.io.rtstruct import write_rtstruct
    from persodose.io.seg import write_seg
    from persodose.phantoms import make_virtual_patient, write_virtual_patient

    root = tmp_path_factory.mktemp("conformance")
    vp = make_virtual_patient("lu177-dotatate", voxel_mm=10.0, seed=0)
    write_virtual_patient(vp, root / "lu")
    write_virtual_patient(make_virtual_patient("fdg", voxel_mm=10.0, seed=0), root / "fdg")
    ct_files = sorted(glob.glob(str(root / "lu" / "ct" / "*.dcm")))
    keep = [k for k, n in vp.label_names.items() if n in ("liver", "kidney_left", "spleen")]
    arr = np.where(np.isin(vp.labels.array, keep), vp.labels.array, 0).astype(np.uint16)
    labels = vp.labels.with_array(arr, Kind.LABELS)
    names = {k: vp.label_names[k] for k in keep}
    objs = root / "objects"
    write_seg(labels, names, objs / "seg.dcm", ct_files)
    write_rtstruct(labels, names, objs / "rtstruct.dcm", ct_files)
    dose = vp.ct.with_array(np.abs(vp.ct.array.astype(np.float64)) * 1e-4 + 0.5, Kind.DOSE, unit="Gy")
    write_rtdose(dose, objs / "rtdose.dcm", reference_ct_files=ct_files, summation_type="RECORD",
                 referenced_treatment_record=(_RRDSR, dw.new_uid()))
    write_rtdose(dose, objs / "rtdose_norecord.dcm", reference_ct_files=ct_files, summation_type="RECORD")
    return {
        "root": root, "ct": ct_files,
        "nm": sorted(glob.glob(str(root / "lu" / "spect" / "*" / "*.dcm"))),
        "fdg_ct": sorted(glob.glob(str(root / "fdg" / "ct" / "*.dcm"))),
        "pt": sorted(glob.glob(str(root / "fdg" / "pet" / "*" / "*.dcm"))),
        "seg": str(objs / "seg.dcm"), "rtstruct": str(objs / "rtstruct.dcm"),
        "rtdose": str(objs / "rtdose.dcm"), "rtdose_norecord": str(objs / "rtdose_norecord.dcm"),
    }


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pkg = "dicom3tools" if name.startswith("dc") and name.endswith("vfy") else "dcmtk"
        pytest.skip(f"{name} is not installed (Debian package {pkg})")
    return path


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.lstrip().startswith("Error")]


def _rtdose_16bit_copy(path: str, out: Path) -> Path:
    """The RT Dose with its pixel data re-encoded in 16 bits (top 16 of the 32 bits), for
    dciodvfy, which aborts on 32-bit pixel data."""
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.astype(np.uint32)
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelData = (pixels >> 16).astype("<u2").tobytes()
    ds.save_as(out, enforce_file_format=True)
    return out


# ----------------------------------------------------------------------------- validators
@pytest.mark.parametrize("what", ["ct", "nm", "fdg_ct", "pt", "seg", "rtstruct"])
def test_dciodvfy_reports_no_error(written, what):
    exe = _tool("dciodvfy")
    files = written[what] if isinstance(written[what], list) else [written[what]]
    # first, middle and last file of a series (one for the multi-frame objects)
    for f in sorted({files[0], files[len(files) // 2], files[-1]}):
        res = _run(exe, f)
        out = res.stdout + res.stderr
        assert res.returncode in (0, 1), f"dciodvfy failed on {f} (exit {res.returncode}): {out[-500:]}"
        assert out.strip(), f"dciodvfy said nothing about {f}"
        assert not _errors(out), f"dciodvfy on {f}:\n{out}"


def _dciodvfy_rtdose(exe: str, path: str, tmp_path: Path) -> str:
    res = _run(exe, str(_rtdose_16bit_copy(path, tmp_path / (Path(path).stem + "_16.dcm"))))
    out = res.stdout + res.stderr
    assert res.returncode in (0, 1) and "RTDose" in out, out
    return out


def test_rtdose_header_passes_dciodvfy(written, tmp_path):
    out = _dciodvfy_rtdose(_tool("dciodvfy"), written["rtdose"], tmp_path)
    assert not _errors(out), out


def test_rtdose_without_plan_or_record_passes_as_plan_overview(written, tmp_path):
    """What the workflows write (RECORD, no record to point to) and PLAN without a plan are
    written as PLAN_OVERVIEW with the CT slices in the Plan Overview: no dciodvfy error. Without
    a reference CT, RECORD is kept and dciodvfy reports its Type 1C record (the validator can
    fail); a plan's UID keeps PLAN, with no error."""
    from persodose.io.rtdose import read_rtdose, write_rtdose

    exe = _tool("dciodvfy")
    assert not _errors(_dciodvfy_rtdose(exe, written["rtdose_norecord"], tmp_path))
    grid = read_rtdose(written["rtdose"])
    plan = write_rtdose(grid, tmp_path / "plan.dcm", reference_ct_files=written["ct"], summation_type="PLAN")
    assert not _errors(_dciodvfy_rtdose(exe, str(plan), tmp_path))
    bare = write_rtdose(grid, tmp_path / "bare.dcm", summation_type="RECORD")
    errors = _errors(_dciodvfy_rtdose(exe, str(bare), tmp_path))
    assert len(errors) == 1 and "ReferencedTreatmentRecordSequence" in errors[0], errors
    good = write_rtdose(grid, tmp_path / "planref.dcm", reference_ct_files=written["ct"], summation_type="PLAN",
                        referenced_rt_plan_uid=dw.new_uid())
    assert pydicom.dcmread(good, stop_before_pixels=True).DoseSummationType == "PLAN"
    assert not _errors(_dciodvfy_rtdose(exe, str(good), tmp_path))


def test_rtdose_references_are_written(written):
    ds = pydicom.dcmread(written["rtdose"], stop_before_pixels=True)
    assert ds.DoseSummationType == "RECORD" and "PlanOverviewSequence" not in ds
    assert ds.ReferencedTreatmentRecordSequence[0].ReferencedSOPClassUID == _RRDSR
    ds = pydicom.dcmread(written["rtdose_norecord"], stop_before_pixels=True)
    assert "ReferencedTreatmentRecordSequence" not in ds and ds.DoseSummationType == "PLAN_OVERVIEW"
    refs = ds.PlanOverviewSequence[0].ReferencedImageSequence
    ct_uids = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in written["ct"]}
    assert {r.ReferencedSOPInstanceUID for r in refs} == ct_uids
    assert {r.ReferencedSOPClassUID for r in refs} == {"1.2.840.10008.5.1.4.1.1.2"}  # CT Image Storage


@pytest.mark.parametrize("what", ["rtdose", "rtdose_norecord", "seg", "rtstruct", "nm"])
def test_dcmtk_reads_every_object(written, what):
    dcmftest, dcmdump = _tool("dcmftest"), _tool("dcmdump")
    f = written[what] if not isinstance(written[what], list) else written[what][0]
    res = _run(dcmftest, f)
    assert res.returncode == 0 and res.stdout.startswith("yes:"), res.stdout + res.stderr
    res = _run(dcmdump, f)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr
    assert ("(7fe0,0010)" in res.stdout.lower()) == (what != "rtstruct")
    assert "(0008,0016)" in res.stdout  # SOP Class UID, read


@pytest.mark.parametrize("what", ["rtdose", "rtdose_norecord"])
def test_dcmtk_rt_module_checks_the_rt_dose(written, what, tmp_path):
    """dcmtk's RT reader (``drtdump -v``, the dcmrt module) reports no missing or bad
    attribute of the RT Dose IOD; a file without Dose Units (Type 1) is reported (the check
    can fail)."""
    exe = _tool("drtdump")
    res = _run(exe, "-v", written[what])
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "RT Dose object" in out, out
    assert not [ln for ln in out.splitlines() if ln.startswith(("W:", "E:", "F:"))], out
    ds = pydicom.dcmread(written[what])
    del ds.DoseUnits
    ds.save_as(tmp_path / "bad.dcm")
    res = _run(exe, "-v", str(tmp_path / "bad.dcm"))
    assert "DoseUnits (3004,0002) absent" in res.stdout + res.stderr


_PIXELMED_JAR = "/usr/share/java/pixelmed.jar"


@pytest.mark.parametrize("what", ["rtdose", "rtdose_norecord", "seg"])
def test_pixelmed_reads_rtdose_and_seg(written, what):
    """pixelmed (Debian ``libpixelmed-java``) parses the whole file, 32-bit RT Dose pixels
    included. Its validator (com.pixelmed.validate.DicomInstanceValidator) answers "IOD (SOP
    Class) unrecognized" for RT Dose, so the parse is what is checked."""
    java = shutil.which("java")
    if java is None or not Path(_PIXELMED_JAR).is_file():
        pytest.skip("java or pixelmed is not installed (Debian packages default-jre-headless, libpixelmed-java)")
    res = subprocess.run([java, "-cp", _PIXELMED_JAR, "com.pixelmed.dicom.AttributeList", written[what]],
                         capture_output=True, timeout=300)
    out = (res.stdout + res.stderr).decode("latin-1")
    assert res.returncode == 0 and "Exception" not in out, out[-2000:]
    assert "(0x7fe0,0x0010) PixelData" in out
    if what.startswith("rtdose"):
        assert "BitsAllocated VR=<US> VL=<0x2> [0x20]" in out and "DoseGridScaling" in out


def test_dcentvfy_one_patient_one_study(written):
    """Every series and object of the Lu-177 patient agrees on the Patient and Study
    entities (dicom3tools' entity verifier): one Study Date/Time, one patient."""
    exe = _tool("dcentvfy")
    files = written["ct"] + written["nm"] + [written["seg"], written["rtstruct"]]
    res = _run(exe, *files)
    out = res.stdout + res.stderr
    assert not _errors(out), out[:3000]


# ----------------------------------------------------------------------------- pydicom
def test_nm_tomo_acquisition_and_isotope_attributes(written):
    ds = pydicom.dcmread(written["nm"][0])
    assert list(ds.ImageType)[2] == "RECON TOMO"
    rot = ds.RotationInformationSequence[0]
    assert float(rot.StartAngle) == 0.0 and float(rot.ScanArc) == 180.0
    assert rot.RotationDirection in ("CW", "CC")
    assert float(rot.AngularStep) * int(rot.NumberOfFramesInRotation) == pytest.approx(float(rot.ScanArc))
    assert int(rot.ActualFrameDuration) > 0
    assert "ActualFrameDuration" not in ds  # only for STATIC / WHOLE BODY (PS3.3 C.8.4.9)
    assert ds.DetectorInformationSequence[0].CollimatorType == "PARA"
    assert int(ds.CountsAccumulated) > 0
    win = ds.EnergyWindowInformationSequence[0].EnergyWindowRangeSequence[0]
    assert float(win.EnergyWindowLowerLimit) == pytest.approx(187.2)
    assert float(win.EnergyWindowUpperLimit) == pytest.approx(228.8)
    orient = ds.PatientOrientationCodeSequence[0]
    assert (orient.CodeValue, orient.CodingSchemeDesignator) == ("102538003", "SCT")
    assert orient.PatientOrientationModifierCodeSequence[0].CodeValue == "40199007"
    assert ds.PatientGantryRelationshipCodeSequence[0].CodeValue == "102540008"
    assert "PatientPosition" not in ds
    assert ds.BodyPartExamined == "WHOLEBODY"


def test_nm_counts_accumulated_is_the_image_total(written):
    from persodose.io.dicom import read_nm

    ds = pydicom.dcmread(written["nm"][0])
    s = read_nm(written["nm"][0])
    # the total of the image as read back (stored values x Rescale Slope), to the quantisation
    assert int(ds.CountsAccumulated) == pytest.approx(float(np.sum(s.grid.array, dtype=np.float64)), rel=1e-4)
    # the time base the reader uses is unchanged: views x time per view
    rot = ds.RotationInformationSequence[0]
    assert s.info.frame_duration_s == pytest.approx(int(rot.ActualFrameDuration) * int(rot.NumberOfFramesInRotation)
                                                    / 1000.0)


def test_ct_acquisition_number_and_ctdi_phantom(written):
    ds = pydicom.dcmread(written["ct"][0])
    assert int(ds.AcquisitionNumber) == 1
    assert "CTDIvol" in ds
    code = ds.CTDIPhantomTypeCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("113691", "DCM")
    assert ds.PatientPosition == "HFS"


def test_ct_head_phantom_and_bad_phantom(tmp_path):
    from persodose.grid import Grid

    grid = Grid(np.zeros((2, 4, 4)), (5.0, 1.0, 1.0), (0.0, 0.0, 0.0), kind=Kind.CT)
    args = dict(patient=dw.PatientInfo(), study_uid=dw.new_uid(), frame_of_reference_uid=dw.new_uid(),
                acquisition_datetime=__import__("datetime").datetime(2024, 1, 1, 9))
    files = dw.write_ct_series(grid, tmp_path / "h", ct_tags={"ctdivol_mgy": 40.0, "ctdi_phantom": "head"}, **args)
    assert pydicom.dcmread(files[0]).CTDIPhantomTypeCodeSequence[0].CodeValue == "113690"
    files = dw.write_ct_series(grid, tmp_path / "n", **args)
    assert "CTDIPhantomTypeCodeSequence" not in pydicom.dcmread(files[0])  # no CTDIvol, no phantom
    with pytest.raises(InputError, match="ctdi_phantom"):
        dw.write_ct_series(grid, tmp_path / "b", ct_tags={"ctdivol_mgy": 4.0, "ctdi_phantom": "torso"}, **args)
    assert not (tmp_path / "b").exists()


def test_pet_collimator_and_orientation(written):
    ds = pydicom.dcmread(written["pt"][0])
    assert ds.CollimatorType == "NONE"
    assert ds.PatientOrientationCodeSequence[0].CodeValue == "102538003"
    assert "PatientPosition" not in ds


def test_rt_objects_frame_of_reference_and_operator(written):
    ct = pydicom.dcmread(written["ct"][0])
    for what in ("rtstruct", "rtdose"):
        ds = pydicom.dcmread(written[what], stop_before_pixels=True)
        assert ds.FrameOfReferenceUID == ct.FrameOfReferenceUID
        assert "PositionReferenceIndicator" in ds and "OperatorsName" in ds


def _elements(ds):
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _elements(item)
        else:
            yield elem


def _all_files(written) -> list[str]:
    out = []
    for key in ("ct", "nm", "pt", "fdg_ct"):
        files = written[key]
        out += sorted({files[0], files[-1]})
    return out + [written["seg"], written["rtstruct"], written["rtdose"]]


def test_every_ds_value_fits_16_characters(written):
    for f in _all_files(written):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for elem in _elements(ds):
            if elem.VR != "DS" or elem.value is None:
                continue
            values = elem.value if isinstance(elem.value, (list, pydicom.multival.MultiValue)) else [elem.value]
            for v in values:
                text = getattr(v, "original_string", None) or str(v)
                assert len(text) <= 16, f"{f}: {elem.keyword} = {text!r} has {len(text)} characters"


def test_every_uid_is_ours_or_dicoms(written):
    """Every UID persodose makes is under its root; the others are DICOM's own."""
    root = dw.UID_ROOT + "."
    for f in _all_files(written):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        uids = [ds.file_meta.MediaStorageSOPInstanceUID]
        uids += [str(v) for e in _elements(ds) if e.VR == "UI" and e.keyword != "ImplementationClassUID"
                 for v in (e.value if isinstance(e.value, (list, pydicom.multival.MultiValue)) else [e.value])]
        for u in uids:
            assert len(u) <= 64, (f, u)
            assert u.startswith(root) or u.startswith(_STANDARD_UID_PREFIX), f"{f}: UID {u} is under neither root"


def test_one_study_date_and_time_per_study(written):
    for key in ("lu", "fdg"):
        files = written["ct" if key == "lu" else "fdg_ct"][:1] + written["nm" if key == "lu" else "pt"]
        stamps = {(d.StudyDate, d.StudyTime, d.StudyInstanceUID)
                  for d in (pydicom.dcmread(f, stop_before_pixels=True) for f in files)}
        assert len(stamps) == 1, stamps
    ct = pydicom.dcmread(written["ct"][0])
    nm = pydicom.dcmread(written["nm"][-1])
    assert nm.SeriesDate != ct.SeriesDate  # the series keep their own acquisition date


def test_uid_root_override_and_refusal(monkeypatch):
    monkeypatch.setenv("PERSODOSE_UID_ROOT", "1.2.3.4")
    u = dw.new_uid()
    assert u.startswith("1.2.3.4.") and len(u) <= 64
    monkeypatch.setenv("PERSODOSE_UID_ROOT", "1.02.3")
    with pytest.raises(InputError, match="PERSODOSE_UID_ROOT"):
        dw.new_uid()
    monkeypatch.delenv("PERSODOSE_UID_ROOT")
    assert dw.new_uid().startswith(dw.UID_ROOT + ".") and len(dw.new_uid()) <= 64
