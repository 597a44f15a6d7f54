"""A population of virtual patients: sex, size, organs, lesions and kinetics drawn per patient.

``make_population(n, seed)`` gives ``n`` different patients, ``write_population(out, n, seed)``
writes each of them as :func:`~persodose.phantoms.write_virtual_patient` does (DICOM, NIfTI,
``manifest.json`` with the truth) in ``patient_000/ ...``, plus ``population.json`` and
``population_report.html``. The canonical demo patient (``make_virtual_patient(seed=0)``) is
not part of any population and is unchanged by this module.

Seeds
    Patient ``i`` of population ``seed`` has the patient seed
    ``SeedSequence([seed, i]).generate_state(1, uint64)[0] >> 1`` (63 bits, never 0). Every
    parameter of the patient is drawn from ``SeedSequence(patient_seed).spawn(1)[0]``, and
    its image noise from ``default_rng(patient_seed)``: a patient is rebuilt from its patient
    seed alone (:func:`make_population_patient`), and populations of different seeds or
    sizes share a patient only if they share ``(seed, i)``.

Split (training / validation / test)
    ``u = int(sha256(b"persodose-population-split:" + str(patient_seed))[:8 bytes], big
    endian) / 2**64``; ``u < 0.70`` training, ``u < 0.85`` validation, otherwise test
    (:func:`split_of`). It depends on the patient seed only, so a test patient is a test
    patient in every population that contains it and is never used for training.

What varies (distributions; sources)
    * sex: female or male with probability 1/2. Female patients get breasts (label 24),
      uterus (25) and ovaries (26); male patients prostate (27) and testes (28).
    * height: normal, mean 176 cm (M) / 163 cm (F) (ICRP Publication 89, 2002, reference
      adults), SD 7 / 6.5 cm (adult height spread in NCD-RisC, eLife 2016;5:e13410), clipped
      to 150-195 cm.
    * BMI: log-normal, median 25.5 kg/m2, log-SD 0.17, clipped to 18-38 kg/m2 (the adult
      range of NCD-RisC, Lancet 2017;390:2627); weight = BMI x height^2.
    * lean body mass (LBM): Boer, Ind J Pharmacol 1984 (M 0.407 W + 0.267 H - 19.2; F 0.252 W
      + 0.473 H - 48.3; W kg, H cm). Body surface area (BSA): Mosteller, NEJM 1987.
    * body build: the canonical anatomy is stretched along z by height / 1.76 m and across by
      ``sqrt((LBM/H) / (LBM_ref/H_ref))`` (lean cross-section), clipped to 0.80-1.25;
      subcutaneous fat thickness ``15 mm x (FM/H) / (FM_ref/H_ref)`` (FM = W - LBM; 15 mm is
      the canonical layer), clipped to 6-60 mm.
    * organ masses (the rule): ``M = M_ICRP89(sex) x s x e`` with ``M_ICRP89`` the reference
      adult of the patient's sex (ICRP 89 Table 2.8), ``s = BSA / BSA_ref(sex)`` for liver,
      spleen, kidneys, heart and stomach (organ volumes grow with BSA: liver, Vauthey et al.,
      Liver Transpl 2002;8:233; kidneys and heart likewise), ``s = (H / H_ref(sex))^3`` for the
      lungs (lung volumes grow with about the cube of height: Quanjer et al., Eur Respir J
      1993;6 Suppl 16), ``s = 1`` for brain, bladder (200 mL urine), uterus, ovaries,
      prostate and testes, and ``s = (BMI / 22.6)^1.5`` for the breasts (breast volume
      follows BMI); ``e`` is log-normal inter-individual scatter (log-SD 0.12; 0.05 brain,
      0.25 breasts). The organ is painted with its volume factor chosen to hit ``M`` at the
      nominal densities; voxelised masses are within the tolerance stated in the tests.
    * added organs (:data:`persodose.phantoms.anatomy.ORGAN_LABELS`, labels 100-112): pancreas,
      oesophagus, spinal cord, aorta, inferior vena cava, portal vein, gall bladder, small
      intestine, colon, rectum, thymus, thyroid, salivary glands; masses :data:`ICRP89_EXTRA`
      scaled by BSA (abdominal viscera), height (oesophagus, spinal cord) or not (thymus,
      thyroid, salivary glands), scatter log-SD 0.12 drawn last on the second stream; vessels
      at the model's geometry scaled with the frame (``docs/population.md``).
    * organ positions: liver, spleen, kidneys, stomach, heart and bladder move by normal
      shifts of SD 5, 5, 8 mm (x, y, z), clipped at 2 SD.
    * lung density: mean lung CT number uniform in -860 to -700 HU (healthy lungs at
      inspiration to free breathing; e.g. Heussel et al., Eur Radiol 2009).
    * lesions: liver Poisson(1.2) (at most 5), 2-80 mL; bone (marrow) Poisson(0.8) (at most
      4), 1-25 mL; lymph nodes (para-aortic / iliac) Poisson(1.0) (at most 4), 1-15 mL;
      pancreas Bernoulli(0.5), 3-30 mL; lung Poisson(0.5) (at most 3), 0.5-20 mL; volumes
      log-uniform. Every lesion has its own label (40, 41, ... named ``lesion_liver_1`` ...,
      :func:`persodose.phantoms.anatomy.lesion_labels`) and its own time-activity curve (its
      kind's template, its own uptake and Teff factors drawn from the kind's range, uptake
      scaled by its viable volume). A lesion of 8 mL or more has a necrotic core with
      probability 1/2 (radius 0.35-0.65 of the lesion's; label = lesion label + 30; no uptake).
    * arms: raised above the head (out of the trunk's field; p = :data:`P_ARMS_UP`) or down
      beside the trunk (in the field of view, which widens along x).
    * organ shapes: one smooth divergence-free random displacement field per patient
      (rms 2-8 mm, wavelengths 150-300 mm) deforms lungs, heart, liver, stomach, spleen,
      kidneys, bladder, uterus, ovaries and prostate; the map is one-to-one, so organs keep
      their order and do not overlap, and they are painted inside the body only.
    * female pelvis: ilia, pubis, acetabula and proximal femora 6 % wider about the midline
      (:data:`FEMALE_PELVIS_WIDTH`).

    Arms, deformation, lung lesions, necrotic cores and the per-lesion kinetic factors are
    drawn from a second stream (``SeedSequence(patient_seed, spawn_key=(1,))``), so every
    draw of the first stream (sex, size, organ masses and shifts, lung density, the other
    lesions, organ kinetics) is what it was before they existed.
    * kinetics: multipliers on the canonical organ uptake (and for 177Lu the effective
      half-life), :data:`KINETIC_RANGES`, chosen to span the inter-patient spread of
      177Lu-DOTATATE dosimetry (Sandstrom et al., J Nucl Med 2013;54:33-41; Garske-Roman et
      al., EJNMMI 2018;45:970) and of 18F-FDG biodistribution (ICRP Publication 128, 2015;
      SUV ranges of Boellaard et al., EJNMMI 2015;42:328). Illustrative, not fitted.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from persodose.errors import InputError
from persodose.phantoms import anatomy as _anat
from persodose.phantoms.kinetics import KineticParams

#: Split thresholds on the hashed patient seed: training below 0.70, validation below 0.85.
SPLIT_FRACTIONS = {"training": 0.70, "validation": 0.15, "test": 0.15}
MAX_PATIENTS = 1000

#: ICRP Publication 89 (2002) reference adults: height m, weight kg, Table 2.8 organ masses g
#: (lungs with blood; heart with blood; bladder wall + 200 mL urine; stomach wall + contents;
#: breasts whole; ovaries and testes both).
ICRP89 = {
    "M": {"height_m": 1.76, "weight_kg": 73.0,
          "masses_g": {"liver": 1800.0, "spleen": 150.0, "kidneys": 310.0, "lungs": 1200.0, "heart": 840.0,
                       "brain": 1450.0, "bladder": 250.0, "stomach": 400.0, "prostate": 17.0, "testes": 35.0}},
    "F": {"height_m": 1.63, "weight_kg": 60.0,
          "masses_g": {"liver": 1400.0, "spleen": 130.0, "kidneys": 275.0, "lungs": 950.0, "heart": 620.0,
                       "brain": 1300.0, "bladder": 240.0, "stomach": 370.0, "breast": 500.0, "uterus": 80.0,
                       "ovaries": 11.0}},
}

#: ICRP Publication 89 (2002), Table 2.8, reference masses (g) of the organs of
#: :data:`persodose.phantoms.anatomy.ORGAN_LABELS`, painted whole (wall and contents):
#: pancreas 140 / 120 (M / F); oesophagus 40 / 35; thymus 25 / 20; thyroid 20 / 17; salivary
#: glands 85 / 70; spinal cord 30 / 28; gall bladder wall + bile 10 + 58 / 8 + 48; small
#: intestine wall + contents 650 + 350 / 600 + 280; colon = right and left colon, wall +
#: contents, 150 + 150 + 150 + 75 / 145 + 160 + 145 + 80; rectum = rectosigmoid wall + contents
#: 70 + 75 / 70 + 80 (checked against a J Nucl Med table of ICRP 89's adult reference masses;
#: the spinal cord value is nominal, not checked against the original table). Aorta, inferior
#: vena cava and portal vein have no ICRP 89 mass: their targets are the model's own blood-filled tubes scaled with the frame
#: (:data:`GEOMETRIC_ORGANS`).
ICRP89_EXTRA = {
    "M": {"pancreas": 140.0, "oesophagus": 40.0, "thymus": 25.0, "thyroid": 20.0, "salivary_glands": 85.0,
          "spinal_cord": 30.0, "gall_bladder": 68.0, "small_intestine": 1000.0, "colon": 525.0, "rectum": 145.0},
    "F": {"pancreas": 120.0, "oesophagus": 35.0, "thymus": 20.0, "thyroid": 17.0, "salivary_glands": 70.0,
          "spinal_cord": 28.0, "gall_bladder": 56.0, "small_intestine": 880.0, "colon": 530.0, "rectum": 150.0},
}
#: Scaling of :data:`ICRP89_EXTRA` with the patient: body surface area for the abdominal viscera
#: (as liver and stomach), height for the long thin organs (oesophagus, spinal cord), none for
#: thymus, thyroid and salivary glands (as brain).
_BSA_EXTRA = ("pancreas", "gall_bladder", "small_intestine", "colon", "rectum")
_HEIGHT_EXTRA = ("oesophagus", "spinal_cord")
#: Vessels: painted at the model's geometry scaled with the patient's frame (no volume factor).
GEOMETRIC_ORGANS = ("aorta", "inferior_vena_cava", "portal_vein")

#: Voxelised masses, g, of the unscaled model (4 mm, volume factor 1, nominal densities),
#: measured once with :func:`model_masses_g` (``tests/phantoms/test_population.py`` checks them).
MODEL_MASS_G = {
    "liver": 1990.7, "spleen": 138.6, "kidneys": 308.85, "lungs": 1246.79, "heart": 836.06, "brain": 1479.23,
    "bladder": 256.66, "stomach": 390.04, "breast": 521.33, "uterus": 82.0, "ovaries": 10.92, "prostate": 17.04,
    "testes": 35.14,
    "pancreas": 90.46, "oesophagus": 34.34, "spinal_cord": 21.43, "aorta": 196.53, "inferior_vena_cava": 32.56,
    "portal_vein": 4.14, "gall_bladder": 58.21, "small_intestine": 941.36, "colon": 462.39, "rectum": 114.68,
    "thymus": 23.99, "thyroid": 19.08, "salivary_glands": 57.88,
}

#: Organ group -> labels painted with one volume factor.
ORGAN_GROUPS = {"liver": ("liver",), "spleen": ("spleen",), "kidneys": ("kidney_left", "kidney_right"),
                "lungs": ("lung_left", "lung_right"), "heart": ("heart",), "brain": ("brain",),
                "bladder": ("bladder",), "stomach": ("stomach",), "breast": ("breast",), "uterus": ("uterus",),
                "ovaries": ("ovaries",), "prostate": ("prostate",), "testes": ("testes",),
                **{n: (n,) for n in _anat.ORGAN_LABELS.values()}}
_BSA_ORGANS = ("liver", "spleen", "kidneys", "heart", "stomach")
_SCATTER = {"brain": 0.05, "breast": 0.25}
_SHIFTED = ("liver", "spleen", "kidney_left", "kidney_right", "stomach", "heart", "bladder")

#: Per-organ kinetic multipliers: (log-SD of the uptake factor, clip lo, clip hi, Teff
#: factor range or None). Uptake of lesions is per mL.
KINETIC_RANGES = {
    "lu177-dotatate": {
        "kidneys": (0.35, 0.4, 2.5, (0.70, 1.35)), "liver": (0.40, 0.4, 2.5, (0.75, 1.30)),
        "spleen": (0.45, 0.3, 3.0, (0.75, 1.30)), "stomach": (0.40, 0.3, 3.0, (0.75, 1.30)),
        "red_marrow": (0.30, 0.5, 2.0, None), "bladder": (0.25, 0.5, 2.0, None),
        "lesion_liver": (0.70, 0.1, 8.0, (0.70, 1.30)), "lesion_pancreas": (0.70, 0.1, 8.0, (0.70, 1.30)),
        "lesion_lymph_node": (0.70, 0.1, 8.0, (0.70, 1.30)), "lesion_bone": (0.70, 0.1, 8.0, (0.70, 1.30)),
    },
    "fdg": {
        "brain": (0.20, 0.6, 1.5, None), "heart": (0.80, 0.1, 5.0, None), "liver": (0.20, 0.6, 1.6, None),
        "spleen": (0.20, 0.6, 1.6, None), "kidneys": (0.25, 0.5, 2.0, None), "bladder": (0.35, 0.4, 2.5, None),
        "red_marrow": (0.30, 0.5, 2.0, None), "stomach": (0.40, 0.3, 3.0, None),
        "lung_left": (0.30, 0.5, 2.0, None), "lung_right": (0.30, 0.5, 2.0, None),
        "lesion_liver": (0.60, 0.15, 6.0, None), "lesion_pancreas": (0.60, 0.15, 6.0, None),
        "lesion_lymph_node": (0.60, 0.15, 6.0, None), "lesion_bone": (0.60, 0.15, 6.0, None),
    },
}
#: Canonical lesion volumes, mL (the uptake fractions of kinetics.py are for these).
CANONICAL_LESION_ML = {"lesion_liver": 40.0, "lesion_pancreas": 20.0, "lesion_lymph_node": 7.0, "lesion_bone": 3.0,
                       "lesion_lung": 7.0}
_LESION_DRAW = {"lesion_liver": (1.2, 5, 2.0, 80.0), "lesion_bone": (0.8, 4, 1.0, 25.0),
                "lesion_lymph_node": (1.0, 4, 1.0, 15.0), "lesion_pancreas": (None, 1, 3.0, 30.0)}
#: Lung lesions (metastases or a primary): Poisson(0.5), at most 3, 0.5-20 mL log-uniform
#: (illustrative; drawn from the second stream, see :func:`_draw_extras`).
_LUNG_LESION_DRAW = (0.5, 3, 0.5, 20.0)
#: Necrotic cores: a lesion of at least 8 mL has one with probability 1/2, of radius 0.35-0.65
#: of the lesion's (4-27 % of its volume). Larger tumours outgrow their blood supply and are
#: more often centrally necrotic (illustrative values).
_NECROSIS = (8.0, 0.5, 0.35, 0.65)
#: Probability of arms raised above the head (the usual position for PET/CT and SPECT/CT of
#: the trunk, e.g. EANM FDG PET/CT guideline v2.0, Boellaard et al. 2015) against arms down
#: (the usual position of many diagnostic CTs and of patients who cannot raise them).
P_ARMS_UP = 0.5
#: Organ deformation: rms displacement 2-8 mm, four divergence-free plane-wave modes of
#: wavelength 150-300 mm, their gradient sum capped at 0.5 (one-to-one map); illustrative,
#: of the order of inter-patient organ-shape variation after scaling (a few mm to ~1 cm).
_DEFORM = {"rms_mm": (2.0, 8.0), "modes": 4, "wavelength_mm": (150.0, 300.0), "max_gradient": 0.5}
#: Lateral scale of the female bony pelvis and hip joints against the male model: the female
#: pelvis is relatively wider (pelvic inlet and bi-acetabular breadth several per cent larger at
#: a given stature; e.g. Tague, Am J Phys Anthropol 1989;80:59). 1.06 is illustrative.
FEMALE_PELVIS_WIDTH = 1.06


def patient_seed(population_seed: int, index: int) -> int:
    """Seed of patient ``index`` of population ``population_seed`` (63 bits, never 0)."""
    s = int(np.random.SeedSequence([int(population_seed), int(index)]).generate_state(1, np.uint64)[0] >> np.uint64(1))
    return s or 1


def split_of(seed: int) -> str:
    """``"training"``, ``"validation"`` or ``"test"`` from a hash of the patient seed (module docstring)."""
    h = hashlib.sha256(f"persodose-population-split:{int(seed)}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2.0 ** 64
    if u < SPLIT_FRACTIONS["training"]:
        return "training"
    return "validation" if u < SPLIT_FRACTIONS["training"] + SPLIT_FRACTIONS["validation"] else "test"


def lean_body_mass_kg(sex: str, weight_kg: float, height_cm: float) -> float:
    """Boer (1984) lean body mass, kg."""
    if sex == "M":
        return 0.407 * weight_kg + 0.267 * height_cm - 19.2
    return 0.252 * weight_kg + 0.473 * height_cm - 48.3


def bsa_m2(weight_kg: float, height_cm: float) -> float:
    """Mosteller (1987) body surface area, m2."""
    return math.sqrt(weight_kg * height_cm / 3600.0)


def icrp89_scaled_masses_g(sex: str, height_m: float, weight_kg: float) -> dict[str, float]:
    """ICRP 89 reference masses of the patient's sex scaled to its size (the rule of the module
    docstring, without the individual scatter), g."""
    ref = ICRP89[sex]
    h_ratio = height_m / ref["height_m"]
    bsa_ratio = bsa_m2(weight_kg, 100 * height_m) / bsa_m2(ref["weight_kg"], 100 * ref["height_m"])
    bmi = weight_kg / height_m ** 2
    out = {}
    for organ, m in ref["masses_g"].items():
        if organ in _BSA_ORGANS:
            s = bsa_ratio
        elif organ == "lungs":
            s = h_ratio ** 3
        elif organ == "breast":
            s = (bmi / 22.6) ** 1.5
        else:
            s = 1.0
        out[organ] = m * s
    return out


@dataclass(frozen=True)
class PatientSpec:
    """One population patient's drawn description (all that the builder needs).

    Attributes:
        index: position in the population.
        seed: patient seed.
        split: ``training`` / ``validation`` / ``test``.
        sex, age_y, height_m, weight_kg, bmi, lbm_kg, bsa_m2: the patient.
        target_masses_g: organ group -> mass aimed at, g.
        icrp89_scaled_masses_g: the same without the individual scatter, g.
        lung_hu: mean lung CT number, HU.
        anatomy: :class:`~persodose.phantoms.anatomy.AnatomyParams`.
        kinetic_factors: tracer -> {organ: [uptake factor, Teff factor]} (the lesion kinds'
            entries are not used: every lesion has its own factors).
        lesion_kinetic_factors: per lesion (order of ``anatomy.lesions``), tracer ->
            [uptake factor, Teff factor or None].
    """

    index: int
    seed: int
    split: str
    sex: str
    age_y: int
    height_m: float
    weight_kg: float
    bmi: float
    lbm_kg: float
    bsa_m2: float
    target_masses_g: dict
    icrp89_scaled_masses_g: dict
    lung_hu: float
    anatomy: _anat.AnatomyParams
    kinetic_factors: dict
    lesion_kinetic_factors: tuple = ()

    def kinetics(self, tracer: str) -> KineticParams:
        """:class:`KineticParams` for ``tracer``: organ factors, and every lesion its own curve
        (uptake scaled by its viable volume against the kind's canonical volume)."""
        up, te = {}, {}
        for organ, (fu, ft) in self.kinetic_factors[tracer].items():
            if organ in CANONICAL_LESION_ML:
                continue
            for lab in ORGAN_GROUPS.get(organ, (organ,)):
                up[lab] = fu
                if ft is not None:
                    te[lab] = ft
        lesions = {}
        les_list = self.anatomy.lesions or ()
        for les, (_, name, _, _), f in zip(les_list, _anat.lesion_labels(les_list), self.lesion_kinetic_factors):
            ratio = les.volume_ml * (1.0 - les.necrotic_fraction ** 3) / CANONICAL_LESION_ML[les.name]
            fu, ft = f[tracer]
            up[name] = fu * ratio
            if ft is not None:
                te[name] = ft
            lesions[name] = (les.name, ratio)
        return KineticParams(uptake_factor=up, teff_factor=te, drop_absent=True, lesions=lesions)


def _lognormal(rng, sd, lo, hi):
    return float(np.clip(math.exp(rng.normal(0.0, sd)), lo, hi))


def _draw_lesions(rng) -> tuple:
    out = []
    for name, (lam, cap, vlo, vhi) in _LESION_DRAW.items():
        n = int(rng.integers(0, 2)) if lam is None else min(int(rng.poisson(lam)), cap)
        for _ in range(n):
            vol = float(math.exp(rng.uniform(math.log(vlo), math.log(vhi))))
            out.append(_anat.LesionSpec(name, round(vol, 3), tuple(float(u) for u in rng.random(3))))
    return tuple(out)


def _draw_deformation(rng) -> tuple:
    """Modes ``(a_mm, ux, uy, uz, wx, wy, wz, phase)`` of :func:`persodose.phantoms.anatomy.deformation_field`."""
    k = _DEFORM["modes"]
    a = float(rng.uniform(*_DEFORM["rms_mm"])) / math.sqrt(k / 2.0)  # rms of the sum = the drawn value
    modes = []
    for _ in range(k):
        lam = float(rng.uniform(*_DEFORM["wavelength_mm"]))
        n = rng.normal(size=3)
        n /= np.linalg.norm(n)
        u = rng.normal(size=3)
        u -= (u @ n) * n  # transverse: divergence-free
        u /= np.linalg.norm(u)
        modes.append([a, *u, *(n * 2.0 * math.pi / lam), float(rng.uniform(0.0, 2.0 * math.pi))])
    m = np.asarray(modes)
    grad = float(np.sum(m[:, 0] * np.linalg.norm(m[:, 4:7], axis=1)))
    if grad > _DEFORM["max_gradient"]:
        m[:, 0] *= _DEFORM["max_gradient"] / grad
    return tuple(tuple(round(float(q), 6) for q in row) for row in m)


def _draw_extras(seed: int, lesions: tuple) -> dict:
    """What the second random stream of a patient draws (``SeedSequence(seed, spawn_key=(1,))``,
    so the draws of the first stream stay those of earlier versions): arms, organ deformation,
    lung lesions, necrotic cores, every lesion's own kinetic factors and, last, the scatter of
    the organs of :data:`ICRP89_EXTRA`."""
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(1,)))
    arms = "up" if rng.random() < P_ARMS_UP else "down"
    deformation = _draw_deformation(rng)
    lam, cap, vlo, vhi = _LUNG_LESION_DRAW
    lesions = list(lesions)
    for _ in range(min(int(rng.poisson(lam)), cap)):
        vol = float(math.exp(rng.uniform(math.log(vlo), math.log(vhi))))
        lesions.append(_anat.LesionSpec("lesion_lung", round(vol, 3), tuple(float(u) for u in rng.random(3))))
    vmin, p_nec, flo, fhi = _NECROSIS
    out, kin = [], []
    for les in lesions:
        f = float(rng.uniform(flo, fhi)) if les.volume_ml >= vmin and rng.random() < p_nec else 0.0
        out.append(_anat.LesionSpec(les.name, les.volume_ml, les.u, round(f, 4)))
        ranges = {t: KINETIC_RANGES[t].get(les.name, KINETIC_RANGES[t]["lesion_lymph_node"]) for t in KINETIC_RANGES}
        k = {}
        for tracer, (sd, lo, hi, trange) in ranges.items():
            fu = _lognormal(rng, sd, lo, hi)
            ft = None if trange is None else float(rng.uniform(*trange))
            k[tracer] = [round(fu, 4), None if ft is None else round(ft, 4)]
        kin.append(k)
    scatter = {o: math.exp(rng.normal(0.0, 0.12)) for o in ICRP89_EXTRA["M"]}
    return {"arms": arms, "deformation": deformation, "lesions": tuple(out), "lesion_kinetics": tuple(kin),
            "organ_scatter": scatter}


