"""Internal dosimetry workflow: emission images at several time points to dose maps and organ doses.

Steps (each a call into the package's pure functions):

1. Emission series (PET or SPECT, DICOM or images with stated times) become activity maps
   (Bq per voxel) at the mid-frame time after injection, with the scanner's decay correction
   undone (reference START, ADMIN or NONE, from the DICOM header).
2. Everything goes onto one cubic dose grid covering the CT (default voxel: the emission
   image's): the CT by linear interpolation, then density and materials (Schneider 2000);
   activity by sum-preserving resampling; labels by nearest neighbour.
3. Time-integrated activity per voxel (:func:`persodose.kinetics.tia.tia_map`) and per organ
   (model selection by AICc).
4. Absorbed dose by each requested method: ``led``, ``ssv``, ``dsv``, ``msv`` (kernels from the
   Monte Carlo engine, cached) and ``mc`` (Monte Carlo on the patient's density and materials).
5. Organ statistics, DVHs, organ-level MIRD, and the comparison of every method against
   Monte Carlo when it was run.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from persodose.errors import InputError
from persodose.grid import Grid, Kind, cubic_grid_over
from persodose.io.emission import TimePoint, load_time_points  # noqa: F401 (re-exported)
from persodose.report.internal import SUMMARY_ORGANS_MAX, build_report, comparison_rows  # noqa: F401 (re-exported)

dose_grid_for = cubic_grid_over  # the name this module used to define

#: Methods run when none are chosen (every registered method can be chosen by name).
DEFAULT_METHODS = ("led", "ssv", "dsv", "msv", "mc")
#: Voxel relative metrics (MRAE, RE) against Monte Carlo use voxels above this fraction of its maximum.
VOXEL_METRIC_THRESHOLD = 0.1


@dataclass
class InternalSettings:
    """Settings of an internal-dosimetry run (serialised into the provenance)."""

    nuclide: str
    methods: tuple[str, ...] = DEFAULT_METHODS  #: registered dose methods (persodose.dose.available_methods())
    #: each method's own settings, {method: {field: value}} (values may be strings, as from the CLI)
    method_options: dict = field(default_factory=dict)
    tia_method: str = "auto"  #: persodose.kinetics.tia.METHODS, or "dynamic" (frames integrated over their intervals)
    dose_voxel_mm: float | None = None  #: cubic dose voxel; default the emission image's largest spacing
    mc_backend: str = "cpu"  #: "cpu" or "cuda": where the Monte Carlo method and new kernels run
    seed: int = 12345
    kernel_decays: int = 1_000_000  #: decays per kernel when a kernel is computed
    kernel_size: int | None = None  #: default persodose.mc.kernels.default_kernel_size
    kernel_cache: str | None = None  #: directory of cached kernels (default ~/.cache/persodose)
    dose_rate: bool = False  #: also dose rate (Gy/s) at each time point for the convolution methods
    registration: str = "rigid"  #: "rigid" or "affine": registration of time points that carry their own CT
    #: stated relative standard uncertainties {calibration, activity, recovery, mass} (fractions; see
    #: persodose.dose.uncertainty.UncertaintySettings): every organ and lesion dose gets a budget
    uncertainty: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from persodose.physics.radionuclides import get_nuclide

        from persodose.dose.registry import available_methods, get_spec

        self.nuclide = get_nuclide(self.nuclide).name
        self.methods = tuple(str(m).strip().lower() for m in self.methods)
        if not self.methods:
            raise InputError(f"choose at least one dose method from {', '.join(available_methods())}")
        for m in self.methods:
            get_spec(m)  # an unknown name lists the registered methods
        self.method_options = {str(k).lower(): dict(v) for k, v in (self.method_options or {}).items()}
        for m, options in self.method_options.items():
            if m not in self.methods:
                raise InputError(f"settings given for dose method {m!r}, which is not run "
                                 f"(methods: {', '.join(self.methods)})")
            get_spec(m).make_settings(options)  # validated now, not after an hour of work
        if self.dose_voxel_mm is not None and not (0.5 <= self.dose_voxel_mm <= 12.0):
            raise InputError(f"dose voxel must lie within 0.5-12 mm, got {self.dose_voxel_mm}")
        from persodose.mc.engine import check_backend

        check_backend(self.mc_backend, require_device=False)
        if self.registration not in ("rigid", "affine"):
            raise InputError(f"registration must be 'rigid' or 'affine', got {self.registration!r}")
        from persodose.dose.uncertainty import UncertaintySettings

        self.uncertainty = {k: v for k, v in UncertaintySettings.of(self.uncertainty).to_dict().items()
                            if v is not None and v is not False}


@dataclass
class InternalResult:
    settings: InternalSettings
    ct: Grid
    density: Grid
    materials: Grid
    labels: Grid | None
    label_names: dict[int, str]
    time_points: list[TimePoint]
    activities: list[Grid]  #: on the dose grid
    tia: Grid
    tia_report: dict
    organ_kinetics: dict
    material_list: tuple = ()
    doses: dict[str, Grid] = field(default_factory=dict)
    uncertainties: dict[str, Grid] = field(default_factory=dict)  #: relative, of the stochastic methods
    method_info: dict[str, dict] = field(default_factory=dict)  #: each method's own figures (MC decays, ...)
    dose_rates: dict[str, list[Grid]] = field(default_factory=dict)
    organ_tables: dict[str, list] = field(default_factory=dict)  #: method -> [OrganDoseRow] (Gy)
    #: method -> {structure: persodose.dose.uncertainty.DoseUncertainty} (combined uncertainty and budget)
    organ_uncertainty: dict[str, dict] = field(default_factory=dict)
    #: organs whose kinetics (and so dose) are unreliable, with the reasons (kinetics.unreliable_organs)
    unreliable_kinetics: list = field(default_factory=list)
    organ_mird: list[dict] = field(default_factory=list)
    comparison: dict[str, dict] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def uncertainty_mc(self) -> Grid | None:
        """Relative uncertainty of the Monte Carlo dose, if it ran."""
        return self.uncertainties.get("mc")

    @property
    def mc_info(self) -> dict:
        """The Monte Carlo run's figures (decays, decays per second, energy balance), if it ran."""
        return self.method_info.get("mc", {})


