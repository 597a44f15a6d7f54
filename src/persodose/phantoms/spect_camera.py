"""A SPECT camera for 177Lu: projections, Poisson counts and OSEM reconstruction.

Two models behind one API (:class:`SPECTCamera`, :func:`simulate_spect`):

* ``model="camera"``: the activity on the CT grid is moved onto the SPECT grid (4.8 mm
  voxels, ``matrix x matrix`` transaxial, as the DblurDoseNet paper: Li et al., *DblurDoseNet*,
  ``seeds/dblurdosenet-residual-cnn-spect-dosimetry.txt``, Methods), projected with
  PyTomography's rotate-and-sum SPECT system matrix (attenuation from the CT density and the
  depth-dependent collimator-detector response, CDR, of a medium-energy parallel-hole
  collimator), Poisson noise is drawn from ``rng`` on the projections, and the image is
  reconstructed with PyTomography's OSEM with attenuation correction and the same CDR in the
  system matrix (resolution modelling). Scatter is not simulated (the paper corrected it with
  triple energy windows; a scatter-free photopeak is the ideal case of that correction).
* ``model="blur"``: the fast image-domain model the virtual patient uses (12 mm Gaussian,
  Poisson counts on the SPECT grid, 5 mm post-filter; constants and functions of
  :mod:`persodose.phantoms.imaging`).

Both return activity, Bq per SPECT voxel (:attr:`Kind.ACTIVITY`), calibrated with the same
sensitivity: ``A = counts_image / (S * T)`` with ``S`` the system sensitivity (cps/Bq) and ``T``
the acquisition duration. PyTomography (extra ``persodose[spect]``) is imported only inside the
functions that need it.

Cost: PyTomography's projector rotates the padded object and the attenuation map for every
view (no cache), about 0.3-0.5 s per view and per forward or back projection of a 128 x 128 x 81
object on 2 CPU cores, so one reconstruction costs about ``(2 * iterations + 2) * n_views``
such operations: minutes on 2 cores at the defaults (see ``benchmarks/bench_spect.py``), seconds
on a GPU. Fewer views or a smaller matrix are the levers for large data sets.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from persodose.errors import InputError
from persodose.grid import Grid, Kind
from persodose.phantoms import imaging as _img

#: Mass attenuation coefficient of water at 208 keV (177Lu photopeak), cm2/g, with coherent
#: scattering: NIST XCOM (Berger et al., XCOM: Photon Cross Sections Database, NIST SRD 8),
#: log-log interpolation between 0.1370 (200 keV) and 0.1186 (300 keV) cm2/g. Every tissue is
#: water scaled by its mass density (at 208 keV Compton scattering dominates; cortical bone's
#: mu/rho is about 3 % lower than water's, so bone is slightly over-attenuated; a bilinear
#: HU-to-mu curve would fix that, and needs the CT energy we do not model).
MU_RHO_WATER_208KEV_CM2_G = 0.1353
#: Linear attenuation coefficient of lead at 208 keV, 1/cm: mu/rho = 0.915 cm2/g (NIST XCOM,
#: log-log between 0.9985 at 200 keV and 0.4031 cm2/g at 300 keV) times 11.35 g/cm3. Used for
#: the effective hole length ``L - 2/mu`` (Cherry, Sorenson & Phelps, *Physics in Nuclear
#: Medicine*, 4th ed., ch. 14, collimator resolution).
MU_LEAD_208KEV_PER_CM = 10.38
#: Photopeak energy of 177Lu used for the collimator and attenuation, keV (ICRP-107: 208.4 keV,
#: 10.4 %).
LU177_PHOTOPEAK_KEV = 208.0

#: Parallel-hole collimators: hole diameter, septa and hole length, mm, from the SIMIND
#: collimator database shipped with PyTomography (``pytomography/data/collim.col``; Ljungberg
#: & Strand, Comput Methods Programs Biomed 1989, SIMIND). ``MEGP``: GE Infinia/Discovery
#: medium-energy general purpose (code GI-MEGP, hexagonal holes); ``SIEMENS-ME``: Siemens
#: Symbia/Intevo medium energy (SI-ME), the collimator of the DblurDoseNet paper's camera.
COLLIMATORS_MM = {
    "MEGP": {"hole_mm": 3.00, "septa_mm": 1.05, "length_mm": 58.0},
    "SIEMENS-ME": {"hole_mm": 2.94, "septa_mm": 1.14, "length_mm": 40.6},
}
#: Intrinsic resolution of a NaI(Tl) camera, FWHM mm, at 140 keV (3/8" crystal, typical data
#: sheet value 3.8-3.9 mm), scaled to 208 keV as ``E^-1/2`` (the scaling PyTomography's
#: ``get_psfmeta_from_scanner_params`` uses): 3.9 * sqrt(140/208) = 3.2 mm.
INTRINSIC_FWHM_140KEV_MM = 3.9

_MODELS = ("camera", "blur")


@dataclass(frozen=True)
class SPECTCamera:
    """Settings of the SPECT acquisition and reconstruction (declared and validated here).

    Attributes:
        model: ``"camera"`` (PyTomography projections + OSEM) or ``"blur"`` (the fast
            image-domain model of :mod:`persodose.phantoms.imaging`).
        voxel_mm: isotropic reconstruction voxel, mm (4.8 mm: DblurDoseNet paper, Methods).
            Also the projection pixel.
        matrix: transaxial matrix of the reconstruction and of the projections (128: paper).
        n_views: projection angles over 360 degrees (the paper: 128; clinical 177Lu
            protocols 96-120, e.g. MIRD Pamphlet 26, Ljungberg et al., J Nucl Med 2016). The
            default 120 is the clinical one; it does not fit a 20 s budget on 2 CPU cores
            (about 0.4 s per view and projection there); use fewer views for bulk data.
        radius_mm: radius of rotation of a circular orbit, mm, the distance from the axis of
            rotation to the collimator face, the same for every view (not a body contour).
        collimator: a key of :data:`COLLIMATORS_MM`. Its CDR is Gaussian with
            ``FWHM(d) = sqrt(R_i^2 + (a + b d)^2)``, ``a`` = hole diameter, ``b`` = hole
            diameter / (L - 2/mu_Pb), ``d`` the distance from the collimator face
            (geometric resolution: Cherry, Sorenson & Phelps, ch. 14; the same model as
            PyTomography's ``get_psfmeta_from_scanner_params``), ``R_i`` the intrinsic FWHM.
        intrinsic_fwhm_mm: intrinsic resolution at 208 keV, mm (default from
            :data:`INTRINSIC_FWHM_140KEV_MM` scaled by ``sqrt(140/208)``).
        iterations: OSEM iterations.
        subsets: OSEM subsets (must divide into at least one view each). The paper used 16
            iterations x 4 subsets; 4 x 10 (40 updates) is cheaper and close to clinical
            vendor protocols for 177Lu (e.g. 4-6 iterations x 8-10 subsets).
        postfilter_fwhm_mm: Gaussian post-filter of the reconstruction, mm (0: none, as the
            paper; clinical protocols often omit it for quantification).
        sensitivity_cps_per_mbq: system sensitivity (counts per second per MBq in air,
            photopeak window), which also calibrates the image.
        attenuation_correction: model attenuation in the reconstruction (the simulation always
            attenuates).
    """

    model: str = "camera"
    voxel_mm: float = 4.8
    matrix: int = 128
    n_views: int = 120
    radius_mm: float = 250.0
    collimator: str = "MEGP"
    iterations: int = 4
    subsets: int = 10
    postfilter_fwhm_mm: float = 0.0
    sensitivity_cps_per_mbq: float = _img.SPECT_SENSITIVITY_CPS_PER_MBQ
    intrinsic_fwhm_mm: float = INTRINSIC_FWHM_140KEV_MM * math.sqrt(140.0 / LU177_PHOTOPEAK_KEV)
    attenuation_correction: bool = True

    def __post_init__(self) -> None:
        if self.model not in _MODELS:
            raise InputError(f"unknown SPECT model {self.model!r}; known: {', '.join(_MODELS)}")
        if self.collimator not in COLLIMATORS_MM:
            raise InputError(f"unknown collimator {self.collimator!r}; known: {', '.join(COLLIMATORS_MM)}")
        for name in ("voxel_mm", "radius_mm", "sensitivity_cps_per_mbq"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v > 0):
                raise InputError(f"SPECT camera {name} must be positive, got {v}")
        for name in ("postfilter_fwhm_mm", "intrinsic_fwhm_mm"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v >= 0):
                raise InputError(f"SPECT camera {name} must be >= 0, got {v}")
        for name, lo in (("matrix", 8), ("n_views", 2), ("iterations", 1), ("subsets", 1)):
            v = getattr(self, name)
            if int(v) != v or v < lo:
                raise InputError(f"SPECT camera {name} must be an integer >= {lo}, got {v}")
        if self.subsets > self.n_views:
            raise InputError(f"SPECT camera subsets ({self.subsets}) cannot exceed n_views ({self.n_views})")

    def cdr_fwhm_mm(self, distance_mm):
        """FWHM of the collimator-detector response at ``distance_mm`` from the collimator, mm.

        ``sqrt(R_i^2 + (a + b d)^2)`` (see the class docstring).
        """
        c = COLLIMATORS_MM[self.collimator]
        a = c["hole_mm"]
        b = c["hole_mm"] / (c["length_mm"] - 20.0 / MU_LEAD_208KEV_PER_CM)  # 2/mu in mm
        d = np.asarray(distance_mm, dtype=float)
        return np.sqrt(self.intrinsic_fwhm_mm ** 2 + (a + b * d) ** 2)

    def to_dict(self) -> dict:
        """The settings as plain JSON-serialisable values (provenance)."""
        return asdict(self)


@dataclass(frozen=True)
class Projections:
    """Projections of one acquisition.

    Attributes:
        counts: Poisson counts, shape ``(n_views, m, nz)``, ``m`` the width of ``crop`` (PyTomography's order:
            angle, transaxial bin, axial bin), float32.
        expected_counts: their expectation, same shape.
        duration_s: acquisition duration, s (from ``total_counts`` when that was given).
        sensitivity_cps_per_bq: sensitivity used, cps/Bq.
        crop: the centred transaxial index range of the SPECT grid that was projected (see
            :func:`_support_crop`); the projections are ``crop`` bins wide.
    """

    counts: np.ndarray
    expected_counts: np.ndarray
    duration_s: float
    sensitivity_cps_per_bq: float
    crop: slice = field(default_factory=lambda: slice(None))


# ----------------------------------------------------------------------------- grids
def spect_grid_for(ct_like: Grid, camera: SPECTCamera, axial_range_mm: tuple[float, float] | None = None) -> Grid:
    """The SPECT grid: ``voxel_mm`` isotropic, ``matrix x matrix`` centred on the CT's centre.

    The axial extent is the CT's (rounded up to whole voxels) or ``axial_range_mm`` (z range,
    mm, of the CT grid's physical coordinates along its z index axis).
    """
    d = np.asarray(ct_like.direction_xyz, float)
    centre_idx = (np.asarray(ct_like.shape, float) - 1.0) / 2.0
    centre = ct_like.index_to_physical(centre_idx)
    v = float(camera.voxel_mm)
    if axial_range_mm is None:
        extent = ct_like.shape[0] * ct_like.spacing_zyx_mm[0]
    else:
        lo, hi = (float(x) for x in axial_range_mm)
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise InputError(f"axial_range_mm must be (low, high) with high > low, got {axial_range_mm}")
        zc = float(centre @ d[:, 2])  # coordinate of the CT centre along the z index axis
        centre = centre + d[:, 2] * ((lo + hi) / 2.0 - zc)
        extent = hi - lo
    nz = max(1, int(math.ceil(extent / v - 1e-6)))
    shape = (nz, int(camera.matrix), int(camera.matrix))
    half_idx = (np.asarray(shape[::-1], float) - 1.0) / 2.0  # (x, y, z)
    origin = centre - d @ (half_idx * v)
    return Grid(np.zeros(shape, np.float32), (v, v, v), tuple(origin), d, Kind.ACTIVITY)


def spect_to_ct_grid(spect: Grid, ct_like: Grid) -> Grid:
    """Activity of a SPECT grid on the CT grid, totals kept (sum-preserving resampling).

    Uses :func:`persodose.grid.resample_sum` (exact overlap of voxels), so the activity inside
    the CT field of view is kept exactly.
    """
    if spect.kind is not Kind.ACTIVITY:
        raise InputError(f"spect_to_ct_grid needs an activity grid (Bq per voxel), got {spect.kind.value}")
    return spect.resample_to(ct_like, "sum")


def _check_inputs(activity_bq: Grid, density_g_cm3: Grid, duration_s, total_counts) -> None:
    if activity_bq.kind is not Kind.ACTIVITY:
        raise InputError(f"simulate_spect needs activity in Bq per voxel, got a {activity_bq.kind.value} grid")
    activity_bq.require_same_geometry(density_g_cm3, "activity and density")
    activity_bq.check_finite("activity")
    density_g_cm3.check_finite("density")
    if float(np.min(activity_bq.array)) < 0:
        raise InputError("activity must be non-negative")
    if (duration_s is None) == (total_counts is None):
        raise InputError("give exactly one of duration_s or total_counts")
    val = duration_s if duration_s is not None else total_counts
    if not (math.isfinite(float(val)) and float(val) > 0):
        raise InputError(f"{'duration_s' if duration_s is not None else 'total_counts'} must be positive, got {val}")


# ----------------------------------------------------------------------------- camera model
def _pytomography():
    from persodose._optional import optional_import

    return optional_import("pytomography", "spect")


def _system_matrix(mu_per_cm_xyz, camera: SPECTCamera, shape_xyz, attenuation: bool):
    """PyTomography SPECT system matrix (attenuation + CDR), object in (x, y, z) order."""
    _pytomography()
    import torch
    from pytomography.metadata.SPECT import SPECTObjectMeta, SPECTProjMeta, SPECTPSFMeta
    from pytomography.projectors.SPECT import SPECTSystemMatrix
    from pytomography.transforms.SPECT import SPECTAttenuationTransform, SPECTPSFTransform

    dr_cm = float(camera.voxel_mm) / 10.0
    nx, ny, nz = shape_xyz
    obj_meta = SPECTObjectMeta([dr_cm, dr_cm, dr_cm], [nx, ny, nz])
    angles = np.linspace(0.0, 360.0, int(camera.n_views), endpoint=False)
    proj_meta = SPECTProjMeta((ny, nz), [dr_cm, dr_cm], angles,
                              radii=np.full(int(camera.n_views), float(camera.radius_mm) / 10.0))
    f2s = _img.FWHM_TO_SIGMA

    def sigma_cm(d_cm, *_):
        return camera.cdr_fwhm_mm(np.asarray(d_cm) * 10.0) * f2s / 10.0

    psf = SPECTPSFMeta([0.0], sigma_fit=sigma_cm, kernel_dimensions="2D", min_sigmas=3)
    transforms = []
    if attenuation:
        transforms.append(SPECTAttenuationTransform(torch.as_tensor(mu_per_cm_xyz, dtype=torch.float32)))
    transforms.append(SPECTPSFTransform(psf))
    return SPECTSystemMatrix(transforms, [], obj_meta, proj_meta)


def _to_spect_grid(activity_bq: Grid, density_g_cm3: Grid, sg: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Activity (Bq per SPECT voxel, sum-preserving) and mu (1/cm) on the SPECT grid, z,y,x."""
    act = activity_bq.resample_to(sg, "sum").array.astype(np.float64)
    dens = density_g_cm3.resample_to(sg.with_array(sg.array, Kind.DENSITY), "linear").array
    mu = np.clip(dens, 0.0, None).astype(np.float32) * MU_RHO_WATER_208KEV_CM2_G
    return act, mu


#: Margin of the reconstruction support beyond the last voxel holding matter or activity, voxels
#: (covers the CDR tails at the largest depths: 3 sigma of a 20 mm FWHM at 4.8 mm voxels).
SUPPORT_MARGIN_VOXELS = 6


def _support_crop(act_zyx: np.ndarray, mu_zyx: np.ndarray) -> slice:
    """Centred square transaxial support holding every voxel with activity or attenuation.

    PyTomography rotates the whole (padded) matrix for every view; projecting and
    reconstructing only the centred square that holds the patient (plus
    :data:`SUPPORT_MARGIN_VOXELS`) is exact for the projections of a patient without activity
    or matter outside it, and is the usual support constraint of the reconstruction (voxels
    outside are zero). It saves the empty corners of the field, about half the work for a
    128-matrix at 4.8 mm on an adult. The crop is symmetric so the centre of rotation is kept.
    """
    n = act_zyx.shape[1]
    occ = ((act_zyx > 0) | (mu_zyx > 0)).any(axis=0)
    if not occ.any():
        return slice(0, n)
    rows, cols = np.nonzero(occ.any(axis=1))[0], np.nonzero(occ.any(axis=0))[0]
    edge = min(rows.min(), cols.min(), n - 1 - rows.max(), n - 1 - cols.max())
    lo = max(0, int(edge) - SUPPORT_MARGIN_VOXELS)
    return slice(lo, n - lo)


def acquire_projections(activity_bq: Grid, density_g_cm3: Grid, camera: SPECTCamera, *,
                        duration_s: float | None = None, total_counts: float | None = None,
                        rng: np.random.Generator,
                        axial_range_mm: tuple[float, float] | None = None) -> tuple[Projections, Grid, np.ndarray]:
    """Attenuated, CDR-blurred projections with Poisson counts (``model="camera"``).

    The expected counts are ``k H a``, ``H`` PyTomography's system matrix (each view sums the
    attenuated, blurred object), ``a`` activity in Bq and ``k = S T / n_views`` (``S``
    cps/Bq, ``T`` s): the counts of all views of an unattenuated source add up to ``S A T``.
    With ``total_counts``, ``T`` is chosen so that the expected total is ``total_counts``.

    Returns:
        The projections, the SPECT grid and mu on it (1/cm, z,y,x).
    """
    _check_inputs(activity_bq, density_g_cm3, duration_s, total_counts)
    _pytomography()
    import torch

    sg = spect_grid_for(activity_bq, camera, axial_range_mm)
    act, mu = _to_spect_grid(activity_bq, density_g_cm3, sg)
    crop = _support_crop(act, mu)
    act, mu = act[:, crop, crop], mu[:, crop, crop]
    shape_xyz = act.shape[::-1]
    H = _system_matrix(mu.transpose(2, 1, 0).copy(), camera, shape_xyz, True)
    with torch.no_grad():
        proj = H.forward(torch.as_tensor(act.transpose(2, 1, 0).copy(), dtype=torch.float32))
    proj = np.clip(proj.cpu().numpy().astype(np.float64), 0.0, None)
    s_cps_per_bq = float(camera.sensitivity_cps_per_mbq) * 1e-6
    if total_counts is not None:
        if proj.sum() <= 0:
            raise InputError("no activity inside the SPECT field of view: cannot scale to total_counts")
        duration_s = float(total_counts) * camera.n_views / (s_cps_per_bq * proj.sum())
    k = s_cps_per_bq * float(duration_s) / camera.n_views
    expected = proj * k
    counts = rng.poisson(expected).astype(np.float32)
    return Projections(counts, expected.astype(np.float32), float(duration_s), s_cps_per_bq, crop), sg, mu


def reconstruct_osem(projections: Projections, mu_zyx: np.ndarray, sg: Grid, camera: SPECTCamera) -> Grid:
    """OSEM with attenuation correction (optional) and CDR modelling; activity, Bq per voxel."""
    _pytomography()
    import torch
    from pytomography.algorithms import OSEM
    from pytomography.likelihoods import PoissonLogLikelihood

    crop = projections.crop
    mu_c = mu_zyx[:, crop, crop]
    shape_xyz = mu_c.shape[::-1]
    H = _system_matrix(mu_c.transpose(2, 1, 0).copy(), camera, shape_xyz, camera.attenuation_correction)
    g = torch.as_tensor(projections.counts, dtype=torch.float32)
    with torch.no_grad():
        lik = PoissonLogLikelihood(H, g)
        rec = OSEM(lik)(int(camera.iterations), int(camera.subsets))
    rec = rec.cpu().numpy().transpose(2, 1, 0).astype(np.float64)
    k = projections.sensitivity_cps_per_bq * projections.duration_s / camera.n_views
    img = np.zeros(sg.shape)
    img[:, crop, crop] = rec / k
    if camera.postfilter_fwhm_mm > 0:
        img = _img.blur(img, camera.postfilter_fwhm_mm, camera.voxel_mm).astype(np.float64)
    return sg.with_array(np.clip(img, 0.0, None).astype(np.float32), Kind.ACTIVITY)


# ----------------------------------------------------------------------------- blur model
def _simulate_blur(activity_bq: Grid, camera: SPECTCamera, duration_s, total_counts, rng, axial_range_mm) -> Grid:
    """Today's image-domain model: 12 mm blur, Poisson on the SPECT grid, 5 mm post-filter.

    As :func:`persodose.phantoms.virtual_patient._spect_counts` (same functions of
    :mod:`persodose.phantoms.imaging`), but on the camera's grid and calibrated to activity:
    ``A = counts / (S T)``. With ``total_counts``, ``T = total_counts / (S A_total)`` (no
    attenuation in this model).
    """
    sg = spect_grid_for(activity_bq, camera, axial_range_mm)
    s = float(camera.sensitivity_cps_per_mbq) * 1e-6
    if total_counts is not None:
        a_tot = activity_bq.total()
        if a_tot <= 0:
            raise InputError("no activity: cannot scale to total_counts")
        duration_s = float(total_counts) / (s * a_tot)
    st = s * float(duration_s)
    vc = activity_bq.spacing_zyx_mm
    conc = _img.blur(activity_bq.array * st, _img.SPECT_FWHM_MM, vc) / activity_bq.voxel_volume_ml
    if activity_bq.same_geometry(sg):
        expected = conc * sg.voxel_volume_ml
    else:
        # counts per mL are smooth after the blur: linear interpolation onto the SPECT grid
        expected = activity_bq.with_array(conc, Kind.ACTIVITY_CONCENTRATION).resample_to(
            sg.with_array(sg.array, Kind.ACTIVITY_CONCENTRATION), "linear").array * sg.voxel_volume_ml
    counts = rng.poisson(np.maximum(expected, 0.0)).astype(np.float32)
    counts = _img.blur(counts, _img.SPECT_POSTFILTER_FWHM_MM, camera.voxel_mm)
    np.maximum(counts, 0.0, out=counts)
    return sg.with_array((counts / st).astype(np.float32), Kind.ACTIVITY)


# ----------------------------------------------------------------------------- public
def simulate_spect(activity_bq: Grid, density_g_cm3: Grid, camera: SPECTCamera, *,
                   duration_s: float | None = None, total_counts: float | None = None,
                   rng: np.random.Generator, axial_range_mm: tuple[float, float] | None = None) -> Grid:
    """A reconstructed 177Lu SPECT image of ``activity_bq``.

    Args:
        activity_bq: activity, Bq per voxel, at the acquisition mid-time, on the CT grid.
        density_g_cm3: mass density on the same grid (attenuation map:
            ``mu = rho * MU_RHO_WATER_208KEV_CM2_G``).
        camera: the settings.
        duration_s: acquisition duration, s (counts from the sensitivity), or
        total_counts: expected detected counts over all views (the paper: 3e6 to 2e7); for
            the blur model the expected counts of the image.
        rng: source of the Poisson noise (the same seed gives the same image).
        axial_range_mm: (low, high) z range, mm, of the CT's physical coordinates covered by
            the SPECT field (e.g. a 39 cm clinical field); default the CT's axial extent.

    Returns:
        Activity, Bq per voxel, on the SPECT grid (``voxel_mm`` isotropic, ``matrix x matrix``,
        centred on the CT): :attr:`Kind.ACTIVITY`.

    Raises:
        InputError: wrong kinds or geometry, negative activity, neither or both of
            ``duration_s`` / ``total_counts``, a bad axial range.
        OptionalDependencyError: ``model="camera"`` without PyTomography.
    """
    _check_inputs(activity_bq, density_g_cm3, duration_s, total_counts)
    if camera.model == "blur":
        return _simulate_blur(activity_bq, camera, duration_s, total_counts, rng, axial_range_mm)
    proj, sg, mu = acquire_projections(activity_bq, density_g_cm3, camera, duration_s=duration_s,
                                       total_counts=total_counts, rng=rng, axial_range_mm=axial_range_mm)
    return reconstruct_osem(proj, mu, sg, camera)


__all__ = ["SPECTCamera", "Projections", "simulate_spect", "spect_to_ct_grid", "spect_grid_for",
           "acquire_projections", "reconstruct_osem", "COLLIMATORS_MM", "MU_RHO_WATER_208KEV_CM2_G"]