def extra_organ_masses_g(sex: str, height_m: float, weight_kg: float) -> dict[str, float]:
    """:data:`ICRP89_EXTRA` of the patient's sex scaled to its size (without the scatter), g."""
    ref = ICRP89[sex]
    bsa_ratio = bsa_m2(weight_kg, 100 * height_m) / bsa_m2(ref["weight_kg"], 100 * ref["height_m"])
    h_ratio = height_m / ref["height_m"]
    return {o: m * (bsa_ratio if o in _BSA_EXTRA else h_ratio if o in _HEIGHT_EXTRA else 1.0)
            for o, m in ICRP89_EXTRA[sex].items()}


def _draw_kinetics(rng) -> dict:
    out = {}
    for tracer, table in KINETIC_RANGES.items():
        out[tracer] = {}
        for organ, (sd, lo, hi, trange) in table.items():
            fu = _lognormal(rng, sd, lo, hi)
            ft = None if trange is None else float(rng.uniform(*trange))
            out[tracer][organ] = [round(fu, 4), None if ft is None else round(ft, 4)]
    return out


def draw_patient(seed: int, index: int = 0) -> PatientSpec:
    """Draw the description of the patient of patient seed ``seed`` (see the module docstring)."""
    rng = np.random.default_rng(np.random.SeedSequence(int(seed)).spawn(1)[0])
    sex = "F" if rng.random() < 0.5 else "M"
    h_cm = float(np.clip(rng.normal(176.0 if sex == "M" else 163.0, 7.0 if sex == "M" else 6.5), 150.0, 195.0))
    bmi = float(np.clip(25.5 * math.exp(rng.normal(0.0, 0.17)), 18.0, 38.0))
    age = int(rng.integers(30, 81))
    h_m = h_cm / 100.0
    w = bmi * h_m ** 2
    lbm = lean_body_mass_kg(sex, w, h_cm)
    ref_lbm = lean_body_mass_kg("M", 73.0, 176.0)
    width = float(np.clip(math.sqrt((lbm / h_cm) / (ref_lbm / 176.0)), 0.80, 1.25))
    fat_mm = float(np.clip(15.0 * ((w - lbm) / h_cm) / ((73.0 - ref_lbm) / 176.0), 6.0, 60.0))
    scaled = icrp89_scaled_masses_g(sex, h_m, w)
    target = {o: m * math.exp(rng.normal(0.0, _SCATTER.get(o, 0.12))) for o, m in scaled.items()}
    hs = h_m / 1.76
    geom = width * width * hs
    factors = {}
    for organ, m in target.items():
        for lab in ORGAN_GROUPS[organ]:
            factors[lab] = round(m / (MODEL_MASS_G[organ] * geom), 5)
    shifts = {}
    for lab in _SHIFTED:
        d = np.clip(rng.normal(0.0, 1.0, 3), -2.0, 2.0) * np.array([5.0, 5.0, 8.0])
        shifts[lab] = tuple(round(float(q), 2) for q in d)
    lung_hu = float(rng.uniform(-860.0, -700.0))
    lesions = _draw_lesions(rng)
    kin = _draw_kinetics(rng)
    extras = _draw_extras(seed, lesions)
    scaled.update(extra_organ_masses_g(sex, h_m, w))
    for organ, f in extras["organ_scatter"].items():
        target[organ] = scaled[organ] * f
        factors[organ] = round(target[organ] / (MODEL_MASS_G[organ] * geom), 5)
    for organ in GEOMETRIC_ORGANS:
        target[organ] = MODEL_MASS_G[organ] * geom
    anat = _anat.AnatomyParams(sex=sex, height_scale=round(hs, 5), width_scale=round(width, 5),
                               fat_extra_mm=round(fat_mm - 15.0, 3), organ_volume_factor=factors,
                               organ_shift_mm=shifts, sex_organs=True, lesions=extras["lesions"],
                               arms=extras["arms"], deformation=extras["deformation"],
                               pelvis_width=FEMALE_PELVIS_WIDTH if sex == "F" else 1.0, extra_organs=True)
    return PatientSpec(index=int(index), seed=int(seed), split=split_of(seed), sex=sex, age_y=age,
                       height_m=round(h_m, 4), weight_kg=round(w, 2), bmi=round(bmi, 2), lbm_kg=round(lbm, 2),
                       bsa_m2=round(bsa_m2(w, h_cm), 3), target_masses_g={o: round(m, 2) for o, m in target.items()},
                       icrp89_scaled_masses_g={o: round(m, 2) for o, m in scaled.items()},
                       lung_hu=round(lung_hu, 1), anatomy=anat, kinetic_factors=kin,
                       lesion_kinetic_factors=extras["lesion_kinetics"])


