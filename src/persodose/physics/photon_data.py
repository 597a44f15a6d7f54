"""Photon interaction data for the Monte Carlo engine (1 keV - 3 MeV).

Everything is tabulated per unit mass (cm2/g) for a mixture given by elemental mass
fractions, on a logarithmic energy grid, by the mixture rule
``mu/rho = sum_i w_i (mu/rho)_i`` (independent-atom approximation, as in XCOM:
M. J. Berger and J. H. Hubbell, NBSIR 87-3597, 1987).

Sources of the elemental data
-----------------------------
* Photoelectric, incoherent (Compton, with the incoherent scattering function) and coherent
  (Rayleigh, with the atomic form factor) cross sections: ``xraylib`` (T. Schoonjans et al.,
  Spectrochim. Acta B 66 (2011) 776-784; ``CS_Photo``, ``CS_Compt``, ``CS_Rayl``). xraylib's
  tables stop at 800 keV for these three functions. Above 800 keV:

  - incoherent: numerical integral of the Klein-Nishina cross section times S(x, Z)
    (``SF_Compt``), scaled to be continuous with ``CS_Compt`` at 800 keV (the scale factor
    differs from 1 by < 0.3 %);
  - photoelectric and coherent: log-log extrapolation of the 600-800 keV slope. Both are
    below 0.1 % of mu/rho in tissues above 800 keV (XCOM), so the extrapolation error is
    immaterial.
* Pair production (nuclear + electron field) is not in xraylib. It is computed with the
  parametrisation of L. Urban (GEANT3 manual, PHYS 211, CERN W5013, 1993) used by Geant4's
  ``G4BetheHeitlerModel`` (Geant4 Physics Reference Manual, "Gamma conversion into an
  electron-positron pair": sigma(Z, E) = (Z + 1) [F1(X) Z + F2(X) Z^2 + F3(X)] with
  X = ln(E / m c^2), quoted accuracy about 5 % from 1.5 MeV to 100 GeV; below 1.5 MeV
  sigma(1.5 MeV) ((E - 2 m c^2) / (1.5 MeV - 2 m c^2))^2). Zero at or below 2 m c^2 =
  1.022 MeV. In water pair production is at most 2.5 % of mu/rho at 3 MeV.
* Mass energy-absorption coefficient mu_en/rho: computed here, NOT with xraylib's
  ``CS_Energy`` (xraylib 4.3 gives values for water 30 % low at 20-30 keV and 10-100 %
  high above 1 MeV compared with Hubbell & Seltzer, NISTIR 5632). Following Hubbell &
  Seltzer / Seltzer, Radiat. Res. 136 (1993) 147-170:
  ``mu_en/rho = sum_processes (mu/rho)_p f_p (1 - g_p)`` with

  - photoelectric: f = 1 - X/E, X = P_K omega_K E_Ka (K-shell fluorescence escapes; P_K is
    the fraction of photoabsorptions in the K shell from xraylib ``CS_Photo_Partial``,
    omega_K ``FluorYield``, E_Ka ``LineEnergy(KA_LINE)``); L-shell fluorescence neglected
    (omega_L < 1e-3 for Z <= 20);
  - incoherent: f = <E - E'>/E averaged over the Klein-Nishina x S(x, Z) angular distribution;
  - pair: f = 1 - 2 m c^2 / E;
  - coherent: f = 0;
  - g_p = radiation yield Y(T) of the secondary electrons of mean initial energy T
    (:func:`persodose.physics.electron_data.radiation_yield`), an approximation good to
    a few 0.1 % of mu_en in tissue below 3 MeV.

  Agreement with Hubbell & Seltzer for water: better than 2 % from 10 keV to 3 MeV.

Transport conventions (for the coming Monte Carlo engine)
---------------------------------------------------------
* Photoelectric absorption: no fluorescence photons or Auger electrons are emitted; the
  binding energy is deposited locally at the interaction site and the photo-electron
  carries E - E_binding. (Consequence: the MC deposits the K-fluorescence energy that
  mu_en/rho assumes escapes; < 1 % of the kerma of bone above 10 keV.)
* Rayleigh and Compton angular sampling: tables of the mixture's squared form factor and
  incoherent scattering function on a momentum-transfer grid (:class:`ScatteringTables`).
  Momentum transfer follows xraylib: ``x = sin(theta/2) / lambda`` in 1/Angstrom,
  ``lambda = hc / E``, hc = 12.3984193 keV Angstrom.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from persodose.errors import InputError, MaterialError, OptionalDependencyError
from persodose.physics.materials import Material, get_material
from persodose.physics.constants import ELECTRON_MASS_MEV, R_E_CM, AVOGADRO_PER_MOL, HC_KEV_ANGSTROM  # noqa: F401


#: Default energy grid: 1 keV to 3 MeV, log-spaced.
DEFAULT_EMIN_MEV = 1e-3
DEFAULT_EMAX_MEV = 3.0
DEFAULT_N_ENERGIES = 800

#: Highest energy of xraylib's CS_Photo / CS_Compt / CS_Rayl tables for all Z, keV.
_XRL_EMAX_KEV = 800.0
#: Energy below that used to log-log extrapolate photo and Rayleigh, keV.
_XRL_ESLOPE_KEV = 600.0

COMPONENTS = ("photo", "compton", "rayleigh", "pair", "total")

# Urban's pair-production parametrisation (GEANT3 PHYS 211; Geant4 G4BetheHeitlerModel),
# coefficients of F1, F2, F3 in microbarn, polynomials in X = ln(E / m c^2).
_PAIR_A = (8.7842e2, -1.9625e3, 1.2949e3, -2.0028e2, 1.2575e1, -2.8333e-1)
_PAIR_B = (-1.0342e1, 1.7692e1, -8.2381, 1.3063, -9.0815e-2, 2.3586e-3)
_PAIR_C = (-4.5263e2, 1.1161e3, -8.6749e2, 2.1773e2, -2.0467e1, 6.5372e-1)
_PAIR_ELOW_MEV = 1.5
_MICROBARN_CM2 = 1e-30


def _xraylib():
    try:
        import xraylib  # noqa: F401
        import xraylib_np
    except ImportError:  # pragma: no cover - depends on the environment
        raise OptionalDependencyError(
            "photon cross sections need the 'xraylib' package: pip install 'persodose[mc]'") from None
    import xraylib
    return xraylib, xraylib_np


# --------------------------------------------------------------------------- inputs
def as_material(material: Material | Mapping[str, float] | str, density_g_cm3: float = 1.0) -> Material:
    """A :class:`Material` from a Material, a material name, or a dict of mass fractions.

    Args:
        material: a :class:`Material`, a name accepted by
            :func:`persodose.physics.materials.get_material`, or element symbol -> mass fraction.
        density_g_cm3: density given to a dict mixture (only the electron density-effect
            correction uses it), g/cm3.

    Raises:
        MaterialError: unknown name/element, fractions not summing to 1, bad density.
    """
    if isinstance(material, Material):
        return material
    if isinstance(material, str):
        return get_material(material)
    if isinstance(material, Mapping):
        fractions = {str(k): float(v) for k, v in material.items()}
        name = "mixture(" + ",".join(f"{el}:{fractions[el]:.6g}" for el in sorted(fractions)) + ")"
        return Material(-1, name, math.nan, math.nan, float(density_g_cm3), fractions, "user mixture")
    raise MaterialError(f"expected a Material, a material name or a dict of mass fractions, "
                        f"got {type(material).__name__}")


def _composition_key(mat: Material) -> tuple:
    return tuple(sorted((el, round(float(w), 12)) for el, w in mat.mass_fractions.items()))


def default_energy_grid_mev(n: int = DEFAULT_N_ENERGIES, emin_mev: float = DEFAULT_EMIN_MEV,
                            emax_mev: float = DEFAULT_EMAX_MEV) -> np.ndarray:
    """Log-spaced energy grid, MeV, shape (n,)."""
    return np.geomspace(emin_mev, emax_mev, int(n))


def check_energy_grid(energy_mev, what: str = "photon energy", emax_mev: float = 20.0) -> np.ndarray:
    """A strictly increasing, finite 1-D energy grid within 1 keV - ``emax_mev``, as float64.

    Raises:
        InputError: naming ``what`` and the offending range.
    """
    e = np.asarray(energy_mev, dtype=np.float64)
    if e.ndim == 0:
        e = e.reshape(1)
    if e.ndim != 1 or e.size == 0:
        raise InputError(f"{what} grid must be a non-empty 1-D array")
    if not np.all(np.isfinite(e)):
        raise InputError(f"{what} grid contains NaN or infinite values")
    if np.any(e < DEFAULT_EMIN_MEV * (1 - 1e-9)) or np.any(e > emax_mev * (1 + 1e-9)):
        raise InputError(f"{what} outside the tabulated range 0.001-{emax_mev:g} MeV: "
                         f"{e.min():.4g}-{e.max():.4g} MeV")
    if e.size > 1 and np.any(np.diff(e) <= 0):
        raise InputError(f"{what} grid must be strictly increasing")
    return e


# --------------------------------------------------------------------------- elements
def _element_za(symbols: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Atomic numbers and xraylib atomic weights (g/mol) of the symbols."""
    xrl, _ = _xraylib()
    z = np.array([xrl.SymbolToAtomicNumber(s) for s in symbols], dtype=np.int64)
    a = np.array([xrl.AtomicWeight(int(zz)) for zz in z], dtype=np.float64)
    return z, a


