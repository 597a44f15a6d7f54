"""Voxel-wise agreement metrics between a reference and a test image.

Every function takes ``(reference, test, mask=None)`` where each argument is a numpy array
or a :class:`~persodose.grid.Grid` (arrays in (z, y, x) order; any shape works for the pure
statistics, SSIM needs at least 2-D). Grids must share their geometry, arrays their shape,
otherwise :class:`~persodose.errors.GeometryError`; NaN or infinite values raise
:class:`~persodose.errors.InputError`. ``mask`` (boolean, same shape) restricts the voxels;
``None`` means all voxels. Errors are signed as *test minus reference*: a positive error is an
overestimate. Units: absolute errors are in the unit of the images (Gy, Gy/s, mGy ...),
relative ones in percent where the name ends in ``_percent``.

Sources of the definitions
--------------------------
* **DblurDoseNet**: Li Z, Fessler JA, Mikell JK, Wilderman SJ, Dewaraja YK. "DblurDoseNet: a
  deep residual learning network for voxel radionuclide dosimetry compensating for SPECT
  imaging resolution." Med Phys 49(2):1216-1230 (2022), doi:10.1002/mp.15397; section
  "Evaluation in Test Phantoms": NRMSE normalised by the root mean square of the true image
  within the VOI, the DRVH statistics DR10/30/70/90 and the ensemble noise.
* **SINFONIA D2.2**: Salimi Y, Akhavanallaf A, Mansouri Z, Zaidi H. "Software tool on
  personalised dosimetry in PET-CT and deep learning-guided algorithms for automated
  construction of computational models", SINFONIA (Euratom grant 945196) deliverable D2.2
  (2023), sections "Evaluation metrics" (voxel-wise SSIM, PSNR, ME, MAE, RE %, RAE %, gamma
  pass rate; organ-wise ME, MAE, RE %, RAE %), and the internal-dosimetry evaluation (voxel-wise
  MAE, MRAE %, RMSE) and the voxel joint histogram with its R^2.

The deliverable names these metrics without writing their formulas; the formulas used here
are the standard ones and are written out in each docstring. Where a relative error needs a
division by the reference, only voxels whose reference value exceeds a threshold are used;
neither source states that threshold, so the default is 1 % of the reference maximum inside
the mask (``threshold_fraction=0.01``) and it is configurable.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from persodose.errors import GeometryError, InputError, require_finite
from persodose.grid import Grid

#: Default relative-error threshold, fraction of the reference maximum in the mask (see module doc).
DEFAULT_THRESHOLD_FRACTION = 0.01

ArrayOrGrid = Any  # np.ndarray | Grid


# --------------------------------------------------------------------------- input handling
def as_array(image: ArrayOrGrid, what: str) -> np.ndarray:
    """The float64 values of an array or grid, checked to be finite."""
    arr = image.array if isinstance(image, Grid) else np.asarray(image)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{what} must be numeric, got dtype {arr.dtype}")
    arr = np.asarray(arr, dtype=np.float64)
    require_finite(arr, what)
    return arr


def prepare(reference: ArrayOrGrid, test: ArrayOrGrid, mask: ArrayOrGrid | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check and align the inputs of a voxel metric.

    Returns:
        ``(reference, test, mask)``: two float64 arrays and a boolean array of one shape.

    Raises:
        GeometryError: different shapes, or grids (or a mask grid) on different geometries.
        InputError: NaN or infinite values, an empty mask, non-numeric data.
    """
    if isinstance(reference, Grid) and isinstance(test, Grid):
        reference.require_same_geometry(test, "reference and test images")
    ref = as_array(reference, "reference image")
    tst = as_array(test, "test image")
    if ref.shape != tst.shape:
        raise GeometryError(f"reference shape {ref.shape} differs from test shape {tst.shape}")
    if mask is None:
        m = np.ones(ref.shape, dtype=bool)
    else:
        if isinstance(mask, Grid) and isinstance(reference, Grid):
            reference.require_same_geometry(mask, "reference image and mask")
        m = np.asarray(mask.array if isinstance(mask, Grid) else mask)
        if m.shape != ref.shape:
            raise GeometryError(f"mask shape {m.shape} differs from image shape {ref.shape}")
        m = m.astype(bool)
    if not m.any():
        raise InputError("the mask selects no voxel")
    return ref, tst, m


