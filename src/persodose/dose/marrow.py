"""Red-marrow absorbed dose: the blood-based and the image-based (L2-L4) methods, with their uncertainty.

Both follow the EANM Dosimetry Committee guidelines for bone marrow and whole-body dosimetry
(C. Hindorf, G. Glatting, C. Chiesa, O. Lindén, G. Flux, Eur J Nucl Med Mol Imaging 37 (2010)
1238-1250): the marrow dose is the self-dose from activity in the red marrow (RM) plus the
cross-dose from the remainder of the body (RB) and from organs that take the radiopharmaceutical
up:

    D_RM = A~_RM S(RM<-RM) + A~_RB S(RM<-RB) + sum_h A~_h S(RM<-h).

**Blood-based method** (no specific uptake in marrow, bone or blood cells): the marrow's
time-integrated activity concentration is the blood's times the red-marrow-to-blood ratio,
``A~_RM / m_RM = RMBLR * A~_blood / V``, the blood's from a fit of the samples (model chosen by
AICc, persodose.kinetics). ``RMBLR`` is given, or from the haematocrit with Sgouros's model,
``RMBLR = RMECFF / (1 - HCT)``, red-marrow extracellular fluid fraction ``RMECFF = 0.19``
(G. Sgouros, "Bone marrow dosimetry for radioimmunotherapy: theoretical considerations",
J Nucl Med 34 (1993) 689-694: with HCT 0.47 it gives 0.36, as its abstract states). For
177Lu-DOTATATE the marrow concentration was found equal to the blood's (RMBLR = 1; F. Forrer,
E. P. Krenning, P. P. Kooij, B. F. Bernard, M. Konijnenberg et al. (Erasmus MC), 2009, "Bone marrow
dosimetry in peptide receptor radionuclide therapy with [177Lu-DOTA0,Tyr3]octreotate", in its
abstract): give ``rmblr=1`` there. Concentrations per mL are
taken per g (blood and marrow density 1 g/mL, an assumption stated in every result).

**Image-based method**: the activity in the lumbar vertebrae L2-L4 at each time point (a VOI on
quantitative SPECT) is fitted, and the whole red marrow's TIA is ``A~_L2L4 / f``, ``f`` the
fraction of the red marrow that lies in L2-L4. Hindorf et al. (2010) take ``f`` from ICRP
reference data; that value could not be checked in the sources available to this project and is
not shipped: the caller gives ``f`` (with its source) and the marrow mass.

Dose factors (when no S value is given):

* ``S(RM<-RM)``: non-penetrating emissions (electrons, alphas; ICRP Publication 107 energies)
  absorbed in the marrow, ``E_np / m_RM``; the blood-based self-dose then needs no marrow mass
  (``A~_RM E_np / m_RM = RMBLR A~_blood/V E_np``). Photons emitted in the marrow are counted with
  the rest of the body below: with this factor the marrow's TIA is left in the body's photon
  source (not subtracted from the whole body). With a stated S(RM<-RM) (a phantom's, all
  emissions) the marrow's TIA is taken out of the remainder instead, so nothing is counted twice.
* ``S(RM<-RB)``: photons only, the marrow taken to receive the whole body's mean photon dose from
  activity spread uniformly in a body-sized sphere (absorbed fraction of
  :func:`persodose.dose.organ_mird.photon_absorbed_fraction_sphere`): ``A~_RB sum_i E_i y_i
  phi_i(m_TB) / m_TB``. An approximation for penetrating radiation (bone attenuation and the
  geometry of the skeleton ignored); no uncertainty is assigned to it. Give a phantom's S value
  for a better one.
* ``S(RM<-h)`` of organs: given by the caller (e.g. OLINDA's), with the organs' TIAs.

With a phantom's ``S(RM<-TB)`` (total body) instead of ``S(RM<-RB)``, the remainder's factor is
``S(RM<-RB) = S(RM<-TB) m_TB / m_RB - S(RM<-RM) m_RM / m_RB`` (the remainder-of-body correction
in MIRD practice; Hindorf et al. 2010, data-analysis section).

Blood samples are activity concentrations at the sampling time, **not decay corrected**: the
fitted curves include the physical decay (persodose.kinetics), so decay-corrected values would
give too large a TIAC. At least two samples are needed (the clearance of blood; a single
sample is refused: Hänscheid's single-time-point formula is for organ uptake).

Uncertainty: each input's standard uncertainty times the dose's sensitivity to it (first order,
GUM JCGM 100:2008 5.1.2), listed as a budget (:class:`persodose.dose.uncertainty.DoseUncertainty`).
The remainder's TIA is ``A~_WB - sum_h A~_h - A~_RM`` (the last term with a stated S(RM<-RM)),
so the whole-body TIA's line is ``S(RM<-RB) A~_WB u_rel(A~_WB)``, an organ's TIA line
``(S(RM<-h) - S(RM<-RB)) A~_h u_rel(A~_h)``, and the inputs of the marrow's TIA (blood fit,
calibration, RMBLR; L2-L4 fit, calibration, recovery, fraction) move the self-dose and,
negatively, the remainder: ``(D_self - S(RM<-RB) A~_RM) u_rel``. Inputs are taken as
independent. A line whose uncertainty is not stated or not available has no value (not zero);
the result then says that the combined uncertainty is incomplete (a lower bound).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from persodose.dose.uncertainty import Component, DoseUncertainty
from persodose.errors import InputError

#: Red-marrow extracellular fluid fraction (Sgouros, J Nucl Med 34 (1993) 689, abstract).
RMECFF_SGOUROS = 0.19
#: Gy per (Bq s) per (MeV / g): 1.602176634e-13 J/MeV (SI exact) / 1e-3 kg/g.
_GY_PER_MEV_PER_G = 1.602176634e-13 / 1e-3
#: mGy/(MBq s) in Gy/(Bq s): 1e-3 / 1e6.
GY_PER_BQ_S_PER_MGY_PER_MBQ_S = 1e-9
_UNITS = {"bq": 1.0, "kbq": 1e3, "mbq": 1e6, "gbq": 1e9}


# --------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Samples:
    """Measurements at times after injection: blood concentrations (Bq/mL) or VOI activities (Bq).

    Attributes:
        times_s: s after injection; values: Bq/mL or Bq; sd: their standard uncertainties or None;
        haematocrit: the mean of a ``haematocrit`` column, or None.
    """

    times_s: np.ndarray
    values: np.ndarray
    sd: np.ndarray | None = None
    haematocrit: float | None = None


def _value_column(header: Sequence[str], per_ml: bool) -> tuple[str, float]:
    want = [f"{u}_per_ml" for u in _UNITS] if per_ml else list(_UNITS)
    for col in header:
        if col in want:
            return col, _UNITS[col.split("_")[0]]
    raise InputError(f"no {'concentration' if per_ml else 'activity'} column: name one "
                     f"{', '.join(want)} (found {', '.join(header)})")


def read_samples_csv(path, per_ml: bool = True) -> Samples:
    """Samples from a CSV with a header.

    Columns: ``time_h`` (or ``time_s``); the value, ``bq_per_ml`` / ``kbq_per_ml`` /
    ``mbq_per_ml`` for blood (``per_ml``) or ``bq`` / ``kbq`` / ``mbq`` for an activity, at the
    sampling (or imaging) time, not decay corrected (the fits include the decay); optional
    ``sd_<that column>`` (standard uncertainty, same unit) and, for blood, ``haematocrit``
    (fraction). At least one sample; times non-negative and distinct; values finite, not negative.

    Raises:
        InputError: a missing or unreadable file, a missing column, a bad number (with its line).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{p}: not a readable CSV ({exc})") from None
    if not rows:
        raise InputError(f"{p}: no samples (a header and one row per sample are needed)")
    header = [h.strip().lower() for h in rows[0].keys() if h is not None]
    rows = _clean_rows(p, rows)
    tcol = "time_h" if "time_h" in header else "time_s" if "time_s" in header else None
    if tcol is None:
        raise InputError(f"{p}: no time_h or time_s column (found {', '.join(header)})")
    vcol, unit = _value_column(header, per_ml)
    scol = f"sd_{vcol}" if f"sd_{vcol}" in header else None
    t, v, s, h = [], [], [], []
    for i, r in enumerate(rows, start=2):
        try:
            t.append(float(r[tcol]) * (3600.0 if tcol == "time_h" else 1.0))
            v.append(float(r[vcol]) * unit)
            if scol:
                s.append(float(r[scol]) * unit)
            if per_ml and r.get("haematocrit"):
                h.append(float(r["haematocrit"]))
        except ValueError:
            raise InputError(f"{p} line {i}: not a number in {tcol}, {vcol}"
                             + (f", {scol}" if scol else "") + " or haematocrit") from None
    return _checked(p, np.array(t), np.array(v), np.array(s) if scol else None, h)


