"""``kernels``: Monte Carlo dose kernels of unit sources in a patient's own tissue, for the ``dnn`` method.

The training data of the patient-specific kernel network (:mod:`persodose.dl.kernel_dnn`; the
SINFONIA deliverable D2.2, sections 1.2.2 and 2.1.1). For each patient (a folder written by
:func:`persodose.phantoms.write_virtual_patient`):

1. density (g/cm3) and materials from the CT (Schneider et al. 2000,
   :func:`persodose.physics.materials.ct_to_density_and_materials`);
2. ``kernels_per_patient`` source voxels drawn (with the patient's seed) by class, the classes
   over-represented where heterogeneity changes the kernel: ``bone`` (>= 1.2 g/cm3), ``lung``
   (0.1-0.65 g/cm3), ``interface`` (a 3x3x3 neighbourhood spanning at least 0.25 g/cm3: lung
   and bone borders, skin against air) and ``soft`` (the rest above 0.65 g/cm3), in the
   proportions of ``fractions``, after an optional share ``border_fraction`` of soft-tissue
   voxels beside bone or lung (class ``border``); and ``anchors_per_patient`` homogeneous media: the phantom
   filled with one sampled voxel's material and density (lung, soft tissue, bone in turn);
3. for each source voxel, the patient's density and materials in a cube of
   :data:`~persodose.dl.kernel_dnn.PHANTOM` voxels around it (air beyond the CT) become a Monte
   Carlo phantom, ``decays`` decays uniform in the central voxel are simulated
   (:func:`persodose.mc.run.simulate_decays`, every ICRP-107 emission), and the dose per decay
   in the central :data:`~persodose.dl.kernel_dnn.WINDOW`\\ :sup:`3` voxels is divided by the
   soft-tissue kernel computed the same way in a homogeneous cube of the same size
   (:func:`persodose.dl.kernel_dnn.window_reference`) and multiplied by ``rho / 1.04`` of each
   target voxel: the target is the ratio of the *energy* deposited in each window voxel to the
   soft-tissue kernel's (1 in soft tissue, and near 1 in any homogeneous medium where the
   electrons stop in their voxel; the far photon field the cube leaves out cancels). Energy,
   not dose: the ratios then lie near 1 everywhere (a dose ratio is 8 beside a lung source and
   1 in soft tissue), so that an L2 loss weighs every tissue alike;
4. input: the density and its inverse (:func:`persodose.dl.kernel_dnn.kernel_features`) in the
   central :data:`~persodose.dl.kernel_dnn.CONTEXT`\\ :sup:`3` voxels;
5. each kernel stored ``symmetries`` times, under the identity and other symmetries of the cubic
   lattice drawn with the patient's seed (the transport is invariant under axis permutations
   and reflections of cubic voxels, applied to context and window alike).

Inputs ``(2, 11, 11, 11)``; target ``(343, 1, 1, 1)``: the 7x7x7 window's energy ratios flattened (z, y, x).
Each example's ``meta`` has the source class, where it lies, the decays and the Monte Carlo
relative standard uncertainty of the kernel (centre voxel, median and dose-weighted over the
window). The deliverable simulated 3e6 F-18 decays per kernel for < 4 % at about 10 cm; this
kind needs only the near window, where 4e5 decays leave about 0.1 % in the centre voxel and
0.5 % in its neighbours (docs/validation_dl.md).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from persodose.dl.datasets import PatientData, register_kind
from persodose.errors import InputError

__all__ = ["KernelSettings", "make_kernel_examples", "source_classes", "apply_symmetry", "CLASSES", "SYMMETRIES"]

#: Source-voxel classes, in the order of :attr:`KernelSettings.fractions`.
CLASSES = ("bone", "lung", "interface", "soft")
#: Density limits of the classes, g/cm3: lung below 0.65 and bone from 1.2 (near the MSV edges of
#: persodose.dose.msv between ICRU 44 inflated lung 0.26, soft tissue 1.04 and bone); air below 0.1
#: (the dose methods' air threshold); an interface where a 3x3x3 neighbourhood spans 0.25 g/cm3
#: (a choice made here, no published value: it separates fat/muscle texture from tissue borders).
LUNG_MAX, BONE_MIN, AIR_MAX, INTERFACE_SPAN = 0.65, 1.2, 0.1, 0.25


@dataclass(frozen=True)
class KernelSettings:
    """Settings of the ``kernels`` kind.

    Attributes:
        nuclide: radionuclide of the kernels; ``""``: the patient manifest's.
        decays: decays simulated per kernel (uniform in the central voxel).
        kernels_per_patient: source voxels drawn per patient.
        anchors_per_patient: homogeneous-medium kernels per patient.
        fractions: shares of bone, lung, interface and soft-tissue sources (normalised; a class a
            patient lacks gives its share to soft tissue).
        reference_decays: decays of the soft-tissue reference kernel (symmetrised, once per
            nuclide and voxel, cached on disk).
        border_fraction: share of ``kernels_per_patient`` drawn, before the classes, among
            soft-tissue voxels with bone or lung in their 3x3x3 neighbourhood (class ``border``:
            the cross-dose into bone and lung that the ``interface`` class mixes with skin against
            air); 0 (the default): none, and the draw is the one made before this setting existed.
        symmetries: copies of every kernel stored, each under another of the 48 symmetries of the
            cubic lattice (axis permutations and reflections, applied to the context and the window
            alike; the identity first): the transport is invariant under them, so each Monte Carlo
            kernel teaches the network that many cases (1: no copies).
    """

    nuclide: str = ""
    decays: int = 400_000
    kernels_per_patient: int = 100
    anchors_per_patient: int = 6
    fractions: tuple = (0.3, 0.25, 0.25, 0.2)
    reference_decays: int = 20_000_000
    border_fraction: float = 0.0
    symmetries: int = 8

    def __post_init__(self) -> None:
        fr = tuple(float(f) for f in (self.fractions.split(",") if isinstance(self.fractions, str) else self.fractions))
        object.__setattr__(self, "fractions", fr)
        if len(fr) != len(CLASSES) or any(not np.isfinite(f) or f < 0 for f in fr) or sum(fr) <= 0:
            raise InputError(f"kernels.fractions must be {len(CLASSES)} non-negative shares ({', '.join(CLASSES)}), "
                             f"got {self.fractions}")
        if not 1_000 <= int(self.decays) <= 10**10 or not 1_000 <= int(self.reference_decays) <= 10**11:
            raise InputError("kernels.decays and kernels.reference_decays must be 1e3 to 1e10 (1e11), "
                             f"got {self.decays}, {self.reference_decays}")
        if not 0 <= int(self.kernels_per_patient) <= 100_000 or not 0 <= int(self.anchors_per_patient) <= 1000:
            raise InputError("kernels.kernels_per_patient must be 0..100000 and anchors_per_patient 0..1000")
        if not (np.isfinite(self.border_fraction) and 0.0 <= float(self.border_fraction) <= 1.0):
            raise InputError(f"kernels.border_fraction must be 0..1, got {self.border_fraction}")
        if not 1 <= int(self.symmetries) <= 48:
            raise InputError(f"kernels.symmetries must be 1..48, got {self.symmetries}")
        if int(self.kernels_per_patient) + int(self.anchors_per_patient) < 1:
            raise InputError("kernels: kernels_per_patient + anchors_per_patient must be at least 1")


def source_classes(rho: np.ndarray) -> np.ndarray:
    """Class index (into :data:`CLASSES`) of every voxel; -1 for air (below 0.1 g/cm3)."""
    from scipy.ndimage import maximum_filter, minimum_filter

    span = maximum_filter(rho, size=3, mode="nearest") - minimum_filter(rho, size=3, mode="nearest")
    cls = np.full(rho.shape, 3, np.int8)
    cls[rho < LUNG_MAX] = 1
    cls[rho >= BONE_MIN] = 0
    cls[span >= INTERFACE_SPAN] = 2
    cls[rho < AIR_MAX] = -1
    return cls


def _border_mask(rho: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """Soft-tissue voxels (0.65-1.2 g/cm3) with a bone or lung voxel in their 3x3x3 neighbourhood."""
    from scipy.ndimage import maximum_filter, minimum_filter

    soft = (rho >= LUNG_MAX) & (rho < BONE_MIN)
    near_bone = maximum_filter(rho, size=3, mode="nearest") >= BONE_MIN
    lungish = np.where(rho >= AIR_MAX, rho, np.float32(10.0))  # air is not lung
    near_lung = minimum_filter(lungish, size=3, mode="nearest") < LUNG_MAX
    return soft & (near_bone | near_lung) & (cls >= 0)


def _draw_sources(cls: np.ndarray, rho: np.ndarray, settings: KernelSettings,
                  rng: np.random.Generator) -> list[tuple]:
    """``(class name, (z, y, x))`` of the source voxels: the ``border`` share first (when asked for
    and present), then counts by class, soft tissue taking missing shares."""
    n = int(settings.kernels_per_patient)
    out = []
    if settings.border_fraction > 0:
        border = np.argwhere(_border_mask(rho, cls))
        k = min(int(round(settings.border_fraction * n)), n) if len(border) else 0
        if k:
            for p in border[rng.choice(len(border), size=k, replace=len(border) < k)]:
                out.append(("border", tuple(int(v) for v in p)))
        n -= k
    fr = np.asarray(settings.fractions, float) / sum(settings.fractions)
    counts = np.floor(fr * n).astype(int)
    counts[3] += n - counts.sum()
    pools = [np.argwhere(cls == i) for i in range(len(CLASSES))]
    for i in range(3):
        if len(pools[i]) == 0:
            counts[3] += counts[i]
            counts[i] = 0
    if counts[3] and len(pools[3]) == 0:
        raise InputError("kernels: the patient has no soft-tissue voxel to draw sources from")
    for i, k in enumerate(counts):
        if k:
            for p in pools[i][rng.choice(len(pools[i]), size=int(k), replace=len(pools[i]) < k)]:
                out.append((CLASSES[i], tuple(int(v) for v in p)))
    return out


#: The 48 symmetries of the cubic lattice: (axis permutation, reflected axes), the identity first.
SYMMETRIES = [(p, f) for p in itertools.permutations(range(3)) for f in itertools.product((False, True), repeat=3)]


def apply_symmetry(a: np.ndarray, sym, lead: int = 0) -> np.ndarray:
    """``a`` with its last three axes permuted and reflected by ``sym`` (``lead`` leading axes kept)."""
    perm, flips = sym
    out = np.transpose(a, tuple(range(lead)) + tuple(lead + p for p in perm))
    for ax, f in enumerate(flips):
        if f:
            out = np.flip(out, axis=lead + ax)
    return np.ascontiguousarray(out)


def _crop(a: np.ndarray, centre, size: int, fill) -> np.ndarray:
    """The ``size``-cube of ``a`` centred on ``centre``, ``fill`` outside ``a``."""
    h = size // 2
    out = np.full((size,) * 3, fill, dtype=a.dtype)
    src, dst = [], []
    for c, n in zip(centre, a.shape):
        lo, hi = c - h, c + h + 1
        src.append(slice(max(lo, 0), min(hi, n)))
        dst.append(slice(max(lo, 0) - lo, size - (hi - min(hi, n))))
    out[tuple(dst)] = a[tuple(src)]
    return out


def _kernel_example(rho, mat, mats, tables, centre, nuclide, settings, seed, reference, spacing, homogeneous=False):
    """One example: features of the context, the window's ratio to the reference, and the MC uncertainties."""
    from persodose.dl.kernel_dnn import CONTEXT, PHANTOM, RHO_REF, WINDOW, kernel_features
    from persodose.grid import Kind, make_grid
    from persodose.mc.kernels import GY_PER_DECAY_TO_MGY_PER_MBQ_S
    from persodose.mc.phantom import VoxelPhantom
    from persodose.mc.run import simulate_decays
    from persodose.mc.settings import MCSettings

    air = int(np.argmin([m.density_g_cm3 for m in mats]))
    if homogeneous:
        d = np.full((PHANTOM,) * 3, rho[centre], np.float32)
        m = np.full((PHANTOM,) * 3, mat[centre], mat.dtype)
    else:
        d = _crop(rho, centre, PHANTOM, np.float32(mats[air].density_g_cm3))
        m = _crop(mat, centre, PHANTOM, mat.dtype.type(air))
    dens = make_grid(d.shape, (spacing,) * 3, kind=Kind.DENSITY)
    dens = dens.with_array(np.clip(d, 1e-3, None).astype(np.float32), Kind.DENSITY)
    phantom = VoxelPhantom(dens, dens.with_array(m, Kind.MATERIAL), tuple(mats))
    src = np.zeros(d.shape)
    c = PHANTOM // 2
    src[c, c, c] = 1.0
    res = simulate_decays(phantom, dens.with_array(src, Kind.TIA), nuclide, int(settings.decays),
                          MCSettings(seed=int(seed)), tables=tables)
    h, k = WINDOW // 2, CONTEXT // 2
    win = (slice(c - h, c + h + 1),) * 3
    dose = res.dose_per_primary_gy.array[win].astype(np.float64) * GY_PER_DECAY_TO_MGY_PER_MBQ_S
    unc = np.asarray(res.relative_uncertainty.array[win], np.float64)
    rho_win = np.asarray(dens.array[win], np.float32)
    ratio = ((dose / reference) * (rho_win / RHO_REF)).astype(np.float32)  # energy, not dose, per voxel
    x = kernel_features(dens.array[(slice(c - k, c + k + 1),) * 3])
    finite = np.isfinite(unc) & (dose > 0)
    meta = {"centre_zyx": [int(v) for v in centre], "decays": int(settings.decays), "nuclide": nuclide,
            "mc_seed": int(seed), "spacing_zyx_mm": [float(spacing)] * 3, "density_g_cm3": round(float(rho[centre]), 4),
            "unc_centre": round(float(unc[h, h, h]), 6),
            "unc_median": round(float(np.median(unc[finite])) if finite.any() else float("nan"), 6),
            "unc_dose_weighted": round(float(np.sum(unc[finite] * dose[finite]) / np.sum(dose[finite]))
                                       if finite.any() else float("nan"), 6)}
    return x, ratio.reshape(-1, 1, 1, 1), meta


