"""Built-in virtual adult patient: anatomy, CT, true kinetics and emission images.

The default data of persodose (demos, tests, training data, Monte Carlo references).
See :func:`make_virtual_patient` and :func:`write_virtual_patient`.

Labels (:data:`LABELS`): 1 body (remaining soft tissue), 2 skin_fat, 3 muscle, 4 lung_left,
5 lung_right, 6 heart (wall + blood), 7 liver, 8 spleen, 9 kidney_left, 10 kidney_right,
11 bladder (wall + urine), 12 stomach (wall + contents), 13 brain, 14 skull, 15 spine
(cortical), 16 pelvis (cortical), 17/18 femoral_head_left/right (proximal femur), 19
red_marrow (trabecular spine, ilia, sacrum), 20 lesion_liver, 21 lesion_bone, 22
lesion_lymph_node, 23 lesion_pancreas, 30 ribs (and sternum), 31 shoulder_girdle
(clavicles, scapulae); 0 is air (outside and airway lumen). Population patients
(:mod:`persodose.phantoms.population`) also carry :data:`SEX_LABELS`: 24 breast, 25 uterus,
26 ovaries, 27 prostate, 28 testes; 32 arm_bones (arms down or up); and, instead of 20-23,
one label per lesion from 40 (``lesion_liver_1``, ..., ``lesion_lung_1``) and 70 + i for the
necrotic core of lesion i (:func:`persodose.phantoms.anatomy.lesion_labels`); and 100-112,
the organs of :data:`persodose.phantoms.anatomy.ORGAN_LABELS` (pancreas, oesophagus, spinal
cord, aorta, IVC, portal vein, gall bladder, small intestine, colon, rectum, thymus, thyroid,
salivary glands).
"""

from persodose.phantoms.anatomy import (ALL_LABELS, LABELS, LESION_LABELS, NOMINAL_DENSITY_G_CM3,
                                        REFERENCE_MASS_G, SEX_LABELS, AnatomyParams, build_anatomy,
                                        organ_masses_g)
from persodose.phantoms.kinetics import FrameTiming, KineticParams, TACModel, frame_schedule, organ_tacs
from persodose.phantoms.population import make_population, write_population
from persodose.phantoms.virtual_patient import (EmissionFrame, PatientVariation, VirtualPatient,
                                                make_virtual_patient, write_virtual_patient)

__all__ = ["LABELS", "LESION_LABELS", "NOMINAL_DENSITY_G_CM3", "REFERENCE_MASS_G", "build_anatomy",
           "organ_masses_g", "TACModel", "FrameTiming", "frame_schedule", "organ_tacs",
           "EmissionFrame", "VirtualPatient", "make_virtual_patient", "write_virtual_patient",
           "ALL_LABELS", "SEX_LABELS", "AnatomyParams", "KineticParams", "PatientVariation",
           "make_population", "write_population"]