def relative_threshold(reference: np.ndarray, mask: np.ndarray,
                       threshold_fraction: float | None, threshold: float | None) -> float:
    """Reference value above which relative errors are computed (absolute value wins)."""
    if threshold is not None:
        return float(threshold)
    frac = DEFAULT_THRESHOLD_FRACTION if threshold_fraction is None else float(threshold_fraction)
    if not 0.0 <= frac < 1.0:
        raise InputError(f"threshold_fraction must be in [0, 1), got {frac}")
    return frac * float(np.max(reference[mask]))


def _relative_errors(reference, test, mask, threshold_fraction, threshold) -> np.ndarray:
    ref, tst, m = prepare(reference, test, mask)
    thr = relative_threshold(ref, m, threshold_fraction, threshold)
    sel = m & (ref > thr) & (ref > 0)
    if not sel.any():
        raise InputError(f"no voxel of the reference exceeds the relative-error threshold {thr:g}")
    return (tst[sel] - ref[sel]) / ref[sel]


# --------------------------------------------------------------------------- absolute errors
def me(reference: ArrayOrGrid, test: ArrayOrGrid, mask: ArrayOrGrid | None = None) -> float:
    """Mean error ``ME = (1/N) sum_j (t_j - r_j)`` over the N mask voxels (image unit).

    SINFONIA D2.2, "Evaluation metrics" (ME).
    """
    ref, tst, m = prepare(reference, test, mask)
    return float(np.mean(tst[m] - ref[m]))


def mae(reference: ArrayOrGrid, test: ArrayOrGrid, mask: ArrayOrGrid | None = None) -> float:
    """Mean absolute error ``MAE = (1/N) sum_j |t_j - r_j|`` (image unit). SINFONIA D2.2."""
    ref, tst, m = prepare(reference, test, mask)
    return float(np.mean(np.abs(tst[m] - ref[m])))


def rmse(reference: ArrayOrGrid, test: ArrayOrGrid, mask: ArrayOrGrid | None = None) -> float:
    """Root mean square error ``sqrt((1/N) sum_j (t_j - r_j)^2)`` (image unit). SINFONIA D2.2."""
    ref, tst, m = prepare(reference, test, mask)
    return float(np.sqrt(np.mean((tst[m] - ref[m]) ** 2)))


def nrmse(reference: ArrayOrGrid, test: ArrayOrGrid, mask: ArrayOrGrid | None = None,
          norm: str = "rms") -> float:
    """Normalised root mean square error (dimensionless fraction, not percent).

    ``NRMSE = RMSE / s`` with ``s`` chosen by ``norm``:

    * ``"rms"`` (default): ``s = sqrt((1/N) sum_j r_j^2)``, the root mean square of the
      reference in the mask. This is the definition of DblurDoseNet (Li et al. 2022,
      "Evaluation in Test Phantoms", NRMSE equation), computed there per VOI.
    * ``"range"``: ``s = max(r) - min(r)`` in the mask (scikit-image's ``"min-max"``).
    * ``"max"``: ``s = max(r)`` in the mask.
    * ``"mean"``: ``s = mean(r)`` in the mask.
    """
    ref, tst, m = prepare(reference, test, mask)
    r = ref[m]
    if norm == "rms":
        s = float(np.sqrt(np.mean(r ** 2)))
    elif norm == "range":
        s = float(np.max(r) - np.min(r))
    elif norm == "max":
        s = float(np.max(r))
    elif norm == "mean":
        s = float(np.mean(r))
    else:
        raise InputError(f"unknown NRMSE normalisation {norm!r}; use rms, range, max or mean")
    if s == 0.0:
        raise InputError(f"cannot normalise the RMSE: the reference {norm} in the mask is 0")
    return float(np.sqrt(np.mean((tst[m] - r) ** 2))) / s


# --------------------------------------------------------------------------- relative errors
def relative_error(reference: ArrayOrGrid, test: ArrayOrGrid, mask: ArrayOrGrid | None = None,
                   threshold_fraction: float | None = None, threshold: float | None = None) -> float:
    """Voxel-wise mean relative error, percent (signed).

    ``RE = 100/N' sum_j (t_j - r_j) / r_j`` over the N' mask voxels with
    ``r_j > threshold`` (absolute, image unit) or, when ``threshold`` is None,
    ``r_j > threshold_fraction * max(r)`` (default 1 % of the maximum, see module doc).
    SINFONIA D2.2, "Voxel-wise quantitative dose evaluation" (RE %).
    """
    return 100.0 * float(np.mean(_relative_errors(reference, test, mask, threshold_fraction, threshold)))


