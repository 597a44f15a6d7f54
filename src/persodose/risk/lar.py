"""Lifetime attributable risk (LAR) per organ, and detriment from effective dose.

Two population models, never a prediction for the individual (:data:`POPULATION_STATEMENT`
goes with every result):

1. **BEIR VII Phase 2 LAR tables.** National Research Council, *Health Risks from Exposure to
   Low Levels of Ionizing Radiation: BEIR VII Phase 2*, National Academies Press, 2006,
   Tables 12D-1 (incidence) and 12D-2 (mortality): cases (deaths) per 100 000 persons of a US
   population exposed to a single dose of 0.1 Gy, by sex, cancer site and age at exposure
   (0, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80 y). The solid-cancer entries already include the
   DDREF of 1.5. The risk for an organ dose ``D`` is ``LAR(site, sex, age) x D / 0.1 Gy``
   (linear, no threshold, as the tables assume at low dose), with the table linearly
   interpolated in age at exposure (constant beyond 0 and 80 y).

   **The table values are not shipped.** They could not be checked against a copy of the
   report in this project's sources, so none is typed in from memory; the user gives the
   table as a CSV (:func:`read_lar_table`, layout in ``docs/risk.md``) transcribed from the
   report, and every result names the file it came from.

2. **ICRP 103 detriment.** ICRP Publication 103 (2007), Table 1: detriment-adjusted nominal
   risk coefficients for stochastic effects after exposure at low dose rate, per Sv: whole
   population 5.5e-2 cancer + 0.2e-2 heritable; adult workers 4.1e-2 cancer + 0.1e-2
   heritable. ``detriment = coefficient x E``.

Organ names map to BEIR sites through the ICRP tissue of
:func:`persodose.risk.effective_dose.tissue_for_label` (red marrow -> leukaemia; every tissue
without a BEIR site of its own -> none, it is part of "other solid" which needs a dose to the
rest of the body and is not formed from organ doses here).
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

from persodose.errors import InputError
from persodose.risk.effective_dose import _SIDES, tissue_for_label

__all__ = ["POPULATION_STATEMENT", "BEIR_AGES", "BEIR_SITES", "ICRP103_NOMINAL_PER_SV", "LARTable",
           "OrganRisk", "RiskResult", "read_lar_table", "site_for_label", "lifetime_attributable_risk",
           "detriment"]

#: Printed with every risk figure.
POPULATION_STATEMENT = ("These are population risk models (BEIR VII, ICRP 103) averaged over a reference "
                        "population; they are not a prediction of cancer for this individual.")
#: Ages at exposure of BEIR VII Tables 12D-1 / 12D-2, years.
BEIR_AGES = (0, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80)
#: Cancer sites of the tables (``all_solid`` is their sum over solid sites).
BEIR_SITES = ("stomach", "colon", "liver", "lung", "breast", "prostate", "uterus", "ovary", "bladder",
              "other_solid", "thyroid", "all_solid", "leukaemia")
#: ICRP 103 tissue -> BEIR site.
_TISSUE_TO_SITE = {"stomach": "stomach", "colon": "colon", "liver": "liver", "lung": "lung", "breast": "breast",
                   "prostate": "prostate", "uterus_cervix": "uterus", "bladder": "bladder", "thyroid": "thyroid",
                   "red_marrow": "leukaemia"}
_SEX_SITES = {"M": ("breast", "uterus", "ovary"), "F": ("prostate",)}  # sites a sex has not in the tables
#: ICRP 103 Table 1, detriment-adjusted nominal risk coefficients, per Sv.
ICRP103_NOMINAL_PER_SV: Mapping[str, Mapping[str, float]] = {
    "whole": {"cancer": 5.5e-2, "heritable": 0.2e-2},
    "adult": {"cancer": 4.1e-2, "heritable": 0.1e-2},
}
_TABLE_DOSE_GY = 0.1
_PER = 100_000.0


def site_for_label(name: str, sex: str | None = None) -> str | None:
    """The BEIR VII site of a persodose organ name, or ``None`` (also for a site of the other sex)."""
    key = _SIDES.sub("", re.sub(r"[\s\-]+", "_", str(name).strip().lower()))
    if key in ("ovary", "ovaries"):
        site = "ovary"
    else:
        site = _TISSUE_TO_SITE.get(tissue_for_label(name) or "")
    if site is not None and sex is not None and site in _SEX_SITES[_sex(sex)]:
        return None
    return site


def _sex(sex: str) -> str:
    s = str(sex).strip().upper()[:1]
    if s not in ("M", "F"):
        raise InputError(f"sex must be M or F, got {sex!r}")
    return s


@dataclass(frozen=True)
class LARTable:
    """LAR per 100 000 persons exposed to 0.1 Gy: ``values[(measure, sex, site)]`` -> one value per
    age of :data:`BEIR_AGES`; ``measure`` is ``incidence`` or ``mortality``; ``source`` names the file."""

    values: Mapping[tuple, tuple]
    source: str

    def at(self, measure: str, sex: str, site: str, age_y: float) -> float | None:
        """LAR per 100 000 at 0.1 Gy, linearly interpolated in age (held beyond 0 and 80 y)."""
        row = self.values.get((measure, _sex(sex), site))
        if row is None:
            return None
        a = min(max(float(age_y), BEIR_AGES[0]), BEIR_AGES[-1])
        for i in range(len(BEIR_AGES) - 1):
            a0, a1 = BEIR_AGES[i], BEIR_AGES[i + 1]
            if a <= a1:
                t = (a - a0) / (a1 - a0)
                return row[i] + t * (row[i + 1] - row[i])
        return row[-1]


def read_lar_table(path: str | os.PathLike) -> LARTable:
    """Read a LAR table CSV: columns ``measure,sex,site,0,5,10,15,20,30,40,50,60,70,80``.

    ``measure``: incidence or mortality; ``sex``: M or F; ``site``: one of :data:`BEIR_SITES`;
    values: cases or deaths per 100 000 persons exposed to 0.1 Gy (BEIR VII Tables 12D-1/12D-2).

    Raises:
        InputError: unreadable file, missing columns, unknown site, a value that is not a
            finite number >= 0.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise InputError(f"LAR table {p}: {exc.strerror or exc}") from None
    rows = list(csv.DictReader(text.splitlines()))
    cols = ["measure", "sex", "site"] + [str(a) for a in BEIR_AGES]
    if not rows or any(c not in rows[0] for c in cols):
        raise InputError(f"LAR table {p}: needs the columns {','.join(cols)}")
    values = {}
    for n, r in enumerate(rows, start=2):
        measure, site = r["measure"].strip().lower(), r["site"].strip().lower()
        if measure not in ("incidence", "mortality") or site not in BEIR_SITES:
            raise InputError(f"LAR table {p} line {n}: unknown measure {measure!r} or site {site!r}")
        try:
            vals = tuple(float(r[str(a)]) for a in BEIR_AGES)
        except (TypeError, ValueError):
            raise InputError(f"LAR table {p} line {n}: every age column must hold a number") from None
        if not all(math.isfinite(v) and v >= 0 for v in vals):
            raise InputError(f"LAR table {p} line {n}: values must be finite and >= 0")
        values[(measure, _sex(r["sex"]), site)] = vals
    return LARTable(values=values, source=str(p))