def _clean_rows(p, rows: list[dict]) -> list[dict]:
    """Keys lower-cased and values stripped; a row with more fields than the header is refused (csv.DictReader
    puts the extra ones under the key None)."""
    out = []
    for i, r in enumerate(rows, start=2):
        if None in r:
            raise InputError(f"{p} line {i}: more fields than the header ({len(r) - 1 + len(r[None])} for "
                             f"{len(r) - 1} columns)")
        out.append({k.strip().lower(): (v or "").strip() for k, v in r.items()})
    return out


def _checked(p, t, v, s, h) -> Samples:
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(v))) or np.any(t < 0) or np.any(v < 0):
        raise InputError(f"{p}: times and values must be finite and not negative")
    if np.unique(t).size != t.size:
        raise InputError(f"{p}: two samples at the same time")
    if s is not None and (not np.all(np.isfinite(s)) or np.any(s <= 0)):
        raise InputError(f"{p}: every standard uncertainty must be positive")
    if h and not all(0.0 < x < 1.0 for x in h):
        raise InputError(f"{p}: haematocrit is a fraction between 0 and 1 (e.g. 0.42)")
    order = np.argsort(t)
    return Samples(t[order], v[order], None if s is None else s[order], float(np.mean(h)) if h else None)


def _pct_or_none(text) -> float | None:
    return float(text) / 100.0 if text else None


