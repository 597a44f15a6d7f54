"""Interaction tables packed as plain arrays for the transport kernels.

Every table is sampled on one log-uniform kinetic-energy grid shared by photons and
electrons, so a kernel finds the bin of an energy with one multiplication. Coefficients
are per unit mass (cm2/g, MeV cm2/g, g/cm2); the kernels multiply by the voxel density
(g/cm3) and by 0.1 cm/mm to work in mm.

Sources: photon coefficients, form factors and incoherent scattering functions from
:mod:`persodose.physics.photon_data` (xraylib; EPDL-based); electron stopping powers, hard
Moller/Bhabha and bremsstrahlung cross sections and CSDA ranges from
:mod:`persodose.physics.electron_data` (ICRU 37 methods); multiple-scattering transport
cross sections from the screened Rutherford (Wentzel) model with the Moliere screening
parameter (see :func:`ms_transport_cross_sections`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from persodose.errors import InputError
from persodose.physics.materials import Material, element_z_a
from persodose.physics.constants import ELECTRON_MASS_MEV, R_E_CM, ALPHA, AVOGADRO_PER_MOL, HBARC_MEV_CM, HC_KEV_ANGSTROM, BOHR_RADIUS_CM  # noqa: F401


# Indices of the packed photon table.
PH_PHOTO, PH_COMPTON, PH_RAYLEIGH, PH_PAIR = 0, 1, 2, 3
#: Row of the packed photon table holding the track-length estimator's coefficient
#: (:func:`tle_coefficient`); it is not an interaction and is not part of the total.
PH_TLE = 4
#: Row holding the CSDA range (g/cm2) of the photon's most energetic secondary electron,
#: which decides where the estimator applies (:func:`tle_electron_range`).
PH_TLE_RANGE = 5
#: Photoabsorption share of the interaction coefficient above which the photoelectron (the
#: full photon energy) rather than the Compton-edge electron sets the reference range. A design
#: choice of this engine, not a published value: at 5 % the rarer photoelectron no longer decides.
TLE_PHOTO_SHARE = 0.05
#: Photon estimators: analog (every secondary electron transported) or track length.
PHOTON_ESTIMATORS = ("analog", "tle")
#: How decay positions are drawn from the activity (:attr:`TransportSettings.source_sampling`).
SOURCE_SAMPLINGS = ("random", "stratified")
# Indices of the packed electron table.
EL_STOP, EL_MOLLER, EL_BREMS, EL_RANGE, EL_TR1, EL_TR2 = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True)
class TransportSettings:
    """Cut-offs and step controls of the Monte Carlo transport.

    All energies in MeV. Defaults follow common practice for voxel dosimetry at mm
    resolution (e.g. DPM: Sempau et al., Phys. Med. Biol. 45 (2000) 2263, which uses
    hard-event cut-offs of tens of keV and absorption energies of a few keV).
    """

    electron_cut_mev: float = 0.010  #: electrons/positrons below this deposit locally
    photon_cut_mev: float = 0.001  #: photons below this deposit locally
    hard_collision_cut_mev: float = 0.050  #: Moller/Bhabha energy transfers above it are explicit
    brems_cut_mev: float = 0.010  #: bremsstrahlung photons above it are explicit
    max_eloss_fraction: float = 0.04  #: electron step: at most this fraction of T lost continuously (0.04: ranges within 1 % of converged, docs/validation_electrons.md)
    max_step_lambda1: float = 0.25  #: electron step: at most this many first transport mean free paths
    range_rejection: bool = True  #: deposit an electron locally when its CSDA range cannot leave the voxel
    emax_mev: float = 3.0  #: top of the energy tables
    n_energies: int = 600  #: points of the log-uniform energy grid
    #: "analog", or "tle": photon energy deposition scored by the track-length estimator
    #: where the secondary electrons' range is short against the voxel (see
    #: :mod:`persodose.mc.transport`, "Track-length estimator")
    photon_estimator: str = "analog"
    #: TLE is used in a voxel when the CSDA range of the most energetic secondary electron
    #: is at most this fraction of the voxel's smallest side
    tle_range_fraction: float = 0.5
    #: decay positions: "random" (each decay picks a voxel by its activity) or "stratified"
    #: (each batch puts one decay in each of as many equal strata of the cumulative activity
    #: as it has decays: every voxel gets its expected count to within one; see
    #: :func:`persodose.mc.transport.decay_chunk`)
    source_sampling: str = "stratified"
    #: decays: tally the energy each decay leaves in place and the kinetic energy of its
    #: electrons and positrons at their expectation, spread over the voxels by activity, and let
    #: the sampling move only what those particles carry out of their birth voxel (a control
    #: variate, :func:`persodose.mc.transport.decay_chunk`); no effect on other sources
    control_variate: bool = True

    def __post_init__(self) -> None:
        for name in ("electron_cut_mev", "photon_cut_mev", "hard_collision_cut_mev", "brems_cut_mev",
                     "max_eloss_fraction", "max_step_lambda1", "emax_mev"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InputError(f"transport setting {name} must be a positive number, got {v!r}")
        if self.electron_cut_mev < 0.001 or self.photon_cut_mev < 0.001:
            raise InputError("cut-offs below 1 keV are outside the interaction data")
        if self.hard_collision_cut_mev < self.electron_cut_mev:
            raise InputError("hard_collision_cut_mev must not be below electron_cut_mev")
        if not (0 < self.max_eloss_fraction <= 0.25):
            raise InputError("max_eloss_fraction must be within (0, 0.25]")
        if self.emax_mev > 10.0:
            raise InputError("emax_mev above 10 MeV is outside the interaction data")
        if self.photon_estimator not in PHOTON_ESTIMATORS:
            raise InputError(f"photon_estimator must be one of {', '.join(PHOTON_ESTIMATORS)}, "
                             f"got {self.photon_estimator!r}")
        if self.source_sampling not in SOURCE_SAMPLINGS:
            raise InputError(f"source_sampling must be one of {', '.join(SOURCE_SAMPLINGS)}, "
                             f"got {self.source_sampling!r}")
        v = self.tle_range_fraction
        if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 < v <= 1):
            raise InputError(f"tle_range_fraction must be within (0, 1], got {v!r}")


#: Voxels denser than this (g/cm3) bound the box where the track-length estimator may
#: apply (:func:`tle_box`): outside it lies only air (1.2e-3 g/cm3), where secondary electrons
#: travel metres. A design choice, between air and lung (about 0.26 g/cm3, ICRU 46).
TLE_BOX_MIN_DENSITY = 0.1


def tle_box(density: np.ndarray | None) -> tuple[int, int, int, int, int, int]:
    """Half-open index box ``(ix0, ix1, iy0, iy1, iz0, iz1)`` of voxels denser than :data:`TLE_BOX_MIN_DENSITY`.

    ``density`` is the (z, y, x) density array; ``None`` gives an unbounded box. Outside the
    box photons are transported analog and their tracks are not walked, which saves the
    estimator the air around a patient. An all-air grid gives an empty box.
    """
    if density is None:
        return (0, 2**31, 0, 2**31, 0, 2**31)
    idx = np.nonzero(np.asarray(density) > TLE_BOX_MIN_DENSITY)
    if idx[0].size == 0:
        return (0, 0, 0, 0, 0, 0)
    (z0, z1), (y0, y1), (x0, x1) = ((int(a.min()), int(a.max()) + 1) for a in idx)
    return (x0, x1, y0, y1, z0, z1)


def settings_array(settings: TransportSettings, density: np.ndarray | None = None,
                   control: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The transport settings as the kernels read them (``settings_f``).

    ``[photon cut, electron cut, hard-collision cut, bremsstrahlung cut, max energy-loss
    fraction, max step in lambda1, track-length estimator on (1) or off (0), its range
    fraction, then the estimator's box (:func:`tle_box` of ``density``) ix0, ix1, iy0, iy1, iz0,
    iz1, then stratified decay positions (1) or not (0), then the decays' control variate on (1)
    or off (0), the density (g/cm3) and the share of the activity from which it applies
    (``control``, from :meth:`persodose.mc.problem.MCProblem.control_thresholds`)]``.
    """
    return np.array([settings.photon_cut_mev, settings.electron_cut_mev, settings.hard_collision_cut_mev,
                     settings.brems_cut_mev, settings.max_eloss_fraction, settings.max_step_lambda1,
                     1.0 if settings.photon_estimator == "tle" else 0.0, settings.tle_range_fraction,
                     *tle_box(density), 1.0 if settings.source_sampling == "stratified" else 0.0,
                     1.0 if settings.control_variate else 0.0, *control],
                    dtype=np.float64)