def klein_nishina_dcs(energy_mev: np.ndarray, cos_theta: np.ndarray) -> np.ndarray:
    """Klein-Nishina differential cross section per electron, cm2/sr.

    ``d sigma/d Omega = r_e^2 / 2 (E'/E)^2 (E'/E + E/E' - sin^2 theta)`` (Klein & Nishina,
    Z. Phys. 52 (1929) 853), ``E'/E = 1 / (1 + k (1 - cos theta))``, k = E / m c^2.
    Broadcasts ``energy_mev`` against ``cos_theta``.
    """
    k = np.asarray(energy_mev) / ELECTRON_MASS_MEV
    c = np.asarray(cos_theta)
    ratio = 1.0 / (1.0 + k * (1.0 - c))
    return 0.5 * R_E_CM**2 * ratio**2 * (ratio + 1.0 / ratio - (1.0 - c * c))


def momentum_transfer_per_angstrom(energy_mev, cos_theta) -> np.ndarray:
    """xraylib's momentum transfer ``x = sin(theta/2) E / hc``, 1/Angstrom (broadcasts)."""
    e_kev = np.asarray(energy_mev) * 1e3
    s = np.sqrt(np.clip((1.0 - np.asarray(cos_theta)) * 0.5, 0.0, 1.0))
    return s * e_kev / HC_KEV_ANGSTROM