@dataclass
class OrganRisk:
    """Risk from one organ's dose: ``lar_incidence`` / ``lar_mortality`` are probabilities
    (cases per person), ``None`` where the table has no entry."""

    organ: str
    site: str
    dose_gy: float
    lar_incidence: float | None
    lar_mortality: float | None


@dataclass
class RiskResult:
    """LAR per organ (BEIR VII) and its sums, with the statement and sources."""

    sex: str
    age_at_exposure_y: float
    organs: list
    total_incidence: float
    total_mortality: float
    unmapped_organs: list
    statement: str = POPULATION_STATEMENT
    source: str = ""
    uncertainty: str = ("BEIR VII Phase 2 (2006, chapter 12) attaches 95 % subjective confidence intervals "
                        "to its LAR estimates, wide (of the order of a factor of two or more); they were not "
                        "checked against the report here and are not recomputed.")
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def lifetime_attributable_risk(organ_doses_gy: Mapping[str, float], sex: str, age_at_exposure_y: float,
                               table: LARTable) -> RiskResult:
    """LAR of cancer incidence and mortality per organ, ``LAR_table x dose / 0.1 Gy``.

    Args:
        organ_doses_gy: organ name -> mean absorbed dose, Gy (Sv for photons, w_R = 1).
        sex: ``M`` or ``F``.
        age_at_exposure_y: age at exposure, years (0 to 120).
        table: the BEIR VII table (:func:`read_lar_table`).

    Returns:
        :class:`RiskResult`; several labels of one site (left and right lung) are averaged.

    Raises:
        InputError: unknown sex, an age outside 0-120, a negative or non-finite dose.
    """
    s = _sex(sex)
    age = float(age_at_exposure_y)
    if not (math.isfinite(age) and 0 <= age <= 120):
        raise InputError(f"age at exposure must be 0 to 120 years, got {age_at_exposure_y!r}")
    by_site: dict[str, list] = {}
    unmapped = []
    for name, dose in organ_doses_gy.items():
        d = float(dose)
        if not (math.isfinite(d) and d >= 0):
            raise InputError(f"organ dose of {name!r} must be finite and >= 0, got {dose!r}")
        site = site_for_label(name, s)
        if site is None:
            unmapped.append(str(name))
        else:
            by_site.setdefault(site, []).append((str(name), d))
    organs, inc, mort, notes = [], 0.0, 0.0, []
    for site, items in by_site.items():
        d = sum(v for _, v in items) / len(items)
        li, lm = (table.at(m, s, site, age) for m in ("incidence", "mortality"))
        ri = None if li is None else li / _PER * d / _TABLE_DOSE_GY
        rm = None if lm is None else lm / _PER * d / _TABLE_DOSE_GY
        if li is None and lm is None:
            notes.append(f"{site}: no entry in {table.source}")
        organs.append(OrganRisk("+".join(n for n, _ in items), site, d, ri, rm))
        inc += ri or 0.0
        mort += rm or 0.0
    return RiskResult(sex=s, age_at_exposure_y=age, organs=organs, total_incidence=inc, total_mortality=mort,
                      unmapped_organs=unmapped, source=f"BEIR VII Phase 2 Tables 12D-1/12D-2 as given in "
                                                       f"{table.source}", notes=notes)


