"""Time-integrated activity (TIA): kinetic models, fits, TIA maps and CT co-registration.

Units: times in s after injection, activity in Bq (not decay corrected), TIA in Bq s.

* :mod:`persodose.kinetics.models`: mono-, bi- and tri-exponential models with analytic
  integrals, trapezoid with a physical tail, single-time-point formulas.
* :mod:`persodose.kinetics.fit`: organ-level fits with AICc model selection, vectorised
  voxel-wise fits, dynamic-frame integrals.
* :mod:`persodose.kinetics.tia`: TIA maps (:func:`tia_map`) and organ TIA (:func:`organ_tia`).
* :mod:`persodose.kinetics.quality`: the quality verdict of every organ fit
  (:class:`FitQuality`, :func:`fit_quality`, :func:`unreliable_organs`).
* :mod:`persodose.kinetics.register`: CT-to-CT registration (SimpleITK) and resampling
  (imported lazily: it needs SimpleITK only when called).
"""

from persodose.kinetics.fit import (DEFAULT_CANDIDATES, VOXEL_CODES, DynamicIntegral, FitResult, VoxelFit, aicc,
                                    fit_tac, fit_voxels, integrate_dynamic, select_model)
from persodose.kinetics.models import (PARAMETRIC_MODELS, BiExponential, BiExponentialUptake, ExponentialModel,
                                       Hanscheid, MonoExponential, SingleTimePoint, Trapezoid, TriExponential,
                                       get_model)
from persodose.kinetics.quality import (DEFAULT_THRESHOLDS, FitQuality, QualityThresholds, fit_quality,
                                        fit_result_quality, unreliable_organs)
from persodose.kinetics.register import apply_transform, register_ct
from persodose.kinetics.tia import METHODS, OrganTIA, hybrid_rescale, organ_tac_tia, organ_tia, tia_map

__all__ = ["DEFAULT_CANDIDATES", "VOXEL_CODES", "DynamicIntegral", "FitResult", "VoxelFit", "aicc", "fit_tac",
           "fit_voxels", "integrate_dynamic", "select_model", "PARAMETRIC_MODELS", "BiExponential",
           "BiExponentialUptake", "ExponentialModel", "Hanscheid", "MonoExponential", "SingleTimePoint",
           "Trapezoid", "TriExponential", "get_model", "apply_transform", "register_ct", "METHODS", "OrganTIA",
           "hybrid_rescale", "organ_tac_tia", "organ_tia", "tia_map", "DEFAULT_THRESHOLDS", "FitQuality",
           "QualityThresholds", "fit_quality", "fit_result_quality", "unreliable_organs"]
