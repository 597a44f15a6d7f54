"""The demonstration job: a virtual patient through every step persodose has.

For each tracer (177Lu-DOTATATE SPECT/CT at four time points, 18F-FDG dynamic PET/CT) it
makes the built-in virtual patient, writes it as DICOM, reads it back through the same
DICOM path a real patient takes, converts the CT to density and materials, brings the
emission images onto the CT grid (sum-preserving), measures organ activities and compares
them with the truth, and writes an HTML report.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from persodose.grid import Grid
from persodose.outputs import atomic_dir, write_provenance

TRACERS = ("lu177-dotatate", "fdg")


@dataclass
class DemoSettings:
    """Settings of the demo job (serialised to the provenance JSON)."""

    voxel_mm: float = 4.0  #: isotropic voxel of the virtual patient's CT, mm
    seed: int = 0  #: random seed of the virtual patient and its noise
    tracers: tuple[str, ...] = TRACERS
    mc_decays: int = 2_000_000  #: Monte Carlo decays of the dose calculation from the images
    #: the reference Monte Carlo (on the true TIA, the yardstick of every method) stops when the
    #: median voxel uncertainty above 10 % of the maximum reaches this, or at the tracer's limit
    mc_reference_target: float = 0.05
    #: decays at most of the reference per tracer; tracers not listed use ``mc_decays``. With
    #: the decays' control variate (physics version 2) Lu-177 meets 5 % after about 3e6 decays and
    #: F-18 after about 1e7 (7.7 % at 4e6, docs/benchmarks.md): about 100 s on 2 cores
    mc_reference_decays: tuple = (("lu177-dotatate", 12_000_000), ("fdg", 12_000_000))
    kernel_decays: int = 1_000_000  #: decays per voxel S-value kernel (cached on disk)
    kernel_cache: str | None = None  #: kernel cache directory (default ~/.cache/persodose)
    ct_photons: int = 2_000_000  #: photons of the CT-dose simulation of the FDG patient's CT scan
    ct_dose_voxel_mm: float = 5.0


@dataclass
class TracerResult:
    tracer: str
    nuclide: str
    patient_dir: Path
    ct: Grid
    labels: Grid
    label_names: dict[int, str]
    density: Grid
    materials: Grid
    material_names: list[str]
    series_rows: list[list] = field(default_factory=list)
    frames_on_ct: list[tuple[float, Grid]] = field(default_factory=list)  # (hours, activity Bq)
    organ_measured_bq: dict[str, list[float]] = field(default_factory=dict)
    organ_true_bq: dict[str, list[float]] = field(default_factory=dict)
    checks: list[list] = field(default_factory=list)
    mass_rows: list[list] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    internal_images: object | None = None  #: InternalResult from the DICOM images
    internal_truth: object | None = None  #: InternalResult on the true TIA (method comparison)
    ct_dose: object | None = None  #: CTDoseResult of the CT scan (PET/CT patient)
    segmentation: dict | None = None  #: the builtin segmenter against the true labels (PET/CT patient)


def run_tracer(tracer: str, settings: DemoSettings, work: Path, log=print) -> TracerResult:
    """Run the demo steps for one tracer, writing into ``work``."""
    vp, patient_dir, manifest, timings = _patient_step(tracer, settings, work, log)
    t0 = time.perf_counter()
    res, ct_info = _read_back_step(vp, tracer, patient_dir, manifest, work / tracer, timings)
    timings["read CT, density, materials"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    points = _emission_step(res, vp, patient_dir, manifest, ct_info)
    timings["read emission, resample"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    _internal_step(res, vp, points, settings, ct_info, work / tracer, log)
    timings["internal dosimetry (2 runs)"] = time.perf_counter() - t0
    log(f"  {tracer}: internal dosimetry done ({timings['internal dosimetry (2 runs)']:.0f} s)")
    if tracer == "fdg" and settings.ct_photons > 0:
        t0 = time.perf_counter()
        _ct_step(res, settings, ct_info, work / tracer)
        timings["CT dosimetry"] = time.perf_counter() - t0
        e = res.ct_dose.effective_dose
        if e is not None:
            log(f"  {tracer}: CT dose: CTDIvol {res.ct_dose.calibration.ctdivol_target_mgy:.2f} mGy, "
                f"effective dose {e.effective_dose_msv:.2f} mSv ({e.status}) ({timings['CT dosimetry']:.0f} s)")
    if tracer == "fdg" and _builtin_segmenter_available():
        t0 = time.perf_counter()
        res.segmentation = segmentation_check(res)
        timings["automatic segmentation (builtin)"] = time.perf_counter() - t0
        log(f"  {tracer}: builtin segmenter: mean Dice {res.segmentation['mean_dice']:.3f} over "
            f"{len(res.segmentation['rows'])} organs ({res.segmentation['seconds']:.0f} s)")
    for line in method_comparison_lines(res.internal_truth):
        log("    " + line)
    res.series_rows.insert(0, ["CT", ct_info.series_description if ct_info else "CT",
                               ct_info.acquisition_datetime.isoformat(sep=" ") if ct_info and ct_info.acquisition_datetime else "",
                               "", "HU", "-"])
    log(f"  {tracer}: {len(points)} emission frames read back and resampled onto the CT grid")
    return res


def _patient_step(tracer: str, settings: DemoSettings, work: Path, log):
    """The virtual patient, written as DICOM and NIfTI."""
    from persodose.phantoms import make_virtual_patient, write_virtual_patient

    t0 = time.perf_counter()
    vp = make_virtual_patient(tracer=tracer, voxel_mm=settings.voxel_mm, seed=settings.seed)
    timings = {"virtual patient": time.perf_counter() - t0}
    t0 = time.perf_counter()
    patient_dir = work / f"patient_{tracer}"
    manifest = json.loads(Path(write_virtual_patient(vp, patient_dir)).read_text())
    timings["write DICOM and NIfTI"] = time.perf_counter() - t0
    log(f"  {tracer}: virtual patient written to {patient_dir.name}/")
    return vp, patient_dir, manifest, timings


def _read_back_step(vp, tracer: str, patient_dir: Path, manifest: dict, out: Path, timings: dict):
    """The CT read back through DICOM as a real patient's would be, density and materials, the
    labels through DICOM SEG, organ masses against the phantom's."""
    from persodose.io.image import write_image
    from persodose.io.load import load_ct
    from persodose.io.seg import read_seg, write_seg
    from persodose.metrics.organ import label_sums
    from persodose.physics.materials import ct_to_density_and_materials, materials_table

    ct, ct_info = load_ct(patient_dir / manifest["paths"]["ct"])
    labels = vp.labels
    if not ct.same_geometry(labels):
        raise RuntimeError("the CT read back from DICOM does not sit on the phantom's geometry")
    hu_err = float(np.max(np.abs(ct.array - np.clip(vp.ct.array, -1024, 3071))))
    density, materials, mats = ct_to_density_and_materials(ct)
    out.mkdir(parents=True, exist_ok=True)
    write_image(density, out / "density.nii.gz")
    write_image(materials, out / "materials.nii.gz")
    (out / "materials.json").write_text(json.dumps(materials_table(mats), indent=2))
    seg_path = write_seg(labels, dict(vp.label_names), out / "labels_seg.dcm", ct_info.files)
    seg_back, _ = read_seg(seg_path, reference=ct)
    seg_ok = bool(np.array_equal(seg_back.array, labels.array))
    res = TracerResult(tracer, vp.nuclide, patient_dir, ct, labels, dict(vp.label_names), density, materials,
                       [m.name for m in mats], timings_s=timings)
    res.checks.append(["CT read back from DICOM: max |HU error|", f"{hu_err:.2f} HU", "< 1 HU (int16 storage)"])
    res.checks.append(["labels written as DICOM SEG and read back", "identical" if seg_ok else "DIFFERENT",
                       "identical"])
    # organ masses: CT-derived density x volume against the phantom's nominal masses
    mass_g = label_sums(density, labels, res.label_names, weights=np.full(density.array.size, density.voxel_volume_ml))
    for name, m in mass_g.items():
        nominal = vp.organ_masses_g.get(name)
        if nominal is not None and m != 0:
            res.mass_rows.append([name, float(nominal), float(m), 100.0 * (m / nominal - 1.0)])
    return res, ct_info