def draw_population(n: int, seed: int) -> list[PatientSpec]:
    """The descriptions of the ``n`` patients of population ``seed``."""
    _check_n(n)
    return [draw_patient(patient_seed(seed, i), i) for i in range(n)]


def _check_n(n) -> None:
    if not isinstance(n, (int, np.integer)) or not (1 <= int(n) <= MAX_PATIENTS):
        raise InputError(f"population size must be a whole number from 1 to {MAX_PATIENTS}, got {n!r}")


def make_population_patient(spec: PatientSpec, tracer: str = "lu177-dotatate", voxel_mm: float = 4.0):
    """Build the :class:`~persodose.phantoms.VirtualPatient` of ``spec``."""
    from persodose.phantoms.virtual_patient import PatientVariation, make_virtual_patient

    var = PatientVariation(anatomy=spec.anatomy, kinetics=spec.kinetics(tracer),
                           patient={"sex": spec.sex, "age_y": spec.age_y, "weight_kg": spec.weight_kg,
                                    "height_m": spec.height_m},
                           lung_hu_offset=spec.lung_hu + 760.0)
    return make_virtual_patient(tracer=tracer, voxel_mm=voxel_mm, seed=spec.seed, variation=var)


def make_population(n: int, seed: int, tracer: str = "lu177-dotatate", voxel_mm: float = 4.0) -> list:
    """Build ``n`` patients of population ``seed`` in memory (a few hundred MB each at 4 mm:
    use :func:`write_population` for large populations)."""
    return [make_population_patient(s, tracer, voxel_mm) for s in draw_population(n, seed)]


