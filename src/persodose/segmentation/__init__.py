"""Automatic segmentation of CT images: a registry of back-ends.

A segmenter takes a CT (:attr:`~persodose.grid.Kind.CT`, HU) and returns a label map
(:attr:`~persodose.grid.Kind.LABELS`) on the CT's geometry with ``{label value: organ name}``;
organ names are persodose's (``body``, ``lung_left``, ``lung_right``, ...), which the effective
dose maps onto ICRP 103 tissues.

* :func:`segment` runs a back-end; :func:`resolve_labels` serves ``--labels auto`` and
  ``--labels auto:NAME``.
* :func:`register_segmenter` adds a back-end (one file plus this registration), with its
  settings dataclass (:func:`setting`: default, unit, doc and range in one place) and the
  packages it needs; :func:`get_segmenter` and :func:`available_segmenters` find them.
* Built in (:data:`~persodose.segmentation.registry.BUILTIN_BACKENDS`, imported at first use):
  ``"threshold"`` (:mod:`persodose.segmentation.threshold`), analytic body, lungs, bone and air
  cavities for any CT; ``"totalsegmentator"`` (:mod:`persodose.segmentation.totalsegmentator`,
  extra ``totalseg``, weights on disk), its ``total`` classes mapped to persodose's organs;
  ``"builtin"``, the trained residual U-Net.
* Lesions of PET/SPECT images, each grown at 42 % of its own maximum:
  :mod:`persodose.segmentation.lesions`.

Back-ends built on networks import torch/MONAI only when they run
(:mod:`persodose.dl`); importing this package imports neither.
"""

from persodose.segmentation._settings import NoSettings, SegmenterSettings, SettingDoc, setting
from persodose.segmentation.registry import (AUTO_PREFIX, DEFAULT_BACKEND, Segmentation, SegmenterInfo,
                                             available_segmenters, get_segmenter, is_auto_spec,
                                             register_segmenter, resolve_labels, segment)
from persodose.segmentation.threshold import THRESHOLD_LABELS, ThresholdSettings

__all__ = ["segment", "resolve_labels", "is_auto_spec", "register_segmenter", "get_segmenter",
           "available_segmenters", "Segmentation", "SegmenterInfo", "DEFAULT_BACKEND", "AUTO_PREFIX",
           "SegmenterSettings", "NoSettings", "SettingDoc", "setting", "ThresholdSettings",
           "THRESHOLD_LABELS"]