def _emission_step(res: TracerResult, vp, patient_dir: Path, manifest: dict, ct_info) -> list:
    """Emission images back through DICOM (once: the same time points feed the dosimetry), onto
    the CT grid, organ activities against the truth."""
    from persodose.metrics.organ import label_sums
    from persodose.workflows.internal import load_time_points

    nm_cal = next((f["calibration_cps_per_mbq"] for f in manifest["frames"] if f.get("calibration_cps_per_mbq")), None)
    points, _ = load_time_points([patient_dir / f["dicom_path"] for f in manifest["frames"]], vp.nuclide,
                                 calibration_cps_per_mbq=nm_cal, ct_info=ct_info)
    for tp, truth in zip(points, vp.truth_activity):
        info, hours, activity = tp.info, tp.time_s / 3600.0, tp.activity  # Bq at mid-frame, decay correction undone
        on_ct = activity.resample_to(res.ct)
        res.checks.append([f"{info.modality} {hours:6.1f} h: activity total kept by resampling",
                           f"{on_ct.total() / activity.total():.6f}" if activity.total() else "n/a",
                           "1 (sum-preserving)"])
        res.frames_on_ct.append((hours, on_ct))
        measured = label_sums(on_ct, res.labels, res.label_names)
        true = label_sums(truth.resample_to(res.ct), res.labels, res.label_names)
        for name in res.label_names.values():
            res.organ_measured_bq.setdefault(name, []).append(measured[name])
            res.organ_true_bq.setdefault(name, []).append(true[name])
        res.series_rows.append([info.modality, info.series_description, info.acquisition_datetime.isoformat(sep=" "),
                                f"{hours:.2f}", info.units, f"{activity.total() / 1e6:.1f}"])
    return points