# --------------------------------------------------------------------------- run
def kernel_set(nuclide: str, voxel_mm: float, media: Sequence[str], settings: InternalSettings, log=print):
    """The voxel S-value kernels of ``media`` for ``nuclide`` at ``voxel_mm`` (cached Monte Carlo)."""
    from persodose.dose.kernels import KernelSet
    from persodose.mc.kernels import cached_kernel

    return KernelSet.of([cached_kernel(nuclide, voxel_mm, m, settings.kernel_size, settings.kernel_decays,
                                       settings.kernel_cache, settings.seed, log=log, backend=settings.mc_backend)
                       for m in media])


def run_internal(ct: Grid, time_points: Sequence[TimePoint], settings: InternalSettings,
                 labels: Grid | None = None, label_names: dict[int, str] | None = None,
                 tia_override: Grid | None = None, log=print) -> InternalResult:
    """Run the whole internal-dosimetry chain; see the module docstring.

    Args:
        ct: the CT in HU (its geometry defines the dose grid's field of view).
        time_points: emission images as activity (Bq per voxel) at times after injection.
        settings: nuclide, methods and numerical settings.
        labels: organ/lesion label map (any geometry; resampled by nearest neighbour).
        label_names: label value -> name.
        tia_override: use this time-integrated activity (Bq s) instead of fitting the images
            (for example the virtual patient's true TIA, to compare dose methods alone).
    """
    from persodose.mc.engine import check_backend

    check_backend(settings.mc_backend)  # no GPU: say so before the long steps
    if not time_points and tia_override is None:
        raise InputError("no emission images and no TIA given")
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    with _timed(timings, "dose grid, density, materials"):
        grid = _dose_grid_step(ct, time_points, settings, labels, label_names)
    for method in settings.methods:  # a target region must be a label: said before the long steps
        _target_region_mask(method_settings(settings, method), grid["labels"], grid["names"])
    with _timed(timings, "registration"):
        activities, registration = _activities_step(ct, time_points, grid["ref"], settings)
    with _timed(timings, "time-integrated activity"):
        tia, tia_report, organ_kin = _tia_step(activities, time_points, grid, settings, tia_override)
    tia_report["registration"] = registration
    if not registration:
        del timings["registration"]
    result = InternalResult(settings, grid["ct"], grid["density"], grid["materials"], grid["labels"], grid["names"],
                            list(time_points), activities, tia, tia_report, organ_kin,
                            material_list=tuple(grid["material_list"]))
    for method in settings.methods:
        with _timed(timings, f"dose: {method}"):
            _dose_step(result, method, log)
    with _timed(timings, "organ statistics and comparison"):
        _organ_step(result, log)
        _comparison_step(result)
    timings["total"] = time.perf_counter() - t_all
    result.timings_s = timings
    return result


