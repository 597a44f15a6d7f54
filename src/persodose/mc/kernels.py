"""Voxel S-value kernels computed with the Monte Carlo engine.

A kernel is the mean absorbed dose in each voxel of a homogeneous medium per decay in the
central voxel (decays uniform in that voxel), in mGy/(MBq s), the quantity of the MIRD
voxel S-value formalism (Bolch et al., MIRD Pamphlet No. 17, J Nucl Med 40 (1999) 11S).
The medium extends ``margin`` voxels beyond the kernel on every side so that photons and
electrons scattered back from outside it are counted (an approximation of the infinite
medium of published tables); the result is then averaged over the symmetries of the
voxel lattice (reflections, and axis permutations for cubic voxels), which is exact in
expectation and reduces the variance.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from pathlib import Path

import numpy as np

from persodose.errors import InputError
from persodose.mc.phantom import VoxelPhantom
from persodose.mc.run import simulate_decays
from persodose.mc.settings import MCSettings

#: Default kernel media and densities (g/cm3). Soft tissue: the ICRU four-component
#: composition at 1.04 g/cm3, the density of published voxel S-value tables and of
#: DblurDoseNet's density scaling; lung: ICRU 44 inflated lung; bone: ICRU 44 cortical bone;
#: bone_low: the Schneider (2000) CT bone class whose nominal density is nearest 1.4 g/cm3
#: (a second, lower calcium content for the multiple-VSV method of Lee et al. 2018).
KERNEL_MEDIA = {"soft_tissue": 1.04, "water": 1.0, "lung": 0.26, "bone_low": 1.4, "bone": 1.92}


def kernel_material(medium: str):
    """The material (composition) and density of a kernel medium."""
    from persodose.physics.materials import default_materials, get_material

    if medium not in KERNEL_MEDIA:
        raise InputError(f"unknown kernel medium {medium!r}; choose one of {', '.join(KERNEL_MEDIA)}")
    if medium == "bone_low":
        bones = [m for m in default_materials() if m.hu_min >= 100]
        mat = min(bones, key=lambda m: abs(m.density_g_cm3 - 1.4))
        return mat, float(mat.density_g_cm3)
    return get_material(medium), KERNEL_MEDIA[medium]

#: 1 Gy per decay = 1e9 mGy/(MBq s) (1 MBq s = 1e6 decays, 1 Gy = 1e3 mGy).
GY_PER_DECAY_TO_MGY_PER_MBQ_S = 1e9


def emissions_note(nuclide: str, settings: MCSettings) -> str:
    """``"emissions beta,gamma,xray: 0.2877 of 0.334 MeV per decay"``: the selection of
    ``settings`` and the energy it emits per decay out of the full decay's (ICRP 107)."""
    from persodose.mc.sources import decay_tables

    ts = settings.transport
    dt = decay_tables(nuclide, ts.photon_cut_mev, ts.electron_cut_mev, ts.emax_mev, settings.emissions)
    chosen = ",".join(settings.emissions) if settings.emissions is not None else "all"
    return f"emissions {chosen}: {dt.mean_emitted_mev:.6g} of {dt.full_emitted_mev:.6g} MeV per decay"


def symmetrise(kernel: np.ndarray, cubic: bool) -> np.ndarray:
    """Average a centred kernel over the lattice's reflections (and permutations if cubic)."""
    out = np.zeros_like(kernel, dtype=np.float64)
    count = 0
    perms = list(itertools.permutations(range(3))) if cubic else [(0, 1, 2)]
    for perm in perms:
        k = np.transpose(kernel, perm)
        for flips in itertools.product((False, True), repeat=3):
            kk = k
            for ax, f in enumerate(flips):
                if f:
                    kk = np.flip(kk, axis=ax)
            out += kk
            count += 1
    return out / count