def _internal_step(res: TracerResult, vp, points, settings: DemoSettings, ct_info, out: Path, log) -> None:
    """Internal dosimetry, twice: (1) the clinical chain from the DICOM images; (2) every method
    on the TRUE time-integrated activity with Monte Carlo as the reference, which isolates the
    dose-calculation error (the comparison of the SINFONIA FDG study)."""
    from persodose.workflows.internal import InternalSettings, run_internal, write_outputs

    isettings = InternalSettings(vp.nuclide, tia_method="dynamic" if vp.nuclide == "F-18" else "auto",
                                 method_options={"mc": {"decays": settings.mc_decays}},
                                 kernel_decays=settings.kernel_decays, kernel_cache=settings.kernel_cache,
                                 seed=12345 + settings.seed)
    if vp.nuclide == "Lu-177" and _dblurdosenet_available():  # the CNN works on the SPECT images themselves
        isettings.methods = (*isettings.methods, "dblurdosenet")
    quiet = lambda m: log(m) if "kernel" in m else None  # noqa: E731
    res.internal_images = run_internal(res.ct, points, isettings, labels=res.labels, label_names=res.label_names,
                                       log=quiet)
    write_outputs(res.internal_images, out / "internal_from_images", ct_files=ct_info.files,
                  title=f"persodose internal dosimetry: {res.tracer}, from the DICOM images")
    # same dose grid as the image run, so that the kernels are shared
    isettings.dose_voxel_mm = float(res.internal_images.density.spacing_zyx_mm[0])
    # the reference: stopped at a target uncertainty; F-18's photon part by track length
    limit = dict(settings.mc_reference_decays).get(res.tracer, settings.mc_decays)
    isettings.methods = tuple(m for m in isettings.methods if m != "dblurdosenet")  # no images in this run
    if _dnn_available(vp.nuclide):  # predicted patient-specific kernels, beside the classical methods and MC
        isettings.methods = (*isettings.methods, "dnn")
    isettings.method_options = {"mc": {"decays": int(limit), "target_uncertainty": settings.mc_reference_target,
                                       "photon_estimator": "tle" if vp.nuclide == "F-18" else "analog"}}
    res.internal_truth = run_internal(res.ct, [], isettings, labels=res.labels, label_names=res.label_names,
                                      tia_override=vp.truth_tia, log=quiet)
    write_outputs(res.internal_truth, out / "internal_true_tia", ct_files=ct_info.files,
                  title=f"persodose internal dosimetry: {res.tracer}, methods on the true TIA")