def detriment(effective_dose_sv: float, population: str = "whole") -> dict:
    """ICRP 103 detriment ``coefficient x E`` (Table 1), as probabilities.

    Args:
        effective_dose_sv: effective dose, Sv.
        population: ``whole`` (5.5e-2 + 0.2e-2 per Sv) or ``adult`` (4.1e-2 + 0.1e-2 per Sv).

    Returns:
        ``{"cancer", "heritable", "total", "coefficients_per_sv", "population", "statement", "source"}``.
    """
    e = float(effective_dose_sv)
    if not (math.isfinite(e) and e >= 0):
        raise InputError(f"effective dose must be finite and >= 0 Sv, got {effective_dose_sv!r}")
    if population not in ICRP103_NOMINAL_PER_SV:
        raise InputError(f"population must be one of {', '.join(ICRP103_NOMINAL_PER_SV)}, got {population!r}")
    c = ICRP103_NOMINAL_PER_SV[population]
    return {"population": population, "effective_dose_sv": e, "cancer": c["cancer"] * e,
            "heritable": c["heritable"] * e, "total": (c["cancer"] + c["heritable"]) * e,
            "coefficients_per_sv": dict(c), "statement": POPULATION_STATEMENT,
            "source": "ICRP Publication 103 (2007), Table 1, detriment-adjusted nominal risk coefficients"}
