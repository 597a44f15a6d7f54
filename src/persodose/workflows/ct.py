"""Patient-specific CT dosimetry: a CT series (with its acquisition headers) to a whole-body dose map.

Steps:

1. Acquisition from the DICOM headers (:func:`persodose.ct.acquisition.acquisition_from_dicom`,
   user overrides first; its warnings, e.g. the fixed-tube-current fallback, are kept and
   reported), scanner preset (given, or guessed from Manufacturer / Model).
2. Helical (or axial) focal-spot positions with 64 positions per rotation; the start angle is
   not recorded in DICOM, so the dose is averaged over 4 start angles spread over 360 degrees
   (:data:`persodose.ct.trajectory.DEFAULT_N_START_ANGLES`).
3. Patient phantom on a cubic dose grid (default 5 mm): HU resampled linearly, then density
   and materials (Schneider et al. 2000); couch and anything else in the CT included.
4. Transport of the whole scan (:mod:`persodose.ct.dose`; kerma approximation at CT energies),
   either all ``n_photons`` or, with a target uncertainty, until the target is met (median
   voxel uncertainty above a fraction of the maximum dose, or an organ's mean dose).
5. Absolute calibration on the simulated CTDI phantom of the scan type, to the header's mean
   CTDIvol or the user's. Head or body, and the phantom (160 or 320 mm), are decided by
   :func:`persodose.ct.protocol.decide_protocol` (the user's ``bowtie`` / ``ctdi_diameter_mm``,
   then the CTDI Phantom Type Code Sequence, Filter Type, Body Part Examined, protocol and
   series descriptions, then the patient's size and anatomy); the rule that decided is logged
   and written out. The water-equivalent diameter per slice and the SSDE (AAPM Reports 220
   and 204) are reported beside CTDIvol.
6. Organ doses (mass-weighted means over the labels, uncertainty from the batches) and the
   ICRP 103 effective dose (partial when tissues are missing).

``method="dl"`` (``persodose ct --method dl``) replaces step 4 by the ``ct-deepdose`` network
(SINFONIA D2.2 section 2.3; :mod:`persodose.dl.ct_deepdose`): every focal-spot position of the
scan (8 per rotation, one start angle) predicted from the patient's density and the cylinder map
rotated to it, summed with each position's share of the tube current; the other steps are the
same. Weights carry the beam they were trained for (kVp, bowtie, dose voxel); other beams are
refused in one line. None are shipped yet: those trained so far are far from this module's MC
on held-out patients (docs/validation_dl.md).

What is approximate: the generic bowtie and tube filtration of the scanner preset (not the
vendor's), a point focal spot without heel effect, no tissue outside the reconstructed
field of view (truncated arms or the over-ranged ends scatter nothing back), the start angle
averaged, and the CTDI chamber modelled as PMMA with an air/PMMA conversion.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping

import numpy as np

from persodose.errors import InputError
from persodose.grid import Grid, Kind
from persodose.mc.tables import TransportSettings
from persodose.report.ct import build_ct_report  # noqa: F401 (re-exported)

__all__ = ["CTDoseResult", "ct_dose", "write_ct_outputs", "build_ct_report", "DEFAULT_PHOTONS",
           "DEFAULT_CTDI_PHOTONS", "CT_TRANSPORT"]

#: Photons of the whole scan by default (about 1-2 % organ-mean uncertainty at 5 mm).
DEFAULT_PHOTONS = 20_000_000
#: Voxels below this density (air outside the body, gas in the airways and bowel) get dose 0 in
#: the map: their dose to air is noisy (tiny masses) and no tissue dose; organ means are unaffected.
AIR_DENSITY_G_CM3 = 0.05
#: Photons of the CTDI calibration run by default.
DEFAULT_CTDI_PHOTONS = 2_000_000
#: Focal-spot positions per rotation of the ``dl`` method (those of its training data, ``ct-sp``).
DL_N_PER_ROTATION = 8
#: Transport of the CT dose by default: the track-length estimator, which scores the collision
#: kerma the CT dose already is (secondary electrons at CT energies travel < 0.1 mm) along every
#: track; measured 2.4x the efficiency of analog for organ means and 5.6x for the map's voxels
#: above 10 % of the maximum, organ means unchanged within statistics
#: (``benchmarks/bench_tle.py``, docs/benchmarks.md).
CT_TRANSPORT = TransportSettings(photon_estimator="tle")


@dataclass
class CTDoseResult:
    """Outcome of :func:`ct_dose`.

    Attributes:
        dose_mgy: whole-body dose map (WBDM), mGy, on the dose grid (kind DOSE, unit ``mGy``).
        uncertainty: voxel relative standard uncertainty.
        ct: the CT on the dose grid (HU); density: g/cm3.
        labels: labels on the dose grid (or None); label_names: value -> name.
        organs: one :class:`~persodose.metrics.organ.OrganDoseRow` per label (Gy); the organ dose
            is ``mass_weighted_mean_gy`` (energy over mass), its ``uncertainty_percent`` from
            the batch spread.
        effective_dose: :class:`persodose.risk.effective_dose.EffectiveDose`, or None without labels.
        acquisition, scanner, positions: the source model used.
        ctdi: :class:`persodose.ct.ctdi.CTDIResult`; calibration: :class:`persodose.ct.dose.Calibration`.
        warnings: acquisition warnings (one line each).
        statistics: photons, batches, seeds, timings, energy balance.
        protocol: :class:`persodose.ct.protocol.ScanProtocol` (head or body, CTDI phantom, rules).
        size_dose: :class:`persodose.ct.protocol.SizeSpecificDose` (Dw per slice, SSDE).
    """

    dose_mgy: Grid
    uncertainty: Grid
    ct: Grid
    density: Grid
    labels: Grid | None
    label_names: dict
    organs: list
    effective_dose: Any
    acquisition: Any
    scanner: Any
    positions: Any
    ctdi: Any
    calibration: Any
    warnings: list = field(default_factory=list)
    statistics: dict = field(default_factory=dict)
    phantom: Any = None
    protocol: Any = None
    size_dose: Any = None

    def acquisition_dict(self) -> dict:
        a = self.acquisition
        return {"kvp": a.kvp, "mode": a.mode, "pitch": a.pitch, "total_collimation_mm": a.total_collimation_mm,
                "rotation_time_s": a.rotation_time_s, "bowtie": a.bowtie, "filter_type": a.filter_type,
                "tube_current_source": a.tube_current_source, "ctdivol_mgy": a.ctdivol_mgy,
                "overrange_mm": a.overrange_mm, "isocentre_xy_mm": list(a.isocentre_xy_mm),
                "scan_range_mm": list(a.scan_range_mm), "slice_z_mm": a.slice_z_mm.tolist(),
                "tube_current_ma": None if a.tube_current_ma is None else a.tube_current_ma.tolist(),
                "relative_current": a.relative_current.tolist(), "provenance": dict(a.provenance)}


def _series_for(ct: Grid, info) -> Any:
    """What acquisition_from_dicom reads: the SeriesInfo, or a stand-in for an image file."""
    if info is not None:
        return info
    stub = SimpleNamespace(extra={}, modality="CT", files=[], label=lambda: "CT image")
    return SimpleNamespace(grid=ct, info=stub)


def _organ_reducer(labels: np.ndarray, n_labels: int, mass_kg: np.ndarray):
    lab = labels.ravel()
    m = mass_kg.ravel()
    organ_mass = np.bincount(lab, weights=m, minlength=n_labels)

    def reduce(dose_gy: np.ndarray) -> np.ndarray:
        e = np.bincount(lab, weights=dose_gy.ravel() * m, minlength=n_labels)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(organ_mass > 0, e / organ_mass, 0.0)

    return reduce, organ_mass


def ct_dose(ct: Grid, info=None, labels: Grid | None = None, names: Mapping[int, str] | None = None,
            scanner=None, overrides: Mapping[str, Any] | None = None, n_photons: int = DEFAULT_PHOTONS,
            dose_voxel_mm: float = 5.0, settings=None, ctdi_photons: int = DEFAULT_CTDI_PHOTONS,
            ctdi_voxel_mm: float = 5.0, ctdi_diameter_mm: float | None = None, log=None,
            target_uncertainty: float | str | None = None, target_above: float = 0.1,
            target_region: str | None = None, method: str = "mc", dl_weights: str | None = None,
            device: str = "cpu") -> CTDoseResult:
    """Whole-body dose of a CT scan, calibrated to CTDIvol (module docstring).

    Args:
        ct: the CT in HU.
        info: its DICOM :class:`~persodose.io.dicom.SeriesInfo` (acquisition headers); ``None``
            for an image file (then ``overrides`` must give kvp, pitch, collimation, rotation
            time, and ``ctdivol_mgy`` or ``tube_current_ma``).
        labels, names: organ label map (any geometry; nearest neighbour onto the dose grid).
        scanner: a :class:`~persodose.ct.scanner.Scanner`, a preset name, or None (guessed).
        overrides: acquisition overrides (:data:`persodose.ct.acquisition.OVERRIDE_KEYS`).
        n_photons: photons of the whole scan.
        dose_voxel_mm: cubic dose voxel, mm.
        settings: :class:`~persodose.mc.engine.MCSettings` (batches, seed).
        ctdi_photons, ctdi_voxel_mm: the calibration run.
        ctdi_diameter_mm: CTDI phantom, 160 or 320 mm (default: decided by
            :func:`persodose.ct.protocol.decide_protocol`; ``overrides["bowtie"]`` = ``head`` /
            ``body`` decides the scan type).
        log: callable for progress lines.
        target_uncertainty: stop the scan's transport at this relative uncertainty (``"2%"`` or
            0.02; ``n_photons`` and ``settings.n_batches`` become the limit; the CTDI run
            keeps its photons).
        target_above: the voxel criterion's dose threshold, fraction of the maximum dose.
        target_region: the criterion is this organ's mean-dose uncertainty (a label name).
        method: ``"mc"`` (Monte Carlo, the reference) or ``"dl"``: the ``ct-deepdose`` network
            (SINFONIA D2.2 section 2.3) predicts each of :data:`DL_N_PER_ROTATION` positions per
            rotation (one start angle, 0) from the density and the cylinder map, summed with
            the tube current; same CTDI calibration, organ and effective doses, no voxel
            uncertainty (``n_photons`` and the targets do not apply).
        dl_weights: ``ct-deepdose`` weights (registered name or file) for ``"dl"``; default the
            shipped weights of the scan's kVp (none are shipped yet: then refused in one line).
        device: where the network runs (``cpu``, ``auto``, ``cuda``).

    Returns:
        :class:`CTDoseResult`; ``statistics["target"]`` says how a run with a target ended.

    Warns:
        persodose.mc.run.TargetNotMetWarning: the photons ran out before the target.
    """
    from persodose.mc.engine import MCSettings

    log = log or (lambda *_: None)
    from persodose.mc.run import TARGET_BATCHES

    settings = settings or MCSettings(n_batches=10 if target_uncertainty is None else TARGET_BATCHES,
                                      transport=CT_TRANSPORT)
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    method = str(method).strip().lower()
    if method not in ("mc", "dl"):
        raise InputError(f"CT dose method must be 'mc' or 'dl', got {method!r}")
    if method == "dl" and target_uncertainty is not None:
        raise InputError("a target uncertainty applies to the Monte Carlo method only (--method mc)")
    _check_inputs(ct, n_photons, settings)
    protocol, size = _protocol_step(ct, info, overrides, ctdi_diameter_mm, log)
    acq, acq_warnings, scanner, positions = _acquisition_step(ct, info, overrides, scanner, log, protocol,
                                                              dl=method == "dl")
    if method == "dl":
        from persodose.dl.ct_deepdose import select_weights

        net = select_weights(acq, float(dose_voxel_mm), dl_weights, device)
        acq_warnings = acq_warnings + net.warnings
    t0 = time.perf_counter()
    phantom, ct_d, lab, label_names = _phantom_step(ct, labels, names, dose_voxel_mm)
    target = _target(target_uncertainty, target_above, target_region, lab, label_names, settings)
    timings["phantom"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ctdi, cal = _calibration_step(acq, scanner, positions, settings, ctdi_photons, ctdi_voxel_mm,
                                  protocol.ctdi_phantom_mm, log)
    size_dose = _size_dose_step(size, cal, protocol, log)
    timings["ctdi calibration"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if method == "dl":
        dose, dl_stats = _dl_step(phantom, positions, acq, cal, net, log, timings)
        organs, eff = _organ_step(None, dose, cal, lab, label_names, phantom, scanner.spectrum(acq.kvp))
        timings["total"] = time.perf_counter() - t_all
        stats_doc = {**dl_stats, "timings_s": timings, "dose_voxel_mm": float(dose_voxel_mm),
                     "dose_grid_shape_zyx": list(dose.shape), "n_positions": len(positions),
                     "n_per_rotation": positions.n_per_rotation, "n_start_angles": positions.n_start_angles,
                     "start_angle": "one start angle, 0 degrees (not recorded in DICOM)", "ctdi_seed": int(settings.seed) + 1}
        return CTDoseResult(dose, None, ct_d, phantom.density, lab, label_names, organs, eff, acq, scanner, positions,
                            ctdi, cal, acq_warnings, stats_doc, phantom, protocol, size_dose)
    run, dose, unc = _transport_step(phantom, positions, lab, n_photons, settings, cal, log, target)
    timings["transport"] = time.perf_counter() - t0
    organs, eff = _organ_step(run, dose, cal, lab, label_names, phantom, scanner.spectrum(acq.kvp))
    timings["total"] = time.perf_counter() - t_all
    stats_doc = {"n_photons": int(run.tally.n_primaries), "n_batches": int(run.tally.n_batches),
                 "seed": int(settings.seed), "ctdi_seed": int(settings.seed) + 1,
                 "batch_ids": run.tally.batch_ids, "photons_per_second": run.photons_per_second,
                 "energy_balance_mev_per_photon": run.energy_balance, "timings_s": timings,
                 "dose_voxel_mm": float(dose_voxel_mm), "dose_grid_shape_zyx": list(dose.shape),
                 "n_positions": len(positions), "n_per_rotation": positions.n_per_rotation,
                 "n_start_angles": positions.n_start_angles,
                 "start_angle": f"averaged over {positions.n_start_angles} start angles (not recorded in DICOM)",
                 "transport": "coupled photon-electron; electrons range-rejected locally at CT energies "
                              "(collision-kerma approximation)",
                 "photon_estimator": settings.transport.photon_estimator,
                 "n_photons_limit": int(n_photons), "n_batches_limit": int(settings.n_batches),
                 "target": run.target}
    return CTDoseResult(dose, unc, ct_d, phantom.density, lab, label_names, organs, eff, acq, scanner, positions,
                        ctdi, cal, acq_warnings, stats_doc, phantom, protocol, size_dose)


def _target(value, above, region, lab, label_names, settings):
    """The scan's :class:`~persodose.mc.tally.UncertaintyTarget` (None without a value).

    Raises:
        InputError: a bad value, a region without labels or not among them, too few batches.
    """
    from persodose.mc.tally import UncertaintyTarget, region_mask

    if value is None:
        if region is not None:
            raise InputError("a target region needs a target uncertainty")
        return None
    mask = None if region is None else region_mask(lab, label_names, region)
    target = UncertaintyTarget(value, float(above), region, mask)
    if int(settings.n_batches) < int(target.min_batches):
        raise InputError(f"a target uncertainty needs at least {target.min_batches} batches, got {settings.n_batches}")
    return target


def _check_inputs(ct: Grid, n_photons: int, settings) -> None:
    from persodose.ct.dose import BODY_THRESHOLD_HU

    if ct.kind not in (Kind.CT, Kind.SCALAR):
        raise InputError(f"expected a CT in HU, got a {ct.kind.value} grid")
    if int(n_photons) < int(settings.n_batches):
        raise InputError(f"--photons must be at least the number of batches ({settings.n_batches})")
    if not np.any(np.asarray(ct.array) > BODY_THRESHOLD_HU):
        raise InputError(f"the CT holds no voxel above {BODY_THRESHOLD_HU:g} HU: no body in the series")


def _protocol_step(ct: Grid, info, overrides, ctdi_diameter_mm, log):
    """Step 0: head or body and the CTDI phantom (:func:`persodose.ct.protocol.decide_protocol`),
    and the patient's size per slice."""
    from persodose.ct.protocol import decide_protocol, patient_size, read_protocol_headers

    size = patient_size(ct)
    scan_range = (overrides or {}).get("scan_range_mm")
    if scan_range is not None:  # the scanned range only (bad values are refused by the acquisition)
        size = size.within(*scan_range)
    bowtie = (overrides or {}).get("bowtie")
    protocol = decide_protocol(read_protocol_headers(info), size, bowtie_override=bowtie,
                               ctdi_phantom_mm=ctdi_diameter_mm)
    log(f"scan type: {protocol.region} ({protocol.region_rule}); CTDI phantom {protocol.ctdi_phantom_mm / 10:g} cm "
        f"({protocol.ctdi_phantom_rule})")
    return protocol, size


