"""Radiation sources for the Monte Carlo engine.

A radionuclide's decay is described by ICRP Publication 107 through
:mod:`persodose.physics.radionuclides`: beta spectra, and discrete lines (gamma, X-rays,
internal-conversion and Auger electrons) with their yields per decay. ICRP 107 gives yields
but no correlations between emissions, so each decay draws its emissions independently:
the number of betas of each sign and of discrete emissions is ``floor(Y) + Bernoulli(Y -
floor(Y))`` for a total yield ``Y``, each discrete emission picked in proportion to its
yield. Every emission therefore appears with exactly its ICRP yield on average, which is
all an absorbed dose (a linear tally) depends on.

Emissions that cannot travel (photons below the photon cut-off, electrons below the
electron cut-off, alpha particles and recoils) are not sampled: their mean energy per
decay is deposited in the decay voxel, which is exact in expectation and adds no variance.
Annihilation photons are not taken from the table: the transport makes them when each
positron stops.

A run may emit only some categories of emission (``MCSettings.emissions``, names in
:data:`persodose.mc.settings.EMISSION_CATEGORIES`, ICRP-107 radiation types in
:data:`CATEGORY_LINES`), to compare with published kernels computed from fewer emission
types. The filter applies to everything a category contributes: its transported lines or
spectrum and its share of the energy deposited at the decay site.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from persodose.errors import InputError
from persodose.mc.settings import EMISSION_CATEGORIES, normalise_emissions
from persodose.mc.transport import ELECTRON, PHOTON
from persodose.physics.radionuclides import get_nuclide

_PHOTON_LINES = ("gamma", "xray")
_ELECTRON_LINES = ("ic", "auger")
_LOCAL_LINES = ("alpha", "alpha_recoil")

#: Emission category -> the ICRP Publication 107 radiation types (keys of
#: :attr:`persodose.physics.radionuclides.Nuclide.lines`) it takes. ``beta`` holds the β-
#: branches and the delayed β- of fission fragments (both sampled from the β- spectrum);
#: neutrons and fission fragments are not emitted by the engine in any selection, and
#: annihilation photons are made by the transport from the positrons.
CATEGORY_LINES = {
    "beta": ("beta-", "beta_delayed"),
    "positron": ("beta+",),
    "gamma": ("gamma",),
    "xray": ("xray",),
    "ic": ("ic",),
    "auger": ("auger",),
    "alpha": ("alpha", "alpha_recoil"),
}
assert tuple(CATEGORY_LINES) == EMISSION_CATEGORIES
_BETA_CATEGORY = {"beta-": "beta", "beta+": "positron"}


@dataclass(frozen=True, eq=False)
class DecayTables:
    """Arrays the decay kernel samples from.

    Attributes:
        nuclide: canonical name.
        local_mev: mean energy per decay deposited at the decay site, MeV.
        beta_yields: (2,) betas per decay (beta-, beta+).
        beta_minus_e, beta_minus_cdf, beta_plus_e, beta_plus_cdf: spectra as cumulative
            distributions on an energy grid (MeV); a dummy pair where there is no branch.
        line_kind, line_e, line_cum: discrete emissions that are transported.
        line_total: total yield of those emissions per decay.
        mean_emitted_mev: expected energy emitted per decay (excluding annihilation) by the
            selected emissions.
        emissions: the selected categories (:data:`CATEGORY_LINES`), ``None`` for all.
        full_emitted_mev: expected energy emitted per decay with all emissions; equal to
            ``mean_emitted_mev`` when ``emissions`` is ``None``.
    """

    nuclide: str
    local_mev: float
    beta_yields: np.ndarray
    beta_minus_e: np.ndarray
    beta_minus_cdf: np.ndarray
    beta_plus_e: np.ndarray
    beta_plus_cdf: np.ndarray
    line_kind: np.ndarray
    line_e: np.ndarray
    line_cum: np.ndarray
    line_total: float
    mean_emitted_mev: float
    emissions: tuple[str, ...] | None = None
    full_emitted_mev: float = float("nan")

    @property
    def left_out_mev(self) -> float:
        """Energy per decay that the selection leaves out, MeV."""
        return self.full_emitted_mev - self.mean_emitted_mev


def _spectrum_cdf(energy_mev: np.ndarray, density: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    e = np.asarray(energy_mev, dtype=np.float64)
    d = np.clip(np.asarray(density, dtype=np.float64), 0.0, None)
    seg = 0.5 * (d[1:] + d[:-1]) * np.diff(e)
    cdf = np.concatenate(([0.0], np.cumsum(seg)))
    total = float(cdf[-1])
    mean = float(np.sum(0.5 * (d[1:] * e[1:] + d[:-1] * e[:-1]) * np.diff(e)) / total) if total > 0 else 0.0
    return e, cdf, total, mean


def decay_tables(nuclide: str, photon_cut_mev: float, electron_cut_mev: float, emax_mev: float,
                 emissions=None) -> DecayTables:
    """Build the sampling tables of a nuclide for given cut-offs.

    Args:
        nuclide: ICRP-107 radionuclide.
        photon_cut_mev, electron_cut_mev: below these, emissions are deposited at the decay site.
        emax_mev: top energy of the transport tables.
        emissions: the categories to emit (see :func:`persodose.mc.settings.normalise_emissions`);
            ``None`` or ``"all"`` for all, which gives exactly the tables of every category.

    Raises:
        NuclideError: unknown nuclide. InputError: an emission above the tables' top energy,
        an unknown category, or a selection that emits nothing of this nuclide.
    """
    nuc = get_nuclide(nuclide)
    selected = normalise_emissions(emissions)
    full = _build(nuc, photon_cut_mev, electron_cut_mev, emax_mev, None)
    if selected is None:
        return full
    tables = _build(nuc, photon_cut_mev, electron_cut_mev, emax_mev, frozenset(selected))
    if not tables.mean_emitted_mev > 0:
        has = [c for c in EMISSION_CATEGORIES
               if any(nuc.lines[k].energy_per_decay_mev > 0 for k in CATEGORY_LINES[c])]
        raise InputError(f"{nuc.name} emits nothing of {','.join(selected)}; it emits {','.join(has)}")
    return DecayTables(**{**tables.__dict__, "emissions": selected, "full_emitted_mev": full.mean_emitted_mev})


def _build(nuc, photon_cut_mev: float, electron_cut_mev: float, emax_mev: float,
           selected: frozenset | None) -> DecayTables:
    """The tables of the categories ``selected`` (``None``: all)."""
    def keep(key: str) -> bool:
        return selected is None or any(key in CATEGORY_LINES[c] for c in selected)

    local = sum(nuc.lines[k].energy_per_decay_mev for k in _LOCAL_LINES if keep(k))
    kinds, energies, yields = [], [], []
    for group, kind, cut in ((_PHOTON_LINES, PHOTON, photon_cut_mev), (_ELECTRON_LINES, ELECTRON, electron_cut_mev)):
        for key in group:
            if not keep(key):
                continue
            em = nuc.lines[key]
            for e, y in zip(np.asarray(em.energy_mev, float), np.asarray(em.yield_per_decay, float)):
                if y <= 0:
                    continue
                if e < cut:
                    local += e * y
                    continue
                if e > emax_mev:
                    raise InputError(f"{nuc.name} emits {e:.3f} MeV, above the transport tables' "
                                     f"{emax_mev} MeV: raise emax_mev")
                kinds.append(kind)
                energies.append(e)
                yields.append(y)
    yb = np.zeros(2)
    spectra = []
    mean_beta = 0.0
    for b, kind in enumerate(("beta-", "beta+")):
        y_branch = nuc.lines[kind].total_yield + (nuc.lines["beta_delayed"].total_yield if kind == "beta-" else 0.0)
        if y_branch > 0 and (selected is None or _BETA_CATEGORY[kind] in selected):
            e, dens = nuc.beta_spectrum(kind)
            grid, cdf, total, mean = _spectrum_cdf(e, dens)
            if total <= 0:
                raise InputError(f"{nuc.name}: empty {kind} spectrum")
            if grid[-1] > emax_mev:
                raise InputError(f"{nuc.name} {kind} spectrum reaches {grid[-1]:.3f} MeV, above the "
                                 f"transport tables' {emax_mev} MeV: raise emax_mev")
            yb[b] = y_branch
            spectra.append((grid, cdf))
            mean_beta += y_branch * mean
        else:
            spectra.append((np.array([0.0, 1.0]), np.array([0.0, 1.0])))
    y_arr = np.asarray(yields, dtype=np.float64)
    line_cum = np.concatenate(([0.0], np.cumsum(y_arr))) if y_arr.size else np.array([0.0, 1.0])
    # _search in the kernel returns j with cum[j] <= r < cum[j+1]: line j.
    line_e = np.asarray(energies, dtype=np.float64) if energies else np.array([0.0])
    line_kind = np.asarray(kinds, dtype=np.int64) if kinds else np.array([PHOTON], dtype=np.int64)
    mean_emitted = local + float(np.dot(energies, yields) if energies else 0.0) + mean_beta
    return DecayTables(
        nuclide=nuc.name, local_mev=float(local), beta_yields=yb,
        beta_minus_e=spectra[0][0], beta_minus_cdf=spectra[0][1],
        beta_plus_e=spectra[1][0], beta_plus_cdf=spectra[1][1],
        line_kind=line_kind, line_e=line_e, line_cum=line_cum,
        line_total=float(y_arr.sum()) if y_arr.size else 0.0, mean_emitted_mev=mean_emitted,
        full_emitted_mev=mean_emitted,
    )


def voxel_source(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the non-zero voxels and the cumulative of their values (float64).

    Raises:
        InputError: negative, NaN or all-zero source.
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(flat)):
        raise InputError("the source (activity / time-integrated activity) contains NaN or infinity")
    if np.any(flat < 0):
        raise InputError("the source (activity / time-integrated activity) has negative values")
    idx = np.flatnonzero(flat > 0)
    if idx.size == 0:
        raise InputError("the source (activity / time-integrated activity) is zero everywhere")
    cdf = np.cumsum(flat[idx])
    return idx.astype(np.int64), cdf