def organ_group_masses_g(masses_g: dict[str, float]) -> dict[str, float]:
    """Voxelised label masses summed into the groups of :data:`ORGAN_GROUPS` (present ones)."""
    out = {}
    for organ, labs in ORGAN_GROUPS.items():
        if any(lab in masses_g for lab in labs):
            out[organ] = round(sum(masses_g.get(lab, 0.0) for lab in labs), 2)
    return out


def model_masses_g(voxel_mm: float = 4.0) -> dict[str, float]:
    """Voxelised organ-group masses of the unscaled model of each sex (volume factors 1), g."""
    out = {}
    for sex in ("M", "F"):
        p = _anat.AnatomyParams(sex=sex, sex_organs=True, lesions=(), extra_organs=True)
        an = _anat.build_anatomy(voxel_mm, None, p)
        masses = organ_group_masses_g(_anat.organ_masses_g(an.labels, voxel_mm, _anat.ALL_LABELS))
        out.update({o: m for o, m in masses.items() if sex == "M" or o in ("breast", "uterus", "ovaries")})
    return out


def _patient_doc(spec: PatientSpec, vp, folder: str) -> dict:
    masses = organ_group_masses_g(vp.organ_masses_g)
    return {"index": spec.index, "folder": folder, "seed": spec.seed, "split": spec.split, "sex": spec.sex,
            "age_y": spec.age_y, "height_m": spec.height_m, "weight_kg": spec.weight_kg, "bmi": spec.bmi,
            "lean_body_mass_kg": spec.lbm_kg, "bsa_m2": spec.bsa_m2, "lung_hu": spec.lung_hu,
            "fat_thickness_mm": round(15.0 + spec.anatomy.fat_extra_mm, 2),
            "height_scale": spec.anatomy.height_scale, "width_scale": spec.anatomy.width_scale,
            "organ_masses_g": masses, "target_masses_g": spec.target_masses_g,
            "icrp89_scaled_masses_g": spec.icrp89_scaled_masses_g,
            "icrp89_reference_masses_g": {**ICRP89[spec.sex]["masses_g"], **ICRP89_EXTRA[spec.sex]},
            "arms": spec.anatomy.arms, "pelvis_width": spec.anatomy.pelvis_width,
            "deformation_rms_mm": _deformation_rms_mm(spec.anatomy.deformation),
            "lesions": _lesion_docs(spec, vp),
            "kinetic_factors": {o: f for o, f in spec.kinetic_factors[vp.tracer].items()
                                if o not in CANONICAL_LESION_ML},
            "injected_activity_bq": vp.injected_activity_bq}