def _shipped_network_available(weights: str, modules: tuple[str, ...]) -> bool:
    """Whether ``modules`` and the shipped weights ``weights`` are there (the demo runs without them)."""
    import importlib.util

    if any(importlib.util.find_spec(m) is None for m in modules):
        return False
    try:
        from persodose.dl.weights_registry import verify_weights

        verify_weights(weights)
    except Exception:  # noqa: BLE001 - any missing piece: the demo goes on without the network
        return False
    return True


def _dblurdosenet_available() -> bool:
    from persodose.dose.dblurdosenet import DEFAULT_WEIGHTS

    return _shipped_network_available(DEFAULT_WEIGHTS, ("torch",))


def _dnn_available(nuclide: str) -> bool:
    from persodose.dose.dnn import DEFAULT_WEIGHTS

    return nuclide in DEFAULT_WEIGHTS and _shipped_network_available(DEFAULT_WEIGHTS[nuclide], ("torch",))


def _builtin_segmenter_available() -> bool:
    from persodose.segmentation.builtin import SHIPPED_WEIGHTS

    return _shipped_network_available(SHIPPED_WEIGHTS, ("torch", "monai"))


def segmentation_check(res: TracerResult) -> dict:
    """The CT segmented by the ``builtin`` U-Net against the patient's true labels: Dice per organ,
    and (with the CT dose) each organ's CT dose under the automatic and the true labels."""
    from persodose.grid import Kind
    from persodose.metrics.segmentation import dice
    from persodose.segmentation import segment
    from persodose.segmentation.builtin import organ_classes

    t0 = time.perf_counter()
    auto = segment(res.ct, "builtin")
    seconds = time.perf_counter() - t0
    classes = list(auto.names.values())
    truth = res.labels.with_array(organ_classes(np.asarray(res.labels.array), res.label_names, classes), Kind.LABELS)
    means = [{}, {}]
    if res.ct_dose is not None:  # the CT dose of each organ (energy over mass) under either label set
        from persodose.metrics.organ import mass_weighted_means

        cd = res.ct_dose
        means = [mass_weighted_means(cd.dose_mgy, lab.resample_to(cd.dose_mgy, "nearest"), auto.names, cd.density)
                 for lab in (truth, auto.labels)]
    rows = []
    for i, c in enumerate(classes, start=1):
        t, a = np.asarray(truth.array) == i, np.asarray(auto.labels.array) == i
        if t.any():
            rows.append([c, dice(a, t), means[0].get(c), means[1].get(c)])
    return {"rows": rows, "mean_dice": float(np.mean([r[1] for r in rows])), "seconds": seconds}