def _size_dose_step(size, cal, protocol, log):
    """Dw and SSDE beside the CTDIvol the run is calibrated to (AAPM Reports 220, 204)."""
    from persodose.ct.protocol import size_specific_dose

    sd = size_specific_dose(size, cal.ctdivol_target_mgy, protocol.ctdi_phantom_mm)
    ssde = "n/a" if sd.ssde_mgy is None else f"{sd.ssde_mgy:.3g} mGy"
    log(f"CTDIvol {sd.ctdivol_mgy:.3g} mGy ({sd.ctdi_phantom_mm / 10:g} cm), mean Dw {sd.dw_mean_mm / 10:.1f} cm, "
        f"SSDE {ssde}")
    return sd


def _acquisition_step(ct: Grid, info, overrides, scanner, log, protocol=None, dl: bool = False):
    """Step 1: the acquisition from the headers (warnings kept), the scanner, the focal-spot
    positions (64 per rotation, 4 start angles; with ``dl`` the network's
    :data:`DL_N_PER_ROTATION` and one start angle)."""
    from persodose.ct.acquisition import CTAcquisitionWarning, acquisition_from_dicom
    from persodose.ct.scanner import Scanner, get_scanner, guess_scanner
    from persodose.ct.spectrum import tube_spectrum
    from persodose.ct.trajectory import DEFAULT_N_START_ANGLES, helical_positions

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CTAcquisitionWarning)
        if protocol is None:
            acq = acquisition_from_dicom(_series_for(ct, info), overrides)
        else:
            acq = acquisition_from_dicom(_series_for(ct, info), overrides, default_bowtie=protocol.bowtie,
                                         bowtie_rule=protocol.region_rule, warn_default=protocol.from_patient)
    acq_warnings = [" ".join(str(w.message).split()) for w in caught if issubclass(w.category, CTAcquisitionWarning)]
    for w in caught:  # re-emit so that the CLI prints them
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    tube_spectrum(acq.kvp)  # kVp outside the spectrum model -> InputError now, before any work
    if scanner is None:
        extra = dict(getattr(info, "extra", {}) or {}) if info is not None else {}
        scanner = guess_scanner(extra.get("manufacturer"), extra.get("model"))
    elif not isinstance(scanner, Scanner):
        scanner = get_scanner(str(scanner))
    log(f"acquisition: {acq.kvp:g} kV, {acq.mode}, pitch {acq.pitch:g}, {acq.total_collimation_mm:g} mm, "
        f"{acq.rotation_time_s:g} s, bowtie {acq.bowtie}, tube current from {acq.tube_current_source}; "
        f"scanner {scanner.name}")
    if dl:
        positions = helical_positions(acq, scanner, n_per_rotation=DL_N_PER_ROTATION, start_angle_rad=0.0)
    else:
        positions = helical_positions(acq, scanner, n_per_rotation=64, start_angle_rad="average",
                                      n_start_angles=DEFAULT_N_START_ANGLES)
    return acq, acq_warnings, scanner, positions


