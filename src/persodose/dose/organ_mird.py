"""Organ-level MIRD self-dose with a sphere model for photons (organs and lesions).

For each labelled region r (organ or lesion) of the patient:

    D(r) = A~(r) * [ E_np + sum_i E_i y_i phi_i(r) ] * 1.602176634e-13 J/MeV / m(r)

(MIRD schema: W. E. Bolch et al., MIRD Pamphlet No. 21, J. Nucl. Med. 50 (2009) 477-484),
with

* ``A~(r)``: the sum of the time-integrated activity over the region's voxels, Bq s;
* ``m(r)``: the patient's region mass, ``sum(rho) * V_voxel`` from the density grid, g;
* ``E_np``: non-penetrating energy per decay (electrons of every kind, alphas and recoils),
  absorbed fraction 1 (ICRP Publication 107 energies);
* ``E_i, y_i``: photon lines (gamma, X, annihilation) of ICRP Publication 107;
* ``phi_i(r)``: photon self-absorbed fraction of a sphere of the region's mass and mean density
  (volume ``V = m / rho_mean``, radius ``R = (3 V / 4 pi)^(1/3)``).

Photon absorbed fraction models (``photon_model``):

* ``"sphere_mu_en"`` (default): ``phi = 1 - P_esc(mu_en R)`` where
  ``P_esc(tau) = 3 / (8 tau^3) * [2 tau^2 - 1 + (1 + 2 tau) exp(-2 tau)]`` is the exact
  probability that a photon emitted uniformly and isotropically in a sphere of optical radius
  ``tau`` leaves it without interacting (K. M. Case, F. de Hoffmann, G. Placzek, "Introduction to
  the theory of neutron diffusion", Los Alamos, 1953; the first-collision escape probability of
  a sphere), evaluated with the linear energy-absorption coefficient ``mu_en`` instead of the
  attenuation coefficient ``mu`` (the "mu_en approximation": scattered photons are taken to
  carry away exactly the energy that ``mu_en`` says is not absorbed; build-up is otherwise
  ignored).
* ``"mean_chord"``: ``phi = 1 - exp(-mu_en * 4 V / S)``, with the mean chord length ``4 V / S``
  (``4 R / 3`` for a sphere; Cauchy's formula). Cruder: for small spheres it gives
  ``phi = (4/3) mu_en R`` where the exact first-collision value is ``(3/4) mu_en R``.
* ``"none"``: photons are not absorbed (electron-only self-dose).

Accuracy. The ``mu_en`` approximation is known to be reasonable for organ-sized spheres and
poorer (underestimating photon absorption at low energy where multiply scattered photons are
absorbed, overestimating it in small spheres) than Monte Carlo absorbed fractions for spheres
(e.g. M. G. Stabin, M. W. Konijnenberg, J. Nucl. Med. 41 (2000) 149-160, whose tabulated
values are not shipped here). Its accuracy has NOT been validated against those tables in
persodose; treat the photon part as approximate (tens of percent). For beta emitters with few
photons the photon term is a small part of the self-dose (Lu-177: photons carry 19 % of the
emitted energy, of which a 300 g organ absorbs only a small fraction), so the total is
dominated by the exact electron term.

Limitations of this first version: cross-dose between regions is neglected (each region
receives only its own self-dose); electrons are absorbed entirely in their region of
emission (absorbed fraction 1, poor for regions of a few mL and for high-energy beta emitters
such as Y-90); mu_en/rho is that of ICRU soft tissue unless a material is given per region.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np

from persodose.dose.kernels import MEV_TO_J
from persodose.dose.registry import check_tia
from persodose.errors import InputError, UnitsError
from persodose.grid import Grid, Kind
from persodose.physics.radionuclides import PHOTON_TYPES, get_nuclide

__all__ = [
    "OrganDose",
    "PHOTON_MODELS",
    "sphere_escape_probability",
    "photon_absorbed_fraction_sphere",
    "sphere_self_dose",
    "organ_doses",
    "organ_dose_rows",
]

PHOTON_MODELS = ("sphere_mu_en", "mean_chord", "none")
_E_MIN_MEV = 1e-3  # lowest energy of the photon tables; softer photons are absorbed locally


@dataclass(frozen=True)
class OrganDose:
    """Self-dose of one region.

    Attributes:
        label: label value (0 for a stand-alone sphere).
        name: region name.
        kind: ``"organ"``, ``"lesion"`` or ``"sphere"``.
        volume_ml: region volume, mL.
        mass_g: region mass, g.
        mean_density_g_cm3: mass / volume, g/cm3.
        tia_bq_s: time-integrated activity in the region, Bq s.
        electron_dose_gy: dose from electrons and alphas (absorbed fraction 1), Gy.
        photon_dose_gy: dose from photons absorbed in the region, Gy.
        dose_gy: total self-dose, Gy.
        photon_absorbed_fraction: energy-weighted photon self-absorbed fraction (0 if the
            nuclide emits no photons).
        photon_model: the model used (see the module docstring).
    """

    label: int
    name: str
    kind: str
    volume_ml: float
    mass_g: float
    mean_density_g_cm3: float
    tia_bq_s: float
    electron_dose_gy: float
    photon_dose_gy: float
    dose_gy: float
    photon_absorbed_fraction: float
    photon_model: str


def sphere_escape_probability(tau) -> np.ndarray:
    """Uncollided escape probability from a uniformly, isotropically emitting sphere.

    ``P(tau) = 3 / (8 tau^3) [2 tau^2 - 1 + (1 + 2 tau) exp(-2 tau)]``, ``tau = mu R``
    (Case, de Hoffmann and Placzek 1953). ``P -> 1 - 3 tau / 4`` for small and ``3 / (4 tau)``
    for large ``tau``; a series ``1 - 3/4 tau + 2/5 tau^2 - tau^3/6`` is used below 0.01.

    Args:
        tau: optical radius (dimensionless), any shape, >= 0.
    """
    t = np.asarray(tau, dtype=np.float64)
    if np.any(t < 0) or not np.all(np.isfinite(t)):
        raise InputError("optical radius must be finite and >= 0")
    small = t < 1e-2
    ts = np.where(small, 1.0, t)
    exact = 3.0 / (8.0 * ts ** 3) * (2.0 * ts ** 2 - 1.0 + (1.0 + 2.0 * ts) * np.exp(-2.0 * ts))
    series = 1.0 - 0.75 * t + 0.4 * t ** 2 - t ** 3 / 6.0
    return np.where(small, series, exact)


def _mu_en_over_rho(energy_mev: np.ndarray, material: str) -> np.ndarray:
    from persodose.physics.photon_data import default_energy_grid_mev, photon_tables

    e = np.asarray(energy_mev, dtype=np.float64)
    emax = float(e.max()) if e.size else 1.0
    grid = None
    if emax > float(default_energy_grid_mev()[-1]):
        grid = np.geomspace(_E_MIN_MEV, min(20.0, emax * 1.001), 800)
    tables = photon_tables(material, grid)
    return tables.mu_over_rho(np.clip(e, _E_MIN_MEV, tables.energy_mev[-1]), "mu_en")


def photon_absorbed_fraction_sphere(energy_mev, mass_g: float, density_g_cm3: float = 1.04, *,
                                    material: str = "soft_tissue", model: str = "sphere_mu_en") -> np.ndarray:
    """Photon self-absorbed fraction of a uniformly emitting sphere.

    Args:
        energy_mev: photon energies, MeV, any shape (below 1 keV: absorbed, fraction 1).
        mass_g: sphere mass, g.
        density_g_cm3: sphere density, g/cm3.
        material: material for mu_en/rho (a name :func:`persodose.physics.materials.get_material`
            accepts).
        model: ``"sphere_mu_en"``, ``"mean_chord"`` or ``"none"`` (see the module docstring).

    Returns:
        Absorbed fractions in [0, 1], the shape of ``energy_mev``.

    Raises:
        InputError: bad mass, density or model. OptionalDependencyError: xraylib missing.
    """
    if model not in PHOTON_MODELS:
        raise InputError(f"unknown photon model {model!r}; use one of {', '.join(PHOTON_MODELS)}")
    e = np.asarray(energy_mev, dtype=np.float64)
    if not (mass_g >= 0 and math.isfinite(mass_g)) or not (density_g_cm3 > 0 and math.isfinite(density_g_cm3)):
        raise InputError(f"sphere mass {mass_g!r} g and density {density_g_cm3!r} g/cm3 must be positive")
    if model == "none" or e.size == 0:
        return np.zeros(e.shape)
    radius_cm = (3.0 * (mass_g / density_g_cm3) / (4.0 * math.pi)) ** (1.0 / 3.0)
    mu_en_per_cm = _mu_en_over_rho(e.reshape(-1), material).reshape(e.shape) * density_g_cm3
    if model == "sphere_mu_en":
        phi = 1.0 - sphere_escape_probability(mu_en_per_cm * radius_cm)
    else:
        phi = 1.0 - np.exp(-mu_en_per_cm * (4.0 / 3.0) * radius_cm)
    return np.where(e < _E_MIN_MEV, 1.0, np.clip(phi, 0.0, 1.0))


def _photon_lines(nuclide: str) -> tuple[np.ndarray, np.ndarray]:
    n = get_nuclide(nuclide)
    es = [n.lines[k].energy_mev for k in PHOTON_TYPES]
    ys = [n.lines[k].yield_per_decay for k in PHOTON_TYPES]
    return np.concatenate(es), np.concatenate(ys)


def _region_dose(label: int, name: str, kind: str, tia_bq_s: float, mass_g: float, volume_ml: float,
                 nuclide: str, material: str, model: str) -> OrganDose:
    n = get_nuclide(nuclide)
    e_np = n.electron_energy_per_decay_mev() + n.alpha_energy_per_decay_mev()
    e_ph, y_ph = _photon_lines(nuclide)
    rho_mean = mass_g / volume_ml if volume_ml > 0 else float("nan")
    if mass_g <= 0:
        return OrganDose(label, name, kind, volume_ml, mass_g, rho_mean, tia_bq_s, 0.0, 0.0, 0.0, 0.0, model)
    phi = photon_absorbed_fraction_sphere(e_ph, mass_g, rho_mean, material=material, model=model)
    ph_emitted = float(np.dot(e_ph, y_ph))
    ph_absorbed = float(np.dot(e_ph * y_ph, phi))
    per_bq_s = MEV_TO_J / (mass_g * 1e-3)  # Gy per (Bq s) per MeV
    d_e = tia_bq_s * e_np * per_bq_s
    d_p = tia_bq_s * ph_absorbed * per_bq_s
    return OrganDose(label, name, kind, float(volume_ml), float(mass_g), float(rho_mean), float(tia_bq_s),
                     float(d_e), float(d_p), float(d_e + d_p),
                     ph_absorbed / ph_emitted if ph_emitted > 0 else 0.0, model)


def sphere_self_dose(tia_bq_s: float, mass_g: float, nuclide: str, *, density_g_cm3: float = 1.04,
                     material: str = "soft_tissue", photon_model: str = "sphere_mu_en",
                     name: str = "sphere") -> OrganDose:
    """Self-dose of a uniformly filled sphere (a lesion, or an organ approximated by a sphere).

    Args:
        tia_bq_s: time-integrated activity in the sphere, Bq s.
        mass_g: sphere mass, g.
        nuclide: radionuclide name.
        density_g_cm3: sphere density, g/cm3.
        material: material for mu_en/rho.
        photon_model: see the module docstring.

    Returns:
        An :class:`OrganDose` of kind ``"sphere"``.
    """
    if not math.isfinite(tia_bq_s) or not math.isfinite(mass_g) or mass_g <= 0 or density_g_cm3 <= 0:
        raise InputError(f"sphere needs a finite TIA and positive mass and density, got "
                         f"{tia_bq_s!r} Bq s, {mass_g!r} g, {density_g_cm3!r} g/cm3")
    return _region_dose(0, name, "sphere", float(tia_bq_s), float(mass_g), float(mass_g) / density_g_cm3,
                        nuclide, material, photon_model)


def organ_doses(tia: Grid, labels: Grid, density: Grid, nuclide: str, *,
                label_names: Mapping[int, str] | None = None, lesion_labels: Sequence[int] = (),
                materials: Mapping[int, str] | None = None, photon_model: str = "sphere_mu_en",
                include_empty: bool = True) -> list[OrganDose]:
    """Organ (and lesion) self-doses of this patient, MIRD schema with sphere photon fractions.

    Args:
        tia: time-integrated activity, :attr:`Kind.TIA`, Bq s per voxel.
        labels: integer label map (:attr:`Kind.LABELS`) on the same geometry; 0 is background.
        density: mass density (:attr:`Kind.DENSITY`), g/cm3, on the same geometry.
        nuclide: radionuclide name.
        label_names: label -> name (default ``"label_<k>"``).
        lesion_labels: labels that are lesions (reported with kind ``"lesion"``).
        materials: label -> material name for mu_en/rho (default ``"soft_tissue"``).
        photon_model: ``"sphere_mu_en"`` (default), ``"mean_chord"`` or ``"none"``.
        include_empty: also report regions without activity (dose 0).

    Returns:
        One :class:`OrganDose` per label present, in increasing label order.

    Raises:
        InputError / GeometryError / UnitsError: bad grids or settings.
    """
    a = check_tia(tia).astype(np.float64)
    for g, kind, what in ((labels, Kind.LABELS, "label map"), (density, Kind.DENSITY, "density")):
        if not isinstance(g, Grid):
            raise InputError(f"the {what} must be a Grid, got {type(g).__name__}")
        if g.kind is not kind:
            raise UnitsError(f"organ doses need a {what} ({kind.value}) grid, got a {g.kind.value} grid")
        tia.require_same_geometry(g, f"time-integrated activity and {what}")
    lab = np.asarray(labels.array)
    if lab.dtype.kind == "f":
        if not np.all(np.isfinite(lab)) or not np.all(lab == np.round(lab)):
            raise InputError("the label map must hold integers")
        lab = lab.astype(np.int64)
    if lab.dtype.kind not in "iub":
        raise InputError(f"the label map must hold integers, got dtype {lab.dtype}")
    if np.any(lab < 0):
        raise InputError("the label map holds negative labels")
    rho = np.asarray(density.array, dtype=np.float64)
    if not np.all(np.isfinite(rho)) or np.any(rho < 0):
        raise InputError("density holds NaN, infinite or negative values")
    if photon_model not in PHOTON_MODELS:
        raise InputError(f"unknown photon model {photon_model!r}; use one of {', '.join(PHOTON_MODELS)}")
    get_nuclide(nuclide)  # fail early on an unknown nuclide
    flat = lab.reshape(-1).astype(np.int64)
    nbins = int(flat.max()) + 1 if flat.size else 1
    counts = np.bincount(flat, minlength=nbins)
    tia_sum = np.bincount(flat, weights=a.reshape(-1), minlength=nbins)
    rho_sum = np.bincount(flat, weights=rho.reshape(-1), minlength=nbins)
    v_ml = tia.voxel_volume_ml
    names = dict(label_names or {})
    mats = dict(materials or {})
    lesions = {int(x) for x in lesion_labels}
    out = []
    for k in range(1, nbins):
        if counts[k] == 0 or (not include_empty and tia_sum[k] == 0):
            continue
        out.append(_region_dose(k, names.get(k, f"label_{k}"), "lesion" if k in lesions else "organ",
                                float(tia_sum[k]), float(rho_sum[k] * v_ml), float(counts[k] * v_ml),
                                nuclide, mats.get(k, "soft_tissue"), photon_model))
    return out


def organ_dose_rows(doses: Sequence[OrganDose]) -> list[dict]:
    """Plain dicts (one per region) for CSV/JSON output."""
    return [asdict(d) for d in doses]

