"""Electron and positron stopping powers, ranges and hard-event cross sections.

All quantities are per unit mass (MeV cm2/g for stopping powers, cm2/g for macroscopic
cross sections, g/cm2 for ranges) on a log kinetic-energy grid (default 1 keV - 3 MeV).

Models and their sources
------------------------
* Collision stopping power: Bethe formula for electrons and positrons as given in ICRU
  Report 37 (1984), eqs. 2.2-2.4 (electrons: Moller; positrons: Bhabha), with the mean
  excitation energy I of the medium (Bragg additivity, ICRU 37 values, from
  :meth:`persodose.physics.materials.Material.mean_excitation_energy_ev`; for liquid water
  the ICRU 37 recommended 75.0 eV) and the density-effect correction delta from the
  general formula of R. M. Sternheimer and R. F. Peierls, Phys. Rev. B 3 (1971) 3681:
  C = 1 + 2 ln(I / h nu_p), h nu_p = 28.816 sqrt(rho Z/A) eV, m = 3, X0 and X1 from C
  (condensed media: I < 100 eV: X1 = 2, X0 = 0.2 if C < 3.681 else 0.326 C - 1.0;
  I >= 100 eV: X1 = 3, X0 = 0.2 if C < 5.215 else 0.326 C - 1.5; gases: their Table),
  a = (C - 4.606 X0) / (X1 - X0)^3; delta = 4.606 X - C + a (X1 - X)^3 for X0 <= X < X1,
  4.606 X - C above X1, 0 below X0, X = log10(p / m c). For liquid water (material named
  ``water``) the fitted parameters of Sternheimer, Berger & Seltzer, At. Data Nucl. Data
  Tables 30 (1984) 261 are used instead (C = 3.5017, X0 = 0.24, X1 = 2.8004, a = 0.09116,
  m = 3.4773): they reproduce ESTAR's delta within 0.1 (0.004 at 3 MeV, 0.097 at 1 MeV),
  whereas the general formula gives delta up to 0.25 too low at 3 MeV (S_col 1.2 % high).
  A delta error of 0.1 changes S_col by about 0.3 %.
* Restricted collision stopping power (energy losses W below a cut-off): ICRU 37 eqs.
  2.16-2.19 (= EGS4, W. R. Nelson et al., SLAC-265 (1985), eqs. 2.13.14-2.13.15).
* Hard collisions above the cut-off: Moller (Ann. Phys. 14 (1932) 531) for electrons,
  W between the cut and T/2 (the faster outgoing electron is the primary), and Bhabha
  (Proc. R. Soc. A 154 (1936) 195) for positrons, W between the cut and T, both as
  written in the Geant4 Physics Reference Manual ("Moller and Bhabha ionisation").
* Radiative stopping power: S_rad = alpha r_e^2 N_A (T + m c^2) phi_rad(T) sum_i w_i Z_i
  (Z_i + 1)/A_i, with the scaled radiative energy-loss cross section phi_rad(T) of liquid
  water (knots below, derived from the ESTAR radiative stopping powers of water, which
  are the Seltzer-Berger values: S. M. Seltzer and M. J. Berger, At. Data Nucl. Data
  Tables 35 (1986) 345; ICRU 37) and the Z(Z+1) scaling of nuclear + electron-electron
  bremsstrahlung (ICRU 37 section 3). By construction it reproduces ESTAR for water;
  for soft tissues (H, C, N, O dominated) the error is about 1 %; for ICRP cortical bone
  it is below ESTAR by 1.4 % at 10 keV, 8 % at 100 keV, 3 % at 1 MeV and 0.7 % at 3 MeV
  (phi_rad grows with Z at intermediate energies, which the water curve cannot follow).
  The effect on the CSDA range of bone is < 0.1 %. Below 10 keV phi_rad is held at its
  10 keV value (S_rad is < 2e-4 of S_col there). Positrons use the electron value.
* Bremsstrahlung hard events (photon energy k above a cut k_c): the photon spectrum
  k d(sigma)/dk = (S_rad / T) (4/3 - 4/3 y + y^2), y = k/T, the complete-screening
  Bethe-Heitler shape (Y. S. Tsai, Rev. Mod. Phys. 46 (1974) 815, eq. 3.83; Particle Data
  Group review "Passage of particles through matter"), normalised so that its energy
  integral is exactly S_rad. Hence sigma(k > k_c) = (S_rad / T) [4/3 ln(1/y_c) -
  4/3 (1 - y_c) + (1 - y_c^2)/2] and the restricted radiative stopping power is
  S_rad (4/3 y_c - 2/3 y_c^2 + y_c^3/3). The shape is approximate below a few MeV (it
  overestimates the hard end of the spectrum by up to ~30 %) but energy losses are
  conserved; the number of hard photons is uncertain to about that level.
* CSDA range: R(T) = R(T0) + int_{T0}^{T} dT'/S_tot(T'), T0 = 1 keV, with
  R(T0) = T0 / ((1 + p) S_tot(T0)) for a local power law S_tot ~ T^-p (trapezoidal rule
  in ln T on 4000 internal points). Agrees with ESTAR for water to < 1 % from 10 keV to
  3 MeV.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from persodose.errors import InputError
from persodose.physics.materials import Material, element_z_a, known_elements
from persodose.physics.constants import ELECTRON_MASS_MEV, R_E_CM, ALPHA, AVOGADRO_PER_MOL  # noqa: F401

#: 2 pi r_e^2 m c^2 N_A, MeV cm2/mol (0.153537).
K_BETHE_MEV_CM2_MOL = 2.0 * math.pi * R_E_CM**2 * ELECTRON_MASS_MEV * AVOGADRO_PER_MOL

#: Default kinetic-energy grid.
DEFAULT_EMIN_MEV = 1e-3
DEFAULT_EMAX_MEV = 3.0
DEFAULT_N_ENERGIES = 500
#: Default hard-collision (delta-ray) and hard-bremsstrahlung cuts, MeV.
DEFAULT_CUT_MEV = 0.1
DEFAULT_PHOTON_CUT_MEV = 0.05

#: ICRU Report 37 recommended I values (eV) of compounds whose measured value differs from
#: Bragg additivity, keyed by the material name; applied only if the composition matches.
ICRU37_I_EV = {"water": 75.0}

#: Density-effect parameters (C, X0, X1, a, m) of liquid water fitted by R. M. Sternheimer,
#: M. J. Berger, S. M. Seltzer, At. Data Nucl. Data Tables 30 (1984) 261, Table 1 (used by
#: ESTAR); other media use the Sternheimer-Peierls 1971 general formula.
STERNHEIMER84_WATER = (3.5017, 0.2400, 2.8004, 0.09116, 3.4773)

# Z and standard atomic weight (g/mol, CIAAW 2022) from persodose.physics.materials.
_ELEMENT_Z_A: dict[str, tuple[int, float]] = {el: element_z_a(el) for el in known_elements()}

# Scaled radiative energy-loss cross section of liquid water,
# phi_rad = S_rad / (alpha r_e^2 N_A (T + m c^2) sum w Z(Z+1)/A), computed from the ESTAR
# (Seltzer-Berger) radiative stopping powers of water (MeV cm2/g) at these energies (MeV).
_PHI_T_MEV = np.array([0.01, 0.015, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.8,
                       1.0, 1.5, 2.0, 3.0, 5.0, 10.0])
_ESTAR_WATER_SRAD = np.array([3.898e-3, 3.944e-3, 3.963e-3, 3.984e-3, 4.031e-3, 4.138e-3,
                              4.228e-3, 4.494e-3, 4.801e-3, 5.514e-3, 7.257e-3, 1.042e-2,
                              1.280e-2, 1.942e-2, 2.678e-2, 4.299e-2, 7.917e-2, 1.814e-1])


def _zz1_over_a(fractions: Mapping[str, float]) -> float:
    return sum(w * z * (z + 1) / a for el, w in fractions.items() for z, a in [_ELEMENT_Z_A[el]])


def _z_over_a(fractions: Mapping[str, float]) -> float:
    return sum(w * z / a for el, w in fractions.items() for z, a in [_ELEMENT_Z_A[el]])


_WATER_FRACTIONS = {"H": 2 * 1.008 / (2 * 1.008 + 15.999), "O": 15.999 / (2 * 1.008 + 15.999)}
_PHI_RAD_WATER = _ESTAR_WATER_SRAD / (ALPHA * R_E_CM**2 * AVOGADRO_PER_MOL
                                      * (_PHI_T_MEV + ELECTRON_MASS_MEV)
                                      * _zz1_over_a(_WATER_FRACTIONS))


# --------------------------------------------------------------------------- inputs
def _as_material(material, density_g_cm3: float | None = None) -> Material:
    from persodose.physics.photon_data import as_material

    mat = as_material(material, 1.0 if density_g_cm3 is None else density_g_cm3)
    if density_g_cm3 is not None and not isinstance(material, Mapping):
        mat = Material(mat.index, mat.name, mat.hu_min, mat.hu_max, float(density_g_cm3),
                       dict(mat.mass_fractions), mat.source)
    return mat


def mean_excitation_energy_ev(material) -> float:
    """Mean excitation energy I of a medium, eV.

    ICRU Report 37 recommended value for liquid water (75.0 eV) when the material is
    named ``water`` and is H2O; otherwise Bragg additivity with ICRU 37 values
    (:meth:`Material.mean_excitation_energy_ev`, 75.3 eV for H2O).
    """
    mat = _as_material(material)
    if _is_icru_water(mat):
        return ICRU37_I_EV["water"]
    return mat.mean_excitation_energy_ev()


def _is_icru_water(mat: Material) -> bool:
    f = mat.mass_fractions
    return (mat.name == "water" and mat.density_g_cm3 >= 0.1 and set(f) == {"H", "O"}
            and abs(f["H"] - _WATER_FRACTIONS["H"]) < 1e-3)


def _check_energies(energy_mev, what: str = "electron kinetic energy") -> np.ndarray:
    from persodose.physics.photon_data import check_energy_grid

    return check_energy_grid(energy_mev, what, emax_mev=10.0)


def _check_cut(cut_mev: float, what: str) -> float:
    c = float(cut_mev)
    if not (math.isfinite(c) and c > 0):
        raise InputError(f"{what} must be a positive energy in MeV, got {cut_mev}")
    return c


# --------------------------------------------------------------------------- physics
def density_effect_delta(material, energy_mev, density_g_cm3: float | None = None) -> np.ndarray:
    """Density-effect correction delta (Sternheimer & Peierls 1971 general formula).

    Args:
        material: Material, name or dict of mass fractions.
        energy_mev: electron/positron kinetic energies, MeV (any shape).
        density_g_cm3: density (default: the material's nominal density), g/cm3.

    Returns:
        delta, dimensionless, same shape as ``energy_mev``.
    """
    mat = _as_material(material, density_g_cm3)
    i_ev = mean_excitation_energy_ev(mat)
    return _delta(np.asarray(energy_mev, dtype=np.float64), i_ev, mat.density_g_cm3,
                  _z_over_a(mat.mass_fractions), _sternheimer84(mat))


def _sp_parameters(i_ev: float, rho: float, z_over_a: float) -> tuple[float, float, float, float]:
    """(C, X0, X1, a) of Sternheimer & Peierls 1971, m = 3."""
    plasma_ev = 28.816 * math.sqrt(rho * z_over_a)
    c = 1.0 + 2.0 * math.log(i_ev / plasma_ev)
    if rho >= 0.1:  # condensed media
        if i_ev < 100.0:
            x1 = 2.0
            x0 = 0.2 if c < 3.681 else 0.326 * c - 1.0
        else:
            x1 = 3.0
            x0 = 0.2 if c < 5.215 else 0.326 * c - 1.5
    else:  # gases at normal pressure (Sternheimer & Peierls 1971, Table I)
        x1 = 4.0
        if c < 10.0:
            x0 = 1.6
        elif c < 10.5:
            x0 = 1.7
        elif c < 11.0:
            x0 = 1.8
        elif c < 11.5:
            x0 = 1.9
        elif c < 12.25:
            x0 = 2.0
        elif c < 13.804:
            x0, x1 = 2.0, 5.0
        else:
            x0, x1 = 0.326 * c - 2.5, 5.0
    a = (c - 4.606 * x0) / (x1 - x0) ** 3
    return c, x0, x1, a


def _delta(t_mev: np.ndarray, i_ev: float, rho: float, z_over_a: float,
           params: tuple[float, float, float, float, float] | None = None) -> np.ndarray:
    if params is None:
        c, x0, x1, a = _sp_parameters(i_ev, rho, z_over_a)
        m = 3.0
    else:
        c, x0, x1, a, m = params
    tau = t_mev / ELECTRON_MASS_MEV
    x = np.log10(np.sqrt(tau * (tau + 2.0)))
    d = np.where(x >= x1, 4.606 * x - c, 4.606 * x - c + a * np.clip(x1 - x, 0, None) ** m)
    return np.where(x < x0, 0.0, np.maximum(d, 0.0))


def _sternheimer84(mat: Material) -> tuple[float, float, float, float, float] | None:
    """Sternheimer-Berger-Seltzer 1984 fitted parameters if the material is liquid water."""
    if _is_icru_water(mat):
        return STERNHEIMER84_WATER
    return None


def _beta2(tau):
    return tau * (tau + 2.0) / (tau + 1.0) ** 2


def _collision_sp(t_mev, i_ev, z_over_a, delta, positron: bool, cut_mev=None) -> np.ndarray:
    """(Restricted) collision stopping power, MeV cm2/g (ICRU 37 eqs. 2.2-2.4, 2.16-2.19)."""
    tau = t_mev / ELECTRON_MASS_MEV
    b2 = _beta2(tau)
    ii = i_ev * 1e-6 / ELECTRON_MASS_MEV
    pref = K_BETHE_MEV_CM2_MOL * z_over_a / b2
    if cut_mev is None:
        if positron:
            y = 1.0 / (tau + 2.0)
            f = 2 * math.log(2) - b2 / 12.0 * (23.0 + 14.0 * y + 10.0 * y**2 + 4.0 * y**3)
        else:
            f = 1.0 - b2 + (tau**2 / 8.0 - (2 * tau + 1.0) * math.log(2)) / (tau + 1.0) ** 2
        return pref * (np.log(tau**2 * (tau + 2.0) / (2.0 * ii**2)) + f - delta)
    d = cut_mev / ELECTRON_MASS_MEV
    if positron:
        dd = np.minimum(d, tau)
        y = 1.0 / (tau + 2.0)
        f = (np.log(tau * dd) - b2 / tau * (tau + 2 * dd - 1.5 * dd**2 * y
                                              - (dd - dd**3 / 3.0) * y**2
                                              - (dd**2 / 2 - tau * dd**3 / 3 + dd**4 / 4) * y**3))
    else:
        dd = np.minimum(d, tau / 2.0)
        f = (-1.0 - b2 + np.log((tau - dd) * dd) + tau / (tau - dd)
             + (dd**2 / 2.0 + (2 * tau + 1.0) * np.log(1.0 - dd / tau)) / (tau + 1.0) ** 2)
    return pref * (np.log(2.0 * (tau + 2.0) / ii**2) + f - delta)


def moller_dcs_cm2_mev(t_mev, w_mev) -> np.ndarray:
    """Moller cross section per electron of the medium, d(sigma)/dW, cm2/MeV.

    ``2 pi r_e^2 m c^2 / (beta^2 T^2) [1/e^2 + 1/(1-e)^2 + (tau/(tau+1))^2
    - (2 tau + 1)/(tau + 1)^2 / (e (1 - e))]``, e = W/T (Moller 1932; ICRU 37 eq. 2.5).
    Broadcasts; defined for 0 < W < T.
    """
    t = np.asarray(t_mev, dtype=np.float64)
    e = np.asarray(w_mev, dtype=np.float64) / t
    tau = t / ELECTRON_MASS_MEV
    g = tau / (tau + 1.0)
    gg = (2 * tau + 1.0) / (tau + 1.0) ** 2
    k = 2 * math.pi * R_E_CM**2 * ELECTRON_MASS_MEV / (_beta2(tau) * t * t)
    return k * (1 / e**2 + 1 / (1 - e) ** 2 + g * g - gg / (e * (1 - e)))


def _bhabha_b(tau):
    y = 1.0 / (tau + 2.0)
    y12 = 1.0 - 2.0 * y
    b1 = 2.0 - y * y
    b2 = y12 * (3.0 + y * y)
    b4 = y12**3
    b3 = b4 + y12**2
    return b1, b2, b3, b4


def bhabha_dcs_cm2_mev(t_mev, w_mev) -> np.ndarray:
    """Bhabha cross section per electron of the medium, d(sigma)/dW, cm2/MeV.

    ``2 pi r_e^2 m c^2 / T^2 [1/(beta^2 e^2) - B1/e + B2 - B3 e + B4 e^2]``, e = W/T,
    y = 1/(gamma + 1), B1 = 2 - y^2, B2 = (1 - 2y)(3 + y^2), B3 = (1-2y)^2 + (1-2y)^3,
    B4 = (1 - 2y)^3 (Bhabha 1936; ICRU 37 eq. 2.6; Geant4 Physics Reference Manual).
    Broadcasts; defined for 0 < W <= T.
    """
    t = np.asarray(t_mev, dtype=np.float64)
    e = np.asarray(w_mev, dtype=np.float64) / t
    tau = t / ELECTRON_MASS_MEV
    b1, b2, b3, b4 = _bhabha_b(tau)
    k = 2 * math.pi * R_E_CM**2 * ELECTRON_MASS_MEV / (t * t)
    return k * (1 / (_beta2(tau) * e * e) - b1 / e + b2 - b3 * e + b4 * e * e)


def _hard_collision_xs(t_mev, cut_mev, z_over_a, positron: bool) -> np.ndarray:
    """Macroscopic hard-collision cross section (W > cut), cm2/g."""
    t = np.asarray(t_mev, dtype=np.float64)
    tau = t / ELECTRON_MASS_MEV
    b2 = _beta2(tau)
    k = K_BETHE_MEV_CM2_MOL * z_over_a / t  # cm2/g
    out = np.zeros_like(t)
    if positron:
        ok = t > cut_mev
        xmin = cut_mev / t[ok]
        xmax = 1.0
        b1, bb2, b3, b4 = _bhabha_b(tau[ok])
        val = ((xmax - xmin) * (1.0 / (b2[ok] * xmin * xmax) + bb2 - 0.5 * b3 * (xmin + xmax)
                                + b4 * (xmin**2 + xmin * xmax + xmax**2) / 3.0)
               - b1 * np.log(xmax / xmin))
    else:
        ok = t > 2.0 * cut_mev
        ec = cut_mev / t[ok]
        g = tau[ok] / (tau[ok] + 1.0)
        gg = (2 * tau[ok] + 1.0) / (tau[ok] + 1.0) ** 2
        val = (1 / ec - 1 / (1 - ec) + g * g * (0.5 - ec) - gg * np.log((1 - ec) / ec)) / b2[ok]
    out[ok] = k[ok] * val
    return out


def _phi_rad(t_mev: np.ndarray) -> np.ndarray:
    lt = np.log(np.clip(t_mev, _PHI_T_MEV[0], _PHI_T_MEV[-1]))
    return np.interp(lt, np.log(_PHI_T_MEV), _PHI_RAD_WATER)


def _radiative_sp(t_mev: np.ndarray, fractions: Mapping[str, float]) -> np.ndarray:
    return (ALPHA * R_E_CM**2 * AVOGADRO_PER_MOL * (t_mev + ELECTRON_MASS_MEV)
            * _phi_rad(t_mev) * _zz1_over_a(fractions))


def _brems_fraction_below(y: np.ndarray) -> np.ndarray:
    y = np.clip(y, 0.0, 1.0)
    return 4.0 / 3.0 * y - 2.0 / 3.0 * y**2 + y**3 / 3.0


def _brems_hard_integral(y: np.ndarray) -> np.ndarray:
    """int_y^1 (4/3 - 4/3 u + u^2)/u du, 0 for y >= 1."""
    yc = np.clip(y, 1e-300, 1.0)
    return np.where(y < 1.0, 4.0 / 3.0 * np.log(1.0 / yc) - 4.0 / 3.0 * (1 - yc) + (1 - yc**2) / 2.0, 0.0)


# --------------------------------------------------------------------------- range
_N_FINE = 4000


def _fine_range(mat: Material, i_ev: float, positron: bool, emax_mev: float):
    """Total stopping power and CSDA range on an internal fine grid from 1 keV."""
    t = np.geomspace(DEFAULT_EMIN_MEV, max(emax_mev, 2 * DEFAULT_EMIN_MEV), _N_FINE)
    zoa = _z_over_a(mat.mass_fractions)
    s_col = _collision_sp(t, i_ev, zoa, _delta(t, i_ev, mat.density_g_cm3, zoa, _sternheimer84(mat)),
                          positron)
    s_rad = _radiative_sp(t, mat.mass_fractions)
    s_tot = s_col + s_rad
    p = -math.log(s_tot[1] / s_tot[0]) / math.log(t[1] / t[0])
    r0 = t[0] / ((1.0 + p) * s_tot[0])
    integrand = t / s_tot  # d(range) / d(ln T)
    lt = np.log(t)
    r = r0 + np.concatenate(([0.0], np.cumsum(0.5 * (integrand[1:] + integrand[:-1]) * np.diff(lt))))
    # radiation yield Y(T) = (1/T) int_0^T S_rad/S_tot dT' (below 1 keV ratio held constant)
    ratio = s_rad / s_tot
    yint = ratio[0] * t[0] + np.concatenate(
        ([0.0], np.cumsum(0.5 * (ratio[1:] * t[1:] + ratio[:-1] * t[:-1]) * np.diff(lt))))
    return t, s_tot, r, yint / t


def csda_range_g_cm2(material, energy_mev, positron: bool = False,
                     density_g_cm3: float | None = None):
    """CSDA range (integral of 1/S_total), g/cm2.

    Args:
        material: Material, name or dict of mass fractions.
        energy_mev: kinetic energy/energies, MeV, 1 keV - 10 MeV.
        positron: positrons instead of electrons.
        density_g_cm3: density for the density effect (default nominal), g/cm3.

    Returns:
        A float for a scalar energy, else an array of the same shape.
    """
    mat = _as_material(material, density_g_cm3)
    e = np.asarray(energy_mev, dtype=np.float64)
    flat = _check_energies(np.sort(e.reshape(-1))) if e.size > 1 else _check_energies(e.reshape(-1))
    t, _, r, _ = _fine_range(mat, mean_excitation_energy_ev(mat), positron, float(flat.max()))
    out = np.exp(np.interp(np.log(e), np.log(t), np.log(r)))
    return float(out) if e.ndim == 0 else out


def radiation_yield(material, energy_mev, positron: bool = False) -> np.ndarray:
    """Radiation yield Y(T): fraction of T emitted as bremsstrahlung while slowing down.

    ``Y(T) = (1/T) int_0^T S_rad/S_tot dT'`` (ICRU 37 eq. 2.8). Array of the shape of
    ``energy_mev`` (MeV, 1 keV - 10 MeV).
    """
    mat = _as_material(material)
    e = np.asarray(energy_mev, dtype=np.float64)
    if not np.all(np.isfinite(e)) or (e.size and (e.min() < DEFAULT_EMIN_MEV * (1 - 1e-9) or e.max() > 10.0)):
        raise InputError("radiation_yield: energies must be finite, within 0.001-10 MeV")
    t, _, _, y = _fine_range(mat, mean_excitation_energy_ev(mat), positron,
                             float(e.max()) if e.size else DEFAULT_EMAX_MEV)
    return np.interp(np.log(e), np.log(t), y)


# --------------------------------------------------------------------------- tables
@dataclass(frozen=True, eq=False)
class ElectronTables:
    """Electron or positron data of one material (per unit mass) on an energy grid.

    Attributes:
        material_name: material name.
        positron: True for positrons.
        density_g_cm3: density used for the density effect, g/cm3.
        mean_excitation_energy_ev: I, eV.
        cut_mev: hard-collision cut-off: energy transfers W above it are hard events, MeV.
        photon_cut_mev: hard-bremsstrahlung cut-off (photon energy), MeV.
        energy_mev: kinetic energies, MeV, shape (n,).
        s_col_mev_cm2_g, s_rad_mev_cm2_g, s_total_mev_cm2_g: unrestricted stopping powers.
        density_effect_delta: delta (dimensionless).
        csda_range_g_cm2: CSDA range, g/cm2.
        radiation_yield: Y(T).
        s_col_restricted_mev_cm2_g: collision stopping power for W < cut (equals s_col where
            no hard collision is possible: T <= 2 cut for e-, T <= cut for e+).
        s_rad_restricted_mev_cm2_g: radiative stopping power for photons below photon_cut.
        s_restricted_total_mev_cm2_g: their sum (continuous slowing down between hard events).
        sigma_hard_collision_cm2_g: Moller/Bhabha cross section for W > cut, cm2/g.
        sigma_hard_brems_cm2_g: bremsstrahlung cross section for k > photon_cut, cm2/g.
    """

    material_name: str
    positron: bool
    density_g_cm3: float
    mean_excitation_energy_ev: float
    cut_mev: float
    photon_cut_mev: float
    energy_mev: np.ndarray
    s_col_mev_cm2_g: np.ndarray
    s_rad_mev_cm2_g: np.ndarray
    s_total_mev_cm2_g: np.ndarray
    density_effect_delta: np.ndarray
    csda_range_g_cm2: np.ndarray
    radiation_yield: np.ndarray
    s_col_restricted_mev_cm2_g: np.ndarray
    s_rad_restricted_mev_cm2_g: np.ndarray
    s_restricted_total_mev_cm2_g: np.ndarray
    sigma_hard_collision_cm2_g: np.ndarray
    sigma_hard_brems_cm2_g: np.ndarray


def _freeze(a) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    a.setflags(write=False)
    return a


_CACHE: "OrderedDict[tuple, ElectronTables]" = OrderedDict()
_CACHE_SIZE = 64


def electron_tables(material, positron: bool = False, cut_mev: float = DEFAULT_CUT_MEV,
                    energy_mev=None, photon_cut_mev: float = DEFAULT_PHOTON_CUT_MEV,
                    density_g_cm3: float | None = None) -> ElectronTables:
    """Stopping powers, ranges and hard-event cross sections of a material.

    Args:
        material: a :class:`Material`, a material name, or element symbol -> mass fraction.
        positron: positron data (Bhabha) instead of electron (Moller).
        cut_mev: hard-collision cut-off on the energy transfer W, MeV.
        energy_mev: strictly increasing kinetic energies within 1 keV - 10 MeV; default 500
            log-spaced points from 1 keV to 3 MeV.
        photon_cut_mev: hard-bremsstrahlung cut-off on the photon energy, MeV.
        density_g_cm3: density for the density-effect correction; default the material's
            nominal density (1 g/cm3 for a dict).

    Returns:
        An :class:`ElectronTables` with read-only arrays (cached per composition, density,
        particle, cuts and grid).

    Raises:
        MaterialError: unknown material/element. InputError: bad grid or cuts.
    """
    mat = _as_material(material, density_g_cm3)
    cut = _check_cut(cut_mev, "cut_mev")
    kcut = _check_cut(photon_cut_mev, "photon_cut_mev")
    t = (np.geomspace(DEFAULT_EMIN_MEV, DEFAULT_EMAX_MEV, DEFAULT_N_ENERGIES)
         if energy_mev is None else _check_energies(energy_mev))
    i_ev = mean_excitation_energy_ev(mat)
    key = (tuple(sorted(mat.mass_fractions.items())), mat.density_g_cm3, i_ev, bool(positron),
           cut, kcut, t.size, hash(t.tobytes()))
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit

    zoa = _z_over_a(mat.mass_fractions)
    delta = _delta(t, i_ev, mat.density_g_cm3, zoa, _sternheimer84(mat))
    s_col = _collision_sp(t, i_ev, zoa, delta, positron)
    s_col_r = _collision_sp(t, i_ev, zoa, delta, positron, cut_mev=cut)
    no_hard = t <= (cut if positron else 2.0 * cut)
    s_col_r = np.where(no_hard, s_col, np.minimum(s_col_r, s_col))
    s_rad = _radiative_sp(t, mat.mass_fractions)
    s_rad_r = s_rad * _brems_fraction_below(kcut / t)
    sig_coll = _hard_collision_xs(t, cut, zoa, positron)
    sig_brems = s_rad / t * _brems_hard_integral(kcut / t)
    tf, _, rf, yf = _fine_range(mat, i_ev, positron, float(t.max()))
    rng = np.exp(np.interp(np.log(t), np.log(tf), np.log(rf)))
    yld = np.interp(np.log(t), np.log(tf), yf)

    tables = ElectronTables(
        material_name=mat.name, positron=bool(positron), density_g_cm3=float(mat.density_g_cm3),
        mean_excitation_energy_ev=float(i_ev), cut_mev=cut, photon_cut_mev=kcut,
        energy_mev=_freeze(t), s_col_mev_cm2_g=_freeze(s_col), s_rad_mev_cm2_g=_freeze(s_rad),
        s_total_mev_cm2_g=_freeze(s_col + s_rad), density_effect_delta=_freeze(delta),
        csda_range_g_cm2=_freeze(rng), radiation_yield=_freeze(yld),
        s_col_restricted_mev_cm2_g=_freeze(s_col_r), s_rad_restricted_mev_cm2_g=_freeze(s_rad_r),
        s_restricted_total_mev_cm2_g=_freeze(s_col_r + s_rad_r),
        sigma_hard_collision_cm2_g=_freeze(sig_coll), sigma_hard_brems_cm2_g=_freeze(sig_brems),
    )
    _CACHE[key] = tables
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return tables
