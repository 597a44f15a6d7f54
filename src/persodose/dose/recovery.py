"""Organ-level partial-volume correction with volume-dependent recovery coefficients.

The classical comparator of a resolution-compensating network: a recovery coefficient (RC)
is the ratio of the activity a SPECT image shows in a true volume of interest to the true
activity there. It is calibrated on hot spheres in a warm water cylinder imaged through the
same camera model (:func:`persodose.phantoms.spect_camera.simulate_spect`), fitted as a function
of the sphere volume, and an organ's mean (activity, dose rate or dose) is divided by
``RC(V_organ)``, as OpenDose3D's recovery-coefficient correction and clinical 177Lu practice do
(e.g. Tran-Gia & Lassmann, J Nucl Med 2018;59:616-624, RCs of spheres against volume;
MIRD Pamphlet 26, Ljungberg et al., J Nucl Med 2016, section on partial-volume correction).
RCs depend on the shape, the target-to-background ratio and the reconstruction (the limits the
DblurDoseNet paper points out, Discussion): this is a mean-value correction, not a voxel one.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from persodose.errors import InputError
from persodose.grid import Grid, Kind

#: Floor of the recovery coefficient used for corrections (a very small VOI would otherwise
#: be multiplied without bound by noise).
RC_FLOOR = 0.05


def rc_model(volume_ml, a: float, b_ml: float, c: float):
    """Sigmoid recovery curve ``RC(V) = a / (1 + (b / V)^c)``.

    ``a`` is the large-volume asymptote, ``b_ml`` the volume at which ``RC = a/2``, ``c`` the
    steepness: the three-parameter sigmoid in volume commonly fitted to sphere RCs of 177Lu
    SPECT (e.g. Tran-Gia & Lassmann, J Nucl Med 2018).
    """
    v = np.asarray(volume_ml, dtype=float)
    return a / (1.0 + (b_ml / np.maximum(v, 1e-12)) ** c)


@dataclass(frozen=True)
class RecoveryCurve:
    """Fitted recovery curve and the calibration it came from.

    Attributes:
        a: large-volume asymptote (no unit).
        b_ml: half-recovery volume, mL.
        c: steepness (no unit).
        volumes_ml: calibration sphere volumes, mL.
        rc_measured: measured RCs of those spheres.
        settings: provenance (camera settings, counts, seed, sphere-to-background ratio).
    """

    a: float
    b_ml: float
    c: float
    volumes_ml: tuple[float, ...] = ()
    rc_measured: tuple[float, ...] = ()
    settings: dict = field(default_factory=dict)

    def __call__(self, volume_ml):
        """RC at ``volume_ml`` (scalar or array), floored at :data:`RC_FLOOR`."""
        return np.maximum(rc_model(volume_ml, self.a, self.b_ml, self.c), RC_FLOOR)

    @classmethod
    def fit(cls, volumes_ml, rc, settings: dict | None = None) -> "RecoveryCurve":
        """Least-squares fit of :func:`rc_model` to measured RCs (``scipy.optimize.curve_fit``)."""
        from scipy.optimize import curve_fit

        v = np.asarray(volumes_ml, float)
        r = np.asarray(rc, float)
        if v.size < 3 or v.size != r.size or np.any(v <= 0) or not np.all(np.isfinite(r)):
            raise InputError("a recovery curve needs at least 3 positive volumes with finite RCs")
        p0 = (max(float(r.max()), 0.5), float(np.median(v)), 1.0)
        p, _ = curve_fit(rc_model, v, r, p0=p0, bounds=([0.05, 1e-3, 0.1], [2.0, 1e5, 5.0]), maxfev=20000)
        return cls(float(p[0]), float(p[1]), float(p[2]), tuple(float(x) for x in v),
                   tuple(float(x) for x in r), dict(settings or {}))

    def to_json(self, path) -> Path:
        """Write the curve as JSON (atomically)."""
        from persodose.outputs import atomic_file

        path = Path(path)
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=2, default=str), encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, path) -> "RecoveryCurve":
        """Read a curve written by :meth:`to_json`."""
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(float(d["a"]), float(d["b_ml"]), float(d["c"]), tuple(d.get("volumes_ml", ())),
                       tuple(d.get("rc_measured", ())), dict(d.get("settings", {})))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"cannot read a recovery curve from {path}: {exc}") from exc


def _sphere_phantom(volume_ml: float, voxel_mm: float, cyl_radius_mm: float, cyl_length_mm: float,
                    sphere_bq_per_ml: float, sphere_to_background: float):
    """Water cylinder (axis z) with a centred hot sphere: activity, density and sphere mask."""
    from persodose.grid import make_grid

    r_s = (3.0 * volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)  # mm
    n = int(math.ceil(2.0 * cyl_radius_mm / voxel_mm)) + 4
    nz = int(math.ceil(max(cyl_length_mm, 2.0 * r_s + 60.0) / voxel_mm))
    g = make_grid((nz, n, n), (voxel_mm,) * 3, kind=Kind.ACTIVITY)
    zz, yy, xx = np.indices(g.shape, dtype=float)
    cz, cy, cx = ((np.asarray(g.shape, float) - 1.0) / 2.0)
    rho2 = ((yy - cy) ** 2 + (xx - cx) ** 2) * voxel_mm ** 2
    cyl = (rho2 <= cyl_radius_mm ** 2) & (np.abs(zz - cz) * voxel_mm <= cyl_length_mm / 2.0)
    sph = (rho2 + ((zz - cz) * voxel_mm) ** 2) <= r_s ** 2
    v_ml = g.voxel_volume_ml
    conc = np.where(cyl, sphere_bq_per_ml / sphere_to_background, 0.0)
    conc[sph] = sphere_bq_per_ml
    return g.with_array(conc * v_ml), g.with_array(np.where(cyl | sph, 1.0, 0.0), Kind.DENSITY), sph


def measure_sphere_rc(camera, volume_ml: float, *, counts: float, rng: np.random.Generator,
                      sphere_to_background: float = 8.0, voxel_mm: float = 2.4,
                      cyl_radius_mm: float = 100.0, cyl_length_mm: float = 120.0) -> float:
    """RC of one hot sphere in a warm water cylinder through ``camera``.

    The phantom is built on a ``voxel_mm`` grid (finer than the SPECT voxels so that small
    spheres are round), imaged with :func:`simulate_spect` (``counts`` expected counts), the
    image is put back on the phantom grid (sum-preserving) and ``RC = activity in the true
    sphere / true sphere activity``.
    """
    from persodose.phantoms.spect_camera import simulate_spect, spect_to_ct_grid

    if not (volume_ml > 0 and sphere_to_background >= 1):
        raise InputError("sphere volume must be positive and sphere-to-background >= 1")
    act, dens, sph = _sphere_phantom(volume_ml, voxel_mm, cyl_radius_mm, cyl_length_mm, 1e5, sphere_to_background)
    img = simulate_spect(act, dens, camera, total_counts=counts, rng=rng)
    back = spect_to_ct_grid(img, act)
    return float(back.array[sph].sum(dtype=np.float64) / act.array[sph].sum(dtype=np.float64))


def calibrate_recovery(camera, volumes_ml=(0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256), counts: float = 5e6,
                       seed: int = 0, sphere_to_background: float = 8.0, voxel_mm: float = 2.4,
                       cyl_radius_mm: float = 100.0, cyl_length_mm: float = 120.0) -> RecoveryCurve:
    """Recovery curve of ``camera`` from hot spheres in a warm water cylinder.

    One acquisition per sphere (centred in a water cylinder, 20 cm diameter by default, background
    concentration 1/``sphere_to_background`` of the sphere's), ``counts`` expected counts each,
    noise from ``numpy.random.default_rng(seed)`` drawn in volume order.

    Args:
        camera: :class:`persodose.phantoms.spect_camera.SPECTCamera` (either model).
        volumes_ml: sphere volumes, mL (at least 3; spheres up to 256 mL fit the cylinder).
        counts: expected detected counts of each acquisition.
        seed: seed of the Poisson noise (recorded in the curve's settings).
        sphere_to_background: activity concentration ratio sphere : cylinder.
        voxel_mm: voxel of the phantom grid, mm.
        cyl_radius_mm: radius of the water cylinder, mm.
        cyl_length_mm: its length, mm (the phantom grid is at least 60 mm longer than the
            largest sphere's diameter).

    Returns:
        The fitted :class:`RecoveryCurve` (measured RCs kept).
    """
    rng = np.random.default_rng(seed)
    vols = [float(v) for v in volumes_ml]
    rcs = [measure_sphere_rc(camera, v, counts=counts, rng=rng, sphere_to_background=sphere_to_background,
                             voxel_mm=voxel_mm, cyl_radius_mm=cyl_radius_mm, cyl_length_mm=cyl_length_mm)
           for v in vols]
    settings = {"camera": camera.to_dict(), "counts": counts, "seed": seed,
                "sphere_to_background": sphere_to_background, "phantom_voxel_mm": voxel_mm,
                "phantom": (f"hot sphere centred in a {2 * cyl_radius_mm:g} mm diameter, {cyl_length_mm:g} mm "
                            "long water cylinder")}
    return RecoveryCurve.fit(vols, rcs, settings)


def recovery_corrected(values: dict[str, float], volumes_ml: dict[str, float], curve: RecoveryCurve) -> dict[str, float]:
    """Divide each organ's value (mean concentration, activity, dose rate, dose) by ``RC(V)``.

    Args:
        values: organ name -> value measured in the image (any unit; kept).
        volumes_ml: organ name -> VOI volume, mL.
        curve: the recovery curve of the camera that made the image.

    Raises:
        InputError: an organ without a positive volume.
    """
    out = {}
    for name, val in values.items():
        v = volumes_ml.get(name)
        if v is None or not (float(v) > 0):
            raise InputError(f"no positive volume for {name!r}")
        out[name] = float(val) / float(curve(float(v)))
    return out


def corrected_organ_means(image: Grid, labels: Grid, names: dict[int, str], curve: RecoveryCurve) -> dict[str, float]:
    """Organ means of ``image`` (e.g. a dose-rate map, Gy/s) corrected by ``RC(V_organ)``.

    ``labels`` must share ``image``'s geometry; organ volumes come from the label voxels.
    Organs with no voxel are left out.
    """
    image.require_same_geometry(labels, "image and labels")
    lab = np.asarray(labels.array).astype(np.int64).ravel()
    vals = np.asarray(image.array, dtype=np.float64).ravel()
    m = max(int(lab.max(initial=0)), max(names, default=0)) + 1
    sums = np.bincount(lab, weights=vals, minlength=m)
    n = np.bincount(lab, minlength=m)
    means = {names[k]: sums[k] / n[k] for k in names if n[k] > 0}
    vols = {names[k]: n[k] * labels.voxel_volume_ml for k in names if n[k] > 0}
    return recovery_corrected(means, vols, curve)


__all__ = ["RecoveryCurve", "rc_model", "calibrate_recovery", "measure_sphere_rc", "recovery_corrected",
           "corrected_organ_means", "RC_FLOOR"]
