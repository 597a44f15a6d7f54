"""Effective dose from organ doses with the ICRP Publication 103 tissue weighting factors.

Source: ICRP, "The 2007 Recommendations of the International Commission on Radiological
Protection", ICRP Publication 103, Ann. ICRP 37 (2-4), 2007, Table 3 (tissue weighting
factors) and its footnote (remainder tissues), and paragraph (B 133)-(B 145) of Annex B on
the sex-averaged calculation:

* ``E = sum_T w_T (H_T^M + H_T^F) / 2``, with ``H_T = w_R D_T`` and ``w_R = 1`` for photons
  (ICRP 103 Table 2);
* ``w_T``: 0.12 red bone marrow, colon, lung, stomach, breast, remainder; 0.08 gonads; 0.04
  bladder, oesophagus, liver, thyroid; 0.01 bone surface, brain, salivary glands, skin (sum 1);
* remainder (13 tissues of each sex): adrenals, extrathoracic (ET) region, gall bladder,
  heart, kidneys, lymphatic nodes, muscle, oral mucosa, pancreas, prostate (male), small
  intestine, spleen, thymus, uterus/cervix (female); the remainder dose is the arithmetic
  mean of the 13 tissues of each sex.

Partial coverage, never hidden: a patient's label map rarely holds every tissue. Tissues
without a label are listed and contribute nothing; the result is the partial sum ``E_partial
= sum over covered tissues of w_T H_T`` reported together with the covered weight (e.g.
"partial, covering 0.55 of the total weight"). A remainder tissue that is present counts for
``0.12 / 13`` of its sex's remainder, so the covered remainder weight is
``0.12 x (n_male / 13 + n_female / 13) / 2``. No dose is extrapolated to missing tissues.

Organ dose of a tissue made of several labels (left and right lung, lung lobes, ...) is the
mass-weighted mean when every mass is given, else the arithmetic mean.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Mapping

from persodose.errors import InputError

__all__ = ["ICRP103_TISSUE_WEIGHTS", "ICRP103_REMAINDER", "REMAINDER_WEIGHT", "EffectiveDose",
           "effective_dose", "tissue_for_label", "LABEL_SYNONYMS"]

#: ICRP Publication 103 (2007) Table 3 tissue weighting factors (``remainder`` = 0.12 in total).
ICRP103_TISSUE_WEIGHTS: Mapping[str, float] = {
    "red_marrow": 0.12, "colon": 0.12, "lung": 0.12, "stomach": 0.12, "breast": 0.12, "remainder": 0.12,
    "gonads": 0.08,
    "bladder": 0.04, "oesophagus": 0.04, "liver": 0.04, "thyroid": 0.04,
    "bone_surface": 0.01, "brain": 0.01, "salivary_glands": 0.01, "skin": 0.01,
}
REMAINDER_WEIGHT = ICRP103_TISSUE_WEIGHTS["remainder"]
#: Remainder tissues (ICRP 103 Table 3 footnote): tissue -> sexes it belongs to.
ICRP103_REMAINDER: Mapping[str, tuple[str, ...]] = {
    "adrenals": ("M", "F"), "extrathoracic_region": ("M", "F"), "gall_bladder": ("M", "F"), "heart": ("M", "F"),
    "kidneys": ("M", "F"), "lymphatic_nodes": ("M", "F"), "muscle": ("M", "F"), "oral_mucosa": ("M", "F"),
    "pancreas": ("M", "F"), "prostate": ("M",), "small_intestine": ("M", "F"), "spleen": ("M", "F"),
    "thymus": ("M", "F"), "uterus_cervix": ("F",),
}
_N_REMAINDER_PER_SEX = 13

#: Label names (lower case, sides removed) -> ICRP tissue. Covers persodose's phantom labels
#: and common TotalSegmentator-style names.
LABEL_SYNONYMS: Mapping[str, str] = {
    **{k: "lung" for k in ("lung", "lungs", "lung_upper_lobe", "lung_middle_lobe", "lung_lower_lobe")},
    **{k: "red_marrow" for k in ("red_marrow", "red_bone_marrow", "bone_marrow", "active_marrow", "marrow")},
    **{k: "colon" for k in ("colon", "large_intestine", "rectum", "rectosigmoid", "rectosigmoid_colon")},
    "stomach": "stomach",
    **{k: "breast" for k in ("breast", "breasts", "mammary_gland")},
    **{k: "gonads" for k in ("gonads", "gonad", "testis", "testes", "testicle", "testicles", "ovary", "ovaries")},
    **{k: "bladder" for k in ("bladder", "urinary_bladder")},
    **{k: "oesophagus" for k in ("oesophagus", "esophagus")},
    "liver": "liver",
    **{k: "thyroid" for k in ("thyroid", "thyroid_gland")},
    **{k: "bone_surface" for k in ("bone_surface", "endosteum")},
    "brain": "brain",
    **{k: "salivary_glands" for k in ("salivary_glands", "salivary_gland", "parotid_gland", "parotid",
                                      "submandibular_gland", "sublingual_gland")},
    **{k: "skin" for k in ("skin", "skin_fat")},
    **{k: "adrenals" for k in ("adrenals", "adrenal", "adrenal_gland", "adrenal_glands")},
    **{k: "extrathoracic_region" for k in ("extrathoracic_region", "extrathoracic", "et_region")},
    **{k: "gall_bladder" for k in ("gall_bladder", "gallbladder")},
    **{k: "heart" for k in ("heart", "heart_myocardium", "heart_atrium", "heart_ventricle")},
    **{k: "kidneys" for k in ("kidney", "kidneys")},
    **{k: "lymphatic_nodes" for k in ("lymphatic_nodes", "lymph_nodes", "lymph_node")},
    **{k: "muscle" for k in ("muscle", "muscles", "skeletal_muscle", "gluteus_maximus", "gluteus_medius",
                             "gluteus_minimus", "iliopsoas", "autochthon")},
    "oral_mucosa": "oral_mucosa",
    "pancreas": "pancreas",
    "prostate": "prostate",
    **{k: "small_intestine" for k in ("small_intestine", "small_bowel", "duodenum")},
    "spleen": "spleen",
    "thymus": "thymus",
    **{k: "uterus_cervix" for k in ("uterus_cervix", "uterus", "cervix")},
}
#: Approximations made by the mapping, reported with the result.
APPROXIMATE_MAPPINGS: Mapping[str, str] = {
    "skin_fat": "skin: the label holds skin and subcutaneous fat (ICRP skin is the basal layer)",
    "duodenum": "small intestine: the duodenum is taken as part of the small intestine",
    "rectum": "colon: the rectum is counted with the colon, whose ICRP 103 dose includes the "
              "rectosigmoid (ICRP 110: right, left and rectosigmoid colon)",
}

_SIDES = re.compile(r"(^(left|right)_)|(_(left|right|l|r)$)")


def tissue_for_label(name: str) -> str | None:
    """The ICRP 103 tissue (a key of the weights or of the remainder) of a label name, or ``None``."""
    key = re.sub(r"[\s\-]+", "_", str(name).strip().lower())
    if key in LABEL_SYNONYMS:
        return LABEL_SYNONYMS[key]
    key = _SIDES.sub("", key)
    if key in LABEL_SYNONYMS:
        return LABEL_SYNONYMS[key]
    for prefix in ("lung_", "heart_", "kidney_"):
        if key.startswith(prefix):
            return LABEL_SYNONYMS[prefix.rstrip("_")]
    return None


@dataclass
class EffectiveDose:
    """Effective dose (possibly partial) and how it was made.

    Attributes:
        effective_dose_sv: ``sum w_T H_T`` over the covered tissues, Sv.
        uncertainty_sv: standard uncertainty from the organ dose uncertainties (independent), Sv.
        covered_weight: sum of the weights covered (1 when complete).
        complete: every ICRP 103 tissue (and all 13 remainder tissues of each sex) present.
        status: ``"complete"`` or ``"partial, covering X of the total weight"``.
        tissues: one dict per covered tissue: ``tissue``, ``w_T`` (used), ``dose_gy``,
            ``contribution_sv``, ``labels``.
        missing_tissues: ICRP tissues without a label.
        remainder_present / remainder_missing: remainder tissues found / not found.
        unmapped_labels: labels that are no ICRP tissue (ignored).
        notes: approximations made.
    """

    effective_dose_sv: float
    uncertainty_sv: float
    covered_weight: float
    complete: bool
    status: str
    tissues: list
    missing_tissues: list
    remainder_present: list
    remainder_missing: list
    unmapped_labels: list
    notes: list = field(default_factory=list)
    reference: str = "ICRP Publication 103 (2007), Table 3; w_R = 1 for photons"

    @property
    def effective_dose_msv(self) -> float:
        """The effective dose, mSv."""
        return self.effective_dose_sv * 1e3

    @property
    def uncertainty_msv(self) -> float:
        """Its standard uncertainty, mSv."""
        return self.uncertainty_sv * 1e3

    def to_dict(self) -> dict:
        """The fields, plus the effective dose and its uncertainty in mSv (``effective_dose.json``)."""
        return {**asdict(self), "effective_dose_msv": self.effective_dose_msv, "uncertainty_msv": self.uncertainty_msv}


def _combine(values: list[tuple[str, float, float | None, float | None]]) -> tuple[float, float]:
    """Mass-weighted (or plain) mean dose and its standard uncertainty."""
    doses = [v[1] for v in values]
    masses = [v[2] for v in values]
    sds = [v[3] or 0.0 for v in values]
    if all(m is not None and m > 0 for m in masses):
        w = [m / sum(masses) for m in masses]
    else:
        w = [1.0 / len(values)] * len(values)
    return (sum(wi * d for wi, d in zip(w, doses)), math.sqrt(sum((wi * s) ** 2 for wi, s in zip(w, sds))))


def effective_dose(organ_doses_gy: Mapping[str, float], organ_masses_g: Mapping[str, float] | None = None,
                   organ_sd_gy: Mapping[str, float] | None = None, radiation_weight: float = 1.0) -> EffectiveDose:
    """Effective dose from mean absorbed doses of labelled organs (module docstring).

    Args:
        organ_doses_gy: label name -> mean absorbed dose, Gy (any name; unknown ones ignored
            and listed).
        organ_masses_g: label name -> mass, g (to combine several labels of one tissue).
        organ_sd_gy: label name -> standard uncertainty of the dose, Gy.
        radiation_weight: ``w_R`` (1 for photons and electrons, ICRP 103 Table 2).

    Returns:
        :class:`EffectiveDose` (Sv when the doses are in Gy).

    Raises:
        InputError: non-finite or negative doses, no organ given.
    """
    if not organ_doses_gy:
        raise InputError("no organ dose given for the effective dose")
    masses = dict(organ_masses_g or {})
    sds = dict(organ_sd_gy or {})
    by_tissue: dict[str, list] = {}
    unmapped, notes = [], []
    for name, dose in organ_doses_gy.items():
        d = float(dose)
        if not (math.isfinite(d) and d >= 0):
            raise InputError(f"organ dose of {name!r} must be finite and >= 0, got {dose!r}")
        tissue = tissue_for_label(name)
        if tissue is None:
            unmapped.append(str(name))
            continue
        key = re.sub(r"[\s\-]+", "_", str(name).strip().lower())
        if key in APPROXIMATE_MAPPINGS:
            notes.append(f"{name}: {APPROXIMATE_MAPPINGS[key]}")
        by_tissue.setdefault(tissue, []).append((str(name), d, masses.get(name), sds.get(name)))
    wr = float(radiation_weight)
    rows, total, var, covered = [], 0.0, 0.0, 0.0
    for tissue, w in ICRP103_TISSUE_WEIGHTS.items():
        if tissue == "remainder" or tissue not in by_tissue:
            continue
        dose, sd = _combine(by_tissue[tissue])
        contrib = w * wr * dose
        rows.append({"tissue": tissue, "w_T": w, "dose_gy": dose, "dose_sd_gy": sd, "contribution_sv": contrib,
                     "labels": [v[0] for v in by_tissue[tissue]]})
        total += contrib
        var += (w * wr * sd) ** 2
        covered += w
    present = [t for t in ICRP103_REMAINDER if t in by_tissue]
    missing_rem = [t for t in ICRP103_REMAINDER if t not in by_tissue]
    for t in present:
        sexes = ICRP103_REMAINDER[t]
        w_t = REMAINDER_WEIGHT / _N_REMAINDER_PER_SEX * len(sexes) / 2.0  # sex-averaged share
        dose, sd = _combine(by_tissue[t])
        contrib = w_t * wr * dose
        rows.append({"tissue": f"remainder:{t}", "w_T": w_t, "dose_gy": dose, "dose_sd_gy": sd,
                     "contribution_sv": contrib, "labels": [v[0] for v in by_tissue[t]]})
        total += contrib
        var += (w_t * wr * sd) ** 2
        covered += w_t
    missing = [t for t in ICRP103_TISSUE_WEIGHTS if t != "remainder" and t not in by_tissue]
    if missing_rem:
        missing.append("remainder (partly: " + ", ".join(missing_rem) + ")")
    complete = not missing
    covered = min(covered, 1.0)
    status = "complete" if complete else f"partial, covering {covered:.3f} of the total weight"
    return EffectiveDose(effective_dose_sv=total, uncertainty_sv=math.sqrt(var), covered_weight=covered,
                         complete=complete, status=status, tissues=rows, missing_tissues=missing,
                         remainder_present=present, remainder_missing=missing_rem, unmapped_labels=unmapped,
                         notes=notes)