def _deformation_rms_mm(modes) -> float:
    """RMS displacement of the organ deformation field, mm (``sqrt(sum a_k^2 / 2)``)."""
    return round(math.sqrt(sum(m[0] ** 2 for m in modes) / 2.0), 2) if modes else 0.0


def _lesion_docs(spec: PatientSpec, vp) -> list[dict]:
    """One entry per lesion: label, name, kind, drawn and voxelised volumes, necrotic core, kinetic factors."""
    out = []
    les_list = spec.anatomy.lesions or ()
    for les, (val, name, cval, cname), kin in zip(les_list, _anat.lesion_labels(les_list),
                                                  spec.lesion_kinetic_factors):
        dens = _anat.nominal_density_g_cm3(les.name)
        viable = vp.organ_masses_g.get(name, 0.0) / dens
        core = vp.organ_masses_g.get(cname, 0.0) / _anat.EXTRA_DENSITY_G_CM3["necrosis"] if cname else 0.0
        out.append({"label": val, "name": name, "kind": les.name, "volume_ml": les.volume_ml,
                    "voxel_volume_ml": round(viable + core, 2), "necrotic_fraction": les.necrotic_fraction,
                    "necrosis_label": cval, "necrosis_volume_ml": round(core, 2),
                    "kinetic_factors": kin[vp.tracer]})
    return out