def generate_kernel(nuclide: str, voxel_mm: float, medium: str = "soft_tissue", size: int = 11,
                    n_decays: int = 1_000_000, density_g_cm3: float | None = None, margin: int | None = None,
                    settings: MCSettings | None = None, emissions=None):
    """Compute a voxel S-value kernel by Monte Carlo.

    Args:
        nuclide: ICRP-107 radionuclide.
        voxel_mm: cubic voxel size, mm.
        medium: ``soft_tissue``, ``water``, ``lung`` or ``bone`` (see :data:`KERNEL_MEDIA`).
        size: kernel width in voxels (odd).
        n_decays: decays simulated in the central voxel.
        density_g_cm3: medium density; default from :data:`KERNEL_MEDIA`.
        margin: extra medium around the kernel, voxels; default ``max(3, size // 4)``.
        settings: the run's settings (seed, batches, backend, transport, emissions).
        emissions: emission categories to simulate (see
            :func:`persodose.mc.settings.normalise_emissions`, e.g. ``"beta,gamma,xray"``);
            when given it replaces ``settings.emissions``. The kernel's ``source`` then names
            the selection and the energy per decay it emits out of the full decay's.

    Returns:
        A :class:`persodose.dose.kernels.VoxelKernel` and the relative standard uncertainty
        of its central voxel.
    """
    from persodose.dose.kernels import VoxelKernel
    from persodose.physics.radionuclides import get_nuclide

    nuc = get_nuclide(nuclide)
    material, default_rho = kernel_material(medium)
    if int(size) < 1 or int(size) % 2 == 0:
        raise InputError(f"kernel size must be an odd number of voxels, got {size}")
    if not (math.isfinite(voxel_mm) and 0.1 <= voxel_mm <= 20.0):
        raise InputError(f"voxel size must lie within 0.1-20 mm, got {voxel_mm}")
    rho = default_rho if density_g_cm3 is None else float(density_g_cm3)
    margin = max(3, int(size) // 4) if margin is None else int(margin)
    n = int(size) + 2 * margin
    phantom = VoxelPhantom.homogeneous((n, n, n), float(voxel_mm), material, density_g_cm3=rho)
    src = phantom.density.with_array(np.zeros(phantom.density.shape), "tia")
    c = n // 2
    src.array[c, c, c] = 1.0
    settings = settings or MCSettings()
    if emissions is not None:
        settings = dataclasses.replace(settings, emissions=emissions)
    res = simulate_decays(phantom, src, nuc.name, int(n_decays), settings)
    h = int(size) // 2
    crop = (slice(c - h, c + h + 1),) * 3
    dose = res.dose_per_primary_gy.array[crop] * GY_PER_DECAY_TO_MGY_PER_MBQ_S
    sym = symmetrise(dose, cubic=True)
    unc = float(res.relative_uncertainty.array[c, c, c])
    source = f"persodose Monte Carlo, {res.tally.n_primaries} decays, seed {res.settings.seed}"
    if settings.emissions is not None:
        source += ", " + emissions_note(nuc.name, settings)
    kernel = VoxelKernel(sym.astype(np.float32), (voxel_mm,) * 3, medium=medium, density_g_cm3=rho,
                         nuclide=nuc.name, source=source)
    return kernel, unc


#: Widest kernel computed on the fine grid, voxels (a 101^3 kernel plus its margin is a 1.9e6-voxel
#: Monte Carlo phantom); a reach beyond it is carried by the far field on a coarse grid.
MAX_KERNEL_SIZE = 101


def kernel_reach_mm(nuclide: str) -> float:
    """How far from its source a kernel of ``nuclide`` should reach, mm.

    Pure electron emitters: twice the CSDA range in soft tissue of the highest beta energy;
    nuclides with photons: 200 mm. Photons carry dose tens of centimetres: on the virtual FDG
    patient a 100 mm radius left SSV organ doses 9-20 % below Monte Carlo (photon cross-fire from
    distant organs lost), a 200 mm radius brought them within 3 % (docs/validation.md), and an
    infinite-medium kernel beyond 200 mm (to 500 mm) raised the soft-tissue organs another 2.3 %,
    above Monte Carlo (a body is not an infinite medium; docs/validation.md, far field).
    """
    from persodose.physics.electron_data import csda_range_g_cm2
    from persodose.physics.materials import get_material
    from persodose.physics.radionuclides import get_nuclide

    nuc = get_nuclide(nuclide)
    photons = sum(nuc.lines[k].energy_per_decay_mev for k in ("gamma", "xray", "annihilation"))
    if photons > 0.01 * max(nuc.electron_energy_per_decay_mev(), 1e-12):
        return 200.0
    e_max = 0.0
    for kind in ("beta-", "beta+"):
        if nuc.lines[kind].total_yield > 0:
            e, d = nuc.beta_spectrum(kind)
            e_max = max(e_max, float(np.asarray(e)[np.asarray(d) > 0].max()))
    return float(csda_range_g_cm2(get_material("soft_tissue"), min(max(e_max, 0.01), 3.0))) / 1.04 * 10.0


def _reach_size(nuclide: str, voxel_mm: float) -> int:
    """Kernel width (odd, voxels) that holds :func:`kernel_reach_mm`, uncapped."""
    return 2 * int(math.ceil(kernel_reach_mm(nuclide) / voxel_mm)) + 1


def default_kernel_size(nuclide: str, voxel_mm: float) -> int:
    """Kernel width (odd, voxels) that covers the nuclide's radiations usefully: the reach of
    :func:`kernel_reach_mm` (plus one voxel), capped at :data:`MAX_KERNEL_SIZE` voxels; where the
    cap cuts it (below 4 mm voxels for nuclides with photons) :func:`cached_kernel` adds the rest
    as a far field on a coarse grid (:mod:`persodose.dose.far_field`)."""
    return int(min(_reach_size(nuclide, voxel_mm), MAX_KERNEL_SIZE))


def kernel_cache_path(nuclide: str, voxel_mm: float, medium: str, size: int, n_decays: int, seed: int,
                      cache_dir=None, emissions=None) -> Path:
    """Where :func:`cached_kernel` keeps a kernel: its file name is the cache key.

    The key holds everything the kernel depends on: nuclide, medium, voxel size, width,
    decays and seed, and the physics tag (:func:`persodose.mc.version.physics_tag`: the
    engine's :data:`~persodose.mc.version.PHYSICS_VERSION` and the versions of the decay
    and photon data), so a kernel computed by another physics or other data is never
    read back. A selection of emissions other than all (``emissions``, see
    :func:`persodose.mc.settings.normalise_emissions`) adds ``_em-beta+gamma+xray`` (its
    canonical categories) before the physics tag; the key of all emissions is the one used
    before selections existed, so kernels cached then stay valid. The directory is
    ``cache_dir``, else ``$PERSODOSE_CACHE``, else ``~/.cache/persodose``, then ``kernels``.
    """
    from persodose.mc.settings import normalise_emissions
    from persodose.mc.version import physics_tag

    root = Path(cache_dir or os.environ.get("PERSODOSE_CACHE") or Path.home() / ".cache" / "persodose") / "kernels"
    chosen = normalise_emissions(emissions)
    em = "" if chosen is None else "_em-" + "+".join(chosen)
    return root / f"{nuclide}_{medium}_{voxel_mm:.4g}mm_{int(size)}_{int(n_decays)}_{int(seed)}{em}_{physics_tag()}.txt"


def cached_kernel(nuclide: str, voxel_mm: float, medium: str = "soft_tissue", size: int | None = None,
                  n_decays: int = 1_000_000, cache_dir=None, seed: int = 12345, log=None, backend: str = "cpu",
                  emissions=None, far_field: bool = True):
    """A kernel from the on-disk cache, computed and stored on first use.

    Kernels are octant text tables at :func:`kernel_cache_path` (in ``cache_dir``, else
    ``$PERSODOSE_CACHE``, else ``~/.cache/persodose``), named by nuclide, medium, voxel
    size, width, decays, seed, emission selection (``emissions``, default all) and physics
    version, so a cached kernel is exactly the one that would be computed (on the CPU; a
    kernel computed with ``backend="cuda"`` agrees with it within statistics) by this
    physics with these data.

    With ``size`` left to its default and ``far_field`` on, a kernel that the
    :data:`MAX_KERNEL_SIZE` cap keeps short of :func:`kernel_reach_mm` gets the rest as its
    ``far_field`` (:class:`persodose.dose.far_field.FarField`): the same medium's kernel computed
    (and cached) the same way at an odd multiple of the voxel near 12 mm, the shell between the
    two boxes; the fine kernel is cropped to the largest box that ends on the coarse voxels'
    faces (99 voxels at 3 mm, the far field from 148.5 to 202.5 mm). A size given explicitly is
    taken as asked, without a far field.
    """
    from persodose.dose.kernels import read_octant_table, write_octant_table
    from persodose.physics.radionuclides import get_nuclide

    name = get_nuclide(nuclide).name
    if size is None and far_field and _reach_size(name, voxel_mm) > default_kernel_size(name, voxel_mm):
        near = cached_kernel(name, voxel_mm, medium, None, n_decays, cache_dir, seed, log, backend, emissions,
                             far_field=False)
        return _far_field(near, name, voxel_mm, medium, n_decays, cache_dir, seed, log, backend, emissions)
    size = int(size or default_kernel_size(name, voxel_mm))
    settings = MCSettings(seed=seed, backend=backend, emissions=emissions)  # checks the selection first
    path = kernel_cache_path(name, voxel_mm, medium, size, n_decays, seed, cache_dir, settings.emissions)
    material, rho = kernel_material(medium)
    if path.exists():
        return read_octant_table(path, voxel_mm, medium=medium, density_g_cm3=rho, nuclide=name)
    if log:
        log(f"computing the {name} {medium} kernel ({size}^3 voxels of {voxel_mm:g} mm, {n_decays:.2g} decays)")
    kernel, _ = generate_kernel(name, voxel_mm, medium, size, n_decays, settings=settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_octant_table(kernel, path)
    return kernel


def _far_field(near, nuclide: str, voxel_mm: float, medium: str, n_decays: int, cache_dir, seed: int, log,
               backend: str, emissions):
    """``near`` (the capped kernel) cropped to a box that ends on coarse faces, with the far field
    (:class:`persodose.dose.far_field.FarField`) out to :func:`kernel_reach_mm`'s box."""
    from persodose.dose.far_field import FarField, aligned_half, coarse_factor, coarse_size

    f = coarse_factor(voxel_mm)
    h = aligned_half(near.shape[0] // 2, f, up=False)
    c = near.shape[0] // 2
    inner = near.s_mgy_per_mbq_s[c - h:c + h + 1, c - h:c + h + 1, c - h:c + h + 1]
    near_half = (h + 0.5) * voxel_mm
    far_half = (aligned_half(_reach_size(nuclide, voxel_mm) // 2, f, up=True) + 0.5) * voxel_mm
    coarse = cached_kernel(nuclide, f * voxel_mm, medium, coarse_size(voxel_mm, far_half), n_decays, cache_dir, seed,
                           log, backend, emissions, far_field=False)
    ff = FarField.from_coarse_kernel(coarse.gy_per_bq_s, f, voxel_mm, near_half, far_half,
                                     source=f"{coarse.source} at {f * voxel_mm:g} mm, {near_half:g}-{far_half:g} mm")
    return dataclasses.replace(near, s_mgy_per_mbq_s=inner, far_field=ff,
                               source=f"{near.source}, cropped to {2 * h + 1} voxels; far field to {far_half:g} mm")
