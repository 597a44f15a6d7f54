"""Built-in virtual adult patient: anatomy, CT, true kinetics and emission images.

The default data of persodose (demos, tests, training data, Monte Carlo references).
See :func:`make_virtual_patient` and :func:`write_virtual_patient`.

Labels (:data:`LABELS`): 1 body (remaining soft tissue), 2 skin_fat, 3 muscle, 4 lung_left,
5 lung_right, 6 heart (wall + blood), 7 liver, 8 spleen, 9 kidney_left, 10 kidney_right,
11 bladder (wall + urine), 12 stomach (wall + contents), 13 brain, 14 skull, 15 spine
(cortical), 16 pelvis (cortical), 17/18 femoral_head_left/right (proximal femur), 19
red_marrow (trabecular spine, ilia, sacrum), 20 lesion_liver, 21 lesion_bone, 22
lesion_lymph_node, 23 lesion_pancreas, 30 ribs (and sternum), 31 shoulder_girdle
(clavicles, scapulae); 0 is air (outside and airway lumen).
"""

from persodose.phantoms.anatomy import (LABELS, LESION_LABELS, NOMINAL_DENSITY_G_CM3,
                                        REFERENCE_MASS_G, build_anatomy, organ_masses_g)
from persodose.phantoms.kinetics import FrameTiming, TACModel, frame_schedule, organ_tacs
from persodose.phantoms.virtual_patient import (EmissionFrame, VirtualPatient, make_virtual_patient,
                                                write_virtual_patient)

__all__ = ["LABELS", "LESION_LABELS", "NOMINAL_DENSITY_G_CM3", "REFERENCE_MASS_G", "build_anatomy",
           "organ_masses_g", "TACModel", "FrameTiming", "frame_schedule", "organ_tacs",
           "EmissionFrame", "VirtualPatient", "make_virtual_patient", "write_virtual_patient"]