def read_organs_csv(path) -> list[dict]:
    """Organs irradiating the marrow: ``organ, tia_mbq_h, s_mgy_per_mbq_s`` and optional
    ``tia_sd_percent``, ``s_sd_percent``. Returns ``[{organ, tia_bq_s, s_gy_per_bq_s, tia_rel_sd,
    s_rel_sd}]`` (an sd None where not stated).

    Raises:
        InputError: a missing or unreadable file (not UTF-8), a missing column, a bad number, a row with more
        fields than the header (with its line)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            rows = _clean_rows(p, list(csv.DictReader(fh)))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{p}: not a readable CSV ({exc})") from None
    out = []
    for i, r in enumerate(rows, start=2):
        try:
            item = {"organ": r["organ"], "tia_bq_s": float(r["tia_mbq_h"]) * 3.6e9,
                    "s_gy_per_bq_s": float(r["s_mgy_per_mbq_s"]) * GY_PER_BQ_S_PER_MGY_PER_MBQ_S,
                    "tia_rel_sd": _pct_or_none(r.get("tia_sd_percent")),
                    "s_rel_sd": _pct_or_none(r.get("s_sd_percent"))}
        except KeyError:
            raise InputError(f"{p}: columns organ, tia_mbq_h, s_mgy_per_mbq_s are needed") from None
        except ValueError:
            raise InputError(f"{p} line {i}: not a number") from None
        if not all(x is None or (math.isfinite(x) and x >= 0) for k, x in item.items() if k != "organ"):
            raise InputError(f"{p} line {i}: values must be finite and not negative")
        out.append(item)
    if not out:
        raise InputError(f"{p}: no organ rows")
    return out


# --------------------------------------------------------------------------- the parts
def rmblr_from_haematocrit(haematocrit: float, rmecff: float = RMECFF_SGOUROS) -> float:
    """Red-marrow-to-blood activity concentration ratio ``RMECFF / (1 - HCT)`` (Sgouros 1993).

    For an agent confined to plasma that equilibrates with the marrow's extracellular fluid.
    """
    h = float(haematocrit)
    if not (0.0 < h < 1.0):
        raise InputError(f"haematocrit must be a fraction between 0 and 1, got {haematocrit!r}")
    if not (0.0 < rmecff <= 1.0):
        raise InputError(f"RMECFF must be a fraction between 0 and 1, got {rmecff!r}")
    return float(rmecff) / (1.0 - h)


def rmblr_rel_sd(haematocrit: float, haematocrit_sd: float, rmecff: float, rmecff_sd: float) -> float:
    """``u(RMBLR)/RMBLR`` of Sgouros's ratio: ``sqrt((u_E/E)^2 + (u_H/(1-H))^2)`` (first order)."""
    return math.hypot(rmecff_sd / rmecff, haematocrit_sd / (1.0 - haematocrit))


