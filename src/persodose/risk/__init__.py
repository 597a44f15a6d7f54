"""Radiation protection quantities derived from organ doses (effective dose, ICRP 103)."""

from persodose.risk.effective_dose import (ICRP103_REMAINDER, ICRP103_TISSUE_WEIGHTS, EffectiveDose,
                                           effective_dose, tissue_for_label)

__all__ = ["ICRP103_TISSUE_WEIGHTS", "ICRP103_REMAINDER", "EffectiveDose", "effective_dose", "tissue_for_label"]
