"""CT numbers, CT acquisition headers and emission images of the virtual patient.

All functions are pure array functions; randomness comes from a ``numpy.random.Generator``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from persodose.phantoms.anatomy import LABELS

# ----------------------------------------------------------------------------- CT numbers
#: Mean CT numbers, HU, per label (soft tissues: typical unenhanced adult values, e.g.
#: Lamba et al., AJR 2014 and standard radiology tables: fat -100, muscle 45, liver 60,
#: spleen 50, kidney 35, blood 40, brain 35, urine 5; cortical bone 1000-1300, trabecular
#: 250-400; inflated lung about -750). Bone labels get the cortical value at their border
#: and :data:`TRABECULAR_HU` inside.
BASE_HU = {0: -1000.0, 1: 30.0, 2: -100.0, 3: 45.0, 4: -760.0, 5: -760.0, 6: 40.0, 7: 60.0,
           8: 50.0, 9: 35.0, 10: 35.0, 11: 5.0, 12: 20.0, 13: 35.0, 14: 1250.0, 15: 1100.0,
           16: 1100.0, 17: 1250.0, 18: 1250.0, 19: 300.0, 20: 40.0, 21: 600.0, 22: 35.0,
           23: 40.0, 30: 1000.0, 31: 1000.0,
           # sex organs of population patients: breast (glandular/adipose mix), uterus,
           # ovaries, prostate, testes
           24: -40.0, 25: 45.0, 26: 35.0, 27: 40.0, 28: 35.0,
           # arm bones (humerus, radius, ulna): cortical as the femur
           32: 1250.0,
           # organs of population patients (anatomy.ORGAN_LABELS), unenhanced: pancreas 40,
           # oesophagus 40, spinal cord 30, blood in aorta / IVC / portal vein 40, bile 10, small
           # intestine 30, colon and rectum with contents 10, adult (fatty) thymus 20, thyroid 90
           # (iodine-rich, 80-100), salivary glands 15 (fatty parotid)
           100: 40.0, 101: 40.0, 102: 30.0, 103: 40.0, 104: 40.0, 105: 40.0, 106: 10.0, 107: 30.0,
           108: 10.0, 109: 10.0, 110: 20.0, 111: 90.0, 112: 15.0}
TRABECULAR_HU = {14: 650.0, 17: 320.0, 18: 320.0, 30: 260.0, 31: 260.0, 32: 320.0}
#: Mean CT numbers of population lesions by kind, HU (unenhanced: soft-tissue metastases and
#: nodes 35-40, a solid lung nodule 40, a sclerotic bone metastasis 600 as the canonical one)
#: and of a necrotic core, 15 HU (fluid-like necrosis, 10-20 HU; e.g. Lamba et al., AJR 2014).
LESION_HU = {"lesion_liver": 40.0, "lesion_bone": 600.0, "lesion_lymph_node": 35.0, "lesion_pancreas": 40.0,
             "lesion_lung": 40.0, "necrosis": 15.0}
CT_NOISE_SD_HU = 12.0


def smooth_field(shape, voxel_mm: float, corr_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian random field of zero mean and unit sd with correlation length ``corr_mm``.

    Drawn on a coarse grid, smoothed and linearly interpolated up (fast, float32).
    """
    step = max(1, int(round(corr_mm / voxel_mm / 2.0)))
    cshape = tuple(int(math.ceil(n / step)) + 1 for n in shape)
    f = ndimage.gaussian_filter(rng.standard_normal(cshape).astype(np.float32), 1.0, mode="wrap")
    zoom = [n / c for n, c in zip(shape, cshape)]
    f = ndimage.zoom(f, zoom, order=1, grid_mode=True, mode="nearest")[: shape[0], : shape[1], : shape[2]]
    f = f - f.mean()
    return (f / max(float(f.std()), 1e-6)).astype(np.float32)