def _x_grid(emax_mev: float) -> np.ndarray:
    xmax = 1.0001 * emax_mev * 1e3 / HC_KEV_ANGSTROM
    return np.concatenate(([0.0], np.geomspace(1e-4, max(xmax, 1.0), 400)))


def _sf_table(z: np.ndarray, x: np.ndarray) -> np.ndarray:
    """S(x, Z), shape (len(z), len(x)); S(0) = 0."""
    _, xn = _xraylib()
    out = np.zeros((z.size, x.size))
    out[:, 1:] = xn.SF_Compt(z, x[1:])
    return out


def _ff_table(z: np.ndarray, x: np.ndarray) -> np.ndarray:
    """F(x, Z), shape (len(z), len(x)); F(0) = Z."""
    _, xn = _xraylib()
    out = np.empty((z.size, x.size))
    out[:, 0] = z
    out[:, 1:] = xn.FF_Rayl(z, x[1:])
    return out


#: Gauss-Legendre nodes in cos(theta) for the Compton angular integrals (see _compton_integrals).
_GL_COS, _GL_W = np.polynomial.legendre.leggauss(192)


def _compton_integrals(z: np.ndarray, energy_mev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-atom integrals of KN x S over angle: sigma (cm2) and mean energy-transfer fraction.

    Gauss-Legendre quadrature in cos(theta) on [-1, 1] in two pieces, [-1, 0.9] and [0.9, 1],
    so that the forward region where S(x) < Z is resolved.
    """
    xg = _x_grid(float(energy_mev.max()))
    s_tab = _sf_table(z, xg)
    pieces = ((-1.0, 0.9), (0.9, 1.0))
    sig = np.zeros((z.size, energy_mev.size))
    tr = np.zeros_like(sig)
    for lo, hi in pieces:
        c = 0.5 * (hi - lo) * _GL_COS + 0.5 * (hi + lo)
        w = 0.5 * (hi - lo) * _GL_W
        e = energy_mev[:, None]
        dcs = klein_nishina_dcs(e, c[None, :]) * w[None, :] * 2.0 * np.pi  # (nE, nc)
        frac = 1.0 - 1.0 / (1.0 + e / ELECTRON_MASS_MEV * (1.0 - c[None, :]))
        xq = momentum_transfer_per_angstrom(e, c[None, :])
        for i in range(z.size):
            s = np.interp(xq, xg, s_tab[i])
            sig[i] += np.sum(dcs * s, axis=1)
            tr[i] += np.sum(dcs * s * frac, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(sig > 0, tr / sig, 0.0)
    return sig, f


def pair_cross_section_cm2(z, energy_mev) -> np.ndarray:
    """Pair-production cross section per atom (nuclear + electron field), cm2.

    Urban's parametrisation (GEANT3 PHYS 211; Geant4 Physics Reference Manual, gamma
    conversion; ``G4BetheHeitlerModel``), with the (E - 2 m c^2)^2 scaling below 1.5 MeV.
    Zero at and below 2 m c^2. Broadcasts ``z`` against ``energy_mev``.
    """
    z = np.asarray(z, dtype=np.float64)
    e = np.asarray(energy_mev, dtype=np.float64)
    thr = 2.0 * ELECTRON_MASS_MEV
    x = np.log(np.maximum(e, _PAIR_ELOW_MEV) / ELECTRON_MASS_MEV)
    f1 = np.polynomial.polynomial.polyval(x, _PAIR_A)
    f2 = np.polynomial.polynomial.polyval(x, _PAIR_B)
    f3 = np.polynomial.polynomial.polyval(x, _PAIR_C)
    sig = (z + 1.0) * (f1 * z + f2 * z * z + f3) * _MICROBARN_CM2
    scale = np.where(e < _PAIR_ELOW_MEV, ((e - thr) / (_PAIR_ELOW_MEV - thr)) ** 2, 1.0)
    return np.where(e > thr, np.maximum(sig * scale, 0.0), 0.0)


def _loglog_extrapolate(e_kev: np.ndarray, fn, z: int) -> np.ndarray:
    """xraylib ``fn(z, E)`` (cm2/g) with log-log extrapolation above 800 keV."""
    _, xn = _xraylib()
    out = np.empty_like(e_kev)
    low = e_kev <= _XRL_EMAX_KEV
    zz = np.array([z], dtype=np.int64)
    if np.any(low):
        out[low] = fn(zz, e_kev[low])[0]
    if np.any(~low):
        v = fn(zz, np.array([_XRL_ESLOPE_KEV, _XRL_EMAX_KEV]))[0]
        slope = math.log(v[1] / v[0]) / math.log(_XRL_EMAX_KEV / _XRL_ESLOPE_KEV)
        out[~low] = v[1] * (e_kev[~low] / _XRL_EMAX_KEV) ** slope
    return out


def _photo_fluorescence_fraction(z: int, e_kev: np.ndarray) -> np.ndarray:
    """X/E: mean K-fluorescence energy emitted per photoabsorption over E (see module doc)."""
    xrl, xn = _xraylib()
    try:
        omega = xrl.FluorYield(int(z), xrl.K_SHELL)
        e_ka = xrl.LineEnergy(int(z), xrl.KA_LINE)
        edge = xrl.EdgeEnergy(int(z), xrl.K_SHELL)
    except ValueError:  # no K fluorescence data (H, He)
        return np.zeros_like(e_kev)
    if omega <= 0:
        return np.zeros_like(e_kev)
    ec = np.minimum(e_kev, _XRL_EMAX_KEV)
    pk = np.zeros_like(e_kev)
    above = ec > edge
    if np.any(above):
        zz = np.array([z], dtype=np.int64)
        part = xn.CS_Photo_Partial(zz, np.array([xrl.K_SHELL], dtype=np.int64), ec[above])[0, 0]
        tot = xn.CS_Photo(zz, ec[above])[0]
        pk[above] = np.clip(part / tot, 0.0, 1.0)
    return pk * omega * e_ka / e_kev


# --------------------------------------------------------------------------- tables
@dataclass(frozen=True, eq=False)
class PhotonTables:
    """Photon interaction coefficients of one material on an energy grid.

    Attributes:
        material_name: name of the material.
        energy_mev: photon energies, MeV, shape (n,), strictly increasing.
        mu_over_rho_cm2_g: mass attenuation coefficients, cm2/g, each shape (n,), keys
            ``photo``, ``compton`` (incoherent), ``rayleigh`` (coherent), ``pair`` and
            ``total`` (their sum).
        mu_en_over_rho_cm2_g: mass energy-absorption coefficient, cm2/g, shape (n,).
        compton_energy_transfer_fraction: mean fraction of the photon energy given to the
            Compton electron, shape (n,).
    """

    material_name: str
    energy_mev: np.ndarray
    mu_over_rho_cm2_g: Mapping[str, np.ndarray]
    mu_en_over_rho_cm2_g: np.ndarray
    compton_energy_transfer_fraction: np.ndarray

    def mu_over_rho(self, energy_mev, component: str = "total") -> np.ndarray:
        """Mass attenuation coefficient at arbitrary energies (log-log interpolation), cm2/g.

        Args:
            energy_mev: energies inside the grid, MeV, any shape.
            component: one of :data:`COMPONENTS`, or ``"mu_en"``.

        Returns:
            Array of the shape of ``energy_mev``. ``pair`` is 0 at and below 1.022 MeV.
        """
        if component == "mu_en":
            table = self.mu_en_over_rho_cm2_g
        elif component in self.mu_over_rho_cm2_g:
            table = self.mu_over_rho_cm2_g[component]
        else:
            raise InputError(f"unknown photon coefficient {component!r}; "
                             f"known: {', '.join(COMPONENTS)}, mu_en")
        e = np.asarray(energy_mev, dtype=np.float64)
        require_in_range(e, self.energy_mev, "photon energy")
        le = np.log(self.energy_mev)
        positive = table > 0
        if np.all(positive):
            return np.exp(np.interp(np.log(e), le, np.log(table)))
        # pair: zero below threshold; interpolate log-log above the first non-zero node
        out = np.interp(np.log(e), le, table)
        first = int(np.argmax(positive)) if np.any(positive) else table.size
        if first < table.size:
            sel = np.log(e) >= le[first]
            out = np.where(sel, np.exp(np.interp(np.log(e), le[first:], np.log(table[first:]))), out)
            out = np.where(e <= 2 * ELECTRON_MASS_MEV, 0.0, out)
        return out

    def mu_per_mm(self, density_g_cm3, component: str = "total") -> np.ndarray:
        """Linear attenuation coefficient on the table's energy grid, 1/mm.

        Args:
            density_g_cm3: scalar or array of densities, g/cm3.
            component: one of :data:`COMPONENTS` or ``"mu_en"``.

        Returns:
            Shape ``density.shape + (n,)``: ``mu/rho * rho / 10``.
        """
        rho = np.asarray(density_g_cm3, dtype=np.float64)
        if np.any(~np.isfinite(rho)) or np.any(rho < 0):
            raise MaterialError("densities must be finite and >= 0 g/cm3")
        table = self.mu_en_over_rho_cm2_g if component == "mu_en" else self.mu_over_rho_cm2_g[component]
        return np.multiply.outer(rho, table) * 0.1


@dataclass(frozen=True, eq=False)
class ScatteringTables:
    """Angular sampling data of a material on a momentum-transfer grid.

    Per gram of the mixture (independent-atom approximation), with N_A/A_i the atoms per
    gram of element i:

    * ``form_factor_sq_per_g = N_A sum_i w_i/A_i F_i(x)^2`` (1/g): coherent scattering is
      ``d sigma/d Omega = r_e^2 (1 + cos^2 theta)/2 * form_factor_sq_per_g`` (cm2/g/sr).
      The squares add (F of different atoms does not interfere in this approximation).
    * ``incoherent_sf_per_g = N_A sum_i w_i/A_i S_i(x)`` (1/g): incoherent scattering is
      ``d sigma/d Omega = d sigma_KN/d Omega * incoherent_sf_per_g``. S adds linearly.
    * ``form_factor_sq_cumulative``: ``int_0^{x^2} form_factor_sq_per_g d(x'^2)`` (1/(g A^2)),
      the cumulative used to sample x^2 for Rayleigh scattering (PENELOPE 2018 manual,
      F. Salvat, NEA/MBDAV/R(2019)1, section 2.1).

    F: xraylib ``FF_Rayl``; S: xraylib ``SF_Compt`` (Hubbell et al., J. Phys. Chem. Ref.
    Data 4 (1975) 471).

    Attributes:
        x_per_angstrom: momentum transfer grid x = sin(theta/2)/lambda, 1/Angstrom, shape (m,),
            starting at 0 (F(0) = Z, S(0) = 0).
    """

    x_per_angstrom: np.ndarray
    form_factor_sq_per_g: np.ndarray
    incoherent_sf_per_g: np.ndarray
    form_factor_sq_cumulative: np.ndarray


def _freeze(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def require_in_range(e: np.ndarray, grid: np.ndarray, what: str) -> None:
    """Raise :class:`InputError` if energies are NaN or outside the grid."""
    if not np.all(np.isfinite(e)):
        raise InputError(f"{what} contains NaN or infinite values")
    lo, hi = grid[0] * (1 - 1e-9), grid[-1] * (1 + 1e-9)
    if e.size and (e.min() < lo or e.max() > hi):
        raise InputError(f"{what} {e.min():.4g}-{e.max():.4g} MeV outside the table "
                         f"{grid[0]:.4g}-{grid[-1]:.4g} MeV")


def _compute_photon_tables(mat: Material, energy_mev: np.ndarray) -> PhotonTables:
    from persodose.physics.electron_data import radiation_yield

    _, xn = _xraylib()
    symbols = list(mat.mass_fractions)
    w = np.array([mat.mass_fractions[s] for s in symbols])
    z, a = _element_za(symbols)
    e_kev = energy_mev * 1e3
    n = energy_mev.size

    photo = np.zeros(n)
    rayl = np.zeros(n)
    compt = np.zeros(n)
    pair = np.zeros(n)
    photo_dep = np.zeros(n)  # sum w photo (1 - X/E)
    low = e_kev <= _XRL_EMAX_KEV
    sig_c, f_c = _compton_integrals(z, energy_mev)  # per atom, fraction per element
    compt_tr = np.zeros(n)
    for i, zi in enumerate(z):
        per_g = AVOGADRO_PER_MOL / a[i]
        p = _loglog_extrapolate(e_kev, xn.CS_Photo, int(zi))
        r = _loglog_extrapolate(e_kev, xn.CS_Rayl, int(zi))
        c = np.empty(n)
        zz = np.array([zi], dtype=np.int64)
        if np.any(low):
            c[low] = xn.CS_Compt(zz, e_kev[low])[0]
        if np.any(~low):
            c_ref = xn.CS_Compt(zz, np.array([_XRL_EMAX_KEV]))[0, 0]
            s_ref, _ = _compton_integrals(z[i:i + 1], np.array([_XRL_EMAX_KEV * 1e-3]))
            c[~low] = sig_c[i, ~low] * per_g * (c_ref / (s_ref[0, 0] * per_g))
        photo += w[i] * p
        rayl += w[i] * r
        compt += w[i] * c
        compt_tr += w[i] * c * f_c[i]
        pair += w[i] * pair_cross_section_cm2(zi, energy_mev) * per_g
        photo_dep += w[i] * p * (1.0 - _photo_fluorescence_fraction(int(zi), e_kev))
    total = photo + compt + rayl + pair

    with np.errstate(invalid="ignore", divide="ignore"):
        f_compton = np.where(compt > 0, compt_tr / compt, 0.0)
    thr = 2.0 * ELECTRON_MASS_MEV
    pair_f = np.where(energy_mev > thr, 1.0 - thr / energy_mev, 0.0)
    # radiative losses of the secondary electrons (mean initial kinetic energies)
    t_photo = np.clip(energy_mev, 1e-3, 10.0)
    t_compt = np.clip(f_compton * energy_mev, 1e-3, 10.0)
    t_pair = np.clip(0.5 * (energy_mev - thr), 1e-3, 10.0)
    g_photo = radiation_yield(mat, t_photo)
    g_compt = radiation_yield(mat, t_compt)
    g_pair = radiation_yield(mat, t_pair)
    mu_en = (photo_dep * (1 - g_photo) + compt_tr * (1 - g_compt) + pair * pair_f * (1 - g_pair))

    mu = {"photo": _freeze(photo), "compton": _freeze(compt), "rayleigh": _freeze(rayl),
          "pair": _freeze(pair), "total": _freeze(total)}
    return PhotonTables(mat.name, _freeze(energy_mev), mu, _freeze(mu_en), _freeze(f_compton))


_CACHE: "OrderedDict[tuple, PhotonTables]" = OrderedDict()
_CACHE_SIZE = 64


def photon_tables(material: Material | Mapping[str, float] | str, energy_mev=None) -> PhotonTables:
    """Photon interaction coefficients of a material (cached per composition and grid).

    Args:
        material: a :class:`Material`, a material name, or element symbol -> mass fraction.
        energy_mev: strictly increasing energies within 1 keV - 20 MeV, MeV; default
            :func:`default_energy_grid_mev` (800 log-spaced points, 1 keV - 3 MeV).

    Returns:
        A :class:`PhotonTables` with read-only arrays.

    Raises:
        MaterialError: unknown material or element. InputError: bad energy grid.
        OptionalDependencyError: xraylib is not installed.
    """
    mat = as_material(material)
    e = default_energy_grid_mev() if energy_mev is None else check_energy_grid(energy_mev)
    key = (_composition_key(mat), e.size, float(e[0]), float(e[-1]), hash(e.tobytes()))
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        if hit.material_name == mat.name:
            return hit
        return PhotonTables(mat.name, hit.energy_mev, hit.mu_over_rho_cm2_g,
                            hit.mu_en_over_rho_cm2_g, hit.compton_energy_transfer_fraction)
    tables = _compute_photon_tables(mat, e)
    _CACHE[key] = tables
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return tables


def scattering_tables(material: Material | Mapping[str, float] | str,
                      emax_mev: float = DEFAULT_EMAX_MEV) -> ScatteringTables:
    """Form-factor and incoherent-scattering-function tables of a mixture.

    Args:
        material: a :class:`Material`, a name, or element symbol -> mass fraction.
        emax_mev: highest photon energy to be transported, MeV; the x grid reaches
            ``emax / hc`` (backscatter at that energy).

    Returns:
        A :class:`ScatteringTables` (see its docstring for the mixture rules).
    """
    mat = as_material(material)
    if not (math.isfinite(emax_mev) and 0 < emax_mev <= 20.0):
        raise InputError(f"emax_mev must be within (0, 20] MeV, got {emax_mev}")
    symbols = list(mat.mass_fractions)
    w = np.array([mat.mass_fractions[s] for s in symbols])
    z, a = _element_za(symbols)
    x = _x_grid(emax_mev)
    atoms_per_g = AVOGADRO_PER_MOL * w / a  # (k,)
    ff = _ff_table(z, x)
    sf = _sf_table(z, x)
    ff2 = atoms_per_g @ (ff * ff)
    sfm = atoms_per_g @ sf
    x2 = x * x
    cum = np.concatenate(([0.0], np.cumsum(0.5 * (ff2[1:] + ff2[:-1]) * np.diff(x2))))
    return ScatteringTables(_freeze(x), _freeze(ff2), _freeze(sfm), _freeze(cum))


# --------------------------------------------------------------------------- helpers
def narrow_beam_transmission(material: Material | Mapping[str, float] | str, energy_mev: float,
                             thickness_mm: float, density_g_cm3: float | None = None) -> float:
    """Narrow-beam (primary) transmission ``exp(-mu x)`` through a uniform slab.

    The oracle for the Monte Carlo primary-fluence tests (Beer-Lambert law; mu includes
    coherent scattering, as for an ideal narrow-beam geometry).

    Args:
        material: a :class:`Material`, a name, or a dict of mass fractions.
        energy_mev: photon energy, MeV (1 keV - 3 MeV).
        thickness_mm: slab thickness, mm, >= 0.
        density_g_cm3: density, g/cm3; default the material's nominal density.

    Returns:
        Transmitted fraction in (0, 1].
    """
    mat = as_material(material)
    rho = mat.density_g_cm3 if density_g_cm3 is None else float(density_g_cm3)
    if not (math.isfinite(thickness_mm) and thickness_mm >= 0):
        raise InputError(f"slab thickness must be finite and >= 0 mm, got {thickness_mm}")
    if not (math.isfinite(rho) and rho >= 0):
        raise MaterialError(f"density must be finite and >= 0 g/cm3, got {rho}")
    mu_rho = float(photon_tables(mat).mu_over_rho(float(energy_mev)))
    return math.exp(-mu_rho * rho * thickness_mm * 0.1)


def woodcock_majorant(materials: Sequence[Material | Mapping[str, float] | str],
                      densities_max: Sequence[float], energy_mev=None) -> np.ndarray:
    """Woodcock (delta-tracking) majorant cross section, 1/mm.

    ``mu_max(E) = max_i (mu/rho)_i(E) * rho_max,i / 10`` over the materials of a phantom,
    each with the highest density it takes in the phantom. Computed on the tables' nodes
    and log-log interpolated, it bounds the log-log interpolated mu of every material
    (the maximum of interpolants is at most the interpolant of the maximum).

    Args:
        materials: the phantom's materials (Material, name or dict).
        densities_max: highest density of each material in the phantom, g/cm3.
        energy_mev: energies, MeV (any shape); default the standard grid.

    Returns:
        Majorant, 1/mm, shape of ``energy_mev`` (or of the default grid).

    Raises:
        MaterialError: no materials, length mismatch, negative/non-finite density.
    """
    mats = list(materials)
    rho = np.asarray(densities_max, dtype=np.float64).reshape(-1)
    if not mats:
        raise MaterialError("woodcock_majorant needs at least one material")
    if rho.size != len(mats):
        raise MaterialError(f"{len(mats)} materials but {rho.size} maximum densities")
    if np.any(~np.isfinite(rho)) or np.any(rho < 0):
        raise MaterialError("maximum densities must be finite and >= 0 g/cm3")
    tables = [photon_tables(m) for m in mats]
    grid = tables[0].energy_mev
    node_max = np.max(np.stack([t.mu_over_rho_cm2_g["total"] * r for t, r in zip(tables, rho)]),
                      axis=0) * 0.1
    if energy_mev is None:
        return node_max.copy()
    e = np.asarray(energy_mev, dtype=np.float64)
    require_in_range(e, grid, "photon energy")
    if np.any(node_max <= 0):
        return np.interp(np.log(e), np.log(grid), node_max)
    return np.exp(np.interp(np.log(e), np.log(grid), np.log(node_max)))