def _phantom_step(ct: Grid, labels, names, dose_voxel_mm: float):
    """Step 2: the patient phantom on the dose grid, the labels on it (nearest neighbour)."""
    from persodose.ct.dose import patient_phantom

    phantom, ct_d = patient_phantom(ct, dose_voxel_mm)
    if labels is None:
        return phantom, ct_d, None, {}
    lab = labels.resample_to(ct_d, "nearest")
    lab = lab.with_array(np.asarray(lab.array).astype(np.int64), Kind.LABELS)
    if lab.array.min() < 0:
        raise InputError("the label map holds negative labels")
    label_names = {int(k): str(v) for k, v in (names or {}).items()}
    present = [int(v) for v in np.unique(lab.array) if v > 0]
    for v in present:
        label_names.setdefault(v, f"label_{v}")
    return phantom, ct_d, lab, {k: n for k, n in label_names.items() if k in present}


def _calibration_step(acq, scanner, positions, settings, ctdi_photons, ctdi_voxel_mm, ctdi_diameter_mm, log):
    """Step 3: the CTDI phantom of the scan type (``ctdi_diameter_mm``; None: 160 mm for a
    head bowtie, else 320 mm) on the same scanner model, and the calibration."""
    from dataclasses import replace

    from persodose.ct.ctdi import simulate_ctdi
    from persodose.ct.dose import calibrate

    diameter = ctdi_diameter_mm or (160.0 if acq.bowtie == "head" else 320.0)
    ctdi = simulate_ctdi(acq.kvp, acq.total_collimation_mm, scanner, diameter, acq.bowtie, int(ctdi_photons),
                         ctdi_voxel_mm, replace(settings, seed=int(settings.seed) + 1))
    cal = calibrate(acq, positions, ctdi.ctdiw_gy_per_photon)
    log(f"CTDI {diameter:g} mm: C/P {ctdi.centre_to_periphery:.3f}; CTDIvol target {cal.ctdivol_target_mgy:.3g} mGy "
        f"({cal.ctdivol_source})")
    return ctdi, cal