def make_ct(labels: np.ndarray, h_mm: np.ndarray, voxel_mm: float, aux: dict[str, np.ndarray],
            rng: np.random.Generator, lung_hu_offset: float = 0.0,
            label_hu: dict[int, float] | None = None) -> np.ndarray:
    """CT numbers, HU (float32), from the label map.

    Adds lung parenchyma texture with vessel-like dots, a fat/bowel mixture with some gas in
    the abdominal remainder, mediastinal fat, CSF, cortical/trabecular bone and Gaussian
    noise of :data:`CT_NOISE_SD_HU`. ``lung_hu_offset`` (HU) moves the mean lung
    parenchyma from -760 HU (lung density of a population patient; 0 is the canonical one).
    ``h_mm`` are reference heights (see :class:`persodose.phantoms.anatomy.AnatomyParams`).
    ``label_hu`` gives the mean CT number of labels outside :data:`BASE_HU` (per-lesion labels).
    """
    lut = np.full(int(labels.max()) + 1 if labels.size else 1, 30.0, dtype=np.float32)
    for k, v in BASE_HU.items():
        if k < lut.size:
            lut[k] = v
    for k, v in (label_hu or {}).items():
        if k < lut.size:
            lut[k] = v
    hu = lut[labels]
    H = h_mm[:, None, None]
    # bones: border voxels cortical, interior trabecular
    for k, v in TRABECULAR_HU.items():
        m = labels == k
        if m.any():
            hu[ndimage.binary_erosion(m) & m] = v
    hu[aux["femoral_canal"] & (H < 870)] = -40.0  # yellow marrow in the shaft
    body1 = labels == 1
    # lungs: texture and vessels
    lung = (labels == 4) | (labels == 5)
    f1 = smooth_field(labels.shape, voxel_mm, 10.0, rng)
    f2 = smooth_field(labels.shape, voxel_mm, 6.0, rng)
    hu[lung] += 35.0 * f1[lung] + np.where(f2[lung] > 1.7, 600.0, 0.0)
    if lung_hu_offset:
        hu[lung] += np.float32(lung_hu_offset)
    # abdomen remainder: bowel loops in mesenteric fat, some gas
    f3 = smooth_field(labels.shape, voxel_mm, 14.0, rng)
    abd = body1 & (H > 866) & (H < 1180)
    hu[abd] = np.where(f3[abd] > 2.1, -850.0, np.where(f3[abd] > -0.3, 28.0, -95.0))
    chest = body1 & (H >= 1180) & (H < 1450)
    hu[chest] = -85.0
    hu[aux["aorta"]] = 40.0
    hu[aux["canal"]] = 25.0
    head_csf = body1 & (H > 1600) & ndimage.binary_dilation(labels == 13, iterations=1)
    hu[head_csf] = 10.0
    # skin: outermost voxel layer of the patient
    patient = labels > 0
    skin = patient & ~ndimage.binary_erosion(patient) & (labels == 2)
    hu[skin] = -20.0
    hu += rng.normal(0.0, CT_NOISE_SD_HU, hu.shape).astype(np.float32)
    np.clip(hu, -1024.0, 3071.0, out=hu)
    return hu


# ----------------------------------------------------------------------------- CT headers
#: Normalised weighted CTDI at 120 kVp in the 32 cm body phantom, mGy/mAs. Typical of
#: 64-slice scanners (about 0.06-0.08 mGy/mAs; ImPACT CT dosimetry scanner tables).
CTDIW_MGY_PER_MAS_32CM = 0.07
#: Slope of the tube-current modulation with water-equivalent diameter, 1/mm. Full noise
#: compensation would use mu_water ~ 0.019/mm at the effective energy; clinical automatic
#: exposure control is weaker, about half (illustrative).
ATCM_K_PER_MM = 0.010
ATCM_REF_WED_MM = 250.0
ATCM_REF_MA = 200.0


def water_equivalent_diameter_mm(hu: np.ndarray, pixel_area_mm2: float) -> np.ndarray:
    """Water-equivalent diameter per axial slice, mm (AAPM Report 220, 2014).

    ``WED = 2 sqrt( sum((HU/1000 + 1) * pixel_area) / pi )`` over the voxels of the patient
    (HU > -950 so that surrounding air and its noise count zero).
    """
    rel = np.where(hu > -950.0, hu / 1000.0 + 1.0, 0.0)
    area = rel.reshape(hu.shape[0], -1).sum(axis=1) * pixel_area_mm2
    return 2.0 * np.sqrt(area / math.pi)


#: ct_tags keys that are DICOM attributes (passed to the DICOM writer); the others
#: (WED, CTDI constants, note) are documentation kept in the manifest.
DICOM_CT_TAG_KEYS = ("kvp", "xray_tube_current_ma", "exposure_time_ms", "ctdivol_mgy", "exposure_mas",
                     "data_collection_diameter_mm", "spiral_pitch_factor", "total_collimation_mm",
                     "single_collimation_mm", "rotation_time_s", "filter_type", "convolution_kernel",
                     "manufacturer", "model")