def time_integral(samples: Samples, half_life_s: float, what: str) -> tuple[float, float | None, str]:
    """TIA of a set of samples (Bq s or Bq s/mL) and its relative sd from the fit; AICc model selection.

    Returns ``(tia, rel_sd or None, how)``.
    """
    from persodose.kinetics.tia import organ_tac_tia

    if not np.any(samples.values > 0):
        raise InputError(f"{what}: no positive sample")
    res = organ_tac_tia(samples.times_s, samples.values, half_life_s, sigma=samples.sd, name=what)
    rel = res.tia_sd_bq_s / res.tia_bq_s if res.tia_bq_s > 0 and math.isfinite(res.tia_sd_bq_s) else None
    how = f"{res.chosen_model} ({res.note})" + ("" if samples.sd is not None else "; no sample uncertainties given")
    return float(res.tia_bq_s), rel, how


def electron_self_factor_gy_per_bq_s_g(nuclide: str) -> float:
    """``E_np`` in Gy per (Bq s) for 1 g: non-penetrating energy per decay (ICRP 107) absorbed locally."""
    from persodose.physics.radionuclides import get_nuclide

    n = get_nuclide(nuclide)
    return (n.electron_energy_per_decay_mev() + n.alpha_energy_per_decay_mev()) * _GY_PER_MEV_PER_G


def body_photon_factor_gy_per_bq_s(nuclide: str, body_mass_g: float) -> float:
    """Whole-body mean photon dose per decay spread uniformly in a body-sized sphere (density 1.04
    g/cm3, persodose.dose.organ_mird's default soft tissue), Gy per Bq s."""
    from persodose.dose.organ_mird import _photon_lines, photon_absorbed_fraction_sphere

    if not (body_mass_g > 0 and math.isfinite(body_mass_g)):
        raise InputError(f"body mass must be positive, got {body_mass_g!r} g")
    e, y = _photon_lines(nuclide)
    if e.size == 0:
        return 0.0
    phi = photon_absorbed_fraction_sphere(e, body_mass_g)
    return float(np.dot(e * y, phi)) * _GY_PER_MEV_PER_G / body_mass_g


# --------------------------------------------------------------------------- result
@dataclass(frozen=True)
class MarrowDose:
    """Red-marrow absorbed dose by one method, its parts (Gy), the quantities used and the budget."""

    method: str
    nuclide: str
    self_gy: float
    remainder_gy: float
    organs_gy: dict
    uncertainty: DoseUncertainty
    quantities: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def total_gy(self) -> float:
        return self.self_gy + self.remainder_gy + sum(self.organs_gy.values())

    @property
    def uncertainty_complete(self) -> bool:
        """False when a budget line has no value: the combined uncertainty is then a lower bound."""
        return self.uncertainty.complete

    def to_dict(self) -> dict:
        return {"method": self.method, "nuclide": self.nuclide, "red_marrow_dose_Gy": self.total_gy,
                "sd_Gy": self.uncertainty.sd_gy, "relative_sd_percent": 100 * self.uncertainty.relative_sd,
                "uncertainty_complete": self.uncertainty_complete,
                "self_dose_Gy": self.self_gy, "remainder_of_body_Gy": self.remainder_gy,
                "organs_Gy": dict(self.organs_gy), "quantities": dict(self.quantities), "notes": list(self.notes),
                "budget": self.uncertainty.budget()}