def _transport_step(phantom, positions, lab, n_photons, settings, cal, log, target=None):
    """Step 4: the whole scan (per-batch organ energies kept), the calibrated map in mGy;
    with a ``target``, until it is met."""
    from persodose.ct.dose import ScanSampler, run_beam_batches

    reducer = None
    if lab is not None:
        reducer, _ = _organ_reducer(np.asarray(lab.array), int(lab.array.max()) + 1, phantom.mass_kg)
    from persodose.progress import progress

    what = f"up to {int(n_photons):.3g} photons" if target is not None else f"{int(n_photons):.3g} photons"
    with progress(f"CT scan: {what}") as update:
        run = run_beam_batches(phantom, ScanSampler(positions), int(n_photons), settings, reducer=reducer,
                               progress=update, target=target)
    if run.target is not None and run.target["met"]:
        from persodose.mc.tally import TargetOutcome

        log(TargetOutcome(**run.target).summary("photons"))
    scale = cal.mgy_per_gy_per_simulated_photon
    air = np.asarray(phantom.density.array) < AIR_DENSITY_G_CM3
    dose = phantom.density.with_array(np.where(air, 0.0, run.dose_per_primary_gy * scale).astype(np.float32),
                                      Kind.DOSE, "mGy")
    unc = phantom.density.with_array(run.relative_uncertainty.astype(np.float32), Kind.SCALAR,
                                     "relative standard uncertainty")
    return run, dose, unc