def _write_one(spec: PatientSpec, tracer: str, voxel_mm: float, folder: Path, report: bool):
    """Make one patient and write it to ``folder``; its population entry and report thumbnail."""
    from persodose.phantoms.virtual_patient import write_virtual_patient

    vp = make_population_patient(spec, tracer, voxel_mm)
    write_virtual_patient(vp, folder)
    return _patient_doc(spec, vp, folder.name), (_coronal(vp) if report else None)


def write_population(out_dir, n: int, seed: int, tracer: str = "lu177-dotatate", voxel_mm: float = 4.0,
                     report: bool = True, workers: int | None = None) -> Path:
    """Write ``n`` patients (``patient_000/`` ...), ``population.json`` and the report, atomically.

    Patients are independent (each made from its own seed), so they are made and written in
    ``workers`` processes at once (default: one per CPU core, at most ``n``); the result is
    the same whatever the number (DICOM UIDs aside, which are new for every file written).

    Returns:
        Path of ``population.json``.
    """
    import os
    from concurrent.futures import ProcessPoolExecutor

    from persodose.errors import InputError
    from persodose.outputs import atomic_dir

    specs = draw_population(n, seed)
    workers = int(workers) if workers is not None else min(len(specs), os.cpu_count() or 1)
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        jobs = [(spec, tracer, voxel_mm, tmp / f"patient_{spec.index:03d}", report) for spec in specs]
        if workers == 1:
            done = [_write_one(*job) for job in jobs]
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                done = list(pool.map(_write_one, *zip(*jobs)))
        docs = [d for d, _ in done]
        doc = _population_doc(n, seed, tracer, voxel_mm, docs)
        (tmp / "population.json").write_text(json.dumps(doc, indent=2))
        if report:
            from persodose.phantoms._population_report import population_report

            population_report(doc, [t for _, t in done]).write(tmp / "population_report.html")
    return out_dir / "population.json"