@dataclass(frozen=True)
class CrossDose:
    """What irradiates the marrow from outside it.

    Attributes:
        whole_body_tia_bq_s: whole-body TIA (Bq s) and its relative sd (None: not stated); None: no remainder term.
        body_mass_g: the patient's mass (g), for the photon approximation or the S(RM<-TB) correction.
        s_rm_rb_gy_per_bq_s: a phantom's S(RM<-RB) (its relative sd in ``s_rm_rb_rel_sd``, None: not stated).
        organs: rows of :func:`read_organs_csv` (their TIAs are taken out of the remainder).
    """

    whole_body_tia_bq_s: float | None = None
    whole_body_rel_sd: float | None = None
    body_mass_g: float | None = None
    s_rm_rb_gy_per_bq_s: float | None = None
    s_rm_rb_rel_sd: float | None = None
    organs: tuple = ()
    whole_body_note: str = ""


def _times(sd: float | None, factor: float) -> float | None:
    return None if sd is None else sd * factor


def _remainder_factor(cross: CrossDose, nuclide: str) -> tuple[float, str, bool]:
    """``(S(RM<-RB) in Gy/(Bq s), how, stated)``."""
    if cross.s_rm_rb_gy_per_bq_s is not None:
        return cross.s_rm_rb_gy_per_bq_s, "stated S(RM<-RB)", True
    if cross.body_mass_g is None:
        raise InputError("the cross-dose from the remainder of the body needs the body mass or S(RM<-RB)")
    return body_photon_factor_gy_per_bq_s(nuclide, cross.body_mass_g), "photons, uniform body sphere", False


def _cross_parts(cross: CrossDose, nuclide: str, tia_rm_out: float | None) -> tuple[float, dict, float, list, list]:
    """Remainder and organ cross-doses (Gy), the remainder's factor where it is sensitive to the TIAs, and the
    budget lines ``(name, sd_gy or None, note)`` of the whole-body, organ and S inputs.

    The remainder's TIA is ``A~_WB - sum A~_h - A~_RM`` (``A~_RM`` only when ``tia_rm_out`` is given), so its
    cross-dose depends on each TIA: ``dD/dA~_WB = S(RM<-RB)``, ``dD/dA~_h = S(RM<-h) - S(RM<-RB)``,
    ``dD/dA~_RM`` gets ``-S(RM<-RB)`` (the caller's self lines). First order, GUM JCGM 100:2008 5.1.2.
    """
    lines, notes = [], []
    organs = {o["organ"]: o["tia_bq_s"] * o["s_gy_per_bq_s"] for o in cross.organs}
    s_rb_eff, d_rb = 0.0, 0.0
    if cross.whole_body_tia_bq_s is None:
        notes.append("no whole-body TIA: cross-dose from the remainder of the body not included (a lower bound)")
    else:
        rb = cross.whole_body_tia_bq_s - sum(o["tia_bq_s"] for o in cross.organs) - (tia_rm_out or 0.0)
        s_rb, how, stated = _remainder_factor(cross, nuclide)
        if rb < 0:
            notes.append(f"remainder-of-body TIA {rb:.3g} Bq s < 0 (organs exceed the whole body): set to 0")
            rb = 0.0
        else:
            s_rb_eff = s_rb
        d_rb = rb * s_rb
        lines.append(("whole-body TIA", _times(cross.whole_body_rel_sd, s_rb_eff * cross.whole_body_tia_bq_s),
                      cross.whole_body_note or ("" if cross.whole_body_rel_sd is not None else "not stated")))
        if stated:
            lines.append(("S(RM<-RB)", _times(cross.s_rm_rb_rel_sd, d_rb),
                          "stated" if cross.s_rm_rb_rel_sd is not None else "not stated"))
        else:
            lines.append(("S(RM<-RB) photon model", None, "no uncertainty assigned to this approximation"))
            notes.append("remainder-of-body cross-dose: photons only, whole-body mean dose of a uniform body-sized "
                         "sphere (no uncertainty assigned to this model)")
        notes.append(f"S(RM<-RB): {how}")
    for o in cross.organs:
        sens = (o["s_gy_per_bq_s"] - s_rb_eff) * o["tia_bq_s"]  # through the organ and, negatively, the remainder
        lines.append((f"organ {o['organ']} TIA", _times(o["tia_rel_sd"], abs(sens)),
                      "S(RM<-h) - S(RM<-RB): the organ's TIA leaves the remainder" if o["tia_rel_sd"] is not None
                      else "not stated"))
        lines.append((f"organ {o['organ']} S", _times(o["s_rel_sd"], organs[o["organ"]]),
                      "stated" if o["s_rel_sd"] is not None else "not stated"))
    return d_rb, organs, s_rb_eff, lines, notes