def _organ_step(run, dose: Grid, cal, lab, label_names, phantom, spectrum):
    """Step 5: organ doses (energy over mass, uncertainty from the batches; without a run, the
    ``dl`` map's means and no uncertainty), red marrow as dose to marrow, and the ICRP 103
    effective dose."""
    if lab is None or not label_names:
        return [], None
    import dataclasses

    from persodose.metrics.organ import organ_dose_rows
    from persodose.risk.effective_dose import effective_dose, tissue_for_label

    if run is not None:
        per_batch = np.asarray(run.reduced) * cal.mgy_per_gy_per_simulated_photon * 1e-3  # (batches, labels) Gy
        mean = per_batch.mean(axis=0)
        sd = per_batch.std(axis=0, ddof=1) / math.sqrt(per_batch.shape[0])
    organs = []
    for row in organ_dose_rows(dose, lab.with_array(np.asarray(lab.array).astype(np.int32)), label_names,
                               phantom.density, method="ct"):
        v = row.label
        if run is None:
            row = dataclasses.replace(row, mass_weighted_mean_gy=1e-3 * float(row.mass_weighted_mean_gy),
                                      uncertainty_percent=None)
        else:
            row = dataclasses.replace(row, mass_weighted_mean_gy=float(mean[v]),
                                      uncertainty_percent=float(100 * sd[v] / mean[v]) if mean[v] > 0 else None)
        if tissue_for_label(row.name) == "red_marrow" and row.n_voxels:
            row = _marrow_row(row, dose, lab, phantom, spectrum)
        organs.append(row)
    dose_gy = {r.name: r.mass_weighted_mean_gy for r in organs}
    eff = effective_dose(dose_gy, {r.name: r.mass_g for r in organs},
                         {r.name: (r.uncertainty_percent or 0.0) / 100 * dose_gy[r.name] for r in organs})
    return organs, eff