def _ct_step(res: TracerResult, settings: DemoSettings, ct_info, out: Path) -> None:
    """The CT half of the PET/CT: helical scan with tube-current modulation from the headers."""
    from persodose.mc import MCSettings
    from persodose.workflows.ct import CT_TRANSPORT, ct_dose, write_ct_outputs

    res.ct_dose = ct_dose(res.ct, ct_info, labels=res.labels, names=res.label_names, n_photons=settings.ct_photons,
                          dose_voxel_mm=settings.ct_dose_voxel_mm, ctdi_photons=max(settings.ct_photons // 2, 1000),
                          settings=MCSettings(n_batches=8, seed=777 + settings.seed, transport=CT_TRANSPORT))
    write_ct_outputs(res.ct_dose, out / "ct_dose", ct_files=ct_info.files,
                     title="persodose CT dosimetry: the virtual patient's PET/CT scan")


#: Organ groups of the method comparison (the issue asks for lung and bone apart from soft tissue).
ORGAN_GROUPS = {
    "soft tissue": ("liver", "spleen", "kidney_left", "kidney_right", "heart", "brain", "bladder", "stomach",
                    "lesion_liver", "lesion_pancreas", "lesion_lymph_node"),
    "lung": ("lung_left", "lung_right"),
    "bone": ("spine", "pelvis", "skull", "ribs", "red_marrow", "lesion_bone"),
}


def method_comparison(result) -> tuple[list[str], list[list]]:
    """Organ mean-dose errors (%) of each method against Monte Carlo, by organ group, with voxel MRAE."""
    mc = {r.name: r for r in result.organ_tables.get("mc", [])}
    cols = ["method", "voxel MRAE (%) above 10% of max"]
    organs = [(g, o) for g, names in ORGAN_GROUPS.items() for o in names if o in mc and mc[o].n_voxels]
    cols += [f"{o} ({g})" for g, o in organs]
    cols += [f"max |error| {g} (%)" for g in ORGAN_GROUPS]
    rows = []
    for method, comp in result.comparison.items():
        tab = {r.name: r for r in result.organ_tables[method]}
        errs = {o: 100.0 * (tab[o].mean_gy / mc[o].mean_gy - 1.0) for _, o in organs if mc[o].mean_gy > 0}
        row = [method.upper(), comp["voxel"].get("mrae_percent")] + [errs.get(o) for _, o in organs]
        for g, names in ORGAN_GROUPS.items():
            vals = [abs(errs[o]) for o in names if o in errs]
            row.append(max(vals) if vals else None)
        rows.append(row)
    return cols, rows


def method_comparison_lines(result) -> list[str]:
    cols, rows = method_comparison(result)
    k = len(ORGAN_GROUPS)
    out = [f"{'method':6s} {'MRAE % >10%max':>14s} " + " ".join(f"{c.split(' ', 2)[-1]:>22s}" for c in cols[-k:])]
    for r in rows:
        out.append(f"{r[0]:6s} {r[1]:14.1f} " + " ".join(f"{v:22.1f}" if v is not None else f"{'-':>22s}"
                                                          for v in r[-k:]))
    return out


def _nuclide_rows(name: str) -> list[list]:
    from persodose.physics.radionuclides import get_nuclide

    nuc = get_nuclide(name)
    rows = [["half-life", f"{nuc.half_life_s / 86400:.4g} d" if nuc.half_life_s > 86400 else f"{nuc.half_life_s / 60:.4g} min"]]
    for kind, energy in nuc.mean_energy_per_decay_mev().items():
        if energy > 0:
            rows.append([f"mean {kind} energy per decay", f"{energy:.5f} MeV"])
    rows.append(["electrons (non-penetrating) per decay", f"{nuc.electron_energy_per_decay_mev():.5f} MeV"])
    rows.append(["photons per decay", f"{nuc.photon_energy_per_decay_mev():.5f} MeV"])
    return rows


def build_report(results: list[TracerResult], settings: DemoSettings, path: Path, timings: dict[str, float]) -> Path:
    """Write the demo's HTML report: one group of sections per tracer."""
    from persodose.report.html import Report

    rep = Report("persodose demo: virtual patient")
    rep.text("A virtual adult patient made by persodose, written as DICOM and read back through the same "
             "path as a real patient's images. Everything below was computed from the DICOM files.")
    rep.table(["setting", "value"], [["voxel size (mm)", settings.voxel_mm], ["seed", settings.seed],
                                    ["tracers", ", ".join(settings.tracers)]])
    for res in results:
        _patient_section(rep, res)
        _emission_section(rep, res)
        if res.internal_truth is not None:
            _methods_section(rep, res)
        if res.internal_images is not None:
            _clinical_chain_section(rep, res)
        if res.ct_dose is not None:
            _ct_section(rep, res)
        if res.segmentation is not None:
            _segmentation_section(rep, res)
        rep.table(["radionuclide data (ICRP-107)", "value"], _nuclide_rows(res.nuclide))
        rep.table(["check", "result", "expected"], res.checks, caption="Checks")
        rep.table(["step", "seconds"], [[k, round(v, 2)] for k, v in res.timings_s.items()])
    rep.table(["stage", "seconds"], [[k, round(v, 2)] for k, v in timings.items()], caption="Run time")
    return rep.write(path)


def _patient_section(rep, res: TracerResult) -> None:
    """Series read, CT, density, materials, labels and organ masses."""
    from persodose.report import figures

    rep.heading(f"{res.tracer} ({res.nuclide})")
    rep.table(["modality", "description", "acquired", "hours p.i. (mid-frame)", "units",
               "activity in the field of view at mid-frame (MBq)"], res.series_rows,
              caption="Series read from DICOM")
    rep.figure(figures.slices_figure([
        ("CT", res.ct, {"cmap": "gray", "vmin": -1000, "vmax": 1000}),
        ("density", res.density, {"cmap": "viridis", "vmin": 0, "vmax": 2.0}),
        ("materials", res.materials, {"cmap": "tab20", "vmin": 0, "vmax": 19, "interpolation": "nearest",
                                      "label": "material index"}),
    ], overlay_labels=res.labels), caption="CT, mass density (Schneider et al. 2000) and material classes")
    rep.figure(figures.labels_figure(res.labels, res.label_names), caption="Organ and lesion labels")
    if res.mass_rows:
        rep.table(["organ", "phantom mass (g)", "mass from CT density (g)", "difference (%)"], res.mass_rows,
                  caption="Organ masses: phantom definition vs the CT-derived density")


def _emission_section(rep, res: TracerResult) -> None:
    """Emission images on the CT grid and organ activities measured against the truth."""
    from persodose.metrics.organ import label_sums
    from persodose.report import figures

    hours = np.array([h for h, _ in res.frames_on_ct])
    frames = [(f"{h:.1f} h", g.to_concentration().with_array(g.to_concentration().array / 1e3, unit="kBq/mL"))
              for h, g in res.frames_on_ct]
    if len(frames) > 6:
        frames = [frames[i] for i in np.linspace(0, len(frames) - 1, 6).round().astype(int)]
    vmax = float(np.percentile(np.concatenate([f.array.max(axis=1).ravel() for _, f in frames]), 99.5))
    rep.figure(figures.mip_row(frames, unit="kBq/mL", vmax=vmax),
               caption="Emission images on the CT grid (coronal maximum-intensity projections)")
    # organs with specific uptake, ranked by the highest true mean concentration
    n_vox = label_sums(np.ones(res.labels.array.size), res.labels, res.label_names)
    organs = [n for n in res.organ_true_bq if max(res.organ_true_bq[n]) > 0 and n_vox.get(n, 0) > 0]
    organs.sort(key=lambda n: -max(res.organ_true_bq[n]) / n_vox[n])
    rep.figure(figures.curves_figure(hours, {n: (np.array(res.organ_measured_bq[n]) / 1e6,
                                                 np.array(res.organ_true_bq[n]) / 1e6) for n in organs[:8]},
                                     "organ activity (MBq)", log=True),
               caption="Organ activity measured in the images (markers) and true (lines) for the organs "
                       "with the highest uptake; the difference is the partial-volume effect of the "
                       "scanner's resolution")
    totals = [sum(res.organ_true_bq[n][i] for n in res.organ_true_bq) for i in range(len(hours))]
    rows = [[n] + [100.0 * (mi / ti - 1.0) if ti > 1e-3 * tot else "n/a"
                   for mi, ti, tot in zip(res.organ_measured_bq[n], res.organ_true_bq[n], totals)] for n in organs]
    rep.table(["organ"] + [f"{h:.2f} h" for h in hours], rows,
              caption="Measured / true organ activity - 1 (%) at each time point, organs by uptake; "
                      "n/a where the organ holds under 0.1% of the activity. Low-uptake organs next to "
                      "hot ones (bone, lungs) gain activity by spill-in.")


def _methods_section(rep, res: TracerResult) -> None:
    """Every dose method on the true TIA against Monte Carlo."""
    truth = res.internal_truth
    rep.heading(f"{res.tracer}: dose methods against Monte Carlo (true TIA)")
    rep.text("Every method applied to the true time-integrated activity, Monte Carlo on the CT's "
             "densities and materials as the reference; organ mean-dose errors in % (the comparison of "
             "the SINFONIA FDG study). Full outputs: " f"{res.tracer}/internal_true_tia/report.html.")
    cols, rows = method_comparison(truth)
    rep.table(cols, rows)
    mc_rows = sorted((r for r in truth.organ_tables["mc"] if r.n_voxels), key=lambda r: -r.mean_gy)
    unc = truth.uncertainty_mc
    rep.table(["organ", "MC mean dose (Gy)", "D98 (Gy)", "D2 (Gy)"],
              [[r.name, r.mean_gy, r.d_gy.get("D98"), r.d_gy.get("D2")] for r in mc_rows[:15]],
              caption=f"Monte Carlo organ doses, {truth.mc_info.get('decays', 0):.3g} decays; "
                      f"median voxel uncertainty in the body "
                      f"{100 * float(np.median(unc.array[truth.labels.array > 0])):.1f} %")


def _clinical_chain_section(rep, res: TracerResult) -> None:
    """Monte Carlo dose from the images' TIA against the dose from the true TIA."""
    rep.heading(f"{res.tracer}: the clinical chain from the DICOM images")
    true = {r.name: r.mean_gy for r in res.internal_truth.organ_tables["mc"]}
    shown = [m for m in ("mc", "dsv", "dblurdosenet") if m in res.internal_images.organ_tables]
    img = {m: {r.name: r.mean_gy for r in res.internal_images.organ_tables[m]} for m in shown}
    rep.table(["organ", "MC on true TIA (Gy)"] + [f"{m.upper()} from images: difference (%)" for m in shown],
              [[n, true[n]] + [100 * (img[m][n] / true[n] - 1) if n in img[m] else None for m in shown]
               for g in ORGAN_GROUPS.values() for n in g if n in true and true[n] > 0],
              caption="Doses from the images (TIA fitted to the SPECT/PET frames: partial-volume, noise, "
                      "sampling) against Monte Carlo on the true TIA. DBLURDOSENET works on the frames "
                      "themselves (dose rate per frame by the network, integrated voxel-wise) and is meant to "
                      f"undo the SPECT's blur. Full outputs: {res.tracer}/internal_from_images/report.html.")


def _ct_section(rep, res: TracerResult) -> None:
    """Organ doses and effective dose of the CT scan."""
    cd = res.ct_dose
    rep.heading(f"{res.tracer}: dose from the CT scan")
    rep.text("Helical CT with tube-current modulation read from the DICOM headers, Monte Carlo on the "
             "patient's density and materials, calibrated to the header CTDIvol with a CTDI-phantom "
             f"simulation. Full outputs: {res.tracer}/ct_dose/report.html.")
    rows = sorted((r for r in cd.organs if r.mass_weighted_mean_gy is not None and r.mass_g),
                  key=lambda r: -r.mass_weighted_mean_gy)
    rep.table(["organ", "mean dose (mGy)", "uncertainty (%)"],
              [[r.name, 1e3 * r.mass_weighted_mean_gy, r.uncertainty_percent] for r in rows[:15]])
    e = cd.effective_dose
    rep.table(["quantity", "value"],
              [["CTDIvol (header mean, mGy)", cd.calibration.ctdivol_target_mgy],
               ["effective dose (mSv)", e.effective_dose_msv if e else None],
               ["ICRP 103 weight covered by the labels", e.covered_weight if e else None],
               ["tissues missing from the labels", ", ".join(e.missing_tissues) if e else ""]])


def _segmentation_section(rep, res: TracerResult) -> None:
    seg = res.segmentation
    rep.heading(f"{res.tracer}: automatic segmentation of the CT")
    rep.text("The CT segmented by persodose's builtin residual U-Net (weights trained on virtual patients, "
             "none of them this one), compared with the patient's true labels; the CT dose of each organ "
             f"under either label set. Segmentation took {seg['seconds']:.0f} s.")
    rep.table(["organ", "Dice", "CT dose, true labels (mGy)", "CT dose, automatic labels (mGy)"],
              [[r[0], round(r[1], 3), r[2], r[3]] for r in seg["rows"]])


def _record_step(results: list[TracerResult], work: Path, log) -> dict | None:
    """Both exams of the virtual patient (SPECT/CT therapy, PET/CT with its CT) in one dose record:
    ``record.sqlite`` and ``record/`` (cumulative organ doses with uncertainties, effective dose, detriment).
    Skipped, with a line, without the ``record`` extra (SQLAlchemy)."""
    import importlib.util

    dirs = [work / r.tracer / "internal_from_images" for r in results if r.internal_images is not None]
    dirs += [work / r.tracer / "ct_dose" for r in results if r.ct_dose is not None]
    if importlib.util.find_spec("sqlalchemy") is None or len(dirs) < 2:
        log("  record: skipped (needs the 'record' extra and two exams)")
        return None
    from persodose.record.report import build_report as record_report
    from persodose.record.report import write_report
    from persodose.record.result import read_result
    from persodose.record.store import add_exam, load_exams, load_patient, open_record

    engine, md = open_record(str(work / "record.sqlite"))
    for d in dirs:
        exam, fields = read_result(d, patient_id="VIRTUAL-PATIENT")
        add_exam(engine, md, exam, sex=fields["sex"], birth_date=fields["birth_date"])
    doc = record_report(load_patient(engine, md, "VIRTUAL-PATIENT"), load_exams(engine, md, "VIRTUAL-PATIENT"))
    write_report(doc, work / "record")
    log(f"  record: {len(dirs)} exams, cumulative effective dose {doc['cumulative_effective_dose_msv']:.3g} mSv "
        f"(record/report.html)")
    return {"exams": len(dirs), "cumulative_effective_dose_msv": doc["cumulative_effective_dose_msv"]}


def run_demo(out: str | os.PathLike, settings: DemoSettings | None = None, log=print) -> Path:
    """Run the whole demo into ``out`` (replaced atomically) and return the report path."""
    settings = settings or DemoSettings()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    with atomic_dir(out) as work:
        results = []
        for tracer in settings.tracers:
            t0 = time.perf_counter()
            results.append(run_tracer(tracer, settings, work, log=log))
            timings[tracer] = time.perf_counter() - t0
        record = _record_step(results, work, log)
        t0 = time.perf_counter()
        build_report(results, settings, work / "report.html", timings)
        timings["report"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_start
        write_provenance(work / "provenance.json", "demo", settings=settings, timings_s=timings,
                         checks={r.tracer: [{"check": c[0], "result": c[1], "expected": c[2]} for c in r.checks]
                                 for r in results},
                         record=record,
                         finished_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    log(f"report: {Path(out) / 'report.html'} ({timings['total']:.1f} s)")
    return Path(out) / "report.html"