def mrae(reference: ArrayOrGrid, test: ArrayOrGrid, mask: ArrayOrGrid | None = None,
         threshold_fraction: float | None = None, threshold: float | None = None) -> float:
    """Mean relative absolute error, percent.

    ``MRAE = 100/N' sum_j |t_j - r_j| / r_j`` over the same thresholded voxels as
    :func:`relative_error`. SINFONIA D2.2 internal-dosimetry evaluation (MRAE %); the CT
    section of the same deliverable calls the voxel-wise quantity RAE %, computed here by
    :func:`relative_absolute_error` with the identical formula.
    """
    return 100.0 * float(np.mean(np.abs(_relative_errors(reference, test, mask, threshold_fraction,
                                                         threshold))))


def relative_absolute_error(reference: ArrayOrGrid, test: ArrayOrGrid, mask: ArrayOrGrid | None = None,
                            threshold_fraction: float | None = None,
                            threshold: float | None = None) -> float:
    """Voxel-wise relative absolute error (RAE %), the same formula as :func:`mrae`."""
    return mrae(reference, test, mask, threshold_fraction, threshold)


# --------------------------------------------------------------------------- image quality
def data_range_of(reference: np.ndarray) -> float:
    """``max - min`` of the reference; falls back to ``max |r|`` for a constant image."""
    rng = float(np.max(reference) - np.min(reference))
    if rng == 0.0:
        rng = float(np.max(np.abs(reference)))
    if rng == 0.0:
        raise InputError("the reference image is identically zero: no data range for SSIM/PSNR")
    return rng


def psnr(reference: ArrayOrGrid, test: ArrayOrGrid, mask: ArrayOrGrid | None = None) -> float:
    """Peak signal-to-noise ratio, dB, with ``skimage.metrics.peak_signal_noise_ratio``.

    ``PSNR = 10 log10(R^2 / MSE)`` on the mask voxels, ``R`` = reference ``max - min`` in the
    mask (``data_range`` taken from the reference, as SINFONIA D2.2 reports PSNR of dose
    maps). Identical images give ``math.inf`` (not capped).
    """
    from skimage.metrics import peak_signal_noise_ratio

    ref, tst, m = prepare(reference, test, mask)
    r, t = ref[m], tst[m]
    if np.array_equal(r, t):
        return math.inf
    return float(peak_signal_noise_ratio(r, t, data_range=data_range_of(r)))


def ssim(reference: ArrayOrGrid, test: ArrayOrGrid, mask: ArrayOrGrid | None = None,
         win_size: int | None = None) -> float:
    """Structural similarity index (Wang et al. 2004) with ``skimage.metrics.structural_similarity``.

    Computed on the whole array (SSIM needs neighbourhoods) with ``data_range`` = reference
    ``max - min`` and the scikit-image default uniform 7-voxel window (shrunk to the largest
    odd size <= the smallest array dimension when the array is smaller); with a mask, the
    local SSIM map is averaged over the mask voxels. Dimensionless, 1 for identical images.
    """
    from skimage.metrics import structural_similarity

    ref, tst, m = prepare(reference, test, mask)
    if ref.ndim < 2:
        raise GeometryError(f"SSIM needs an image of at least 2 dimensions, got shape {ref.shape}")
    smallest = min(ref.shape)
    ws = 7 if win_size is None else int(win_size)
    ws = min(ws, smallest if smallest % 2 == 1 else smallest - 1)
    if ws < 3:
        raise GeometryError(f"image of shape {ref.shape} too small for SSIM (needs >= 3 voxels per axis)")
    _, smap = structural_similarity(ref, tst, data_range=data_range_of(ref), win_size=ws, full=True)
    return float(np.mean(smap[m]))


# --------------------------------------------------------------------------- correlation
def regression(reference: ArrayOrGrid, test: ArrayOrGrid, mask: ArrayOrGrid | None = None) -> dict:
    """Least-squares line ``t = slope * r + intercept`` over the mask voxels.

    Returns:
        ``{"slope", "intercept" (image unit), "r2", "pearson_r", "n_voxels"}``; ``r2`` is the
        coefficient of determination of the fit (= Pearson r squared), the R^2 reported with
        the joint histogram in SINFONIA D2.2 (Figure 9).
    """
    from scipy import stats

    ref, tst, m = prepare(reference, test, mask)
    r, t = ref[m], tst[m]
    if r.size < 2 or np.ptp(r) == 0.0:
        raise InputError("regression needs at least two distinct reference values in the mask")
    res = stats.linregress(r, t)
    rv = float(res.rvalue) if np.isfinite(res.rvalue) else 1.0
    return {"slope": float(res.slope), "intercept": float(res.intercept), "r2": rv ** 2,
            "pearson_r": rv, "n_voxels": int(r.size)}