def _marrow_row(row, dose: Grid, lab: Grid, phantom, spectrum):
    """Red marrow: its voxels hold a bone-marrow mixture; the dose to that mixture becomes dose to
    marrow with the mu_en ratio over the beam spectrum (:func:`persodose.ct.dose.marrow_dose_factor`)."""
    from persodose.ct.dose import marrow_dose_factor

    m = np.asarray(lab.array) == row.label
    f = marrow_dose_factor(dose.array[m], phantom.mass_kg[m], np.asarray(phantom.materials.array)[m],
                           phantom.material_list, spectrum.energy_mev, spectrum.fluence_per_mas_cm2 * spectrum.energy_mev)
    return row.scaled(f, dose_to_medium_gy=row.mass_weighted_mean_gy,
                      note=f"dose to red marrow = dose to the bone-marrow mixture x {f:.3f} (mu_en ratio, ICRU 46 "
                           "marrow / voxel medium, over the beam spectrum)")


def _dl_step(phantom, positions, acq, cal, net, log, timings):
    """Step 4 of ``dl``: the cylinder map (cached), every position predicted and summed with its
    source photons (:func:`persodose.dl.ct_deepdose.whole_body_dose`), mGy, air set to 0."""
    from persodose.ct.deepdose import uniform_map
    from persodose.dl.ct_deepdose import source_photons_per_position, whole_body_dose
    from persodose.progress import progress

    t0 = time.perf_counter()
    umap = uniform_map(positions, net.voxel_mm, net.uniform_depth, net.uniform_photons, log=log)
    timings["cylinder map"] = time.perf_counter() - t0
    w = source_photons_per_position(cal, acq, positions)
    t0 = time.perf_counter()
    with progress("CT scan: ct-deepdose", len(positions), unit="positions") as update:
        gy = whole_body_dose(net.model, phantom.density, positions, umap, w, net.depth, net.uniform_depth,
                             batch=net.batch, device=net.device, progress=update)
    timings["network"] = time.perf_counter() - t0
    air = np.asarray(phantom.density.array) < AIR_DENSITY_G_CM3
    dose = phantom.density.with_array(np.where(air, 0.0, gy * 1e3).astype(np.float32), Kind.DOSE, "mGy")
    log(f"ct-deepdose: {len(positions)} positions in {timings['network']:.1f} s ({net.name})")
    return dose, {"method": "dl", "network": "ct-deepdose", "weights": net.provenance, "device": net.device,
                  "cylinder_map": {"photons": umap.n_photons, "median_relative_noise": umap.relative_noise,
                                   "slices": int(umap.dose.shape[0])},
                  "slab_slices": net.depth, "tail_slices": net.uniform_depth}