class _timed:
    """Context manager adding the seconds its block took to ``timings[name]``."""

    def __init__(self, timings: dict[str, float], name: str):
        self.timings, self.name = timings, name

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.timings[self.name] = self.timings.get(self.name, 0.0) + time.perf_counter() - self.t0
        return False


def _dose_grid_step(ct: Grid, time_points, settings: InternalSettings, labels, label_names) -> dict:
    """The cubic dose grid over the CT, the CT, density and materials on it, and the labels."""
    from persodose.physics.materials import ct_to_density_and_materials

    voxel = settings.dose_voxel_mm or (max(time_points[0].activity.spacing_zyx_mm) if time_points else 4.0)
    ref = cubic_grid_over(ct, float(voxel))
    ct_d = ct.resample_to(ref)
    density, materials, mats = ct_to_density_and_materials(ct_d)
    lab = labels.resample_to(ref) if labels is not None else None
    names = dict(label_names or {})
    if lab is not None and not names:
        names = {int(k): f"label_{int(k)}" for k in np.unique(lab.array) if k > 0}
    return {"ref": ref, "voxel_mm": float(voxel), "ct": ct_d, "density": density, "materials": materials,
            "material_list": mats, "labels": lab, "names": names}


def _activities_step(ct: Grid, time_points, ref: Grid, settings: InternalSettings) -> tuple[list[Grid], list[dict]]:
    """Each time point's activity on the dose grid, registered to the CT when it has its own."""
    activities, registration = [], []
    for tp in time_points:
        if tp.ct is None:
            activities.append(tp.activity.resample_to(ref))
            continue
        from persodose.kinetics.register import affine_of, apply_transform, register_ct, rotation_angle_deg

        transform = register_ct(ct, tp.ct, kind=settings.registration, seed=settings.seed % 1000)
        mat, shift = affine_of(transform)
        registration.append({"time_point": tp.label, "kind": settings.registration,
                             "translation_mm": [float(v) for v in shift],
                             "rotation_deg": float(rotation_angle_deg(mat))})
        activities.append(apply_transform(tp.activity, transform, ref))
    return activities, registration


def _tia_step(activities, time_points, grid: dict, settings: InternalSettings, tia_override):
    """Time-integrated activity per voxel (and per organ when there are labels)."""
    from persodose.kinetics.tia import organ_tia, tia_map
    from persodose.physics.radionuclides import get_nuclide

    ref, lab, names = grid["ref"], grid["labels"], grid["names"]
    half_life_s = get_nuclide(settings.nuclide).half_life_s
    times = [tp.time_s for tp in time_points]
    if tia_override is not None:
        tia = tia_override.resample_to(ref) if not tia_override.same_geometry(ref) else tia_override
        return tia, {"method": "given", "total_bq_s": tia.total()}, {}
    if settings.tia_method == "dynamic":
        from persodose.kinetics.tia import dynamic_tia_map

        tia, report = dynamic_tia_map(activities, [tp.time_s for tp in time_points],
                                      [tp.duration_s for tp in time_points], half_life_s)
        return tia, report, {}
    tia, report = tia_map(activities, times, half_life_s, method=settings.tia_method, labels=lab,
                          names=names or None)
    organ_kin: dict = {}
    if lab is not None and names and len(times) >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            organ_kin = organ_tia(activities, times, lab, names, half_life_s)
    return tia, report, organ_kin


