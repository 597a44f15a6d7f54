"""True activity kinetics of the virtual patient: sums of exponentials, integrable analytically.

Every organ's activity (Bq, physical decay included) is

    A(t) = sum_k A_k exp(-(lambda_bio,k + lambda_phys) t),   t >= 0 (s after injection),

with ``lambda_bio = ln 2 / T_bio`` (``T_bio = inf`` gives a non-clearing term). Uptake
phases are written as a difference of two exponentials, so that an organ starts empty.
The time-integrated activity from 0 to infinity is ``sum_k A_k / (lambda_bio,k +
lambda_phys)`` and the integral over a frame is analytic as well.

The parameter values are ILLUSTRATIVE, chosen to lie within published ranges:

* 177Lu-DOTATATE: kidney uptake ~1.5-2 % IA (pair) with effective half-life ~55 h,
  liver and spleen effective half-lives ~65-75 h, spleen the highest normal-organ
  concentration, tumours retaining with effective half-lives ~90-100 h, fast renal
  clearance of the unbound peptide; ranges as reported by Sandstrom et al., J Nucl Med
  2013;54:33-41 (dosimetry of 177Lu-DOTATATE) and Garske-Roman et al., EJNMMI 2018.
* 18F-FDG: blood clearance with ~1 min, ~12 min and ~90 min components, brain ~10 % IA,
  liver SUV ~2.3, spleen SUV ~2, urinary excretion ~8 % IA in the first hour, rising
  tumour uptake; ranges as in ICRP Publication 128 (2015) section on 18F-FDG and common
  clinical SUV values.

Half-lives: ICRP Publication 107 (2008): Lu-177 6.647 d (574 300.8 s), F-18 109.77 min
(6586.2 s); taken from :mod:`persodose.physics.radionuclides` when that module exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

HOUR_S = 3600.0
MIN_S = 60.0

#: Physical half-lives, s (ICRP Publication 107, 2008).
ICRP107_HALF_LIFE_S = {"Lu-177": 6.647 * 86400.0, "F-18": 109.77 * 60.0}

TRACERS = {"lu177-dotatate": "Lu-177", "fdg": "F-18"}


def physical_half_life_s(nuclide: str) -> float:
    """Physical half-life, s: from :mod:`persodose.physics.radionuclides` if available.

    Falls back on :data:`ICRP107_HALF_LIFE_S` (ICRP 107) when that module is absent or
    its answer is not a positive number within 0.1 % of the ICRP-107 value.
    """
    ref = ICRP107_HALF_LIFE_S[nuclide]
    from persodose.physics.radionuclides import get_nuclide

    val = float(get_nuclide(nuclide).half_life_s)
    return val if val > 0 and abs(val / ref - 1.0) < 1e-3 else ref


@dataclass(frozen=True)
class TACModel:
    """A time-activity curve ``A(t) = sum_k A_k exp(-(ln2/T_bio,k + ln2/T_phys) t)``.

    Attributes:
        amplitudes_bq: ``A_k``, Bq (may be negative for uptake terms; the sum is >= 0).
        bio_half_lives_s: ``T_bio,k``, s (``math.inf`` for no biological clearance).
        phys_half_life_s: physical half-life of the nuclide, s.
    """

    amplitudes_bq: tuple[float, ...]
    bio_half_lives_s: tuple[float, ...]
    phys_half_life_s: float

    @property
    def rates_per_s(self) -> np.ndarray:
        """Effective rate constants ``lambda_bio + lambda_phys``, 1/s."""
        lb = np.array([0.0 if math.isinf(t) else math.log(2) / t for t in self.bio_half_lives_s])
        return lb + math.log(2) / self.phys_half_life_s

    def activity_bq(self, t_s) -> np.ndarray:
        """True activity (decay included), Bq, at times ``t_s`` (s after injection)."""
        t = np.asarray(t_s, dtype=float)
        a = np.asarray(self.amplitudes_bq)
        return np.sum(a * np.exp(-np.multiply.outer(t, self.rates_per_s)), axis=-1)

    def integral_bq_s(self, t0_s: float, t1_s: float = math.inf) -> float:
        """Analytic integral of the activity from ``t0_s`` to ``t1_s``, Bq s."""
        lam = self.rates_per_s
        a = np.asarray(self.amplitudes_bq)
        e1 = 0.0 if math.isinf(t1_s) else np.exp(-lam * t1_s)
        return float(np.sum(a / lam * (np.exp(-lam * t0_s) - e1)))

    def tia_bq_s(self) -> float:
        """Time-integrated activity from injection to infinity, Bq s."""
        return self.integral_bq_s(0.0)

    def scaled(self, factor: float) -> "TACModel":
        return TACModel(tuple(a * factor for a in self.amplitudes_bq), self.bio_half_lives_s,
                        self.phys_half_life_s)

    def to_dict(self) -> dict:
        return {"form": "A(t)=sum_k A_k*exp(-(ln2/T_bio_k+ln2/T_phys)*t)",
                "amplitudes_bq": list(self.amplitudes_bq),
                "bio_half_lives_s": [None if math.isinf(t) else t for t in self.bio_half_lives_s],
                "phys_half_life_s": self.phys_half_life_s}


@dataclass(frozen=True)
class _Fractions:
    """A TAC as fractions of the injected activity (biological part only)."""

    fractions: tuple[float, ...]
    half_lives_s: tuple[float, ...]

    def value(self, t_s) -> np.ndarray:
        t = np.asarray(t_s, dtype=float)
        lam = np.array([0.0 if math.isinf(h) else math.log(2) / h for h in self.half_lives_s])
        return np.sum(np.asarray(self.fractions) * np.exp(-np.multiply.outer(t, lam)), axis=-1)


def _uptake(frac, t_up_s, t_wash_s=math.inf, blood=None):
    """``frac (exp(-l_wash t) - exp(-l_up t))`` plus an optional blood-following term."""
    f = [frac, -frac]
    h = [t_wash_s, t_up_s]
    if blood is not None:
        share, curve = blood
        f += [share * c for c in curve.fractions]
        h += list(curve.half_lives_s)
    return _Fractions(tuple(f), tuple(h))


# -------------------------------------------------------------------- tracer parameters
@dataclass(frozen=True)
class KineticParams:
    """Per-patient changes of the kinetics; the defaults are the canonical patient.

    Attributes:
        uptake_factor: organ name -> factor on its specific uptake fraction (the organ's
            own term, not the blood-borne term of FDG).
        teff_factor: organ name -> factor on its effective half-life (177Lu-DOTATATE only;
            kept below 0.95 of the physical half-life).
        drop_absent: organs with specific uptake and no voxel (a population patient without
            a lesion of that kind) are left out; their share goes to the remainder.
        lesions: per-lesion labels of a population patient, name -> ``(kind, volume_ratio)``:
            each lesion gets its own curve, the template of its kind (:data:`LESION_TEMPLATES`)
            with its own ``uptake_factor`` and ``teff_factor`` entries, and (FDG) a blood-borne
            term scaled by ``volume_ratio`` (viable volume / the kind's canonical volume). The
            lesion kinds' own entries are then left out.
    """

    uptake_factor: dict = field(default_factory=dict)
    teff_factor: dict = field(default_factory=dict)
    drop_absent: bool = False
    lesions: dict = field(default_factory=dict)


#: Per-kind lesion templates, for the canonical volumes of
#: :data:`persodose.phantoms.population.CANONICAL_LESION_ML` (the values of the canonical
#: lesions below; the lung nodule as the lymph node): 177Lu-DOTATATE ``(fraction of IA,
#: uptake half-time h, effective half-life h)``; FDG ``(fraction, uptake half-time min,
#: blood share)``. Same sources as the module docstring; illustrative.
LESION_TEMPLATES = {
    "lu177-dotatate": {"lesion_liver": (0.012, 2.0, 90.0), "lesion_pancreas": (0.006, 2.0, 90.0),
                       "lesion_lymph_node": (0.002, 2.0, 85.0), "lesion_bone": (0.0012, 2.0, 100.0),
                       "lesion_lung": (0.002, 2.0, 85.0)},
    "fdg": {"lesion_liver": (0.008, 40.0, 0.002), "lesion_pancreas": (0.0035, 40.0, 0.001),
            "lesion_lymph_node": (0.0012, 40.0, 0.0004), "lesion_bone": (0.0005, 40.0, 0.0002),
            "lesion_lung": (0.0012, 40.0, 0.0004)},
}


def _apply(spec: dict[str, "_Fractions"], kp: "KineticParams | None") -> dict[str, "_Fractions"]:
    """Scale the organ-specific (first two) terms of each organ by ``kp.uptake_factor``."""
    if kp is None or not kp.uptake_factor:
        return spec
    out = {}
    for n, fr in spec.items():
        f = float(kp.uptake_factor.get(n, 1.0))
        fr_ = list(fr.fractions)
        fr_[0] *= f
        fr_[1] *= f
        out[n] = _Fractions(tuple(fr_), fr.half_lives_s)
    return out


def _lu177_specific(kp: "KineticParams | None" = None) -> tuple[dict[str, _Fractions], _Fractions]:
    """Organ-specific TACs and the non-specific remainder for 177Lu-DOTATATE."""
    H = HOUR_S
    teff2bio = {}
    _tf = {} if kp is None else kp.teff_factor
    _cur = [None]

    def tb(teff_h):  # biological half-life from an effective one (Lu-177 T1/2 = 159.5 h)
        tp = ICRP107_HALF_LIFE_S["Lu-177"] / H
        if _cur[0] is not None:
            teff_h = min(teff_h * float(_cur[0]), 0.95 * tp)
        teff2bio[teff_h] = 1.0 / (1.0 / teff_h - 1.0 / tp) * H
        return teff2bio[teff_h]

    def organ(name, frac, t_up_s, teff_h):
        _cur[0] = _tf.get(name)
        out = _uptake(frac, t_up_s, tb(teff_h))
        _cur[0] = None
        return out

    if _tf:
        spec = {
            "kidney_left": organ("kidney_left", 0.0095, 0.5 * H, 55.0),
            "kidney_right": organ("kidney_right", 0.0095, 0.5 * H, 55.0),
            "liver": organ("liver", 0.022, 1.0 * H, 72.0),
            "spleen": organ("spleen", 0.011, 1.0 * H, 68.0),
            "stomach": organ("stomach", 0.002, 1.0 * H, 50.0),
            "bladder": _uptake(0.15, 1.0 * H, 3.0 * H),
            "red_marrow": _Fractions((0.010, 0.0015), (1.8 * H, tb(60.0))),
            "lesion_liver": organ("lesion_liver", 0.012, 2.0 * H, 90.0),
            "lesion_pancreas": organ("lesion_pancreas", 0.006, 2.0 * H, 90.0),
            "lesion_lymph_node": organ("lesion_lymph_node", 0.002, 2.0 * H, 85.0),
            "lesion_bone": organ("lesion_bone", 0.0012, 2.0 * H, 100.0),
        }
        if kp is not None and kp.lesions:
            for kind in LESION_TEMPLATES["lu177-dotatate"]:
                spec.pop(kind, None)
            for name, (kind, _) in kp.lesions.items():
                frac, t_up_h, teff_h = LESION_TEMPLATES["lu177-dotatate"][kind]
                spec[name] = organ(name, frac, t_up_h * H, teff_h)
        return _with_remainder_lu(_apply(spec, kp))
    spec = {
        "kidney_left": _uptake(0.0095, 0.5 * H, tb(55.0)),
        "kidney_right": _uptake(0.0095, 0.5 * H, tb(55.0)),
        "liver": _uptake(0.022, 1.0 * H, tb(72.0)),
        "spleen": _uptake(0.011, 1.0 * H, tb(68.0)),
        "stomach": _uptake(0.002, 1.0 * H, tb(50.0)),
        "bladder": _uptake(0.15, 1.0 * H, 3.0 * H),  # urine contents: filling and voiding
        "red_marrow": _Fractions((0.010, 0.0015), (1.8 * H, tb(60.0))),
        "lesion_liver": _uptake(0.012, 2.0 * H, tb(90.0)),
        "lesion_pancreas": _uptake(0.006, 2.0 * H, tb(90.0)),
        "lesion_lymph_node": _uptake(0.002, 2.0 * H, tb(85.0)),
        "lesion_bone": _uptake(0.0012, 2.0 * H, tb(100.0)),
    }
    return _with_remainder_lu(_apply(spec, kp))


def _with_remainder_lu(spec: dict[str, _Fractions]) -> tuple[dict[str, _Fractions], _Fractions]:
    """The 177Lu-DOTATATE remainder: what is not in ``spec`` at t = 0, with three clearance phases."""
    H = HOUR_S
    slow, mid = 0.10, 0.12
    at0 = sum(f.value(0.0) for f in spec.values())
    remainder = _Fractions((1.0 - at0 - slow - mid, mid, slow), (1.8 * H, 20.0 * H, 80.0 * H))
    return spec, remainder


def _fdg_specific(kp: "KineticParams | None" = None, keep=None) -> tuple[dict[str, _Fractions], _Fractions]:
    """Organ-specific TACs and the non-specific remainder for 18F-FDG (first hour)."""
    M = MIN_S
    blood = _Fractions((0.60, 0.25, 0.15), (1.0 * M, 12.0 * M, 90.0 * M))  # whole blood, IA fraction
    spec = {
        "brain": _uptake(0.110, 8.0 * M, blood=(0.012, blood)),
        "heart": _uptake(0.020, 15.0 * M, blood=(0.096, blood)),
        "lung_left": _uptake(0.0015, 10.0 * M, blood=(0.048, blood)),
        "lung_right": _uptake(0.0015, 10.0 * M, blood=(0.057, blood)),
        "liver": _uptake(0.080, 3.0 * M, 200.0 * M, blood=(0.10, blood)),
        "spleen": _uptake(0.004, 5.0 * M, blood=(0.014, blood)),
        "kidney_left": _uptake(0.0175, 1.0 * M, 25.0 * M, blood=(0.01, blood)),
        "kidney_right": _uptake(0.0175, 1.0 * M, 25.0 * M, blood=(0.01, blood)),
        "bladder": _uptake(0.10, 25.0 * M),  # urine accumulation, no voiding in the first hour
        "stomach": _uptake(0.003, 10.0 * M, blood=(0.01, blood)),
        "red_marrow": _uptake(0.008, 10.0 * M, blood=(0.04, blood)),
        "lesion_liver": _uptake(0.008, 40.0 * M, blood=(0.002, blood)),
        "lesion_pancreas": _uptake(0.0035, 40.0 * M, blood=(0.001, blood)),
        "lesion_lymph_node": _uptake(0.0012, 40.0 * M, blood=(0.0004, blood)),
        "lesion_bone": _uptake(0.0005, 40.0 * M, blood=(0.0002, blood)),
    }
    if kp is not None and kp.lesions:
        for kind in LESION_TEMPLATES["fdg"]:
            spec.pop(kind, None)
        for name, (kind, vol_ratio) in kp.lesions.items():
            frac, t_up_min, share = LESION_TEMPLATES["fdg"][kind]
            spec[name] = _uptake(frac, t_up_min * M, blood=(share * float(vol_ratio), blood))
    spec = _apply(spec, kp)
    if keep is not None:
        spec = keep(spec)
    # Remainder = whole body (no excretion out of the body in the first hour) minus the rest.
    f, h = [1.0], [math.inf]
    for tac in spec.values():
        f += [-c for c in tac.fractions]
        h += list(tac.half_lives_s)
    return spec, _Fractions(tuple(f), tuple(h))


#: Relative activity concentration (per mL) of the non-specific remainder in each tissue
#: that carries no organ-specific uptake (blood-rich tissues higher, fat and bone low).
#: Illustrative values.
REMAINDER_WEIGHTS = {
    "lu177-dotatate": {"body": 1.0, "skin_fat": 0.3, "muscle": 0.6, "lung_left": 0.5,
                       "lung_right": 0.5, "heart": 2.0, "brain": 0.1, "skull": 0.05,
                       "spine": 0.05, "pelvis": 0.05, "femoral_head_left": 0.1,
                       "femoral_head_right": 0.1, "ribs": 0.05, "shoulder_girdle": 0.05,
                       "breast": 0.3, "uterus": 0.8, "ovaries": 0.8, "prostate": 0.8, "testes": 0.8},
    "fdg": {"body": 1.0, "skin_fat": 0.3, "muscle": 0.8, "skull": 0.1, "spine": 0.1,
            "pelvis": 0.1, "femoral_head_left": 0.2, "femoral_head_right": 0.2, "ribs": 0.1,
            "shoulder_girdle": 0.1,
            "breast": 0.5, "uterus": 1.2, "ovaries": 1.2, "prostate": 1.0, "testes": 1.5,
            "arm_bones": 0.1},
}
REMAINDER_WEIGHTS["lu177-dotatate"]["arm_bones"] = 0.05  # cortical bone as the other bones
#: Non-specific weights of the organs of population patients (anatomy.ORGAN_LABELS): background-like,
#: blood in the large vessels as the heart's blood pool (Lu 2.0; FDG 1.5), salivary glands a little
#: above background for both tracers (somatostatin-receptor and FDG salivary uptake are low but
#: visible), the bowel slightly above soft tissue for FDG (physiological gut uptake), spinal cord
#: and gall bladder (bile) below it. Illustrative, in the spirit of the biokinetic models of ICRP
#: Publication 128 (2015), where these organs belong to "other tissues".
REMAINDER_WEIGHTS["lu177-dotatate"].update({
    "pancreas": 1.0, "oesophagus": 1.0, "spinal_cord": 0.3, "aorta": 2.0, "inferior_vena_cava": 2.0,
    "portal_vein": 2.0, "gall_bladder": 0.5, "small_intestine": 1.0, "colon": 1.0, "rectum": 1.0, "thymus": 0.8,
    "thyroid": 1.0, "salivary_glands": 1.5})
REMAINDER_WEIGHTS["fdg"].update({
    "pancreas": 1.0, "oesophagus": 1.2, "spinal_cord": 0.8, "aorta": 1.5, "inferior_vena_cava": 1.5,
    "portal_vein": 1.5, "gall_bladder": 0.5, "small_intestine": 1.3, "colon": 1.5, "rectum": 1.2, "thymus": 1.0,
    "thyroid": 1.2, "salivary_glands": 1.5})


def organ_tacs(tracer: str, injected_activity_bq: float, label_volumes_ml: dict[str, float],
               phys_half_life_s: float, params: KineticParams | None = None) -> dict[str, TACModel]:
    """True TAC of every label of the patient.

    Organs with specific uptake get their own curve; the non-specific remainder is shared
    among the other labels in proportion to ``volume x REMAINDER_WEIGHTS``.

    Args:
        tracer: ``"lu177-dotatate"`` or ``"fdg"``.
        injected_activity_bq: injected activity, Bq.
        label_volumes_ml: volume of each label in the voxelised patient, mL.
        phys_half_life_s: physical half-life, s.
        params: per-patient :class:`KineticParams` (``None``: the canonical kinetics).

    Returns:
        label name -> :class:`TACModel` (Bq, decay included).
    """
    drop = params is not None and params.drop_absent

    def keep(spec):  # organs with specific uptake but no voxel are left out (population lesions)
        return {n: f for n, f in spec.items() if label_volumes_ml.get(n, 0.0) > 0.0} if drop else spec

    if tracer == "lu177-dotatate":
        spec, remainder = _lu177_specific(params)
        if drop:
            spec, remainder = _with_remainder_lu(keep(spec))
    else:
        spec, remainder = _fdg_specific(params, keep)
    weights = {n: w * label_volumes_ml.get(n, 0.0) for n, w in REMAINDER_WEIGHTS[tracer].items()}
    total_w = sum(weights.values())
    out: dict[str, TACModel] = {}
    for name, fr in spec.items():
        out[name] = TACModel(tuple(injected_activity_bq * c for c in fr.fractions), fr.half_lives_s,
                             phys_half_life_s)
    for name, w in weights.items():
        if w > 0:
            share = w / total_w
            out[name] = TACModel(tuple(injected_activity_bq * share * c for c in remainder.fractions),
                                 remainder.half_lives_s, phys_half_life_s)
    return out


@dataclass(frozen=True)
class FrameTiming:
    """One acquisition frame: start and duration, s after injection."""

    start_s: float
    duration_s: float

    @property
    def mid_s(self) -> float:
        return self.start_s + 0.5 * self.duration_s


def frame_schedule(tracer: str) -> list[FrameTiming]:
    """Clinical acquisition schedule.

    Lu-177: four 20-min SPECT acquisitions starting 4 h, 24 h, 96 h and 168 h after
    injection (the common 4-time-point post-therapy dosimetry protocol).
    FDG: a 13-frame 60-min dynamic PET starting at injection: 4 x 30 s, 4 x 120 s,
    5 x 600 s.
    """
    if tracer == "lu177-dotatate":
        return [FrameTiming(h * HOUR_S, 20 * MIN_S) for h in (4.0, 24.0, 96.0, 168.0)]
    durs = [30.0] * 4 + [120.0] * 4 + [600.0] * 5
    starts = np.concatenate([[0.0], np.cumsum(durs)[:-1]])
    return [FrameTiming(float(s), float(d)) for s, d in zip(starts, durs)]


__all__ = ["TACModel", "KineticParams", "LESION_TEMPLATES", "FrameTiming", "organ_tacs", "frame_schedule", "physical_half_life_s",
           "ICRP107_HALF_LIFE_S", "TRACERS", "REMAINDER_WEIGHTS"]