def _method_words(result) -> str:
    return "ct-deepdose network" if (result.statistics or {}).get("method") == "dl" else "Monte Carlo"


# --------------------------------------------------------------------------- outputs
def write_ct_outputs(result: CTDoseResult, out, *, ct_files=None, inputs: dict | None = None,
                     title: str = "persodose CT dosimetry", sp_maps=None) -> Path:
    """Write the WBDM (NIfTI mGy, RTDOSE Gy), organ tables, effective dose, provenance and report.

    ``sp_maps`` (a :class:`persodose.ct.dose.SinglePositionMaps`) go to ``sp_maps/``.
    """
    import json

    from persodose.io.image import write_image
    from persodose.outputs import jsonable, atomic_dir, write_provenance

    with atomic_dir(out) as work:
        write_image(result.dose_mgy, work / "dose_mgy.nii.gz")
        if result.uncertainty is not None:
            write_image(result.uncertainty, work / "uncertainty.nii.gz")
        if ct_files:
            from persodose.io.rtdose import write_rtdose

            gy = result.dose_mgy.with_array(result.dose_mgy.array.astype(np.float64) * 1e-3, Kind.DOSE, "Gy")
            write_rtdose(gy, work / "dose_rtdose.dcm", reference_ct_files=[str(f) for f in ct_files],
                         description=f"persodose CT scan dose ({_method_words(result)}, CTDIvol-calibrated)",
                         summation_type="RECORD")
        if result.organs:
            _write_organ_tables(result, work)
        if result.effective_dose is not None:
            (work / "effective_dose.json").write_text(json.dumps(jsonable(result.effective_dose), indent=2))
        write_provenance(work / "provenance.json", "ct", settings=None, inputs=inputs or {},
                         acquisition=result.acquisition_dict(), acquisition_warnings=result.warnings,
                         scanner={"name": result.scanner.name, "source": result.scanner.source,
                                  "source_to_isocentre_mm": result.scanner.source_to_isocentre_mm,
                                  "fan_angle_deg": result.scanner.fan_angle_deg,
                                  "filtration_mm": dict(result.scanner.inherent_filtration_mm),
                                  "bowtie": result.positions.bowtie.source,
                                  "spectrum_hvl_mm_al": result.positions.spectrum.hvl_mm_al,
                                  "spectrum_mean_energy_kev": result.positions.spectrum.mean_energy_kev},
                         ctdi=result.ctdi.to_dict(), calibration=result.calibration.to_dict(),
                         protocol=result.protocol.to_dict() if result.protocol is not None else None,
                         size_specific_dose=result.size_dose.to_dict() if result.size_dose is not None else None,
                         statistics=result.statistics)
        if sp_maps is not None:
            from persodose.ct.dose import write_single_position_maps

            write_single_position_maps(sp_maps, work / "sp_maps")
        build_ct_report(result, work / "report.html", title)
    return Path(out) / "report.html"