def method_settings(settings: InternalSettings, method: str):
    """The resolved settings of ``method`` in this run (its dataclass, validated)."""
    from persodose.dose.registry import get_spec

    return get_spec(method).make_settings(settings.method_options.get(method))


def _target_region_mask(ms, labels: Grid | None, names: dict[int, str]) -> np.ndarray | None:
    """The (z, y, x) mask of a method's ``target_region`` (a label name) on the dose grid, or None.

    Raises:
        InputError: a target region without labels, or not among them.
    """
    from persodose.mc.tally import region_mask

    region = getattr(ms, "target_region", None)
    return None if region is None else region_mask(labels, names, region)


def _dose_step(result: InternalResult, method: str, log) -> None:
    """Dose (and dose rates, for linear methods) by one registered method, into ``result``."""
    from persodose.dose.registry import DoseInputs, get_spec

    s = result.settings
    spec = get_spec(method)
    ms = spec.make_settings(s.method_options.get(method))
    media = tuple(spec.media(ms)) if "kernels" in spec.needs else ()
    voxel_mm = float(result.density.spacing_zyx_mm[0])
    kernels = kernel_set(s.nuclide, voxel_mm, media, s, log) if media else None
    base = dict(nuclide=s.nuclide, density=result.density, materials=result.materials,
                material_list=result.material_list, kernels=kernels, seed=s.seed, backend=s.mc_backend,
                activities=tuple(result.activities), times_s=tuple(tp.time_s for tp in result.time_points))
    from persodose.progress import progress

    if spec.stochastic:
        log(f"  {method}: {spec.summary}")
    with warnings.catch_warnings(record=True) as caught, progress(f"dose by {method}") as update:
        warnings.simplefilter("always")
        inputs = DoseInputs(result.tia, progress=update, **base)
        region = _target_region_mask(ms, result.labels, result.label_names)
        if region is not None:  # the dose inputs carry no labels: the region's mask goes to the method itself
            from persodose.dose.registry import MethodOutput

            out = spec.function(inputs, ms, region_mask=region)
            out = out if isinstance(out, MethodOutput) else MethodOutput(out)
        else:
            out = spec.run(inputs, ms)
        if s.dose_rate and spec.linear and not spec.stochastic:
            # activity in Bq is a TIA per second: the same linear operator gives Gy/s
            rates = [spec.run(DoseInputs(a.with_array(a.array, Kind.TIA), **base), ms).dose for a in result.activities]
            result.dose_rates[method] = [r.with_array(r.array, Kind.DOSE_RATE) for r in rates]
    for w in caught:
        log(f"  warning ({method}): {w.message}")
    result.doses[method] = out.dose
    if out.uncertainty is not None:
        result.uncertainties[method] = out.uncertainty
    if out.info:
        result.method_info[method] = out.info