@register_kind("kernels", settings=KernelSettings, needs=("ct_nifti",),
               input_channels=("density_g_cm3", "inverse_density"),
               target_channels=tuple(f"energy_ratio_{i}" for i in range(343)),
               summary="MC kernels of unit sources in the patient's tissue (7^3 window, energy / soft tissue's) "
                       "from the density around them")
def make_kernel_examples(patient: PatientData, settings: KernelSettings, seed: int) -> list:
    """Density contexts (inputs) and Monte Carlo kernels' energy ratios (targets); see the module doc."""
    from persodose.dl.kernel_dnn import WINDOW, window_reference
    from persodose.mc.tables import build_tables
    from persodose.mc.settings import MCSettings
    from persodose.physics.materials import ct_to_density_and_materials
    from persodose.physics.radionuclides import get_nuclide

    who = f"patient {patient.id}"
    nuclide = settings.nuclide or patient.manifest.get("nuclide")
    if not nuclide:
        raise InputError(f"{who}: manifest.json names no nuclide and kernels.nuclide is not set")
    nuclide = get_nuclide(nuclide).name
    ct = patient["ct_nifti"]
    sp = ct.spacing_zyx_mm
    if max(sp) - min(sp) > 0.01 * max(sp):
        raise InputError(f"{who}: kernels need cubic voxels, the CT has {tuple(round(v, 3) for v in sp)} mm")
    density, materials, mats = ct_to_density_and_materials(ct)
    rho = np.asarray(density.array, np.float32)
    mat = np.asarray(materials.array)
    reference = window_reference(nuclide, float(sp[0]), int(settings.reference_decays))
    tables = build_tables(tuple(mats), MCSettings().transport)
    rng = np.random.default_rng(seed)
    cls = source_classes(rho)
    sources = _draw_sources(cls, rho, settings, rng)
    anchor_pool = [np.argwhere(cls == i) for i in (1, 3, 0)]  # lung, soft tissue, bone in turn
    anchor_pool = [p for p in anchor_pool if len(p)]
    if settings.anchors_per_patient and not anchor_pool:
        raise InputError(f"{who}: no lung, soft-tissue or bone voxel away from an interface to fill a homogeneous "
                         "anchor with")
    for j in range(int(settings.anchors_per_patient)):
        pool = anchor_pool[j % len(anchor_pool)]
        sources.append(("homogeneous", tuple(int(v) for v in pool[rng.integers(len(pool))])))
    mc_seeds = rng.integers(1, 2**62, size=len(sources))
    out = []
    for (name, centre), s in zip(sources, mc_seeds):
        x, y, meta = _kernel_example(rho, mat, mats, tables, centre, nuclide, settings, int(s), reference,
                                     float(sp[0]), homogeneous=name == "homogeneous")
        meta["class"] = name
        picks = [0] + sorted(rng.choice(np.arange(1, len(SYMMETRIES)), size=int(settings.symmetries) - 1,
                                        replace=False).tolist())
        w = y.reshape((WINDOW,) * 3)
        for j in picks:
            sym = SYMMETRIES[j]
            out.append((apply_symmetry(x, sym, lead=1), apply_symmetry(w, sym).reshape(-1, 1, 1, 1),
                        {**meta, "symmetry": int(j)}))
    return out
