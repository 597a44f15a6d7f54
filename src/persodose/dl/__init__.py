"""Deep learning: devices, datasets, networks, one training loop, evaluation, trained weights.

* :mod:`persodose.dl.datasets`: the registry of dataset kinds and the on-disk format
  (``persodose-dataset/1``: a manifest and one HDF5 shard per patient, split by patient),
  resumable generation in-process or on Dask (``persodose dataset make``).
* :mod:`persodose.dl.networks`: the registry of networks; :mod:`persodose.dl.train`: the one
  resumable training loop (``persodose train``); :mod:`persodose.dl.evaluate` (``persodose
  evaluate``).

* :mod:`persodose.dl.device`: :func:`select_device` (``"auto"``, ``"cpu"``, ``"cuda"``,
  ``"cuda:N"``), the one place a device is chosen; :func:`parse_device` checks a value
  without PyTorch.
* :mod:`persodose.dl.weights_registry`: :class:`WeightsEntry` (file, SHA-256, size and how
  the weights were trained), registered in the JSON manifest ``persodose/dl/weights/
  manifest.json``; :func:`list_weights`, :func:`verify_weights` and :func:`load_weights`,
  which refuses a missing file or a checksum mismatch; a user's own file is accepted by path.

The rule: PyTorch and MONAI (the ``dl`` extra, ``pip install 'persodose[dl]'``) are imported
only when a network is used (choosing a device, loading weights, running a model), never on
``import persodose.dl``, so that every other command starts fast and works without them.
"""

from persodose.dl.datasets import FORMAT as DATASET_FORMAT
from persodose.dl.datasets import KINDS as DATASET_KINDS
from persodose.dl.datasets import (Dataset, DatasetKind, PatientData, available_kinds, get_kind, make_dataset,
                                   open_dataset, register_kind)
from persodose.dl.device import DEVICE_CHOICES, accelerator_info, parse_device, select_device
from persodose.dl.evaluate import EvaluationResult, VoxelScores, evaluate
from persodose.dl.networks import NETWORKS, NetworkSpec, available_networks, build_network, get_network, register_network
from persodose.dl.train import TrainResult, TrainSettings, train, weights_entry
from persodose.dl.weights_registry import (MANIFEST_PATH, WEIGHTS_DIR, LoadedWeights, VerifiedWeights,
                                           WeightsEntry, get_weights, list_weights, load_weights,
                                           read_manifest, sha256_file, verify_weights)

__all__ = ["DEVICE_CHOICES", "parse_device", "select_device", "accelerator_info", "WEIGHTS_DIR",
           "MANIFEST_PATH", "WeightsEntry", "VerifiedWeights", "LoadedWeights", "read_manifest",
           "list_weights", "get_weights", "sha256_file", "verify_weights", "load_weights",
           "DATASET_FORMAT", "DATASET_KINDS", "Dataset", "DatasetKind", "PatientData", "available_kinds", "get_kind",
           "make_dataset", "open_dataset", "register_kind", "NETWORKS", "NetworkSpec", "available_networks",
           "build_network", "get_network", "register_network", "TrainSettings", "TrainResult", "train",
           "weights_entry", "evaluate", "EvaluationResult", "VoxelScores"]