def _organ_step(result: InternalResult, log) -> None:
    """Organ dose statistics of every method, and organ-level MIRD from the organ TIAs."""
    if result.labels is None:
        return
    import dataclasses

    from persodose.dose.organ_mird import organ_dose_rows as mird_rows
    from persodose.dose.organ_mird import organ_doses
    from persodose.errors import PersodoseError
    from persodose.kinetics import unreliable_organs
    from persodose.metrics.organ import organ_dose_rows

    names = result.label_names
    result.unreliable_kinetics = unreliable_organs(result.organ_kinetics) if result.organ_kinetics else []
    for organ, why in result.unreliable_kinetics:
        log(f"  warning: the dose to {organ} is unreliable: its time-activity fit is ({why})")
    fits = {n: q for n, ok in result.organ_kinetics.items() if (q := getattr(ok, "quality", None)) is not None}
    for method, dose in result.doses.items():
        rows = organ_dose_rows(dose, result.labels, names, density=result.density, method=method)
        result.organ_tables[method] = [
            dataclasses.replace(r, tia_fit=fits[r.name].verdict, note=fits[r.name].summary()) if r.name in fits else r
            for r in rows]
    _uncertainty_step(result)
    lesions = [k for k, v in names.items() if v.startswith("lesion")]
    try:
        result.organ_mird = mird_rows(organ_doses(result.tia, result.labels, result.density, result.settings.nuclide,
                                                  label_names=names, lesion_labels=lesions))
    except PersodoseError as exc:  # e.g. a label the organ model cannot place: the voxel results stand
        log(f"  organ-level MIRD skipped: {exc}")


def _uncertainty_step(result: InternalResult) -> None:
    """Each organ and lesion dose's combined uncertainty and budget (persodose.dose.uncertainty),
    written into the rows' ``uncertainty_percent``."""
    import dataclasses

    from persodose.dose.uncertainty import UncertaintySettings, organ_uncertainties
    from persodose.physics.radionuclides import get_nuclide

    settings = UncertaintySettings.of(result.settings.uncertainty)
    half_life_s = get_nuclide(result.settings.nuclide).half_life_s
    lab = np.asarray(result.labels.array)
    cache: dict = {}  # the organ fits are the same for every method
    mc = {r.name: r.mass_weighted_mean_gy for r in result.organ_tables.get("mc", []) if r.n_voxels}
    for method, rows in result.organ_tables.items():
        unc = result.uncertainties.get(method)
        note = "Monte Carlo batches" if method == "mc" else f"{method}'s own estimate (e.g. an ensemble's spread)"
        against_mc = None
        if unc is None and mc and method != "mc":  # an equivalent estimate: the difference from MC in this run
            note = "difference from Monte Carlo in this run (the method gives no estimate of its own)"
            against_mc = {r.name: abs(r.mass_weighted_mean_gy / mc[r.name] - 1.0) for r in rows
                          if mc.get(r.name) and r.mass_weighted_mean_gy is not None}
        budgets = organ_uncertainties(rows, lab, result.density.array, result.organ_kinetics, half_life_s, settings,
                                      dose=result.doses[method].array if unc is not None else None,
                                      rel_unc=unc.array if unc is not None else None, method_note=note,
                                      tia_cache=cache, method_rel_by_name=against_mc,
                                      dose_map=result.doses[method].array)  # voxel methods: delineation from the map
        result.organ_uncertainty[method] = budgets
        result.organ_tables[method] = [
            dataclasses.replace(r, uncertainty_percent=100.0 * budgets[r.name].relative_sd) if r.name in budgets else r
            for r in rows]


def _comparison_step(result: InternalResult) -> None:
    """Every method against Monte Carlo, when it ran.

    Voxel relative errors use voxels above 10 % of the MC maximum: below, the reference's own
    statistical noise dominates the metric.
    """
    if "mc" not in result.doses:
        return
    from persodose.metrics.compare import compare

    for method, dose in result.doses.items():
        if method != "mc":
            result.comparison[method] = compare(result.doses["mc"], dose, result.labels, result.label_names or None,
                                                threshold_fraction=VOXEL_METRIC_THRESHOLD)


# --------------------------------------------------------------------------- outputs
def uncertainty_document(result: InternalResult) -> dict:
    """What ``organs.json`` says of the uncertainties: the meaning of ``uncertainty_percent``, the
    stated inputs, the limitations, and every structure's budget by method."""
    from persodose.dose.uncertainty import LIMITATIONS, UncertaintySettings

    return {"uncertainty_percent": "combined relative standard uncertainty (k=1) of the organ dose, "
                                   "EANM guidance (Gear et al., EJNMMI 45 (2018) 2456), persodose.dose.uncertainty",
            "stated": UncertaintySettings.of(result.settings.uncertainty).to_dict(), "limitations": LIMITATIONS,
            "budgets": {m: {n: u.to_dict() for n, u in b.items()} for m, b in result.organ_uncertainty.items()}}