def _write_organ_tables(result: CTDoseResult, work: Path) -> None:
    """organs.csv / organs.json: each organ's dose beside CTDIvol, SSDE and Dw of the scan, and
    its dose per CTDIvol and per SSDE (the JSON also holds Dw per slice and the head/body rule)."""
    from persodose.metrics.organ import ORGAN_SCHEMA, ORGAN_SCHEMA_VERSION, write_table_csv, write_table_json

    sd, proto = result.size_dose, result.protocol
    ctdivol = float(result.calibration.ctdivol_target_mgy)
    ssde = None if sd is None else sd.ssde_mgy
    records = []
    for r in result.organs:
        rec = r.to_dict()
        mgy = 1e3 * r.mass_weighted_mean_gy
        rec.update({"ctdivol_mGy": round(ctdivol, 4), "ssde_mGy": None if ssde is None else round(ssde, 4),
                    "dw_mean_mm": None if sd is None else round(sd.dw_mean_mm, 2),
                    "dose_per_ctdivol": round(mgy / ctdivol, 4) if ctdivol > 0 else None,
                    "dose_per_ssde": round(mgy / ssde, 4) if ssde else None})
        records.append(rec)
    write_table_csv(records, work / "organs.csv")
    scan = {"region": None if proto is None else proto.region,
            "region_rule": None if proto is None else proto.region_rule,
            "ctdi_phantom_rule": None if proto is None else proto.ctdi_phantom_rule,
            **({} if sd is None else sd.to_dict())}
    write_table_json(records, work / "organs.json", schema=ORGAN_SCHEMA, schema_version=ORGAN_SCHEMA_VERSION,
                     unit="Gy", organ_dose="mass_weighted_mean_Gy (energy over mass); uncertainty_percent: standard "
                                           "uncertainty of it from the batch spread; dose_per_ctdivol and "
                                           "dose_per_ssde in mGy/mGy",
                     ct_dose_indices=scan)
