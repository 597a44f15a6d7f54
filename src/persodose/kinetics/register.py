"""Co-registration of the CTs of several time points (SimpleITK) and resampling through it.

:func:`register_ct` finds the transform that maps points of the ``fixed`` CT into the
``moving`` CT (the ITK convention: ``fixed(x) ~ moving(T(x))``), with Mattes mutual
information (Mattes et al., IEEE Trans Med Imaging 22 (2003) 120), a three-level
multi-resolution pyramid and regular-step gradient descent. It is deterministic: the metric
samples a fixed percentage of voxels drawn with a fixed seed (ITK seed ``seed + 1``), and
the registration runs on one thread (so that sums are always accumulated in the same
order): two calls give bit-identical transforms.

:func:`apply_transform` brings any grid of the moving time point onto the fixed reference:

* extensive kinds (``ACTIVITY``, ``TIA``, ``COUNTS``): for a rigid transform the moving grid
  is re-expressed in the fixed frame (its origin and direction cosines are mapped by the
  inverse transform, which is exact for a rotation and translation) and then resampled with
  the package's sum-preserving scheme (:func:`persodose.grid.resample_sum`), so that the total
  inside the reference field of view is kept exactly; for a non-rigid affine transform the
  concentration (value / voxel volume) is resampled linearly and the result is rescaled so
  that its total equals the total of the source voxels whose centres map inside the
  reference field of view;
* label maps and material indices: nearest neighbour; CT: linear, -1000 HU outside;
  everything else: linear with the kind's outside value.
"""

from __future__ import annotations

import math

import numpy as np

from persodose.errors import InputError
from persodose.grid import Grid, Kind


def _check_ct(grid: Grid, what: str) -> None:
    if not isinstance(grid, Grid):
        raise InputError(f"{what} CT must be a Grid")
    if grid.kind not in (Kind.CT, Kind.DENSITY, Kind.SCALAR):
        raise InputError(f"{what} image is {grid.kind.value}: registration expects a CT")
    if min(grid.shape) < 4:
        raise InputError(f"{what} CT is too small to register: shape {grid.shape}")
    if not np.all(np.isfinite(grid.array)):
        raise InputError(f"{what} CT contains NaN or infinite values")


def register_ct(fixed: Grid, moving: Grid, kind: str = "rigid", seed: int = 0, *,
                sampling_percentage: float = 0.25, shrink_factors=(4, 2, 1), smoothing_mm=(8.0, 4.0, 0.0),
                iterations: int = 200):
    """Rigid or affine registration of two CTs.

    Args:
        fixed: reference CT (its space is where everything will be resampled).
        moving: CT of another time point.
        kind: ``"rigid"`` (``sitk.Euler3DTransform``: 3 rotations + 3 translations) or
            ``"affine"`` (``sitk.AffineTransform``, 12 parameters, started from the rigid result).
        seed: seed (>= 0) of the metric's random sampling (passed to ITK as ``seed + 1``,
            since ITK takes 0 to mean "seed from the clock").
        sampling_percentage: fraction of the fixed voxels sampled by the metric.
        shrink_factors, smoothing_mm: multi-resolution schedule (smoothing sigmas in mm).
        iterations: maximum optimiser iterations per level.

    Returns:
        a ``SimpleITK.Transform`` mapping fixed (LPS mm) points to moving points.
    """
    import SimpleITK as sitk

    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise InputError(f"registration seed must be a non-negative integer, got {seed!r}")
    if kind not in ("rigid", "affine"):
        raise InputError(f"registration kind must be 'rigid' or 'affine', got {kind!r}")
    _check_ct(fixed, "fixed")
    _check_ct(moving, "moving")
    f = sitk.Cast(fixed.to_sitk(), sitk.sitkFloat32)
    m = sitk.Cast(moving.to_sitk(), sitk.sitkFloat32)
    init = sitk.CenteredTransformInitializer(f, m, sitk.Euler3DTransform(),
                                             sitk.CenteredTransformInitializerFilter.GEOMETRY)

    def run(initial):
        reg = sitk.ImageRegistrationMethod()
        reg.SetNumberOfThreads(1)
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        # ITK reads a seed of 0 as "seed from the wall clock": shift user seeds by one.
        reg.SetMetricSamplingPercentage(float(sampling_percentage), int(seed) + 1)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-4,
                                                     numberOfIterations=int(iterations),
                                                     relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel(list(shrink_factors))
        reg.SetSmoothingSigmasPerLevel(list(smoothing_mm))
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        reg.SetInitialTransform(initial, inPlace=False)
        try:
            return reg.Execute(f, m)
        except RuntimeError as exc:  # e.g. no overlap between the images
            raise InputError(f"CT registration failed: {str(exc).strip().splitlines()[-1]}") from None

    # Bit-for-bit reproducibility needs every ITK filter of the pipeline (pyramid smoothing,
    # metric) on one thread: the global default is set to 1 for the duration of the call and
    # restored afterwards (not safe against SimpleITK calls from other Python threads).
    old_threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        rigid = _unwrap(run(init))
        if kind == "rigid":
            return rigid
        aff = sitk.AffineTransform(3)
        aff.SetCenter(rigid.GetCenter())
        aff.SetMatrix(rigid.GetMatrix())
        aff.SetTranslation(rigid.GetTranslation())
        return _unwrap(run(aff))
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(old_threads)


