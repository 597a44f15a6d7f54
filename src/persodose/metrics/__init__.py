"""Evaluation metrics: voxel agreement, gamma index, organ statistics, DVHs and comparisons.

* :mod:`~persodose.metrics.voxel`: ME, MAE, RMSE, NRMSE, RE %, RAE % / MRAE %, SSIM, PSNR,
  regression slope and R^2, joint histogram (SINFONIA D2.2; DblurDoseNet, Li et al. 2022).
* :mod:`~persodose.metrics.gamma`: gamma index and pass rate (Low et al. 1998) via pymedphys.
* :mod:`~persodose.metrics.dvh`: D_x, V(d), cumulative and differential DVHs (ICRU 83);
  DRVH statistics DR10/30/70/90 (DblurDoseNet).
* :mod:`~persodose.metrics.organ`: per-label statistics table, CSV/JSON writers.
* :mod:`~persodose.metrics.compare`: whole comparison of a test map with a reference and the
  ensemble noise (DblurDoseNet).

``gamma`` imports pymedphys and ``voxel.ssim``/``voxel.psnr`` scikit-image only when called.
"""

from persodose.metrics.compare import body_mask, compare, ensemble_noise, organ_errors
from persodose.metrics.dvh import (DRVH_PERCENTS, DVH, ICRU_PERCENTS, dose_at_volume, dvh, dvh_edges,
                                   dvh_figure, dvhs_for_labels, volume_at_dose, write_dvh_csv)
from persodose.metrics.gamma import GammaResult, gamma_index, gamma_pass_rate
from persodose.metrics.organ import (label_masks, organ_table, structure_stats, write_organ_table_csv,
                                     write_organ_table_json, write_table_csv, write_table_json)
from persodose.metrics.voxel import (joint_histogram, joint_histogram_figure, mae, me, mrae, nrmse, psnr,
                                     regression, relative_absolute_error, relative_error, rmse, ssim,
                                     voxel_metrics)

__all__ = [
    "compare", "ensemble_noise", "organ_errors", "body_mask",
    "DVH", "DRVH_PERCENTS", "ICRU_PERCENTS", "dose_at_volume", "volume_at_dose", "dvh", "dvh_edges",
    "dvhs_for_labels", "dvh_figure", "write_dvh_csv",
    "GammaResult", "gamma_index", "gamma_pass_rate",
    "label_masks", "organ_table", "structure_stats", "write_table_csv", "write_table_json",
    "write_organ_table_csv", "write_organ_table_json",
    "me", "mae", "rmse", "nrmse", "relative_error", "relative_absolute_error", "mrae", "psnr", "ssim",
    "regression", "joint_histogram", "joint_histogram_figure", "voxel_metrics",
]
