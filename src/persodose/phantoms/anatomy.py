"""Analytic anatomy of the built-in adult male patient (labels only).

The patient is built from analytic solids (ellipsoids, elliptic cylinders, capsules,
thin elliptic shells) evaluated at voxel centres, each on its own bounding box so that
the whole model costs a few array operations per structure and no loop over voxels.

Geometry
    Internal anatomical coordinates are ``x`` (mm, + towards the patient's left),
    ``y`` (mm, + posterior) and ``H`` (mm above the soles of an upright patient, vertex
    at :data:`VERTEX_H_MM`). They map onto DICOM LPS by ``x_LPS = x``, ``y_LPS = y`` and
    ``z_LPS = H - VERTEX_H_MM`` (the vertex lies at z = 0, the feet at negative z; head at
    high z as in LPS). The field of view runs from the upper thighs to just above the
    vertex (about 1.06 m) and is 512 mm wide, i.e. 128 x 128 x 264 voxels at 4 mm.

Sizes
    Body outline and organ positions are typical of an adult male of 1.76 m / 73 kg, the
    ICRP Publication 89 reference male (ICRP 89, 2002, Table 2.8 organ masses). Organ
    semi-axes are chosen so that the voxelised organ masses, computed with the nominal
    densities of :data:`NOMINAL_DENSITY_G_CM3`, lie within a few per cent of the
    reference masses in :data:`REFERENCE_MASS_G` at 4 mm voxels. The canonical patient has no
    arms (as if raised out of the field of view, as in most SPECT/CT and PET/CT
    acquisitions); population patients have them down or raised (:class:`AnatomyParams`).

Population patients
    :class:`AnatomyParams` (defaults: the canonical patient, bit for bit) stretches the same
    anatomy to another height and build, thickens or thins the subcutaneous fat, scales and
    shifts organs and deforms them by a smooth field (:func:`deformation_field`), adds the
    sex organs of :data:`SEX_LABELS`, arms (down or raised), a wider female pelvis, and
    replaces the four canonical lesions by a drawn list, one label each, some with a necrotic
    core (:func:`lesion_labels`), and the organs of :data:`ORGAN_LABELS` (pancreas,
    oesophagus, spinal cord, aorta, IVC, portal vein, gall bladder, small intestine, colon,
    rectum, thymus, thyroid, salivary glands; :func:`_paint_extra_organs`);
    :mod:`persodose.phantoms.population` draws them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

#: Height of the vertex above the soles, mm (ICRP 89 reference male height 176 cm).
VERTEX_H_MM = 1760.0
#: Lowest anatomical height in the field of view (upper thighs), mm above the soles.
FOV_BOTTOM_H_MM = 716.0
#: Extent of the field of view along z and across (x, y), mm.
FOV_LENGTH_MM = 1056.0
FOV_WIDTH_MM = 512.0

#: Fixed label numbering. 0 is air (outside the patient and the airway lumen).
LABELS: dict[int, str] = {
    1: "body",               # remaining soft tissue (viscera, mediastinum, vessels, cord)
    2: "skin_fat",           # skin and subcutaneous fat
    3: "muscle",             # chest/abdominal wall, paraspinal, psoas, gluteal, thigh, neck
    4: "lung_left",
    5: "lung_right",
    6: "heart",              # whole heart: wall and blood contents
    7: "liver",
    8: "spleen",
    9: "kidney_left",
    10: "kidney_right",
    11: "bladder",           # whole bladder: wall and 200 mL urine
    12: "stomach",           # whole stomach: wall and contents
    13: "brain",
    14: "skull",
    15: "spine",             # cortical shell of the vertebrae and posterior elements
    16: "pelvis",            # cortical shell of ilia, sacrum, pubis, ischia, acetabula
    17: "femoral_head_left",  # proximal femur in the FOV: head, neck, trochanter, shaft
    18: "femoral_head_right",
    19: "red_marrow",        # trabecular interior of vertebral bodies, ilia and sacrum
    20: "lesion_liver",      # liver metastasis, ~40 mL
    21: "lesion_bone",       # vertebral (L2) metastasis, ~3 mL
    22: "lesion_lymph_node",  # para-aortic lymph node, ~7 mL
    23: "lesion_pancreas",   # pancreatic primary (neuroendocrine tumour), ~20 mL
    30: "ribs",              # 12 pairs of ribs and the sternum
    31: "shoulder_girdle",   # clavicles and scapulae
}

#: Sex-specific labels, used only by patients built with ``AnatomyParams(sex_organs=True)``
#: (the population of :mod:`persodose.phantoms.population`); the canonical patient has
#: none of them. Names map to ICRP 103 tissues in :mod:`persodose.risk.effective_dose`
#: (breast, gonads, uterus -> uterus_cervix, prostate).
SEX_LABELS: dict[int, str] = {24: "breast", 25: "uterus", 26: "ovaries", 27: "prostate", 28: "testes"}
#: Arm bones (humerus, radius, ulna) of population patients with arms (``AnatomyParams.arms``).
ARM_LABELS: dict[int, str] = {32: "arm_bones"}
#: Every fixed label any virtual patient can carry. Population lesions have their own values
#: from :data:`LESION_LABEL_FIRST` (one per lesion) and their necrotic cores that value plus
#: :data:`NECROSIS_LABEL_OFFSET` (:func:`lesion_labels`).
#: Organs of population patients only (``AnatomyParams(extra_organs=True)``): the remaining
#: organs segmented by SINFONIA (deliverable Table 1) and those ICRP 103 effective dose needs
#: that can be drawn. Painted by :func:`_paint_extra_organs` on soft tissue only, after every
#: other organ, so no earlier organ loses a voxel.
ORGAN_LABELS: dict[int, str] = {
    100: "pancreas", 101: "oesophagus", 102: "spinal_cord", 103: "aorta", 104: "inferior_vena_cava",
    105: "portal_vein", 106: "gall_bladder", 107: "small_intestine", 108: "colon", 109: "rectum",
    110: "thymus", 111: "thyroid", 112: "salivary_glands",
}
#: Nominal densities of :data:`ORGAN_LABELS`, g/cm3 (ICRU 46 / ICRP 89 rounded): pancreas 1.04,
#: oesophagus 1.03, spinal cord 1.04 (as brain), blood-filled vessels 1.06 (blood), gall bladder
#: with bile 1.03, small intestine, colon and rectum with contents 1.04 (GI tract as above),
#: thymus 1.03, thyroid 1.05, salivary glands 1.03.
ORGAN_DENSITY_G_CM3: dict[str, float] = {
    "pancreas": 1.04, "oesophagus": 1.03, "spinal_cord": 1.04, "aorta": 1.06, "inferior_vena_cava": 1.06,
    "portal_vein": 1.06, "gall_bladder": 1.03, "small_intestine": 1.04, "colon": 1.04, "rectum": 1.04,
    "thymus": 1.03, "thyroid": 1.05, "salivary_glands": 1.03,
}
ALL_LABELS: dict[int, str] = {**LABELS, **SEX_LABELS, **ARM_LABELS, **ORGAN_LABELS}
LESION_LABEL_FIRST = 40
NECROSIS_LABEL_OFFSET = 30
MAX_LESIONS = 30

LESION_LABELS = (20, 21, 22, 23)
BONE_LABELS = (14, 15, 16, 17, 18, 19, 21, 30, 31)

#: Nominal mass densities, g/cm3, used for organ masses only (not for dosimetry: the
#: materials module derives density from the CT). Soft tissues from ICRU Report 46
#: (1992) / ICRP 89 (2002) rounded: soft tissue 1.03, adipose 0.95, skeletal muscle 1.05,
#: inflated lung 0.26, blood-filled heart 1.06, liver 1.06, spleen 1.06, kidney 1.05,
#: brain 1.04, urinary bladder (filled) 1.04, GI tract 1.04, cortical bone 1.92, whole
#: cranium 1.61, spongiosa (red marrow + trabeculae) 1.18, rib (whole) 1.41, femur
#: (whole) 1.33. Lesions are taken as soft tissue 1.04 (the sclerotic bone lesion 1.18).
NOMINAL_DENSITY_G_CM3: dict[str, float] = {
    "body": 1.03, "skin_fat": 0.95, "muscle": 1.05, "lung_left": 0.26, "lung_right": 0.26,
    "heart": 1.06, "liver": 1.06, "spleen": 1.06, "kidney_left": 1.05, "kidney_right": 1.05,
    "bladder": 1.04, "stomach": 1.04, "brain": 1.04, "skull": 1.61, "spine": 1.92,
    "pelvis": 1.92, "femoral_head_left": 1.33, "femoral_head_right": 1.33,
    "red_marrow": 1.18, "lesion_liver": 1.04, "lesion_bone": 1.18, "lesion_lymph_node": 1.04,
    "lesion_pancreas": 1.04, "ribs": 1.41, "shoulder_girdle": 1.41,
}
#: Nominal densities of population-only structures, g/cm3: arm bones as the whole femur
#: (1.33, ICRP 89 whole long bone as above), lung lesions soft tissue (1.04), necrotic cores
#: as fluid-rich soft tissue (1.02, ICRU 46 body fluids ~1.02).
EXTRA_DENSITY_G_CM3: dict[str, float] = {"arm_bones": 1.33, "lesion_lung": 1.04, "necrosis": 1.02}

#: Reference masses, g, of the organs the model is tuned to. ICRP Publication 89 (2002),
#: Table 2.8, adult male: liver 1800, spleen 150, kidneys 310 (both), lungs with blood 1200
#: (both; split 55 % right / 45 % left), heart 840 (330 tissue + 510 blood), brain 1450.
#: Whole organs with contents: urinary bladder 50 g wall + 200 mL urine, stomach 150 g
#: wall + 250 g contents (content masses as in the ICRP 89/110 reference male).
#: Nominal densities of :data:`SEX_LABELS`, g/cm3 (ICRU 46 / ICRP 89 rounded: breast, a
#: glandular/adipose mixture, 0.98; uterus, ovaries, prostate, testes 1.04).
SEX_ORGAN_DENSITY_G_CM3: dict[str, float] = {"breast": 0.98, "uterus": 1.04, "ovaries": 1.04,
                                             "prostate": 1.04, "testes": 1.04}

REFERENCE_MASS_G: dict[str, float] = {
    "liver": 1800.0, "spleen": 150.0, "kidneys": 310.0, "lungs": 1200.0, "heart": 840.0,
    "brain": 1450.0, "bladder": 250.0, "stomach": 400.0,
}

# ----------------------------------------------------------------------------- outline
# Trunk cross-section (elliptic) as a function of height H: lateral semi-axis a, AP
# semi-axis b and AP centre yc (mm). Typical adult male proportions (chest breadth
# ~33 cm and depth ~23 cm, waist breadth ~30 cm, hip breadth ~36 cm).
_TRUNK_H = np.array([866, 900, 960, 1000, 1060, 1100, 1160, 1220, 1300, 1380, 1420, 1450, 1472.0])
_TRUNK_A = np.array([165, 180, 178, 170, 160, 152, 158, 162, 166, 176, 188, 172, 110.0])
_TRUNK_B = np.array([100, 108, 110, 108, 105, 104, 108, 114, 116, 112, 104, 92, 66.0])
_TRUNK_YC = np.array([10, 10, 8, 5, 0, 0, 0, 2, 5, 8, 12, 15, 18.0])

# Vertebral body centre line (AP position), mm, and semi-axes (lateral, AP).
_SPINE_H = np.array([1000, 1040, 1100, 1170, 1300, 1440, 1500, 1590.0])
_SPINE_Y = np.array([40, 38, 42, 52, 60, 48, 30, 22.0])
_SPINE_SA = np.array([25, 25, 24, 21, 18, 16, 14, 13.0])
_SPINE_SB = np.array([18, 18, 17, 16, 14, 12, 10, 10.0])


def trunk_outline(h: np.ndarray, shrink_mm: float = 0.0):
    """Trunk semi-axes and AP centre at heights ``h`` (mm), optionally shrunk."""
    a = np.interp(h, _TRUNK_H, _TRUNK_A) - shrink_mm
    b = np.interp(h, _TRUNK_H, _TRUNK_B) - shrink_mm
    yc = np.interp(h, _TRUNK_H, _TRUNK_YC)
    return a, b, yc


def spine_centre(h):
    """AP centre (mm) and lateral/AP semi-axes (mm) of the vertebral bodies at ``h``."""
    return (np.interp(h, _SPINE_H, _SPINE_Y), np.interp(h, _SPINE_H, _SPINE_SA),
            np.interp(h, _SPINE_H, _SPINE_SB))


def _rot(axis: str, deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


@dataclass
class Anatomy:
    """Result of :func:`build_anatomy`.

    Attributes:
        labels: uint16 label map, shape (nz, ny, nx).
        x_mm, y_mm, h_mm: voxel-centre coordinates along x, y and height H (1-D).
        voxel_mm: isotropic voxel size, mm.
        aux: boolean helper masks used by the CT model (aorta, spinal canal, femoral shaft).
        lesion_centres_mm: lesion centres (x, y, H); for a population patient (``params``
            given) name -> list of ``{"centre_mm_lps", "volume_ml"}`` in real LPS mm.
        origin_xyz_mm: LPS origin of the grid when the coordinates above are reference
            coordinates of a scaled patient (``None``: the canonical patient, origin from
            the coordinates).
        extra_labels: value -> name of the per-lesion labels (and necrotic cores) painted.
    """

    labels: np.ndarray
    x_mm: np.ndarray
    y_mm: np.ndarray
    h_mm: np.ndarray
    voxel_mm: float
    aux: dict[str, np.ndarray]
    lesion_centres_mm: dict
    origin_xyz_mm: tuple[float, float, float] | None = None
    extra_labels: dict = field(default_factory=dict)


class _Canvas:
    """Label array with bounding-box painting of analytic solids."""

    def __init__(self, x, y, h, warp=None):
        self.x, self.y, self.h = x, y, h
        self.lab = np.zeros((h.size, y.size, x.size), dtype=np.uint16)
        self.warp = warp  # (modes array, max amplitude mm) of deformation_field, or None

    def box(self, xlim, ylim, hlim):
        def sl(c, lo, hi):
            return slice(int(np.searchsorted(c, lo, "left")), int(np.searchsorted(c, hi, "right")))
        s = (sl(self.h, *hlim), sl(self.y, *ylim), sl(self.x, *xlim))
        return s, self.x[s[2]][None, None, :], self.y[s[1]][None, :, None], self.h[s[0]][:, None, None]

    def paint(self, s, mask, label, only=None, exclude=None, target=None):
        arr = self.lab if target is None else target
        view = arr[s]
        if view.size == 0:
            return
        m = np.broadcast_to(mask, view.shape)
        if only is not None:
            m = m & np.isin(view, only)
        if exclude is not None:
            m = m & ~np.isin(view, exclude)
        view[m] = label

    # ---- solids -------------------------------------------------------------------
    def ellipsoid(self, c, semi, rot=None, grow=0.0, warp=False):
        """(slice, mask) of an ellipsoid centre ``c`` (x, y, H), semi-axes, rotation.

        With ``warp`` and a canvas deformation, the ellipsoid is deformed by it: a point ``p``
        is inside when ``p + d(p)`` is inside the undeformed solid (:func:`deformation_field`).
        """
        semi = np.asarray(semi, float) + grow
        r = float(np.max(semi)) + 1.0
        if warp and self.warp is not None:
            r += self.warp[1]
        s, X, Y, H = self.box((c[0] - r, c[0] + r), (c[1] - r, c[1] + r), (c[2] - r, c[2] + r))
        if warp and self.warp is not None:
            d = deformation_field(self.warp[0], X, Y, H)
            X, Y, H = X + d[0], Y + d[1], H + d[2]
        dx, dy, dh = X - c[0], Y - c[1], H - c[2]
        if rot is not None:  # body-frame coordinates q = R^T p
            q = [rot[0, i] * dx + rot[1, i] * dy + rot[2, i] * dh for i in range(3)]
        else:
            q = [dx, dy, dh]
        return s, (q[0] / semi[0]) ** 2 + (q[1] / semi[1]) ** 2 + (q[2] / semi[2]) ** 2 <= 1.0

    def capsule(self, p0, p1, radius):
        """(slice, mask) of the points within ``radius`` of the segment p0-p1."""
        p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
        lo, hi = np.minimum(p0, p1) - radius - 1, np.maximum(p0, p1) + radius + 1
        s, X, Y, H = self.box((lo[0], hi[0]), (lo[1], hi[1]), (lo[2], hi[2]))
        d = p1 - p0
        t = ((X - p0[0]) * d[0] + (Y - p0[1]) * d[1] + (H - p0[2]) * d[2]) / float(d @ d)
        t = np.clip(t, 0.0, 1.0)
        return s, ((X - p0[0] - t * d[0]) ** 2 + (Y - p0[1] - t * d[1]) ** 2
                   + (H - p0[2] - t * d[2]) ** 2) <= radius ** 2


def deformation_field(modes, X, Y, H):
    """Smooth displacement ``d(p) = sum_k a_k u_k sin(w_k . p + phi_k)``, reference mm.

    Each mode is a plane transverse wave (``u_k`` perpendicular to ``w_k``), so the field is
    divergence-free: it bends and shifts organs without changing their volumes (to first
    order). The population keeps ``sum_k a_k |w_k| < 1``, so ``p -> p + d(p)`` is one-to-one:
    painting every organ through the same map keeps organs apart and in their order.

    Args:
        modes: array (K, 8) of ``(a_mm, ux, uy, uz, wx, wy, wz, phase)`` (``w`` in rad/mm).
        X, Y, H: broadcastable coordinate arrays, mm.

    Returns:
        ``(dX, dY, dH)`` arrays of the broadcast shape, mm.
    """
    shape = np.broadcast(X, Y, H).shape
    out = [np.zeros(shape), np.zeros(shape), np.zeros(shape)]
    for a, ux, uy, uz, wx, wy, wz, ph in np.asarray(modes, float):
        w = a * np.sin(wx * X + wy * Y + wz * H + ph)
        out[0] += ux * w
        out[1] += uy * w
        out[2] += uz * w
    return out


#: The rib ring lies this far inside the body outline, mm.
_RIB_IN_MM = 30.0


@dataclass(frozen=True)
class LesionSpec:
    """One lesion of a population patient.

    Attributes:
        name: lesion label name (``lesion_liver``, ``lesion_bone``, ``lesion_lymph_node``,
            ``lesion_pancreas``).
        volume_ml: volume of the sphere in the patient (real mm), mL.
        u: three numbers in [0, 1) that choose the place (host voxel or position along the
            lesion's site), drawn by the caller.
        necrotic_fraction: radius of the necrotic core (no uptake, its own label) as a
            fraction of the lesion's radius; 0 for none.
    """

    name: str
    volume_ml: float
    u: tuple[float, float, float]
    necrotic_fraction: float = 0.0


def lesion_labels(lesions) -> list[tuple[int, str, int | None, str | None]]:
    """Label values and names of a population patient's lesions, in paint order.

    Lesion ``i`` (from 0) of kind ``lesion_K`` gets the value ``LESION_LABEL_FIRST + i`` and the
    name ``lesion_K_j`` (``j`` counts the lesions of that kind from 1); a necrotic core gets
    ``value + NECROSIS_LABEL_OFFSET`` and ``lesion_K_j_necrosis``.

    Returns:
        ``[(value, name, core value or None, core name or None), ...]``.
    """
    out, seen = [], {}
    for i, les in enumerate(lesions or ()):
        seen[les.name] = seen.get(les.name, 0) + 1
        val, name = LESION_LABEL_FIRST + i, f"{les.name}_{seen[les.name]}"
        core = (val + NECROSIS_LABEL_OFFSET, f"{name}_necrosis") if les.necrotic_fraction > 0 else (None, None)
        out.append((val, name, *core))
    return out


def lesion_kind(name: str) -> str | None:
    """The lesion kind (``lesion_liver`` ...) of a per-lesion label name, ``"necrosis"`` for a
    necrotic core, ``None`` for another name."""
    m = re.fullmatch(r"(lesion_[a-z_]+?)_\d+(_necrosis)?", name)
    if m is None:
        return None
    return "necrosis" if m.group(2) else m.group(1)


@dataclass(frozen=True)
class AnatomyParams:
    """Deterministic anatomical parameters of one patient; the defaults are the canonical patient.

    The patient is the canonical (reference-male) anatomy evaluated at scaled coordinates:
    a real point ``(x, y, z)`` (LPS, vertex at z = 0) is painted as the reference point
    ``(x / width_scale, y / width_scale, VERTEX_H_MM + z / height_scale)``, so that the
    skeleton and organs follow the patient's height and frame. The field of view is
    ``FOV_LENGTH_MM * height_scale`` long (same anatomical coverage for everyone) and at
    least ``FOV_WIDTH_MM`` wide.

    Attributes:
        sex: ``"M"`` or ``"F"`` (only used when ``sex_organs``).
        height_scale: patient height / 1.76 m.
        width_scale: lateral and antero-posterior scale of the lean body (frame).
        fat_extra_mm: subcutaneous fat thickness added to the canonical 15 mm (negative thins
            it; at least -9 mm), real mm.
        organ_volume_factor: organ name -> factor on its volume in reference coordinates
            (names: lung_left, lung_right, heart, liver, stomach, spleen, kidney_left,
            kidney_right, bladder, brain, breast, uterus, ovaries, prostate, testes).
        organ_shift_mm: organ name -> (dx, dy, dH) shift of its centre, reference mm.
        sex_organs: paint breasts, uterus and ovaries (F) or prostate and testes (M).
        lesions: ``None`` for the canonical four lesions; else the list to paint, each with its
            own label (:func:`lesion_labels`).
        arms: ``None`` (no arms: the canonical patient), ``"down"`` (along the trunk, in the
            trunk's field of view, the usual CT position) or ``"up"`` (raised beside and above the
            head, out of the trunk's field, the usual PET/CT and SPECT/CT position).
        deformation: modes of a smooth displacement field applied to the organ shapes
            (:func:`deformation_field`), each ``(amplitude_mm, ux, uy, uz, kx, ky, kz, phase)``
            in reference mm; empty for none.
        pelvis_width: lateral scale of the bony pelvis, hip joints and proximal femora about
            the midline (1 for the male model; the female pelvis is wider).
        extra_organs: paint the organs of :data:`ORGAN_LABELS` (pancreas, oesophagus, spinal
            cord, vessels, gall bladder, bowel, thymus, thyroid, salivary glands); their volume
            factors are in ``organ_volume_factor`` under the same names.
    """

    sex: str = "M"
    height_scale: float = 1.0
    width_scale: float = 1.0
    fat_extra_mm: float = 0.0
    organ_volume_factor: dict = field(default_factory=dict)
    organ_shift_mm: dict = field(default_factory=dict)
    sex_organs: bool = False
    lesions: tuple | None = None
    arms: str | None = None
    deformation: tuple = ()
    pelvis_width: float = 1.0
    extra_organs: bool = False

    @property
    def is_canonical(self) -> bool:
        return self == AnatomyParams()


class _Variation:
    """Per-patient anatomical variation drawn from ``rng``; ``None`` is the canonical patient.

    The draws happen in the order the structures are painted, so the same seed always
    gives the same patient. ``params`` adds deterministic per-organ volume factors and
    shifts (identity for the defaults).
    """

    def __init__(self, rng: np.random.Generator | None, params: AnatomyParams | None = None):
        self.rng = rng
        self.params = params or AnatomyParams()

    def organ(self, name: str, c, semi):
        """Centre and semi-axes of organ ``name`` after the parameters' shift and volume factor,
        then the seeded scale of :meth:`scale`."""
        shift = self.params.organ_shift_mm.get(name)
        if shift is not None:
            c = tuple(float(ci) + float(d) for ci, d in zip(c, shift))
        f = self.params.organ_volume_factor.get(name)
        if f is not None and f != 1.0:
            semi = tuple(float(si) * float(f) ** (1.0 / 3.0) for si in semi)
        return c, self.scale(semi)

    def scale(self, semi):
        """Semi-axes scaled for an organ volume factor drawn uniformly in [0.95, 1.05]."""
        if self.rng is None:
            return tuple(semi)
        f = self.rng.uniform(0.95, 1.05) ** (1.0 / 3.0)
        return tuple(float(s) * f for s in semi)

    def jitter(self, c, mm):
        """Point ``c`` moved by up to ``mm`` along each axis."""
        if self.rng is None:
            return tuple(c)
        return tuple(float(ci) + float(d) for ci, d in zip(c, self.rng.uniform(-mm, mm, 3)))


def build_anatomy(voxel_mm: float = 4.0, rng: np.random.Generator | None = None,
                  params: AnatomyParams | None = None) -> Anatomy:
    """Voxelise the reference male, or a patient described by ``params``.

    Args:
        voxel_mm: isotropic voxel size, mm.
        rng: when given (seed != 0), organ volumes are scaled by a factor drawn uniformly
            in [0.95, 1.05] and lesion centres are shifted by a few mm; ``None`` gives the
            canonical patient.
        params: :class:`AnatomyParams` of a population patient; ``None`` (or the defaults)
            gives the canonical geometry bit for bit.

    Returns:
        :class:`Anatomy`.
    """
    if params is not None and not params.is_canonical:
        return _build_scaled(float(voxel_mm), rng, params)
    v = float(voxel_mm)
    nxy = int(round(FOV_WIDTH_MM / v))
    nz = int(round(FOV_LENGTH_MM / v))
    x = (np.arange(nxy) - (nxy - 1) / 2.0) * v
    y = x.copy()
    h = FOV_BOTTOM_H_MM + (np.arange(nz) + 0.5) * v
    cv = _Canvas(x, y, h)
    var = _Variation(rng)
    aux_aorta = np.zeros(cv.lab.shape, bool)
    aux_canal = np.zeros(cv.lab.shape, bool)

    _paint_outline(cv)
    _paint_muscles(cv)
    airway = _airway(cv)
    _paint_thorax(cv, var, aux_aorta)
    _paint_abdomen(cv, var)
    _paint_head(cv, var)
    _paint_spine(cv, aux_canal)
    _paint_ribs_and_shoulders(cv)
    _paint_pelvis(cv)
    _paint_femora(cv)
    centres = _paint_lesions(cv, var)
    for s, m in airway:
        cv.paint(s, m, 0, only=[1, 3])
    shaft = _femoral_canal(cv)
    return Anatomy(cv.lab, x, y, h, v, {"aorta": aux_aorta, "canal": aux_canal, "femoral_canal": shaft},
                   centres)


def _scaled_axes(v: float, p: AnatomyParams):
    """Real voxel-centre coordinates and the reference coordinates painted there, and the origin.

    The field is as wide (y) as the trunk with its fat and breasts need, and along x as wide
    as hanging arms need too (so arms down widen only x).
    """
    sz, sw = float(p.height_scale), float(p.width_scale)
    half_w = (205.0 + max(p.fat_extra_mm, 0.0) / sw + 40.0) * sw  # widest trunk + fat + breasts
    ny = int(round(max(FOV_WIDTH_MM, 2.0 * half_w) / v))
    half_x = half_w
    if p.arms == "down":
        half_x = max(half_w, arm_half_width_mm(max(float(p.fat_extra_mm), -9.0) / sw) * sw)
    nx = int(round(max(FOV_WIDTH_MM, 2.0 * half_x) / v))
    nz = int(round(FOV_LENGTH_MM * sz / v))
    x = (np.arange(nx) - (nx - 1) / 2.0) * v
    y = (np.arange(ny) - (ny - 1) / 2.0) * v
    z = -nz * v + (np.arange(nz) + 0.5) * v  # LPS z of the voxel centres, vertex at 0
    origin = (float(x[0]), float(y[0]), float(z[0]))
    return x / sw, y / sw, VERTEX_H_MM + z / sz, origin


def _build_scaled(v: float, rng, p: AnatomyParams) -> Anatomy:
    """:func:`build_anatomy` for a patient of :class:`AnatomyParams` (see its docstring)."""
    if p.arms not in (None, "down", "up"):
        raise ValueError(f"arms must be None, 'down' or 'up', got {p.arms!r}")
    x, y, h, origin = _scaled_axes(v, p)
    warp = None
    if p.deformation:
        modes = np.asarray(p.deformation, float).reshape(-1, 8)
        warp = (modes, float(np.abs(modes[:, 0]).sum()))
    cv = _Canvas(x, y, h, warp)
    var = _Variation(rng, p)
    aux_aorta = np.zeros(cv.lab.shape, bool)
    aux_canal = np.zeros(cv.lab.shape, bool)
    fat_ref = max(float(p.fat_extra_mm), -9.0) / float(p.width_scale)
    _paint_outline(cv, fat_ref)
    if p.sex_organs and p.sex == "F":
        _paint_breasts(cv, var, fat_ref)
    _paint_muscles(cv)
    airway = _airway(cv)
    _paint_thorax(cv, var, aux_aorta)
    _paint_abdomen(cv, var)
    _paint_head(cv, var)
    _paint_spine(cv, aux_canal)
    _paint_ribs_and_shoulders(cv)
    xs = float(p.pelvis_width)
    _paint_pelvis(cv, xs)
    _paint_femora(cv, xs)
    if p.arms is not None:
        _paint_arms(cv, p.arms, fat_ref)
    if p.sex_organs:
        _paint_sex_organs(cv, var, p.sex)
    if p.extra_organs:
        for s_, m_ in airway:
            cv.paint(s_, m_, 0, only=[1, 3])
        _paint_extra_organs(cv, var, aux_aorta)
    extra: dict[int, str] = {}
    if p.lesions is None:
        centres = _paint_lesions(cv, var)
    else:
        centres, extra = _paint_lesion_list(cv, p)
    for s, m in airway:
        cv.paint(s, m, 0, only=[1, 3])
    shaft = _femoral_canal(cv, xs)
    return Anatomy(cv.lab, x, y, h, v, {"aorta": aux_aorta, "canal": aux_canal, "femoral_canal": shaft},
                   centres, origin, extra)


# ----------------------------------------------------------------------------- outline
_HEAD_C, _HEAD_SEMI = (0.0, 0.0, 1660.0), (80.0, 100.0, 102.0)


def _trunk_mask(cv: _Canvas, shrink, hlim=(866, 1472)):
    pad = max(0.0, -float(shrink))
    s, X, Y, H = cv.box((-200 - pad, 200 + pad), (-130 - pad, 140 + pad), hlim)
    a, b, yc = trunk_outline(H, shrink)
    return s, (X / a) ** 2 + ((Y - yc) / b) ** 2 <= 1.0


def _thigh_masks(cv: _Canvas, shrink):
    out = []
    for side in (-1, 1):
        pad = max(0.0, -float(shrink))
        s, X, Y, H = cv.box((-190 - pad, 190 + pad), (-100 - pad, 110 + pad), (FOV_BOTTOM_H_MM - 10 - pad, 905))
        f = (H - FOV_BOTTOM_H_MM) / (905 - FOV_BOTTOM_H_MM)
        a, b, xc = 68 + 17 * f - shrink, 74 + 14 * f - shrink, side * (88 + 6 * f)
        out.append((s, ((X - xc) / a) ** 2 + ((Y - 6) / b) ** 2 <= 1.0))
    return out


def _neck_mask(cv: _Canvas, shrink):
    pad = max(0.0, -float(shrink))
    s, X, Y, H = cv.box((-70 - pad, 70 + pad), (-60 - pad, 80 + pad), (1440, 1600))
    return s, (X / (58 - shrink)) ** 2 + ((Y - 12) / (62 - shrink)) ** 2 <= 1.0


def _paint_outline(cv: _Canvas, fat_extra_mm: float = 0.0) -> None:
    """Trunk, thighs, neck and head: skin/fat, the muscle layer under it, soft tissue inside.

    ``fat_extra_mm`` (reference mm) grows the outer outline of trunk and thighs (the neck by
    half of it) over the canonical 15 mm of subcutaneous fat; 0 is the canonical patient.
    """
    cv.paint(*_trunk_mask(cv, -fat_extra_mm if fat_extra_mm else 0.0), 2)
    for s, m in _thigh_masks(cv, -fat_extra_mm if fat_extra_mm else 0.0):
        cv.paint(s, m, 2)
    cv.paint(*_neck_mask(cv, -0.5 * fat_extra_mm if fat_extra_mm else 0.0), 2)
    cv.paint(*cv.ellipsoid(_HEAD_C, _HEAD_SEMI), 2)
    # muscle layer under the fat, then remaining soft tissue inside it
    cv.paint(*_trunk_mask(cv, 15.0, (900, 1462)), 3)
    cv.paint(*_trunk_mask(cv, 27.0, (900, 1450)), 1)
    s, m = _trunk_mask(cv, 15.0, (866, 900))
    cv.paint(s, m, 1)
    for s, m in _thigh_masks(cv, 11.0):
        cv.paint(s, m, 3)
    cv.paint(*_neck_mask(cv, 7.0), 3)
    cv.paint(*cv.ellipsoid(_HEAD_C, _HEAD_SEMI, grow=-5.0), 1)


def _paint_muscles(cv: _Canvas) -> None:
    """Shoulders (deltoid / trapezius region), paraspinal muscles, psoas, gluteal muscles."""
    s, X, Y, H = cv.box((-200, 200), (-130, 140), (1360, 1472))
    cv.paint(s, np.abs(X) > 118, 3, only=[1])
    for side in (-1, 1):
        s, X, Y, H = cv.box((-100, 100), (-50, 130), (930, 1445))
        ys, _, sb = spine_centre(H)
        cv.paint(s, ((X - side * 38) / 27) ** 2 + ((Y - ys - sb - 30) / 22) ** 2 <= 1, 3, only=[1, 2])
        s, X, Y, H = cv.box((-110, 110), (-60, 110), (925, 1165))
        ys, _, _ = spine_centre(H)
        r = 8 + (1165 - H) * 0.085
        cv.paint(s, (X - side * (34 + (1165 - H) * 0.12)) ** 2 + (Y - ys) ** 2 <= r ** 2, 3, only=[1])
        s, X, Y, H = cv.box((-190, 190), (-20, 130), (866, 1000))
        cv.paint(s, ((X - side * 88) / 72) ** 2 + ((Y - 68) / 42) ** 2 <= 1, 3, only=[1])


def _airway(cv: _Canvas):
    """(slice, mask) of the trachea and main bronchi (cleared to air, label 0, at the end)."""
    return [cv.capsule((0, -12, 1575), (0, 8, 1335), 9.0),
            cv.capsule((0, 8, 1335), (-38, 18, 1300), 6.0),
            cv.capsule((0, 8, 1335), (36, 20, 1305), 6.0)]


# ----------------------------------------------------------------------------- organs
def _in_thorax(X, Y, H, extra=0.0):
    """Inside the rib cage (the rib ring shrunk by 7 mm, and ``extra`` mm more)."""
    a, b, yc = trunk_outline(H, _RIB_IN_MM + 7 + extra)
    return (X / a) ** 2 + ((Y - yc) / b) ** 2 <= 1.0


def _paint_thorax(cv: _Canvas, var: _Variation, aux_aorta: np.ndarray) -> None:
    """Lungs, heart and aorta (blood, label body; its voxels also go to ``aux_aorta``)."""
    lung_semi = {4: var.organ("lung_left", (0, 0, 0), (62.0, 92.0, 150.0))[1],
                 5: var.organ("lung_right", (0, 0, 0), (66.0, 94.0, 150.0))[1]}
    for lab, xc in ((4, 82.0), (5, -82.0)):
        s, m = cv.ellipsoid((xc, 14.0, 1335.0), lung_semi[lab], warp=True)
        X, Y, H = _coords(cv, s)
        m = m & _in_thorax(X, Y, H) & (H >= 1185 + (12 if lab == 4 else 0) - 0.25 * (Y - 14))
        cv.paint(s, m, lab, only=[1])
    cv.paint(*cv.ellipsoid(*var.organ("heart", (22.0, -24.0, 1250.0), (60.0, 49.0, 64.0)),
                           rot=_rot("z", -35) @ _rot("y", 25), warp=True), 6, only=[1, 4, 5])
    # aorta: ascending, arch, descending (blood; label body)
    aorta = [cv.capsule((-8, -22, 1290), (-12, -18, 1378), 14.0),
             cv.capsule((-12, -18, 1378), (16, 40, 1372), 12.5)]
    for s, m in aorta:
        aux_aorta[s] |= m & np.isin(cv.lab[s], [1, 4, 5])
        cv.paint(s, m, 1, only=[1, 4, 5])
    s, X, Y, H = cv.box((-40, 60), (-80, 120), (990, 1372))
    ys, _, sb = spine_centre(H)
    xc = 6 + (H - 990) * 0.03
    m = (X - xc) ** 2 + (Y - (ys - sb - 14)) ** 2 <= 12.0 ** 2
    aux_aorta[s] |= m & np.isin(cv.lab[s], [1, 3, 4, 5])
    cv.paint(s, m, 1, only=[1, 3, 4, 5])


def _paint_abdomen(cv: _Canvas, var: _Variation) -> None:
    """Liver, stomach, spleen, kidneys and bladder."""
    s, m = cv.ellipsoid(*var.organ("liver", (-52.0, 2.0, 1125.0), (101.0, 76.0, 74.0)), rot=_rot("y", -18), warp=True)
    X, Y, H = _coords(cv, s)
    m = m & (X < 55 - 0.5 * (Y + 20)) & _in_thorax(X, Y, H, -14)
    cv.paint(s, m, 7, only=[1, 5])
    cv.paint(*cv.ellipsoid(*var.organ("stomach", (62.0, -30.0, 1138.0), (40.0, 35.0, 64.0)), rot=_rot("y", 35), warp=True), 12,
             only=[1, 4, 7])
    cv.paint(*cv.ellipsoid(*var.organ("spleen", (86.0, 42.0, 1140.0), (26.0, 54.0, 24.0)),
                           rot=_rot("z", 35) @ _rot("x", 10), warp=True), 8, only=[1, 3, 4, 7, 12])
    kid_c, kid_semi = var.organ("kidney_left", (76.0, 52.0, 1082.0), (28.0, 23.0, 55.0))
    cv.paint(*cv.ellipsoid(kid_c, kid_semi, rot=_rot("y", -14), warp=True), 9, only=[1, 3, 7, 8])
    kid_c, kid_semi = var.organ("kidney_right", (-74.0, 54.0, 1064.0), (28.0, 23.0, 55.0))
    cv.paint(*cv.ellipsoid(kid_c, kid_semi, rot=_rot("y", 14), warp=True), 10, only=[1, 3, 7])
    cv.paint(*cv.ellipsoid(*var.organ("bladder", (0.0, -32.0, 936.0), (45.0, 36.5, 35.5)), warp=True), 11, only=[1, 3])


def _paint_head(cv: _Canvas, var: _Variation) -> None:
    """Skull, CSF / meninges (body) and brain."""
    brain_c, brain_semi = var.organ("brain", (0.0, 4.0, 1680.0), (63.0, 84.0, 64.0))
    cv.paint(*cv.ellipsoid(brain_c, brain_semi, grow=9.0), 14, only=[1, 2])
    cv.paint(*cv.ellipsoid(brain_c, brain_semi, grow=2.0), 1, only=[14])  # CSF / meninges
    cv.paint(*cv.ellipsoid(brain_c, brain_semi), 13, only=[1])


# ----------------------------------------------------------------------------- skeleton
#: Vertebral levels (top, bottom) mm above the soles: C1-C7, T1-T12, L1-L5.
_VERTEBRAE = ([(1590 - i * 20.0, 1590 - (i + 1) * 20.0) for i in range(7)]
              + [(1450 - i * 23.3, 1450 - (i + 1) * 23.3) for i in range(12)]
              + [(1170 - i * 28.0, 1170 - (i + 1) * 28.0) for i in range(5)])
_BONE_LIKE = [0, 1, 2, 3, 4, 5, 6, 7, 12]


def _paint_spine(cv: _Canvas, aux_canal: np.ndarray) -> None:
    """Vertebrae: bodies (cortical shell, marrow inside), neural arches and processes."""
    for top, bot in _VERTEBRAE:
        _paint_vertebra(cv, top, bot, aux_canal)


def _paint_vertebra(cv: _Canvas, top: float, bot: float, aux_canal: np.ndarray) -> None:
    bone_like = _BONE_LIKE
    hgt = top - bot
    hb0, hb1 = bot + 0.18 * hgt, top  # lower 18 % is the intervertebral disc
    hm = 0.5 * (hb0 + hb1)
    ys, sa, sb = (float(v_) for v_ in spine_centre(hm))
    s, X, Y, H = cv.box((-sa - 2, sa + 2), (ys - sb - 2, ys + sb + 2), (hb0, hb1))
    cv.paint(s, (X / sa) ** 2 + ((Y - ys) / sb) ** 2 <= 1, 15, only=bone_like)
    s, X, Y, H = cv.box((-sa, sa), (ys - sb, ys + sb), (hb0 + 2.5, hb1 - 2.5))
    cv.paint(s, (X / (sa - 3)) ** 2 + ((Y - ys) / (sb - 3)) ** 2 <= 1, 19, only=[15])
    # neural arch, spinal canal, spinous and transverse processes
    rc = 7.0 if top > 1450 else 8.5
    yc_c = ys + sb + rc
    s, X, Y, H = cv.box((-rc - 8, rc + 8), (yc_c - rc - 8, yc_c + rc + 8), (bot + 0.1 * hgt, top - 0.1 * hgt))
    r2 = X ** 2 + (Y - yc_c) ** 2
    cv.paint(s, (r2 <= (rc + 6) ** 2) & (r2 > rc ** 2), 15, only=bone_like)
    aux_canal[s] |= r2 <= rc ** 2
    cv.paint(s, r2 <= rc ** 2, 1, only=bone_like)
    ln = 28.0 if top < 1170 else 22.0
    s, X, Y, H = cv.box((-4, 4), (yc_c + rc, yc_c + rc + ln), (bot + 0.25 * hgt, top - 0.15 * hgt))
    cv.paint(s, np.ones((1, 1, 1), bool), 15, only=bone_like)
    tl = 35.0 if top < 1450 else 28.0
    s, X, Y, H = cv.box((-tl, tl), (yc_c - 5, yc_c + 4), (hm - 4, hm + 4))
    cv.paint(s, np.ones((1, 1, 1), bool), 15, only=bone_like)


def _paint_ribs_and_shoulders(cv: _Canvas) -> None:
    """Twelve pairs of ribs, the sternum, clavicles and scapulae."""
    rib_in = _RIB_IN_MM
    s, X, Y, H = cv.box((-200, 200), (-130, 140), (1110, 1462))
    a, b, yc = trunk_outline(H, rib_in)
    rho = np.sqrt((X / a) ** 2 + ((Y - yc) / b) ** 2)
    dist = (rho - 1.0) * np.sqrt(a * b)
    theta = np.degrees(np.arctan2(np.abs(X) / a, (Y - yc) / b))  # 0 posterior, 180 anterior
    ribs = np.zeros(np.broadcast(X, Y, H).shape, bool)
    for i in range(12):
        hp = 1442.0 - i * 23.5
        drop = 35.0 + 4.0 * i
        hc = hp - drop * (1 - np.cos(np.radians(theta))) / 2
        tmax = 165.0 if i < 7 else (140.0 if i < 10 else 95.0)
        ribs |= (np.abs(H - hc) <= 6.0) & (theta >= 18) & (theta <= tmax)
    ribs &= np.abs(dist) <= 4.5
    cv.paint(s, ribs, 30, only=[1, 2, 3, 4, 5, 7, 8])
    s, X, Y, H = cv.box((-16, 16), (-140, 0), (1265, 1432))
    a, b, yc = trunk_outline(H, rib_in - 2)
    cv.paint(s, np.abs(Y - (yc - b)) <= 6.0, 30, only=[1, 2, 3, 6])
    for side in (-1, 1):
        cv.paint(*cv.capsule((side * 18, -80, 1436), (side * 150, -28, 1462), 7.0), 31, only=[1, 2, 3])
        s, X, Y, H = cv.box((-170, 170), (-20, 140), (1300, 1450))
        a, b, yc = trunk_outline(H, rib_in - 14)
        rho = np.sqrt((X / a) ** 2 + ((Y - yc) / b) ** 2)
        th = np.degrees(np.arctan2(side * X / a, (Y - yc) / b))
        scap = (np.abs((rho - 1.0) * np.sqrt(a * b)) <= 4.0) & (th >= 28) & (th <= 62 + 0.15 * (H - 1300))
        cv.paint(s, scap, 31, only=[1, 3])


def _pelvis_shell(cv: _Canvas, s, dist, outer=6.5, inner=3.0, sel=None) -> None:
    """Cortical shell (16) within ``outer`` mm of a surface, trabecular core (19) within ``inner``."""
    sel = np.ones_like(dist, bool) if sel is None else sel
    cv.paint(s, (np.abs(dist) <= outer) & sel, 16, only=[1, 3])
    cv.paint(s, (np.abs(dist) <= inner) & sel, 19, only=[16])


def _paint_pelvis(cv: _Canvas, xs: float = 1.0) -> None:
    """Ilia, pubis / ischia, sacrum and acetabula (label 16 cortical, 19 trabecular interior).

    ``xs`` scales the ilia, pubis, ischia and acetabula laterally about the midline (1: the
    male model).
    """
    s, X, Y, H = cv.box((-160 * xs, 160 * xs), (-80, 120), (930, 1088))
    if xs != 1.0:
        X = X / xs
    ai, bi, yi = 80 + (H - 930) * 0.33, 68 + (H - 930) * 0.12, 22.0
    rho = np.sqrt((X / ai) ** 2 + ((Y - yi) / bi) ** 2)
    phi = np.degrees(np.arctan2(Y - yi, np.abs(X)))
    tmin = -8 - (H - 930) * 0.2
    _pelvis_shell(cv, s, (rho - 1) * np.sqrt(ai * bi), sel=(phi >= tmin) & (phi <= 62) & (np.abs(X) > 38))
    s, X, Y, H = cv.box((-150 * xs, 150 * xs), (-110, 60), (880, 935))
    if xs != 1.0:
        X = X / xs
    rho = np.sqrt((X / 86) ** 2 + ((Y + 2) / 76) ** 2)
    phi = np.degrees(np.arctan2(Y + 2, np.abs(X)))
    _pelvis_shell(cv, s, (rho - 1) * 80.0, outer=6.0, inner=2.5, sel=(phi <= -15) & (phi >= -92))
    sac_rot = _rot("x", -28)
    s, m = cv.ellipsoid((0.0, 68.0, 985.0), (46.0, 20.0, 62.0), rot=sac_rot)
    cv.paint(s, m, 16, only=[1, 3, 15])
    cv.paint(*cv.ellipsoid((0.0, 68.0, 985.0), (40.0, 14.0, 56.0), rot=sac_rot), 19, only=[16])
    for side in (-1, 1):
        cv.paint(*cv.ellipsoid((side * 58.0 * xs, 42.0, 884.0), (16.0, 26.0, 30.0)), 16, only=[1, 3])
        cv.paint(*cv.ellipsoid((side * 58.0 * xs, 42.0, 884.0), (11.0, 20.0, 25.0)), 19, only=[16])
        xa = 95.0 * xs
        s, m_out = cv.ellipsoid((side * xa, 0.0, 915.0), (34.0, 34.0, 34.0))
        X, Y, H = _coords(cv, s)
        r2 = (X - side * xa) ** 2 + Y ** 2 + (H - 915.0) ** 2
        cv.paint(s, m_out & (r2 > 27 ** 2) & ((H > 908) | (side * X < xa)), 16, only=[1, 3])


def _paint_femora(cv: _Canvas, xs: float = 1.0) -> None:
    """Proximal femora: head, neck, trochanter, shaft (labels 17 left = +x, 18 right); ``xs``
    moves them laterally with the hip joints (:func:`_paint_pelvis`)."""
    for side, lab in ((1, 17), (-1, 18)):
        head = (side * 95.0 * xs, 0.0, 915.0)
        cv.paint(*cv.ellipsoid(head, (24.0, 24.0, 24.0)), lab, only=[1, 2, 3, 16])
        cv.paint(*cv.capsule(head, (side * 128.0 * xs, 6.0, 888.0), 15.0), lab, only=[1, 2, 3, 16])
        cv.paint(*cv.ellipsoid((side * 136.0 * xs, 10.0, 888.0), (18.0, 22.0, 26.0)), lab, only=[1, 2, 3])
        cv.paint(*cv.capsule((side * 126.0 * xs, 10.0, 880.0), (side * 108.0 * xs, 4.0, FOV_BOTTOM_H_MM - 30), 14.0),
                 lab, only=[1, 2, 3])


def _femoral_canal(cv: _Canvas, xs: float = 1.0) -> np.ndarray:
    """Femoral shaft medullary canal (yellow marrow) for the CT model, boolean mask."""
    shaft = np.zeros(cv.lab.shape, bool)
    for side in (-1, 1):
        s, m = cv.capsule((side * 126.0 * xs, 10.0, 870.0), (side * 108.0 * xs, 4.0, FOV_BOTTOM_H_MM - 30), 8.0)
        shaft[s] |= m
    shaft &= np.isin(cv.lab, [17, 18])
    return shaft


# ----------------------------------------------------------------------------- lesions
def _sphere_radius_mm(ml: float) -> float:
    return (3.0 * ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)


def _paint_lesions(cv: _Canvas, var: _Variation) -> dict[str, tuple[float, float, float]]:
    """Liver, pancreas, lymph-node and vertebral (L2) lesions; returns their centres (x, y, H)."""
    r_of = _sphere_radius_mm
    centres = {
        "lesion_liver": var.jitter((-78.0, -12.0, 1112.0), 6.0),
        "lesion_pancreas": var.jitter((34.0, 14.0, 1100.0), 4.0),
        "lesion_lymph_node": var.jitter((-24.0, 10.0, 1045.0), 4.0),
    }
    rng = var.rng
    hb = 1170 - 1.5 * 28.0 if rng is None else 1170 - 1.5 * 28.0 + float(rng.uniform(-4, 4))
    centres["lesion_bone"] = (0.0, float(spine_centre(hb)[0]), float(hb))
    soft = [1, 3, 7, 8, 12]
    cv.paint(*cv.ellipsoid(centres["lesion_liver"], (r_of(40),) * 3), 20, only=[7])
    cv.paint(*cv.ellipsoid(centres["lesion_pancreas"], (r_of(20),) * 3), 23, only=soft)
    cv.paint(*cv.ellipsoid(centres["lesion_lymph_node"], (r_of(7),) * 3), 22, only=soft)
    cv.paint(*cv.ellipsoid(centres["lesion_bone"], (r_of(3),) * 3), 21, only=[15, 19])
    return centres


# ----------------------------------------------------------------------------- sex organs
def _paint_breasts(cv: _Canvas, var: _Variation, fat_ref_mm: float) -> None:
    """Breasts (label 24): ellipsoids on the anterior chest over the fat layer, at about T4-T6."""
    for side, name in ((1, "breast"), (-1, "breast")):
        front = -96.7 - max(fat_ref_mm, 0.0)
        c, semi = var.organ(name, (side * 80.0, front - 4.0, 1280.0), (47.0, 36.0, 44.0))
        cv.paint(*cv.ellipsoid(c, semi), 24, only=[0, 2])


def _paint_sex_organs(cv: _Canvas, var: _Variation, sex: str) -> None:
    """Uterus (25) and ovaries (26) behind and above the bladder (F); prostate (27) under the
    bladder and testes (28) in a scrotum of skin/fat between the thighs (M)."""
    if sex == "F":
        cv.paint(*cv.ellipsoid(*var.organ("uterus", (0.0, 22.0, 975.0), (28.0, 20.0, 34.0)), warp=True), 25, only=[1])
        for side in (-1, 1):
            cv.paint(*cv.ellipsoid(*var.organ("ovaries", (side * 48.0, 25.0, 985.0), (14.0, 9.0, 10.5)), warp=True), 26,
                     only=[1, 3])
        return
    cv.paint(*cv.ellipsoid(*var.organ("prostate", (0.0, -20.0, 884.0), (19.0, 14.0, 15.0)), warp=True), 27, only=[1, 3])
    cv.paint(*cv.ellipsoid((0.0, -88.0, 790.0), (36.0, 22.0, 30.0)), 2, only=[0])
    for side in (-1, 1):
        cv.paint(*cv.ellipsoid(*var.organ("testes", (side * 14.0, -88.0, 790.0), (12.5, 14.5, 22.5))), 28,
                 only=[0, 2])


#: Host labels of the lesions placed at a host voxel: liver parenchyma, red marrow, lungs.
_LESION_HOST = {"lesion_liver": (7,), "lesion_bone": (19,), "lesion_lung": (4, 5)}


def _lesion_centre_ref(cv: _Canvas, les: LesionSpec, r_vox: float) -> tuple[float, float, float]:
    """Reference-coordinate centre of a population lesion, chosen by ``les.u``."""
    u0, u1, u2 = les.u
    if les.name in _LESION_HOST:
        host = np.isin(cv.lab, _LESION_HOST[les.name])
        if les.name != "lesion_bone" and r_vox >= 1.5:
            from scipy import ndimage

            inner = ndimage.binary_erosion(host, iterations=int(0.8 * r_vox))
            host = inner if inner.any() else host
        idx = np.flatnonzero(host)
        k, j, i = np.unravel_index(idx[min(int(u0 * idx.size), idx.size - 1)], host.shape)
        return float(cv.x[i]), float(cv.y[j]), float(cv.h[k])
    if les.name == "lesion_lymph_node":  # para-aortic / common iliac chain
        h = 960.0 + u0 * 290.0
        ys, _, sb = (float(q) for q in spine_centre(h))
        side = 1.0 if u1 >= 0.5 else -1.0
        return 6.0 + (h - 990.0) * 0.03 + side * (16.0 + 24.0 * abs(2 * u1 - 1)), ys - sb - 14.0 + (u2 - 0.5) * 16, h
    return 34.0 + (u0 - 0.5) * 50.0, 14.0 + (u1 - 0.5) * 16.0, 1100.0 + (u2 - 0.5) * 24.0  # pancreas


_LESION_LABEL = {"lesion_liver": 20, "lesion_bone": 21, "lesion_lymph_node": 22, "lesion_pancreas": 23}
#: (Population lesions in soft tissue may also replace the soft organs of :data:`ORGAN_LABELS`
#: around them: a pancreatic lesion the pancreas and portal vein, a node the bowel and pancreas.)
_LESION_ONLY = {"lesion_liver": [7], "lesion_bone": [15, 16, 19], "lesion_lymph_node": [1, 3, 7, 8, 12, 100, 107, 108],
                "lesion_pancreas": [1, 3, 7, 8, 12, 100, 105, 107], "lesion_lung": [4, 5]}
#: Lesion kinds a population patient can have.
LESION_KINDS = tuple(_LESION_ONLY)


def _paint_lesion_list(cv: _Canvas, p: AnatomyParams) -> tuple[dict, dict]:
    """Paint ``p.lesions`` (spheres in real mm), each with its own label and its necrotic core.

    Returns:
        kind -> list of ``{"label", "name", "centre_mm_lps", "volume_ml", "necrotic_fraction"}``,
        and value -> name of the labels painted (cores included).
    """
    v = float(cv.x[1] - cv.x[0]) * float(p.width_scale)
    out: dict[str, list] = {}
    names: dict[int, str] = {}
    for les, (val, name, cval, cname) in zip(p.lesions, lesion_labels(p.lesions)):
        r = _sphere_radius_mm(les.volume_ml)
        c = _lesion_centre_ref(cv, les, r / v)
        semi = (r / p.width_scale, r / p.width_scale, r / p.height_scale)
        cv.paint(*cv.ellipsoid(c, semi), val, only=_LESION_ONLY[les.name])
        names[val] = name
        if cval is not None:
            f = float(les.necrotic_fraction)
            cv.paint(*cv.ellipsoid(c, tuple(q * f for q in semi)), cval, only=[val])
            names[cval] = cname
        lps = (c[0] * p.width_scale, c[1] * p.width_scale, (c[2] - VERTEX_H_MM) * p.height_scale)
        out.setdefault(les.name, []).append({"label": val, "name": name, "centre_mm_lps": [round(q, 2) for q in lps],
                                             "volume_ml": round(les.volume_ml, 3),
                                             "necrotic_fraction": round(float(les.necrotic_fraction), 3)})
    return out, names


# ----------------------------------------------------------------------------- extra organs
def _tube_radius(var: _Variation, name: str, r: float) -> float:
    """Radius of tube organ ``name`` after its volume factor (the cross-section scales, the
    length follows the anatomy)."""
    f = var.params.organ_volume_factor.get(name)
    return float(r) * math.sqrt(float(f)) if f else float(r)


def _paint_path(cv: _Canvas, pts, r: float, label: int, only) -> None:
    """A tube of radius ``r`` along the polyline ``pts`` (x, y, H), painted on ``only``."""
    for p0, p1 in zip(pts[:-1], pts[1:]):
        cv.paint(*cv.capsule(p0, p1, r), label, only=only)


def _cord_centreline() -> list[tuple[float, float, float]]:
    """Centre of the spinal canal (:func:`_paint_vertebra`) from C2 down to L1/L2, mm."""
    pts = []
    for h in np.arange(1585.0, 1129.0, -15.0):
        ys, _, sb = (float(q) for q in spine_centre(h))
        pts.append((0.0, ys + sb + (7.0 if h > 1450 else 8.5), float(h)))
    return pts


def _paint_vessels(cv: _Canvas, var: _Variation, aux_aorta: np.ndarray) -> None:
    """Aorta (103: the blood of the aorta of :func:`_paint_thorax` still soft tissue), inferior
    vena cava (104, right of the aorta, from the bifurcation level to the right atrium) and portal
    vein (105, from behind the pancreatic neck to the liver hilum); blood-filled tubes."""
    cv.lab[aux_aorta & (cv.lab == 1)] = 103
    s, X, Y, H = cv.box((-60, 20), (-40, 100), (985, 1235))
    ys, _, sb = spine_centre(H)
    yc = ys - sb - 6.0 - np.clip(H - 1120.0, 0.0, None) * 0.25
    r = _tube_radius(var, "inferior_vena_cava", 10.0)
    cv.paint(s, (X + 17.0 + 0.02 * (H - 990.0)) ** 2 + (Y - yc) ** 2 <= r * r, 104, only=[1, 3])
    _paint_path(cv, [(12.0, -8.0, 1058.0), (-14.0, -10.0, 1064.0), (-40.0, -6.0, 1080.0)],
                _tube_radius(var, "portal_vein", 7.0), 105, [1])


def _paint_gut(cv: _Canvas, var: _Variation) -> None:
    """Gall bladder (106) under the liver, colon (108: caecum, ascending, transverse with its
    sag, descending), rectosigmoid (109) in front of the sacrum, then the small intestine (107)
    filling the remaining central abdomen; soft tissue only."""
    cv.paint(*cv.ellipsoid(*var.organ("gall_bladder", (-66.0, -42.0, 1050.0), (21.0, 21.0, 40.0)),
                           rot=_rot("x", 20), warp=True), 106, only=[1])
    r = _tube_radius(var, "colon", 20.0)
    _paint_path(cv, [(-88.0, 0.0, 965.0), (-92.0, 0.0, 1040.0), (-80.0, -35.0, 1050.0), (-35.0, -52.0, 1012.0),
                     (35.0, -52.0, 1018.0), (85.0, -35.0, 1068.0), (94.0, 12.0, 1060.0), (84.0, 14.0, 995.0)],
                r, 108, [1])
    _paint_path(cv, [(84.0, 14.0, 995.0), (62.0, 4.0, 985.0), (35.0, 22.0, 975.0), (16.0, 36.0, 950.0),
                     (0.0, 30.0, 925.0), (0.0, 24.0, 896.0)], _tube_radius(var, "rectum", 17.0), 109, [1])
    cv.paint(*cv.ellipsoid(*var.organ("small_intestine", (0.0, -22.0, 1000.0), (88.0, 56.0, 62.0)), warp=True),
             107, only=[1])


def _paint_extra_organs(cv: _Canvas, var: _Variation, aux_aorta: np.ndarray) -> None:
    """The organs of :data:`ORGAN_LABELS`, after every other organ and on soft tissue (1) or
    muscle (3) only, so that none of the other organs changes; the airway is already cleared.

    Shapes and places (reference adult male, mm): pancreas head in front of the aorta at L1-L2
    and body/tail rising to the splenic hilum (the canonical liver reaches the midline, so the
    head lies below it); oesophagus from C6 behind the trachea, in front of the spine and right
    of the descending aorta, to the cardia; spinal cord (radius ~4.5 mm) along the centre of
    the spinal canal down to L1/L2; thymus in the anterior mediastinum above the heart; thyroid
    lobes either side of the trachea at C7-T1; salivary glands as parotids in front of the ears
    and submandibular glands under the jaw.
    """
    _paint_vessels(cv, var, aux_aorta)
    c, semi = var.organ("pancreas", (-4.0, -14.0, 1066.0), (25.0, 16.0, 24.0))
    cv.paint(*cv.ellipsoid(c, semi, warp=True), 100, only=[1])
    _paint_path(cv, [(c[0] + 14.0, c[1] + 6.0, c[2] + 12.0), (45.0, 4.0, 1090.0), (110.0, 18.0, 1114.0)],
                _tube_radius(var, "pancreas", 15.0), 100, [1])
    _paint_path(cv, [(0.0, 6.0, 1565.0), (0.0, 16.0, 1500.0), (-2.0, 22.0, 1400.0), (2.0, 20.0, 1300.0),
                     (10.0, 16.0, 1220.0), (30.0, 0.0, 1180.0), (45.0, -15.0, 1165.0)],
                _tube_radius(var, "oesophagus", 6.0), 101, [1, 3])
    _paint_path(cv, _cord_centreline(), _tube_radius(var, "spinal_cord", 4.6), 102, [1, 3])
    cv.paint(*cv.ellipsoid(*var.organ("thymus", (0.0, -48.0, 1355.0), (18.0, 10.0, 32.0))), 110, only=[1])
    for side in (-1, 1):
        cv.paint(*cv.ellipsoid(*var.organ("thyroid", (side * 18.0, -8.0, 1495.0), (9.0, 11.0, 22.0))), 111,
                 only=[1, 3])
        cv.paint(*cv.ellipsoid(*var.organ("salivary_glands", (side * 40.0, 8.0, 1592.0), (13.0, 20.0, 28.0))), 112,
                 only=[1])
        cv.paint(*cv.ellipsoid(*var.organ("salivary_glands", (side * 24.0, -28.0, 1580.0), (10.0, 12.0, 9.0))), 112,
                 only=[1])
    _paint_gut(cv, var)


# ----------------------------------------------------------------------------- arms
#: Trunk outer half-breadth at the armpits (H = 1380 mm), mm (:data:`_TRUNK_A`).
_ARMPIT_HALF_MM = 176.0
#: Canonical arm radii (muscle and bone, without the fat layer), mm: upper arm 34, forearm
#: 26 (mid-arm circumference ~30 cm and forearm ~26 cm with fat, typical adult male; e.g.
#: NHANES anthropometry, CDC Vital Health Stat 11(252), 2012), and the arm's subcutaneous fat,
#: 8 mm plus 0.4 of the trunk's extra fat (illustrative).
_ARM_R_UP, _ARM_R_FORE, _ARM_FAT_MM = 34.0, 26.0, 8.0


def _arm_fat_mm(fat_ref_mm: float) -> float:
    return max(_ARM_FAT_MM + 0.4 * fat_ref_mm, 3.0)


def arm_half_width_mm(fat_ref_mm: float) -> float:
    """Half-width of a patient with its arms down, reference mm (arms, fat and a 4 mm margin)."""
    return _ARMPIT_HALF_MM + fat_ref_mm + 3.0 + 2.0 * (_ARM_R_UP + _arm_fat_mm(fat_ref_mm)) + 4.0


def _arm_segments(arms: str, side: int, fat_ref_mm: float):
    """(p0, p1, radius without fat, bone radius, two bones) of the upper arm and forearm."""
    fat = _arm_fat_mm(fat_ref_mm)
    if arms == "down":  # hanging straight beside the trunk, 3 mm of air between
        xc = side * (_ARMPIT_HALF_MM + fat_ref_mm + 3.0 + _ARM_R_UP + fat)
        return [((xc, 20.0, 1415.0), (xc, 25.0, 1120.0), _ARM_R_UP, 11.0, False),
                ((xc, 25.0, 1120.0), (xc, 5.0, 870.0), _ARM_R_FORE, 7.0, True)]
    # raised: the upper arm beside the head (head half-breadth 80 mm), the forearm above it
    xe = side * (86.0 + _ARM_R_UP + fat)
    return [((side * 170.0, 20.0, 1445.0), (xe, 15.0, 1745.0), _ARM_R_UP, 11.0, False),
            ((xe, 15.0, 1745.0), (side * 60.0, 15.0, 1960.0), _ARM_R_FORE, 7.0, True)]


def _paint_arms(cv: _Canvas, arms: str, fat_ref_mm: float) -> None:
    """Arms ``"down"`` or ``"up"``: skin/fat (2) over muscle (3) around the humerus, radius and
    ulna (32); the hands of hanging arms as soft tissue. Painted on air only (the fat layer),
    so the trunk stays as it is (its fat under the shoulder becomes deltoid muscle)."""
    fat = _arm_fat_mm(fat_ref_mm)
    for side in (-1, 1):
        segs = _arm_segments(arms, side, fat_ref_mm)
        for p0, p1, r, _, _ in segs:
            cv.paint(*cv.capsule(p0, p1, r + fat), 2, only=[0])
        for p0, p1, r, _, _ in segs:
            cv.paint(*cv.capsule(p0, p1, r), 3, only=[2])
        for p0, p1, _, rb, two in segs:
            a, b = np.asarray(p0, float), np.asarray(p1, float)
            offs = (-12.0, 12.0) if two else (0.0,)
            for o in offs:  # radius and ulna side by side (AP), or the humerus
                d = np.array([0.0, o, 0.0])
                cv.paint(*cv.capsule(a + d, b + d, rb), 32, only=[3])
        if arms == "down":
            hand = (side * (_ARMPIT_HALF_MM + fat_ref_mm + 3.0 + _ARM_R_UP + fat), 0.0, 790.0)
            cv.paint(*cv.ellipsoid(hand, (14.0 + fat, 42.0, 75.0)), 2, only=[0])
            cv.paint(*cv.ellipsoid(hand, (14.0, 40.0 - fat, 72.0 - fat)), 3, only=[2])


def _coords(cv: _Canvas, s):
    return cv.x[s[2]][None, None, :], cv.y[s[1]][None, :, None], cv.h[s[0]][:, None, None]


def label_volumes_ml(labels: np.ndarray, voxel_mm: float, names: dict[int, str] | None = None) -> dict[str, float]:
    """Volume of each named label (``names``, default :data:`LABELS`), mL."""
    names = LABELS if names is None else names
    counts = np.bincount(labels.ravel(), minlength=max(names) + 1)
    vox_ml = voxel_mm ** 3 / 1000.0
    return {name: float(counts[k]) * vox_ml for k, name in names.items()}


def nominal_density_g_cm3(name: str) -> float:
    """Nominal density of a label name, g/cm3 (:data:`NOMINAL_DENSITY_G_CM3`,
    :data:`SEX_ORGAN_DENSITY_G_CM3`, :data:`EXTRA_DENSITY_G_CM3`, :data:`ORGAN_DENSITY_G_CM3`; a
    per-lesion label has the
    density of its kind)."""
    for table in (NOMINAL_DENSITY_G_CM3, SEX_ORGAN_DENSITY_G_CM3, EXTRA_DENSITY_G_CM3, ORGAN_DENSITY_G_CM3):
        if name in table:
            return table[name]
    kind = lesion_kind(name)
    if kind is None:
        raise KeyError(name)
    return nominal_density_g_cm3(kind)


def organ_masses_g(labels: np.ndarray, voxel_mm: float, names: dict[int, str] | None = None) -> dict[str, float]:
    """Mass of each label, g, with :data:`NOMINAL_DENSITY_G_CM3` (and :data:`SEX_ORGAN_DENSITY_G_CM3`,
    :data:`EXTRA_DENSITY_G_CM3`; see :func:`nominal_density_g_cm3`)."""
    dens = {**NOMINAL_DENSITY_G_CM3, **SEX_ORGAN_DENSITY_G_CM3}
    return {n: v * (dens[n] if n in dens else nominal_density_g_cm3(n))
            for n, v in label_volumes_ml(labels, voxel_mm, names).items()}