def tle_applies(tables: "TransportTables", material_index: int, density_g_cm3: float, energy_mev: float,
                voxel_mm: float) -> bool:
    """Whether the track-length estimator scores a photon of ``energy_mev`` in such a voxel.

    The host-side statement of the kernels' rule (:func:`persodose.mc.transport._tle_voxel`):
    the estimator must be on, the photon below 2 m c^2, and the CSDA range of its most
    energetic secondary electron (:func:`tle_electron_range`) in this material and density
    at most ``tle_range_fraction`` of the voxel's smallest side ``voxel_mm``.
    """
    s = tables.settings
    if s.photon_estimator != "tle" or energy_mev >= 2.0 * ELECTRON_MASS_MEV:
        return False
    r = np.interp(math.log(energy_mev), np.log(tables.energy_mev), tables.photon[material_index, PH_TLE_RANGE])
    return bool(r / density_g_cm3 * 10.0 <= s.tle_range_fraction * voxel_mm)


def ms_transport_cross_sections(material: Material, energy_mev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and second transport cross sections of elastic scattering, cm2/g.

    Screened Rutherford cross section per atom of element Z,
    ``dsigma/dOmega = Z(Z+1) r_e^2 / (gamma^2 beta^4) / (1 - mu + 2A)^2``, with the Moliere
    screening parameter ``A = (hbar / (2 p a))^2 (1.13 + 3.76 (alpha Z / beta)^2)`` and the
    Thomas-Fermi radius ``a = 0.885 a_0 Z^(-1/3)`` (G. Moliere, Z. Naturforsch. 2a (1947) 133;
    the Z(Z+1) factor adds scattering by the atomic electrons, as in EGS4, SLAC-265).
    Integrating analytically (u = 1 - mu):

    * ``sigma_1 = 2 pi C [ln(1 + 1/A) - 1/(1 + A)]``  (weight 1 - P_1),
    * ``sigma_2 = 2 pi C 3 [(1 + 2A) ln(1 + 1/A) - 2]``  (weight 1 - P_2),

    ``C = Z(Z+1) r_e^2 / (gamma^2 beta^4)``. By Lewis' theory (H. W. Lewis, Phys. Rev. 78
    (1950) 526) a path of length s (g/cm2) gives ``<P_l(cos theta)> = exp(-s Sigma_l)``.

    Returns:
        ``(Sigma_1, Sigma_2)`` per gram of the mixture, arrays like ``energy_mev``.
    """
    t = np.asarray(energy_mev, dtype=np.float64)
    pc = np.sqrt(t * (t + 2.0 * ELECTRON_MASS_MEV))
    gamma = 1.0 + t / ELECTRON_MASS_MEV
    beta2 = 1.0 - 1.0 / gamma**2
    s1 = np.zeros_like(t)
    s2 = np.zeros_like(t)
    for el, w in material.mass_fractions.items():
        z, a_mol = element_z_a(el)
        a_tf = 0.885 * BOHR_RADIUS_CM * z ** (-1.0 / 3.0)
        screen = (HBARC_MEV_CM / (2.0 * pc * a_tf)) ** 2 * (1.13 + 3.76 * (ALPHA * z) ** 2 / beta2)
        c = z * (z + 1.0) * R_E_CM**2 / (gamma**2 * beta2**2)
        log_term = np.log1p(1.0 / screen)
        sig1 = 2.0 * np.pi * c * (log_term - 1.0 / (1.0 + screen))
        sig2 = 2.0 * np.pi * c * 3.0 * ((1.0 + 2.0 * screen) * log_term - 2.0)
        atoms_per_g = AVOGADRO_PER_MOL * w / a_mol
        s1 += atoms_per_g * sig1
        s2 += atoms_per_g * sig2
    return s1, s2


@dataclass(frozen=True, eq=False)
class TransportTables:
    """Everything the kernels read, as contiguous float64 arrays.

    Attributes:
        log_emin: ln of the lowest grid energy (MeV).
        inv_dlog: 1 / (ln step) of the grid.
        energy_mev: the grid, shape (n_e,).
        photon: (n_mat, 6, n_e) photo, Compton, Rayleigh, pair mass attenuation, cm2/g; the
            track-length estimator's mass energy-deposition coefficient
            (:func:`tle_coefficient`, row :data:`PH_TLE`), cm2/g; and the CSDA range of the
            most energetic secondary electron (:func:`tle_electron_range`, row
            :data:`PH_TLE_RANGE`), g/cm2.
        photon_total: (n_mat, n_e) the sum of the four interactions, cm2/g.
        electron: (2, n_mat, 6, n_e) for e- (0) and e+ (1): restricted stopping power
            (MeV cm2/g), hard-collision and hard-bremsstrahlung cross sections (cm2/g),
            CSDA range (g/cm2), first and second transport cross sections (cm2/g).
        x_nodes: momentum-transfer grid for the scattering functions, 1/Angstrom, (n_x,).
        compton_sf: (n_mat, n_x) incoherent scattering function of the mixture divided by
            its electrons per gram (0 at x = 0, -> 1 at large x).
        rayleigh_cum: (n_mat, n_x) cumulative of F^2 in x^2 (arbitrary units per material).
        material_names: names, in material-index order.
    """

    settings: TransportSettings
    log_emin: float
    inv_dlog: float
    energy_mev: np.ndarray
    photon: np.ndarray
    photon_total: np.ndarray
    electron: np.ndarray
    x_nodes: np.ndarray
    compton_sf: np.ndarray
    rayleigh_cum: np.ndarray
    material_names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_materials(self) -> int:
        return int(self.photon.shape[0])

    def majorant_per_mm(self, max_density_g_cm3: np.ndarray) -> np.ndarray:
        """Woodcock majorant on the grid, 1/mm: an upper envelope of mu over all voxels.

        Each node takes the larger of its own and its neighbours' values, so that linear
        interpolation of any material's mu between nodes can never exceed it.
        """
        rho = np.asarray(max_density_g_cm3, dtype=np.float64)
        if rho.shape != (self.n_materials,):
            raise InputError(f"need one maximum density per material ({self.n_materials})")
        mu = (self.photon_total * rho[:, None]).max(axis=0) * 0.1
        env = mu.copy()
        env[:-1] = np.maximum(env[:-1], mu[1:])
        env[1:] = np.maximum(env[1:], mu[:-1])
        return env * 1.0001


def tle_coefficient(pt, material: Material) -> np.ndarray:
    """Mass energy-deposition coefficient that the track-length estimator scores, cm2/g.

    The photon's expected energy given to electrons that stay local, *as the analog engine
    treats it*, per unit mass and path: ``mu_photo (1 - g_photo) + mu_incoh f_incoh
    (1 - g_incoh)``, with the Compton energy-transfer fraction ``f_incoh`` averaged over
    Klein-Nishina x S(x) (:mod:`persodose.physics.photon_data`) and the radiation yield
    ``g`` of the secondary electrons (:func:`persodose.physics.electron_data.radiation_yield`).
    It differs from mu_en/rho (Hubbell & Seltzer, NISTIR 5632) in one respect only: the
    binding energy of a photoabsorption is not reduced by K fluorescence, because the
    engine deposits it where the absorption happens (see :mod:`persodose.physics.photon_data`,
    "Transport conventions"). Pair production is absent: the estimator is not used above
    2 m c^2 (the positron's annihilation photons must be transported).
    """
    from persodose.physics.electron_data import radiation_yield

    e = pt.energy_mev
    mu = pt.mu_over_rho_cm2_g
    f_c = pt.compton_energy_transfer_fraction
    g_photo = radiation_yield(material, np.clip(e, 1e-3, 10.0))
    g_compt = radiation_yield(material, np.clip(f_c * e, 1e-3, 10.0))
    return np.asarray(mu["photo"] * (1.0 - g_photo) + mu["compton"] * f_c * (1.0 - g_compt), dtype=np.float64)


def tle_electron_range(pt, energy: np.ndarray, csda_range_g_cm2: np.ndarray) -> np.ndarray:
    """CSDA range (g/cm2) of the most energetic electron a photon of each grid energy sets in motion.

    That electron is the photoelectron (the whole photon energy, binding neglected) where
    photoabsorption is more than :data:`TLE_PHOTO_SHARE` of the interactions, and otherwise
    the Compton-edge electron, ``T = E 2k / (1 + 2k)``, ``k = E / m c^2`` (Klein-Nishina
    kinematics at 180 degrees). Above 2 m c^2 the range is set to 1e30 g/cm2: the estimator is
    never used where pair production is possible. Ranges are interpolated log-log in the
    material's CSDA range table on the same grid (ESTAR-like, :mod:`persodose.physics.electron_data`).
    """
    mu = pt.mu_over_rho_cm2_g
    k = energy / ELECTRON_MASS_MEV
    t_ref = np.where(mu["photo"] > TLE_PHOTO_SHARE * mu["total"], energy, energy * 2.0 * k / (1.0 + 2.0 * k))
    t_ref = np.clip(t_ref, energy[0], energy[-1])
    rng = np.exp(np.interp(np.log(t_ref), np.log(energy), np.log(csda_range_g_cm2)))
    return np.where(energy < 2.0 * ELECTRON_MASS_MEV, rng, 1e30)


def build_tables(materials: Sequence[Material], settings: TransportSettings | None = None) -> TransportTables:
    """Build the packed tables for a list of materials (index = material number)."""
    from persodose.physics.electron_data import electron_tables
    from persodose.physics.photon_data import photon_tables, scattering_tables

    settings = settings or TransportSettings()
    if not materials:
        raise InputError("no materials given to the Monte Carlo engine")
    emin = 1e-3
    n = int(settings.n_energies)
    energy = np.geomspace(emin, settings.emax_mev, n)
    log_emin = math.log(emin)
    inv_dlog = (n - 1) / (math.log(settings.emax_mev) - log_emin)
    n_mat = len(materials)
    photon = np.zeros((n_mat, 6, n))
    electron = np.zeros((2, n_mat, 6, n))
    x_nodes = None
    sf_rows, ray_rows = [], []
    for m, mat in enumerate(materials):
        pt = photon_tables(mat, energy)
        for k, key in enumerate(("photo", "compton", "rayleigh", "pair")):
            photon[m, k] = pt.mu_over_rho_cm2_g[key]
        photon[m, PH_TLE] = tle_coefficient(pt, mat)
        st = scattering_tables(mat, emax_mev=settings.emax_mev)
        if x_nodes is None:
            x_nodes = np.asarray(st.x_per_angstrom, dtype=np.float64)
        elif not np.array_equal(x_nodes, st.x_per_angstrom):  # pragma: no cover - same grid by design
            raise InputError("scattering tables use different momentum-transfer grids")
        sf_rows.append(np.asarray(st.incoherent_sf_per_g) / mat.electrons_per_gram())
        ray_rows.append(np.asarray(st.form_factor_sq_cumulative))
        tr1, tr2 = ms_transport_cross_sections(mat, energy)
        for p, positron in enumerate((False, True)):
            et = electron_tables(mat, positron=positron, cut_mev=settings.hard_collision_cut_mev,
                                 energy_mev=energy, photon_cut_mev=settings.brems_cut_mev)
            electron[p, m, EL_STOP] = et.s_restricted_total_mev_cm2_g
            electron[p, m, EL_MOLLER] = et.sigma_hard_collision_cm2_g
            electron[p, m, EL_BREMS] = et.sigma_hard_brems_cm2_g
            electron[p, m, EL_RANGE] = et.csda_range_g_cm2
            electron[p, m, EL_TR1] = tr1
            electron[p, m, EL_TR2] = tr2
        photon[m, PH_TLE_RANGE] = tle_electron_range(pt, energy, electron[0, m, EL_RANGE])
    return TransportTables(
        settings=settings, log_emin=log_emin, inv_dlog=inv_dlog, energy_mev=energy,
        photon=np.ascontiguousarray(photon), photon_total=np.ascontiguousarray(photon[:, :PH_TLE].sum(axis=1)),
        electron=np.ascontiguousarray(electron), x_nodes=x_nodes,
        compton_sf=np.ascontiguousarray(np.vstack(sf_rows)),
        rayleigh_cum=np.ascontiguousarray(np.vstack(ray_rows)),
        material_names=tuple(m.name for m in materials),
    )