def budget_table(result: InternalResult) -> list[dict]:
    """One row per method, structure and budget line (``uncertainty_budget.csv``)."""
    rows = []
    for method, budgets in result.organ_uncertainty.items():
        for name, u in budgets.items():
            for line in u.budget():
                rows.append({"method": method, "name": name, "dose_Gy": u.dose_gy, "sd_Gy": u.sd_gy, **line})
    return rows


def write_outputs(result: InternalResult, out: Path, *, ct_files: Sequence[str] | None = None,
                  inputs: dict | None = None, title: str = "persodose internal dosimetry") -> Path:
    """Dose maps (NIfTI, RTDOSE), organ tables, DVHs, kinetics, comparison, provenance, report."""
    import json

    from persodose.io.image import write_image
    from persodose.metrics.dvh import dvhs_for_labels, write_dvh_csv
    from persodose.metrics.organ import write_organ_rows
    from persodose.outputs import jsonable, atomic_dir, write_provenance

    with atomic_dir(out) as work:
        write_image(result.tia, work / "tia.nii.gz")
        write_image(result.density, work / "density.nii.gz")
        for method, dose in result.doses.items():
            write_image(dose, work / f"dose_{method}.nii.gz")
            if ct_files:
                from persodose.io.rtdose import write_rtdose

                write_rtdose(dose, work / f"dose_{method}_rtdose.dcm", reference_ct_files=list(ct_files),
                             description=f"persodose {method.upper()} {result.settings.nuclide}",
                             summation_type="RECORD")
        for method, rates in result.dose_rates.items():
            for tp, rate in zip(result.time_points, rates):
                write_image(rate, work / f"dose_rate_{method}_{tp.time_s / 3600:.1f}h.nii.gz")
        for method, unc in result.uncertainties.items():
            write_image(unc, work / f"uncertainty_{method}.nii.gz")
        if result.labels is not None:
            all_rows = []
            for method, rows in result.organ_tables.items():
                write_organ_rows(rows, work / f"organs_{method}.csv")
                all_rows.extend(rows)
                dvhs = dvhs_for_labels(result.doses[method], result.labels, result.label_names)
                write_dvh_csv(dvhs, work / f"dvh_{method}.csv")
            write_organ_rows(all_rows, work / "organs.json", nuclide=result.settings.nuclide,
                             unreliable_kinetics=[{"organ": o, "why": w} for o, w in result.unreliable_kinetics],
                             uncertainty=uncertainty_document(result))
            budget_rows = budget_table(result)
            if budget_rows:
                from persodose.metrics.organ import write_table_csv

                write_table_csv(budget_rows, work / "uncertainty_budget.csv")
            if result.organ_mird:
                (work / "organ_mird.json").write_text(json.dumps(jsonable(result.organ_mird), indent=2))
        (work / "kinetics.json").write_text(json.dumps(jsonable({
            "tia_report": result.tia_report, "times_s": [tp.time_s for tp in result.time_points],
            "organs": {k: v.to_dict() if hasattr(v, "to_dict") else v for k, v in result.organ_kinetics.items()},
        }), indent=2, default=str))
        if result.comparison:
            (work / "comparison.json").write_text(json.dumps(jsonable(
                {m: {k: v for k, v in c.items() if k != "mask"} for m, c in result.comparison.items()}),
                indent=2, default=str))
        write_provenance(work / "provenance.json", "internal", settings=result.settings, inputs=inputs or {},
                         timings_s=result.timings_s, monte_carlo=result.mc_info,
                         method_settings={m: method_settings(result.settings, m) for m in result.settings.methods},
                         method_info=result.method_info)
        build_report(result, work / "report.html", title)
    return Path(out) / "report.html"