def joint_histogram(reference: ArrayOrGrid, test: ArrayOrGrid, mask: ArrayOrGrid | None = None,
                    bins: int = 100, value_range: tuple[float, float] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2-D histogram of (reference, test) voxel pairs in the mask.

    Args:
        bins: number of bins along each axis.
        value_range: ``(low, high)`` shared by both axes, image unit; default from the
            minimum and maximum of both images in the mask.

    Returns:
        ``(counts, reference_edges, test_edges)``; ``counts[i, j]`` is the number of voxels
        with reference in bin ``i`` and test in bin ``j``.
    """
    ref, tst, m = prepare(reference, test, mask)
    r, t = ref[m], tst[m]
    if value_range is None:
        lo = float(min(r.min(), t.min()))
        hi = float(max(r.max(), t.max()))
        if hi <= lo:
            hi = lo + 1.0
        value_range = (lo, hi)
    counts, xe, ye = np.histogram2d(r, t, bins=int(bins), range=[value_range, value_range])
    return counts, xe, ye


def joint_histogram_figure(reference: ArrayOrGrid, test: ArrayOrGrid, mask: ArrayOrGrid | None = None,
                           bins: int = 100, unit: str = "Gy", reference_name: str = "reference",
                           test_name: str = "test"):
    """A matplotlib ``Figure``: log-scaled joint histogram, identity line and regression line.

    The caller saves or closes it (``fig.savefig(path)``); no pyplot state is touched.
    """
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    counts, xe, ye = joint_histogram(reference, test, mask, bins=bins)
    fit = regression(reference, test, mask)
    fig = Figure(figsize=(5.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    shown = np.ma.masked_equal(counts.T, 0)
    mesh = ax.pcolormesh(xe, ye, shown, norm=LogNorm(vmin=1, vmax=max(1.0, counts.max())), cmap="viridis")
    fig.colorbar(mesh, ax=ax, label="voxels")
    lo, hi = xe[0], xe[-1]
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="identity")
    ax.plot([lo, hi], [fit["slope"] * lo + fit["intercept"], fit["slope"] * hi + fit["intercept"]],
            "r-", lw=1.0, label=f"fit: slope {fit['slope']:.3f}, R$^2$ {fit['r2']:.4f}")
    ax.set_xlim(lo, hi)
    ax.set_ylim(ye[0], ye[-1])
    ax.set_xlabel(f"{reference_name} ({unit})")
    ax.set_ylabel(f"{test_name} ({unit})")
    ax.legend(loc="upper left", fontsize="small")
    return fig


# --------------------------------------------------------------------------- all at once
def voxel_metrics(reference: ArrayOrGrid, test: ArrayOrGrid, mask: ArrayOrGrid | None = None,
                  threshold_fraction: float | None = None, nrmse_norm: str = "rms") -> dict:
    """Every voxel metric of this module in one dict (keys are the function names).

    ``ssim`` is omitted (``None``) for arrays with fewer than 3 voxels along an axis.
    """
    out = {
        "n_voxels": int(prepare(reference, test, mask)[2].sum()),
        "me": me(reference, test, mask),
        "mae": mae(reference, test, mask),
        "rmse": rmse(reference, test, mask),
        "nrmse": nrmse(reference, test, mask, norm=nrmse_norm),
        "nrmse_norm": nrmse_norm,
        "re_percent": relative_error(reference, test, mask, threshold_fraction),
        "rae_percent": relative_absolute_error(reference, test, mask, threshold_fraction),
        "mrae_percent": mrae(reference, test, mask, threshold_fraction),
        "relative_threshold_fraction": (DEFAULT_THRESHOLD_FRACTION if threshold_fraction is None
                                        else float(threshold_fraction)),
        "psnr_db": psnr(reference, test, mask),
    }
    try:
        out["ssim"] = ssim(reference, test, mask)
    except GeometryError:
        out["ssim"] = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            out.update({f"regression_{k}": v for k, v in regression(reference, test, mask).items()
                        if k != "n_voxels"})
        except InputError:
            pass
    return out