def _population_doc(n, seed, tracer, voxel_mm, docs) -> dict:
    return {
        "format": "persodose virtual population v1", "population_seed": int(seed), "n": int(n),
        "tracer": tracer, "voxel_mm": float(voxel_mm),
        "split_rule": ("u = int(sha256('persodose-population-split:' + str(seed)).digest()[:8], 'big') / 2**64; "
                       "training if u < 0.70, validation if u < 0.85, else test"),
        "seed_rule": "patient seed = SeedSequence([population_seed, index]).generate_state(1, uint64)[0] >> 1",
        "mass_rule": ("M = M_ICRP89(sex) x s x e; s = BSA/BSA_ref (liver, spleen, kidneys, heart, stomach), "
                      "(H/H_ref)^3 (lungs), (BMI/22.6)^1.5 (breast), 1 (others); e log-normal scatter. "
                      "Added organs (ICRP 89 Table 2.8, whole with contents): s = BSA/BSA_ref (pancreas, gall "
                      "bladder, small intestine, colon, rectum), H/H_ref (oesophagus, spinal cord), 1 (thymus, "
                      "thyroid, salivary glands); vessels: the model's tubes scaled with the frame"),
        "splits": {s: [d["seed"] for d in docs if d["split"] == s] for s in SPLIT_FRACTIONS},
        "patients": docs,
    }


def _coronal(vp) -> dict:
    """Coronal CT and label slices through the kidneys' AP position (for the report)."""
    lab = vp.labels.array
    ys = np.nonzero(np.isin(lab, [9, 10]))[1]
    j = int(np.median(ys)) if ys.size else lab.shape[1] // 2
    j = max(0, j - int(round(20.0 / vp.voxel_mm)))
    return {"ct": np.asarray(vp.ct.array[:, j, :]), "labels": np.asarray(lab[:, j, :]), "voxel_mm": vp.voxel_mm}


__all__ = ["make_population", "write_population", "draw_population", "draw_patient", "make_population_patient",
           "patient_seed", "split_of", "PatientSpec", "icrp89_scaled_masses_g", "model_masses_g", "ICRP89",
           "SPLIT_FRACTIONS", "KINETIC_RANGES", "ICRP89_EXTRA", "extra_organ_masses_g"]