def _unwrap(tx):
    """The single transform inside a composite returned by ``Execute`` (its concrete type)."""
    import SimpleITK as sitk

    if isinstance(tx, sitk.CompositeTransform) and tx.GetNumberOfTransforms() == 1:
        tx = tx.GetNthTransform(0)
    return tx.Downcast() if hasattr(tx, "Downcast") else tx


def affine_of(transform, check_points_xyz_mm=None) -> tuple[np.ndarray, np.ndarray]:
    """``(M, b)`` with ``T(x) = M x + b`` (LPS mm) for an affine SimpleITK transform.

    The matrix is read from the images of the origin and of three axis points; linearity is
    then checked at ``check_points_xyz_mm`` (``(n, 3)``, e.g. voxel centres of the grids
    involved) and at a few fixed points.

    Raises:
        InputError: the transform is not affine.
    """
    p0 = np.asarray(transform.TransformPoint((0.0, 0.0, 0.0)))
    cols = [np.asarray(transform.TransformPoint(tuple(float(v) for v in e))) - p0
            for e in np.eye(3) * 100.0]
    mat = np.stack(cols, axis=1) / 100.0
    checks = [(37.0, -81.0, 113.0), (-250.0, 190.0, -330.0)]
    if check_points_xyz_mm is not None:
        checks += [tuple(float(v) for v in q) for q in np.asarray(check_points_xyz_mm, dtype=float).reshape(-1, 3)]
    for q in checks:
        if not np.allclose(np.asarray(transform.TransformPoint(q)), mat @ np.asarray(q) + p0, atol=1e-4):
            raise InputError("apply_transform supports affine (rigid or linear) transforms only")
    return mat, p0


def _probe_points(grid: Grid, n: int = 5) -> np.ndarray:
    """An ``n^3`` lattice of points spanning ``grid``'s field of view, LPS mm."""
    axes = [np.linspace(0.0, s - 1.0, n) for s in grid.shape]
    idx = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return grid.index_to_physical(idx)


def rotation_angle_deg(matrix: np.ndarray) -> float:
    """Angle of the rotation closest to ``matrix`` (its orthogonal polar factor), degrees."""
    u, _, vt = np.linalg.svd(np.asarray(matrix, dtype=float))
    r = u @ vt
    return math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(r) - 1.0) / 2.0))))


def apply_transform(grid: Grid, transform, reference: Grid) -> Grid:
    """Resample ``grid`` (in the moving space) onto ``reference`` through ``transform``.

    ``transform`` maps reference points to ``grid`` points (as returned by
    :func:`register_ct` with ``fixed = reference``). See the module docstring for the
    interpolation of each kind.

    Returns:
        a grid of ``grid``'s kind and unit on the reference geometry.
    """
    import SimpleITK as sitk

    if not isinstance(grid, Grid) or not isinstance(reference, Grid):
        raise InputError("apply_transform needs Grid inputs")
    mat, b = affine_of(transform, _probe_points(reference))
    rigid = np.allclose(mat.T @ mat, np.eye(3), atol=1e-6) and np.linalg.det(mat) > 0
    if rigid:
        # The moving grid's voxel (index i) sits at fixed-space point T^-1(p(i)); for a rigid T
        # that is again a grid with the same spacing, a moved origin and rotated directions.
        inv = mat.T
        origin = inv @ (np.asarray(grid.origin_xyz_mm) - b)
        direction = inv @ grid.direction_xyz
        moved = Grid(grid.array, grid.spacing_zyx_mm, tuple(origin), direction, grid.kind, grid.unit)
        return moved.resample_to(reference)
    method = grid.kind.interpolation
    ref_img = sitk.Image(reference.shape[2], reference.shape[1], reference.shape[0], sitk.sitkFloat64)
    ref_img.SetSpacing(reference.spacing_xyz_mm)
    ref_img.SetOrigin(reference.origin_xyz_mm)
    ref_img.SetDirection(tuple(float(v) for v in reference.direction_xyz.reshape(-1)))
    if method == "sum":
        conc = grid.with_array(np.asarray(grid.array, dtype=np.float64) / grid.voxel_volume_ml)
        out = sitk.Resample(conc.to_sitk(), ref_img, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat64)
        arr = sitk.GetArrayFromImage(out) * reference.voxel_volume_ml
        # total of the source voxels whose centres fall inside the reference field of view
        src = np.asarray(grid.array, dtype=np.float64)
        nz = np.argwhere(src != 0)
        if nz.size:
            pts = grid.index_to_physical(nz.astype(float))
            fixed_pts = (pts - b) @ np.linalg.inv(mat).T
            idx = reference.physical_to_index(fixed_pts)
            inside = np.all((idx > -0.5) & (idx < np.asarray(reference.shape) - 0.5), axis=1)
            target = float(np.sum(src[tuple(nz[inside].T)]))
            current = float(arr.sum())
            if current != 0.0:
                arr = arr * (target / current)
        return grid.with_array_on(reference, arr)
    src_img = grid.to_sitk()
    if method == "linear":
        src_img = sitk.Cast(src_img, sitk.sitkFloat64)
        interp = sitk.sitkLinear
    else:
        interp = sitk.sitkNearestNeighbor
    out = sitk.Resample(src_img, ref_img, transform, interp, float(grid.kind.outside_value), src_img.GetPixelID())
    arr = sitk.GetArrayFromImage(out)
    if method == "nearest":
        arr = arr.astype(grid.array.dtype)
    return grid.with_array_on(reference, arr)


__all__ = ["register_ct", "apply_transform", "affine_of", "rotation_angle_deg"]