def _result(method, nuclide, d_self, self_lines, cross, tia_rm, subtract_rm, quantities, notes) -> MarrowDose:
    """Assemble the dose and its budget.

    ``self_lines``: ``(name, rel_sd or None, note, scales_marrow_tia)``; a line that scales the marrow's TIA
    also moves the remainder (by ``-S(RM<-RB) A~_RM``) when the marrow's TIA is taken out of the body
    (``subtract_rm``).
    """
    tia_out = tia_rm if subtract_rm else None
    d_rb, organs, s_rb_eff, cross_lines, cross_notes = _cross_parts(cross, nuclide, tia_out)
    through_rm = d_self - s_rb_eff * (tia_out or 0.0)
    lines = [(n, _times(rel, abs(through_rm) if scales else d_self), note) for n, rel, note, scales in self_lines]
    total = d_self + d_rb + sum(organs.values())
    comps = tuple(Component(name, (sd / total) if (total > 0 and sd is not None) else None, note)
                  for name, sd, note in lines + cross_lines)
    unc = DoseUncertainty("red_marrow", method, total, comps)
    notes = list(notes) + cross_notes
    if cross.whole_body_tia_bq_s is not None:
        notes.append("the marrow's TIA is taken out of the remainder of the body (the stated S(RM<-RM) covers its "
                     "photons)" if subtract_rm else
                     "the marrow's TIA is left in the body's photon source: its photons are counted with the rest "
                     "of the body (the self-dose factor is electrons and alphas only)")
    missing = [c.name for c in comps if c.relative_sd is None]
    if missing:
        notes.append("uncertainty incomplete (lower bound): no value for " + ", ".join(missing))
    return MarrowDose(method, nuclide, d_self, d_rb, organs, unc, quantities, tuple(notes))


# --------------------------------------------------------------------------- the two methods
def _ratio(rmblr, rmblr_sd, haematocrit, haematocrit_sd, rmecff, rmecff_sd, blood: Samples, notes: list):
    """``(RMBLR, haematocrit, self lines of the ratio)``; a None sd is "not stated"."""
    if rmblr is None:
        hct = haematocrit if haematocrit is not None else blood.haematocrit
        if hct is None:
            raise InputError("give the red-marrow-to-blood ratio (RMBLR) or the haematocrit")
        ratio = rmblr_from_haematocrit(hct, rmecff)
        notes.append(f"RMBLR = RMECFF / (1 - HCT) = {rmecff:g} / (1 - {hct:g}) (Sgouros, J Nucl Med 34 (1993) 689)")
        # d ln(RMBLR) = d ln(RMECFF) + dH / (1 - H) (first order, independent)
        return ratio, hct, [("RMBLR: haematocrit", _times(haematocrit_sd, 1.0 / (1.0 - hct)),
                             "stated" if haematocrit_sd is not None else "not stated", True),
                            ("RMBLR: RMECFF", _times(rmecff_sd, 1.0 / rmecff),
                             "stated" if rmecff_sd is not None else "not stated", True)]
    if not (rmblr > 0 and math.isfinite(rmblr)):
        raise InputError(f"RMBLR must be positive, got {rmblr!r}")
    notes.append(f"RMBLR = {float(rmblr):g} (given)")
    return float(rmblr), haematocrit, [("RMBLR", _times(rmblr_sd, 1.0 / float(rmblr)),
                                        "stated" if rmblr_sd is not None else "not stated", True)]


