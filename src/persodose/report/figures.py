"""Figures of patient grids: orthogonal slices, overlays and maximum-intensity projections.

All functions take :class:`~persodose.grid.Grid` objects in (z, y, x) order with LPS
geometry; images are shown in radiological convention (patient's right on the left of an
axial slice, head at the top of a coronal slice) with true aspect ratios from the spacing.
"""

from __future__ import annotations

import numpy as np

from persodose.grid import Grid


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _coronal(arr: np.ndarray, y_index: int) -> np.ndarray:
    # z increases superiorly in LPS: flip so that the head is at the top.
    return arr[::-1, y_index, :]


def _extent_coronal(g: Grid):
    sz, _, sx = g.spacing_zyx_mm
    nz, _, nx = g.shape
    return (0, nx * sx, 0, nz * sz)


def _extent_axial(g: Grid):
    _, sy, sx = g.spacing_zyx_mm
    _, ny, nx = g.shape
    return (0, nx * sx, ny * sy, 0)


def slices_figure(grids: list[tuple[str, Grid, dict]], z_index: int | None = None,
                  y_index: int | None = None, overlay_labels: Grid | None = None,
                  overlay_rows: str = "first", display_mask: np.ndarray | None = None):
    """One row per grid: an axial and a coronal slice.

    Args:
        grids: ``(title, grid, imshow_kwargs)`` triples on the same geometry.
        z_index, y_index: slices to show (default: the middle).
        overlay_labels: label map whose boundaries are drawn.
        overlay_rows: ``"first"`` (only the first row, e.g. the CT) or ``"all"``.
        display_mask: boolean (z, y, x) array; rows after the first show 0 outside it
            (display only, e.g. to hide Monte Carlo noise in air voxels).
    """
    plt = _mpl()
    first = grids[0][1]
    nz, ny, _ = first.shape
    zi = nz // 2 if z_index is None else z_index
    yi = ny // 2 if y_index is None else y_index
    fig, axes = plt.subplots(len(grids), 2, figsize=(9, 3.6 * len(grids)), squeeze=False, layout="constrained")
    for row, (title, grid, kw) in enumerate(grids):
        kw = dict(kw)
        label = kw.pop("label", grid.unit)
        ax_a, ax_c = axes[row]
        arr = grid.array
        if display_mask is not None and row > 0:
            arr = np.where(display_mask, arr, 0)
        im = ax_a.imshow(arr[zi], extent=_extent_axial(grid), **kw)
        ax_c.imshow(_coronal(arr, yi), extent=_extent_coronal(grid), **kw)
        if overlay_labels is not None and (overlay_rows == "all" or row == 0):
            lab = overlay_labels.array
            ax_a.contour(lab[zi] > 0, levels=[0.5], colors="w", linewidths=0.4,
                         extent=(0, grid.shape[2] * grid.spacing_zyx_mm[2], 0, grid.shape[1] * grid.spacing_zyx_mm[1]),
                         origin="upper")
            edges = _label_edges(_coronal(lab, yi))
            ax_c.imshow(np.ma.masked_where(~edges, edges), extent=_extent_coronal(grid), cmap="autumn",
                        interpolation="nearest", alpha=0.9)
        ax_a.set_title(f"{title}, axial {zi}", fontsize=9)
        ax_c.set_title(f"{title}, coronal {yi}", fontsize=9)
        for ax in (ax_a, ax_c):
            ax.set_xlabel("mm")
        fig.colorbar(im, ax=[ax_a, ax_c], shrink=0.8, label=label)
    return fig


def _label_edges(lab2d: np.ndarray) -> np.ndarray:
    e = np.zeros(lab2d.shape, dtype=bool)
    e[1:, :] |= lab2d[1:, :] != lab2d[:-1, :]
    e[:, 1:] |= lab2d[:, 1:] != lab2d[:, :-1]
    return e & (lab2d > 0)


def labels_figure(labels: Grid, names: dict[int, str], y_index: int | None = None):
    """Coronal slice of a label map with a legend of the organ names."""
    plt = _mpl()
    from matplotlib.colors import ListedColormap

    ny = labels.shape[1]
    yi = ny // 2 if y_index is None else y_index
    n = int(max(names) if names else labels.array.max()) + 1
    rng = np.random.default_rng(3)
    colours = rng.uniform(0.25, 1.0, size=(n, 3))
    colours[0] = 0
    fig, ax = plt.subplots(1, 1, figsize=(6, 8))
    ax.imshow(_coronal(labels.array, yi), extent=_extent_coronal(labels), cmap=ListedColormap(colours),
              vmin=0, vmax=n - 1, interpolation="nearest")
    present = set(np.unique(labels.array[:, yi, :]).tolist())
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[k]) for k in sorted(names) if k in present]
    ax.legend(handles, [names[k] for k in sorted(names) if k in present], loc="center left",
              bbox_to_anchor=(1.0, 0.5), fontsize=7)
    ax.set_title(f"labels, coronal y={yi}")
    return fig


def mip_row(frames: list[tuple[str, Grid]], vmax: float | None = None, unit: str = ""):
    """Coronal maximum-intensity projections of several images side by side."""
    plt = _mpl()
    fig, axes = plt.subplots(1, len(frames), figsize=(2.6 * len(frames), 5), squeeze=False)
    mips = [f.array.max(axis=1)[::-1] for _, f in frames]
    top = vmax if vmax is not None else max(float(m.max()) for m in mips) or 1.0
    for ax, (title, grid), mip in zip(axes[0], frames, mips):
        im = ax.imshow(mip, extent=_extent_coronal(grid), cmap="gray_r", vmin=0, vmax=top)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes[0]), shrink=0.7, label=unit)
    return fig


def curves_figure(times_h: np.ndarray, curves: dict[str, tuple[np.ndarray, np.ndarray | None]],
                  ylabel: str, log: bool = False):
    """Time-activity curves: measured points (markers) and truth (lines) per organ."""
    plt = _mpl()
    fig, ax = plt.subplots(1, 1, figsize=(7, 4.2))
    for i, (name, (measured, truth)) in enumerate(curves.items()):
        colour = f"C{i % 10}"
        ax.plot(times_h, measured, "o", color=colour, label=name)
        if truth is not None:
            ax.plot(times_h, truth, "-", color=colour, alpha=0.6)
    ax.set_xlabel("time after injection (h)")
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
        top = max(float(np.nanmax(np.concatenate([np.ravel(m) for m, _ in curves.values()]))), 1e-30)
        ax.set_ylim(top * 1e-4, top * 2.0)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return fig


def fit_figure(times_h: np.ndarray, dense_h: np.ndarray, curves: dict, ylabel: str):
    """Measured points at ``times_h`` and fitted curves on ``dense_h`` (None: points only), log scale."""
    plt = _mpl()
    fig, ax = plt.subplots(1, 1, figsize=(7, 4.2))
    top = 0.0
    for i, (name, (points, fitted)) in enumerate(curves.items()):
        colour = f"C{i % 10}"
        ax.plot(times_h, points, "o", color=colour, label=name)
        top = max(top, float(np.nanmax(points)))
        if fitted is not None:
            ax.plot(dense_h, fitted, "-", color=colour, alpha=0.7)
    ax.set_yscale("log")
    if top > 0:
        ax.set_ylim(top * 1e-3, top * 2.0)
    ax.set_xlabel("time after injection (h)")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return fig