def make_ct_tags(hu: np.ndarray, voxel_mm: float) -> dict:
    """CT acquisition headers with tube current following the patient's attenuation.

    ``mA(z) = clip(200 exp(k (WED(z) - 250 mm)), 20, 500)`` with ``k`` =
    :data:`ATCM_K_PER_MM`; ``CTDIvol(z) = nCTDIw * mA(z) * t_rot / pitch`` with nCTDIw =
    :data:`CTDIW_MGY_PER_MAS_32CM`. Lists follow the grid's z order.
    """
    wed = water_equivalent_diameter_mm(hu, voxel_mm * voxel_mm)
    ma = np.clip(ATCM_REF_MA * np.exp(ATCM_K_PER_MM * (wed - ATCM_REF_WED_MM)), 20.0, 500.0)
    rot_s, pitch = 0.5, 0.984
    ctdi = CTDIW_MGY_PER_MAS_32CM * ma * rot_s / pitch
    return {
        "kvp": 120.0,
        "xray_tube_current_ma": [round(float(v), 2) for v in ma],
        "exposure_time_ms": rot_s * 1000.0,
        "ctdivol_mgy": [round(float(v), 4) for v in ctdi],
        "exposure_mas": [round(float(v), 2) for v in ma * rot_s / pitch],  # effective mAs per slice
        "data_collection_diameter_mm": 500.0,
        "spiral_pitch_factor": pitch,
        "total_collimation_mm": 40.0,
        "single_collimation_mm": 0.625,
        "rotation_time_s": rot_s,
        "filter_type": "BODY",
        "convolution_kernel": "STANDARD",
        "manufacturer": "persodose",
        "model": "virtual-64",
        "ctdi_phantom_diameter_mm": 320.0,
        "ctdiw_mgy_per_mas": CTDIW_MGY_PER_MAS_32CM,
        "water_equivalent_diameter_mm": [round(float(v), 2) for v in wed],
        "note": ("mA(z)=clip(200*exp(0.010/mm*(WED-250 mm)),20,500); CTDIvol=0.07 mGy/mAs*mA*"
                 "rotation_time/pitch; exposure_time_ms is per rotation; exposure_mas is the effective "
                 "mAs (mA*rotation_time/pitch)"),
    }


# ----------------------------------------------------------------------------- emission
#: SPECT system sensitivity, cps/MBq, 177Lu 208 keV 20 % window, dual-head medium-energy
#: collimation, as a calibration factor of the reconstructed image: of the order of
#: 10 cps/MBq in published Lu-177 quantitative SPECT calibrations (e.g. Frezza et al.,
#: EJNMMI Phys 2020;7:10; MIRD Pamphlet 26, Ljungberg et al., J Nucl Med 2016).
SPECT_SENSITIVITY_CPS_PER_MBQ = 10.0
#: Spatial resolution of reconstructed MEGP SPECT at 208 keV: 12 mm before the Poisson
#: draw (collimator-detector response) and a 5 mm post-filter: 13 mm FWHM overall.
SPECT_FWHM_MM = 12.0
SPECT_POSTFILTER_FWHM_MM = 5.0
#: PET: sensitivity ~1 % (10 cps/kBq = 10 000 cps/MBq, clinical whole-body scanner,
#: NEMA NU 2 order of magnitude), 5.5 mm FWHM reconstructed resolution, noise of the
#: noise-equivalent counts (NEC ~ 30 % of trues in whole-body PET).
PET_SENSITIVITY_CPS_PER_MBQ = 10_000.0
PET_FWHM_MM = 5.5
PET_NEC_FRACTION = 0.3

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def blur(array: np.ndarray, fwhm_mm: float, voxel_mm) -> np.ndarray:
    """3-D Gaussian blur (zero outside the field of view), float32."""
    sig = np.broadcast_to(fwhm_mm * FWHM_TO_SIGMA / np.asarray(voxel_mm, float), (3,))
    return ndimage.gaussian_filter(array.astype(np.float32, copy=False), sigma=tuple(float(s) for s in sig),
                                   mode="constant", cval=0.0, truncate=3.5)


def decay_factor_to_start(half_life_s: float, duration_s: float) -> float:
    """Factor from the frame-average activity to the activity at the frame start.

    ``lambda T / (1 - exp(-lambda T))`` (no biological change within the frame), the
    standard within-frame decay correction of PET scanners.
    """
    lt = math.log(2.0) / half_life_s * duration_s
    return lt / -math.expm1(-lt)


def pet_image_from_counts(counts: np.ndarray, sensitivity_cps_per_bq: float, duration_s: float,
                          frame_start_s: float, half_life_s: float, voxel_ml: float) -> np.ndarray:
    """PET image, Bq/mL, decay-corrected to the frame start.

    ``C = counts / (S * T) * lambda T / (1 - exp(-lambda T)) / V`` with ``S`` the
    sensitivity (cps/Bq), ``T`` the duration and ``V`` the voxel volume. ``frame_start_s``
    is not used by the correction (decay correction to the frame's own start) but is kept
    in the signature to make the reference time explicit.
    """
    del frame_start_s
    return (counts / (sensitivity_cps_per_bq * duration_s) * decay_factor_to_start(half_life_s, duration_s)
            / voxel_ml).astype(np.float32)


def sample_on(grid_src_array: np.ndarray, src_origin, src_spacing, dst_shape, dst_origin, dst_spacing):
    """Linear interpolation of a smooth (z, y, x) array onto another axis-aligned grid."""
    axes = []
    for ax in range(3):
        idx = (dst_origin[ax] + np.arange(dst_shape[ax]) * dst_spacing[ax] - src_origin[ax]) / src_spacing[ax]
        axes.append(idx)
    coords = np.meshgrid(*axes, indexing="ij")
    return ndimage.map_coordinates(grid_src_array, coords, order=1, mode="constant", cval=0.0).astype(np.float32)


__all__ = ["BASE_HU", "make_ct", "make_ct_tags", "water_equivalent_diameter_mm", "blur",
           "decay_factor_to_start", "pet_image_from_counts", "smooth_field", "LABELS"]