def blood_based_marrow_dose(blood: Samples, nuclide: str, *, rmblr: float | None = None,
                            rmblr_sd: float | None = None, haematocrit: float | None = None,
                            haematocrit_sd: float | None = None, rmecff: float = RMECFF_SGOUROS,
                            rmecff_sd: float | None = None, calibration_rel_sd: float | None = None,
                            marrow_mass_g: float | None = None, s_rm_rm_gy_per_bq_s: float | None = None,
                            s_rm_rm_rel_sd: float | None = None, cross: CrossDose = CrossDose()) -> MarrowDose:
    """Red-marrow dose by the EANM blood-based method (module docstring).

    Args:
        blood: blood samples, Bq/mL at the sampling times, not decay corrected (:func:`read_samples_csv`);
            at least two (the blood's clearance needs two points).
        nuclide: radionuclide.
        rmblr: the red-marrow-to-blood ratio (and its standard uncertainty ``rmblr_sd``); None: from the
            haematocrit (argument, else the samples' column) with Sgouros's model.
        rmecff, rmecff_sd: Sgouros's extracellular fluid fraction and its uncertainty.
        calibration_rel_sd: relative uncertainty of the well counter's calibration.
        marrow_mass_g: the patient's red-marrow mass (g): needed with ``s_rm_rm_gy_per_bq_s`` (the marrow's TIA
            is then taken out of the remainder of the body).
        s_rm_rm_gy_per_bq_s: S(RM<-RM) of a phantom scaled to this patient (all emissions); default electrons
            and alphas absorbed locally (the marrow's photons then stay with the body's).
        cross: what irradiates the marrow from outside.

    Every uncertainty left None is "not stated": its budget line has no value and the result says that the
    combined uncertainty is a lower bound.
    """
    from persodose.physics.radionuclides import get_nuclide

    if blood.times_s.size < 2:
        raise InputError("the blood-based method needs at least 2 blood samples: one sample gives no clearance "
                         "(Hänscheid's single-time-point formula is for organ uptake, not blood)")
    half_life_s = get_nuclide(nuclide).half_life_s
    tiac, fit_rel, how = time_integral(blood, half_life_s, "blood")  # Bq s / mL
    notes = [f"blood TIAC: {how}", "blood and marrow concentrations per mL taken per g (1 g/mL)"]
    ratio, hct, ratio_lines = _ratio(rmblr, rmblr_sd, haematocrit, haematocrit_sd, rmecff, rmecff_sd, blood, notes)
    tiac_rm = tiac * ratio  # Bq s per g of marrow
    tia_rm = tiac_rm * marrow_mass_g if marrow_mass_g else None
    if s_rm_rm_gy_per_bq_s is not None:
        if tia_rm is None:
            raise InputError("S(RM<-RM) needs the marrow mass (the EANM form A~_RM S(RM<-RM))")
        d_self, s_note = tia_rm * s_rm_rm_gy_per_bq_s, "stated S(RM<-RM)"
    else:
        d_self, s_note = tiac_rm * electron_self_factor_gy_per_bq_s_g(nuclide), "electrons absorbed in the marrow"
    lines = [("blood TIAC (samples and fit)", fit_rel, "" if fit_rel is not None else "no fit covariance", True),
             ("counter calibration", calibration_rel_sd, "" if calibration_rel_sd is not None else "not stated",
              True)] + ratio_lines
    if s_rm_rm_gy_per_bq_s is not None:
        lines.append(("S(RM<-RM)", s_rm_rm_rel_sd, "stated" if s_rm_rm_rel_sd is not None else "not stated", False))
    q = {"blood_tiac_bq_s_per_ml": tiac, "rmblr": ratio, "haematocrit": hct, "marrow_tiac_bq_s_per_g": tiac_rm,
         "marrow_tia_bq_s": tia_rm, "self_dose_factor": s_note}
    return _result("blood", nuclide, d_self, lines, cross, tia_rm, s_rm_rm_gy_per_bq_s is not None, q, notes)


def _stated(x):
    return "" if x is not None else "not stated"


def image_based_marrow_dose(l2l4: Samples, nuclide: str, *, fraction_in_l2l4: float,
                            fraction_rel_sd: float | None = None, marrow_mass_g: float,
                            mass_rel_sd: float | None = None, calibration_rel_sd: float | None = None,
                            recovery_rel_sd: float | None = None, s_rm_rm_gy_per_bq_s: float | None = None,
                            s_rm_rm_rel_sd: float | None = None, cross: CrossDose = CrossDose()) -> MarrowDose:
    """Red-marrow dose from the activity in lumbar vertebrae L2-L4 (module docstring).

    Args:
        l2l4: activity in the L2-L4 VOI at each time point, Bq (recovery-corrected).
        fraction_in_l2l4: the fraction of the whole red marrow inside L2-L4 (give its source).
        marrow_mass_g: the patient's red-marrow mass, g.
        calibration_rel_sd, recovery_rel_sd, fraction_rel_sd, mass_rel_sd: relative uncertainties (None: not
            stated). The mass enters only the default self factor ``E_np / m`` (a stated S(RM<-RM) is scaled to
            the patient already).
    """
    from persodose.physics.radionuclides import get_nuclide

    if not (0.0 < fraction_in_l2l4 <= 1.0):
        raise InputError(f"the fraction of the red marrow in L2-L4 must lie in (0, 1], got {fraction_in_l2l4!r}")
    if not (marrow_mass_g and marrow_mass_g > 0 and math.isfinite(marrow_mass_g)):
        raise InputError(f"the red-marrow mass must be positive, got {marrow_mass_g!r} g")
    tia_l, fit_rel, how = time_integral(l2l4, get_nuclide(nuclide).half_life_s, "L2-L4")
    tia_rm = tia_l / fraction_in_l2l4
    lines = [("L2-L4 activities and fit", fit_rel, "" if fit_rel is not None else "no fit covariance", True),
             ("calibration", calibration_rel_sd, _stated(calibration_rel_sd), True),
             ("recovery", recovery_rel_sd, _stated(recovery_rel_sd), True),
             ("L2-L4 fraction of the marrow", fraction_rel_sd, _stated(fraction_rel_sd), True)]
    if s_rm_rm_gy_per_bq_s is not None:
        d_self, s_note = tia_rm * s_rm_rm_gy_per_bq_s, "stated S(RM<-RM)"
        lines.append(("S(RM<-RM)", s_rm_rm_rel_sd, "stated" if s_rm_rm_rel_sd is not None else "not stated", False))
    else:
        d_self = tia_rm * electron_self_factor_gy_per_bq_s_g(nuclide) / marrow_mass_g
        s_note = "electrons absorbed in the marrow"
        lines.append(("marrow mass", mass_rel_sd, _stated(mass_rel_sd), False))
    q = {"l2l4_tia_bq_s": tia_l, "fraction_in_l2l4": fraction_in_l2l4, "marrow_tia_bq_s": tia_rm,
         "marrow_mass_g": marrow_mass_g, "self_dose_factor": s_note}
    return _result("image (L2-L4)", nuclide, d_self, lines, cross, tia_rm, s_rm_rm_gy_per_bq_s is not None, q,
                   [f"L2-L4 TIA: {how}"])


def s_rm_rb_from_total_body(s_rm_tb: float, s_rm_rm: float, body_mass_g: float, marrow_mass_g: float) -> float:
    """``S(RM<-RB) = S(RM<-TB) m_TB / m_RB - S(RM<-RM) m_RM / m_RB``, ``m_RB = m_TB - m_RM`` (remainder-of-body
    correction; Hindorf et al. 2010)."""
    m_rb = body_mass_g - marrow_mass_g
    if not (m_rb > 0):
        raise InputError("the body mass must exceed the marrow mass")
    return s_rm_tb * body_mass_g / m_rb - s_rm_rm * marrow_mass_g / m_rb


__all__ = ["RMECFF_SGOUROS", "Samples", "read_samples_csv", "read_organs_csv", "rmblr_from_haematocrit",
           "rmblr_rel_sd", "time_integral", "electron_self_factor_gy_per_bq_s_g", "body_photon_factor_gy_per_bq_s",
           "MarrowDose", "CrossDose", "blood_based_marrow_dose", "image_based_marrow_dose",
           "s_rm_rb_from_total_body"]
