"""Training data sets: a registry of dataset kinds, their on-disk format, generation and reading.

A *dataset kind* turns one patient folder into training examples. It is one file plus a
registration (:func:`register_kind`): a name, the images it needs from a patient folder
(keys of the folder's ``manifest.json`` ``"paths"``, see :data:`PATIENT_IMAGES`), its own
settings dataclass and a pure function::

    make_examples(patient: PatientData, settings, seed: int)
        -> list[(inputs float32 (C, D, H, W), targets float32 (C', D, H, W), meta dict)]

The built-in kind is ``density-led`` (:mod:`persodose.dl.dataset_kinds.density_led`); the
network issues add more. :func:`make_dataset` runs a kind over a population of patient
folders (in-process or on Dask) and writes the format below; :func:`open_dataset` reads it.

On-disk format ``persodose-dataset/1`` (a directory):

* ``manifest.json``::

    {"format": "persodose-dataset/1", "kind": NAME, "settings": {...}, "seed": int,
     "patients": [{"id": str, "seed": int | null, "split": "train" | "val" | "test",
                   "shard": "shard_00000.h5", "n": int, "sha256": hex,
                   "example_seed": int, "index": int, "source": str}, ...],
     "input_shape": [C, D, H, W], "target_shape": [C', D, H, W],
     "channels": {"inputs": [...], "targets": [...]},
     "software": {...}, "physics_version": int, "created_utc": ISO-8601,
     "complete": bool, "planned": [patient ids in index order]}

  ``patients`` lists the finished shards in patient-index order; ``seed`` of a patient is the
  patient's own seed (a virtual patient's; ``null`` for a real one) and ``example_seed`` the
  seed its examples were made with. ``complete`` is false while generation runs.
* one HDF5 shard per patient, ``shard_{index:05d}.h5``: datasets ``inputs``
  (N, C, D, H, W) and ``targets`` (N, C', D, H, W), float32, one example per chunk, gzip
  level 4 with the shuffle filter, no timestamps (``track_times=False``), so that the same
  arrays give the same bytes; attributes ``patient_id``, ``patient_seed`` (-1: none),
  ``example_seed``, ``split`` and ``meta_json`` (the examples' meta dicts as JSON).
  Optionally (a kind whose examples' meta carry ``"labels"``, a (D, H, W) integer array,
  and ``"label_names"``, ``{value: name}``) a dataset ``labels`` (N, D, H, W) uint16 and the
  attribute ``label_names_json``: the truth label map of every example, which
  ``persodose evaluate`` uses for organ-, lesion- and segmentation-level metrics.

Splits are by patient, never by patch. The split of a patient is, in this order: the
``"split"`` of its ``manifest.json``; the ``"split"`` its population gives it (the
``population.json`` of :func:`persodose.phantoms.population.write_population` beside the
patient folders, entry whose ``"folder"`` is the folder's name; the population splits by a
hash of the patient seed, so a test patient stays a test patient in every population);
``training``/``validation`` are read as ``train``/``val``. Otherwise
:func:`assign_split` applies a deterministic rule:
the first 8 bytes of SHA-256 of the patient id, as a fraction ``u`` in [0, 1), give ``test``
when ``u < test_fraction``, ``val`` when ``u < test_fraction + val_fraction``, else ``train``
(defaults 0.1 and 0.1). The rule depends on the id only, so adding patients never moves
another patient to another split.

Randomness: the per-patient seeds are ``SeedSequence(seed).spawn(n)`` by patient index (63
bits of each child's state), so a dataset is reproduced bitwise by the same seed, patients
and software, in-process or on any number of Dask workers.

Generation is resumable: each shard is written under a temporary name and renamed when
complete, and ``manifest.json`` is rewritten atomically after each shard, so a killed run
restarted with the same arguments keeps the shards whose SHA-256 matches and makes the rest.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from persodose.errors import InputError
from persodose.grid import Grid, Kind
from persodose.registry import Registry
from persodose.settings import resolve_settings

__all__ = [
    "FORMAT", "SPLITS", "PATIENT_IMAGES", "PATIENT_IMAGE_LISTS", "DatasetKind", "PatientSource", "PatientData", "Dataset",
    "KINDS", "register_kind", "get_kind", "available_kinds", "read_patient_source", "load_patient",
    "find_patients", "assign_split", "patient_seeds", "make_dataset", "open_dataset", "read_shard",
    "write_shard", "shard_name", "read_shard_labels", "ShardSamples", "merge_datasets",
]

#: The format (and version) written in every dataset's ``manifest.json``.
FORMAT = "persodose-dataset/1"
#: The splits, always by patient.
SPLITS = ("train", "val", "test")
#: Default fractions of patients in the val and test splits (when a patient declares none).
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_TEST_FRACTION = 0.1
#: The population file beside patient folders (:mod:`persodose.phantoms.population`).
POPULATION_FILE = "population.json"
#: Other names of the splits (the population writer's).
_SPLIT_ALIASES = {"training": "train", "validation": "val"}
#: What a kind may ask for from a patient folder: a ``manifest.json`` ``"paths"`` key, and the
#: kind of image it holds.
PATIENT_IMAGES = {"ct_nifti": Kind.CT, "labels": Kind.LABELS, "truth_tia": Kind.TIA}
#: What a kind may need besides the images of :data:`PATIENT_IMAGES`: ``truth_frames``, the
#: true activity concentration (Bq/mL) at each emission frame's mid-time, a list of grids in
#: the order of the manifest's ``"frames"`` (their ``"truth_path"``).
PATIENT_IMAGE_LISTS = {"truth_frames": ("frames", "truth_path", Kind.ACTIVITY_CONCENTRATION)}
#: HDF5 settings of the shards (deterministic bytes: no timestamps, fixed filters).
_GZIP_LEVEL = 4
_TMP_MARK = ".tmp-"


def _h5py():
    from persodose._optional import optional_import

    return optional_import("h5py", "dl")


# --------------------------------------------------------------------------- kinds
@dataclass(frozen=True)
class DatasetKind:
    """A registered dataset kind.

    Attributes:
        name: registry name (lower case), as given to ``persodose dataset make``.
        make_examples: ``make_examples(patient, settings, seed) -> list of (inputs, targets,
            meta)``; pure: the same patient, settings and seed give the same arrays.
        settings_type: the kind's settings dataclass (defaults, units and validation).
        needs: keys of :data:`PATIENT_IMAGES` (and :data:`PATIENT_IMAGE_LISTS`) the kind reads
            from a patient folder.
        input_channels, target_channels: names (with units) of the channels, for the manifest.
        summary: one line for listings.
    """

    name: str
    make_examples: Callable[..., list]
    settings_type: type
    needs: tuple = ()
    input_channels: tuple = ()
    target_channels: tuple = ()
    summary: str = ""

    def make_settings(self, options: Any = None) -> Any:
        """This kind's settings from ``None``, an instance or a mapping (strings are parsed)."""
        return resolve_settings(options, self.settings_type, self.name, what="dataset kind")


#: The dataset kinds; the built-ins register themselves when their modules are imported.
KINDS: Registry[DatasetKind] = Registry("dataset kind", builtins=["persodose.dl.dataset_kinds.density_led",
                                                                   "persodose.dl.dataset_kinds.spect_doserate",
                                                                   "persodose.dl.dataset_kinds.kernels",
                                                                   "persodose.dl.dataset_kinds.ct_sp"],
                                        identity=lambda k: k.make_examples)


def register_kind(name: str, *, settings: type, needs: Iterable[str] = (), input_channels: Sequence[str] = (),
                  target_channels: Sequence[str] = (), summary: str = "") -> Callable:
    """Decorator registering ``make_examples`` as the dataset kind ``name`` (see :class:`DatasetKind`).

    Raises:
        ValueError: an unknown need, a settings type that is not a dataclass, or another
            function under a taken name (programming errors).
    """
    bad = sorted(set(needs) - set(PATIENT_IMAGES) - set(PATIENT_IMAGE_LISTS))
    if bad:
        raise ValueError(f"unknown needs {bad}; choose from {sorted({*PATIENT_IMAGES, *PATIENT_IMAGE_LISTS})}")
    if not (dataclasses.is_dataclass(settings) and isinstance(settings, type)):
        raise ValueError("settings must be a dataclass type")

    def deco(fn: Callable) -> Callable:
        doc = (fn.__doc__ or "").strip().splitlines()
        KINDS.add(name, DatasetKind(KINDS.key(name), fn, settings, tuple(needs), tuple(input_channels),
                                    tuple(target_channels), summary or (doc[0] if doc else "")))
        fn.kind_name = KINDS.key(name)  # type: ignore[attr-defined]
        return fn

    return deco


def get_kind(name: str) -> DatasetKind:
    """The kind registered as ``name``; an unknown name is an :class:`InputError` listing the known."""
    return KINDS.get(name)


def available_kinds() -> list[str]:
    """Names of the registered dataset kinds, sorted."""
    return KINDS.names()


# --------------------------------------------------------------------------- patients
@dataclass(frozen=True)
class PatientSource:
    """A patient folder and what its ``manifest.json`` says (read before any image).

    Attributes:
        id: the manifest's ``"id"``, else the folder name.
        folder: the patient folder.
        manifest: its ``manifest.json``.
        seed: the patient's own seed (a virtual patient's), or ``None``.
        split: the split the manifest declares, or ``None``.
    """

    id: str
    folder: Path
    manifest: dict
    seed: int | None = None
    split: str | None = None


@dataclass
class PatientData:
    """A patient as a kind sees it: its manifest and the images the kind needs (grids)."""

    id: str
    manifest: dict
    images: dict = field(default_factory=dict)
    seed: int | None = None

    def __getitem__(self, key: str) -> Grid:
        try:
            return self.images[key]
        except KeyError:
            raise InputError(f"patient {self.id}: image {key!r} was not loaded (the kind must declare it in needs)") \
                from None


def read_patient_source(folder: str | os.PathLike) -> PatientSource:
    """Read a patient folder's ``manifest.json``.

    Raises:
        InputError: no readable ``manifest.json``, or a declared split that is not one of
            :data:`SPLITS`.
    """
    folder = Path(folder)
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"patient folder {folder}: cannot read manifest.json ({exc})") from None
    if not isinstance(manifest, dict):
        raise InputError(f"patient folder {folder}: manifest.json is not a JSON object")
    split = manifest.get("split")
    if split is None:
        split = _population_splits(str(folder.parent / POPULATION_FILE)).get(folder.name)
    split = _SPLIT_ALIASES.get(split, split)
    if split is not None and split not in SPLITS:
        raise InputError(f"patient folder {folder}: split {split!r} is not one of {', '.join(SPLITS)}")
    seed = manifest.get("seed")
    seed = int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else None
    return PatientSource(str(manifest.get("id") or folder.name), folder, manifest, seed, split)


@functools.lru_cache(maxsize=8)
def _read_population(path: str, mtime_ns: int) -> dict[str, str]:
    try:
        doc = json.loads(Path(path).read_text())
        return {str(p["folder"]): p["split"] for p in doc.get("patients", []) if "folder" in p and "split" in p}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"cannot read the population file {path} ({exc})") from None


def _population_splits(path: str) -> dict[str, str]:
    """Folder name -> split of a ``population.json`` (empty when there is none)."""
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return {}
    return _read_population(path, mtime)


def load_patient(source: PatientSource, needs: Iterable[str]) -> PatientData:
    """The images ``needs`` of a patient folder, read as grids.

    Raises:
        InputError: the manifest does not name an image, or it cannot be read.
    """
    from persodose.io.image import read_image

    images = {}
    paths = source.manifest.get("paths") or {}
    for key in needs:
        if key in PATIENT_IMAGE_LISTS:
            entries, field_, kind = PATIENT_IMAGE_LISTS[key]
            rels = [f.get(field_) for f in source.manifest.get(entries) or [] if isinstance(f, dict)]
            if not rels or not all(rels):
                raise InputError(f"patient {source.id} ({source.folder}): manifest.json names no {field_!r} "
                                 f"for every one of its {entries!r}")
            images[key] = [read_image(source.folder / r, kind=kind) for r in rels]
            continue
        rel = paths.get(key)
        if not rel:
            raise InputError(f"patient {source.id} ({source.folder}): manifest.json names no {key!r} image")
        images[key] = read_image(source.folder / rel, kind=PATIENT_IMAGES[key])
    return PatientData(source.id, source.manifest, images, source.seed)


def find_patients(phantoms_dir: str | os.PathLike) -> list[Path]:
    """The patient folders (sub-folders with a ``manifest.json``) of ``phantoms_dir``, by name.

    Raises:
        InputError: not a folder, or no patient folder in it.
    """
    root = Path(phantoms_dir)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder")
    found = sorted((p for p in root.iterdir() if p.is_dir() and (p / "manifest.json").is_file()),
                   key=lambda p: p.name)
    if not found:
        extra = " (it is a patient folder itself: give the folder that holds it)" \
            if (root / "manifest.json").is_file() else ""
        raise InputError(f"{root} holds no patient folder (a sub-folder with a manifest.json){extra}")
    return found


def assign_split(patient_id: str, declared: str | None = None, val_fraction: float = DEFAULT_VAL_FRACTION,
                 test_fraction: float = DEFAULT_TEST_FRACTION) -> str:
    """The patient's split: ``declared`` if given, else the SHA-256 rule of the module docstring."""
    if declared is not None:
        return declared
    u = int.from_bytes(hashlib.sha256(str(patient_id).encode()).digest()[:8], "big") / 2.0**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def patient_seeds(seed: int, n: int) -> list[int]:
    """Per-patient seeds: ``SeedSequence(seed).spawn(n)``, 63 bits of each child's state."""
    return [int(c.generate_state(1, dtype=np.uint64)[0]) >> 1 for c in np.random.SeedSequence(int(seed)).spawn(n)]


def shard_name(index: int) -> str:
    return f"shard_{int(index):05d}.h5"


# --------------------------------------------------------------------------- shards
def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_examples(examples: list, who: str) -> tuple[np.ndarray, np.ndarray, list]:
    """Stack a kind's examples; every input and target 4-D, finite, of one shape."""
    if not examples:
        raise InputError(f"{who}: the dataset kind made no example")
    ins, tgs, metas = [], [], []
    for i, ex in enumerate(examples):
        x, y, meta = ex
        x, y = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32)
        if x.ndim != 4 or y.ndim != 4:  # the grids may differ (a network of valid convolutions); networks check the fit
            raise InputError(f"{who}: example {i} has inputs {x.shape} and targets {y.shape}; "
                             "both must be (C, D, H, W)")
        if ins and (x.shape != ins[0].shape or y.shape != tgs[0].shape):
            raise InputError(f"{who}: example {i} has shapes {x.shape}/{y.shape}, example 0 {ins[0].shape}/"
                             f"{tgs[0].shape}")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise InputError(f"{who}: example {i} holds NaN or infinite values")
        ins.append(x)
        tgs.append(y)
        metas.append(dict(meta or {}))
    return np.stack(ins), np.stack(tgs), metas


def write_shard(path: str | os.PathLike, inputs: np.ndarray, targets: np.ndarray, attrs: dict,
                labels: np.ndarray | None = None) -> str:
    """Write one shard atomically (temporary name, then rename); returns its SHA-256.

    The bytes depend only on the arrays and ``attrs``: no timestamps, fixed chunking and filters.
    ``labels`` (N, D, H, W), if given, is stored as uint16 dataset ``labels``.
    """
    h5py = _h5py()
    path = Path(path)
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{uuid.uuid4().hex}")
    try:
        # no chunk cache, and a flush after each dataset: chunks then reach the file in the order
        # they are written. With the cache, HDF5 writes them out at close in an order that can
        # differ between runs (seen: the same data at other offsets in about 1 shard in 4 under
        # Dask), and the bytes of a shard must depend only on its data
        with h5py.File(tmp, "w", libver=("earliest", "v110"), track_order=False, rdcc_nbytes=0) as f:
            for key in sorted(attrs):
                f.attrs[key] = attrs[key]
            for name, arr in (("inputs", inputs), ("targets", targets)):
                f.create_dataset(name, data=np.ascontiguousarray(arr, dtype=np.float32),
                                 chunks=(1,) + tuple(arr.shape[1:]), compression="gzip",
                                 compression_opts=_GZIP_LEVEL, shuffle=True, track_times=False)
                f.flush()
            if labels is not None:
                lab = np.ascontiguousarray(labels, dtype=np.uint16)
                f.create_dataset("labels", data=lab, chunks=(1,) + tuple(lab.shape[1:]), compression="gzip",
                                 compression_opts=_GZIP_LEVEL, shuffle=True, track_times=False)
        digest = sha256_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest


def read_shard(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[dict], dict]:
    """``(inputs, targets, metas, attrs)`` of one shard.

    Raises:
        InputError: missing or unreadable shard, or one without the two datasets.
    """
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
            x, y = f["inputs"][...], f["targets"][...]
    except (OSError, KeyError) as exc:
        raise InputError(f"dataset shard {path} is missing or corrupt ({' '.join(str(exc).split())})") from None
    metas = json.loads(attrs.get("meta_json", "[]"))
    return x, y, metas, attrs


def read_shard_labels(path: str | os.PathLike) -> tuple[np.ndarray | None, dict[int, str]]:
    """``(labels (N, D, H, W) or None, {value: name})`` of one shard (``None``: it has no labels)."""
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            if "labels" not in f:
                return None, {}
            lab = f["labels"][...]
            raw = f.attrs.get("label_names_json", "{}")
    except (OSError, KeyError) as exc:
        raise InputError(f"dataset shard {path} is missing or corrupt ({' '.join(str(exc).split())})") from None
    names = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    return lab, {int(k): str(v) for k, v in names.items()}


def _split_labels(metas: list[dict], who: str) -> tuple[np.ndarray | None, dict]:
    """Take the examples' ``labels`` arrays and ``label_names`` out of their meta dicts."""
    have = ["labels" in m for m in metas]
    if not any(have):
        return None, {}
    if not all(have):
        raise InputError(f"{who}: some examples carry labels and some do not")
    labs = [np.asarray(m.pop("labels")) for m in metas]
    names: dict = {}
    for m in metas:
        names.update({str(int(k)): str(v) for k, v in (m.pop("label_names", None) or {}).items()})
    if any(lab.shape != labs[0].shape or lab.dtype.kind not in "iub" for lab in labs):
        raise InputError(f"{who}: example labels must be integer arrays of one shape")
    if min(int(lab.min(initial=0)) for lab in labs) < 0 or max(int(lab.max(initial=0)) for lab in labs) > 65535:
        raise InputError(f"{who}: example labels must lie in 0..65535")
    return np.stack(labs), names


def _make_shard(kind: DatasetKind, settings: Any, source: PatientSource, index: int, example_seed: int,
                split: str, out_dir: str) -> dict:
    """Make and write one patient's shard (runs in-process or on a Dask worker); its entry."""
    patient = load_patient(source, kind.needs)
    examples = kind.make_examples(patient, settings, example_seed)
    who = f"dataset kind {kind.name!r}, patient {source.id}"
    x, y, metas = _check_examples(list(examples), who)
    labels, label_names = _split_labels(metas, who)
    if labels is not None and labels.shape[1:] != x.shape[2:]:
        raise InputError(f"{who}: labels of shape {labels.shape[1:]} for examples of {x.shape[2:]}")
    attrs = {"patient_id": source.id, "patient_seed": -1 if source.seed is None else int(source.seed),
             "example_seed": int(example_seed), "split": split,
             "meta_json": json.dumps(_jsonable(metas), sort_keys=True)}
    if labels is not None:
        attrs["label_names_json"] = json.dumps(dict(sorted(label_names.items(), key=lambda kv: int(kv[0]))))
    name = shard_name(index)
    digest = write_shard(Path(out_dir) / name, x, y, attrs, labels)
    return {"id": source.id, "seed": source.seed, "split": split, "shard": name, "n": int(x.shape[0]),
            "sha256": digest, "example_seed": int(example_seed), "index": int(index), "source": str(source.folder),
            "_shapes": (list(x.shape[1:]), list(y.shape[1:]))}


def _jsonable(obj):
    from persodose.outputs import jsonable

    return jsonable(obj)


# --------------------------------------------------------------------------- manifest
def _write_json_atomic(path: Path, doc: dict) -> None:
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{uuid.uuid4().hex}")
    try:
        tmp.write_text(json.dumps(doc, indent=2, allow_nan=False))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _header(kind: DatasetKind, settings: Any, seed: int, sources: list[PatientSource]) -> dict:
    from persodose.mc.version import PHYSICS_VERSION
    from persodose.outputs import versions

    return {"format": FORMAT, "kind": kind.name, "settings": _jsonable(settings), "seed": int(seed),
            "patients": [], "input_shape": None, "target_shape": None,
            "channels": {"inputs": list(kind.input_channels), "targets": list(kind.target_channels)},
            "software": versions(), "physics_version": PHYSICS_VERSION,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "complete": False, "planned": [s.id for s in sources]}


def _resume_entries(out: Path, header: dict) -> tuple[dict[int, dict], dict]:
    """Entries of a previous run in ``out`` whose shard is intact, and the previous manifest.

    Raises:
        InputError: ``out`` holds a dataset made with another kind, settings, seed or patients.
    """
    path = out / "manifest.json"
    if not path.exists():
        return {}, {}
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}, {}  # a manifest that cannot be read is rewritten; its shards are re-checked below
    if not isinstance(old, dict) or old.get("format") != FORMAT:
        raise InputError(f"{out} holds a manifest.json that is not a {FORMAT} dataset; choose a new folder")
    for key in ("kind", "settings", "seed", "planned"):
        if old.get(key) != header[key] and key == "planned":
            raise InputError(f"{out} holds a dataset of other patients ({len(old.get(key) or [])} there, "
                             f"{len(header[key])} now); resume it with the same patients or choose a new folder")
        if old.get(key) != header[key]:
            raise InputError(f"{out} holds a dataset made with a different {key} (there {old.get(key)!r}, "
                             f"now {header[key]!r}); resume it with the same arguments or choose a new folder")
    kept = {}
    for entry in old.get("patients", []):
        shard = out / str(entry.get("shard", ""))
        if shard.is_file() and sha256_file(shard) == entry.get("sha256"):
            kept[int(entry["index"])] = entry
    return kept, old


def _prepare_out(out: Path) -> None:
    from persodose.outputs import OUTPUT_MARKER, is_persodose_output

    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")
    if out.is_dir() and not is_persodose_output(out):
        raise InputError(f"output {out} is a folder that persodose did not write; choose a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    marker = out / OUTPUT_MARKER
    if not marker.exists():
        marker.write_text("written by persodose (a dataset); resumed by the next 'dataset make' that writes here\n")
    for stale in out.glob(f".*{_TMP_MARK}*"):  # half-written shards or manifests of a killed run
        stale.unlink(missing_ok=True)


class _Recorder:
    """Keeps the manifest: adds each finished shard and rewrites ``manifest.json`` atomically."""

    def __init__(self, out: Path, doc: dict, entries: dict[int, dict], on_shard: Callable | None):
        self.out, self.doc, self.entries, self.on_shard = out, doc, dict(entries), on_shard

    def write(self) -> None:
        self.doc["patients"] = [self.entries[i] for i in sorted(self.entries)]
        self.doc["complete"] = len(self.entries) == len(self.doc["planned"])
        _write_json_atomic(self.out / "manifest.json", self.doc)

    def add(self, entry: dict) -> None:
        shapes = entry.pop("_shapes")
        for key, shape in zip(("input_shape", "target_shape"), shapes):
            if self.doc[key] is None:
                self.doc[key] = shape
            elif self.doc[key] != shape:
                (self.out / entry["shard"]).unlink(missing_ok=True)
                raise InputError(f"patient {entry['id']}: {key.split('_')[0]}s of shape {shape}, other patients "
                                 f"{self.doc[key]}; a dataset holds one shape")
        self.entries[entry["index"]] = entry
        self.write()
        if self.on_shard is not None:
            self.on_shard(entry)


# --------------------------------------------------------------------------- generation
def make_dataset(kind: str | DatasetKind, patient_dirs: Iterable[str | os.PathLike], out_dir: str | os.PathLike,
                 settings: Any = None, seed: int = 0, scheduler: Any = None, *,
                 val_fraction: float = DEFAULT_VAL_FRACTION, test_fraction: float = DEFAULT_TEST_FRACTION,
                 on_shard: Callable[[dict], Any] | None = None) -> "Dataset":
    """Make (or resume) a dataset of ``kind`` from patient folders into ``out_dir``.

    Args:
        kind: a registered kind's name or a :class:`DatasetKind`.
        patient_dirs: patient folders (each with a ``manifest.json``); their order is the
            patient index (shard name and per-patient seed).
        out_dir: the dataset folder; a previous run there with the same arguments is resumed.
        settings: the kind's settings (instance, mapping, or ``None`` for the defaults).
        seed: the dataset seed (:func:`patient_seeds`).
        scheduler: ``None`` (in this process), ``"local"`` (a Dask LocalCluster), a Dask
            scheduler address, or a ``dask.distributed.Client``.
        val_fraction, test_fraction: of the split rule for patients that declare none.
        on_shard: called with each new manifest entry after the manifest is written.

    Returns:
        The finished :class:`Dataset` (checksums verified).

    Raises:
        InputError: no patient, duplicate patient ids, a bad output folder or a dataset made
            with other arguments in it, a kind's error on a patient.
    """
    k = kind if isinstance(kind, DatasetKind) else get_kind(kind)
    s = k.make_settings(settings)
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction <= 1):
        raise InputError(f"val and test fractions must be >= 0 with a sum <= 1, got {val_fraction}, {test_fraction}")
    sources = [read_patient_source(d) for d in patient_dirs]
    if not sources:
        raise InputError("no patient folder given")
    ids = [src.id for src in sources]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise InputError(f"patient id(s) {', '.join(dup)} given more than once; every patient needs its own id")
    out = Path(out_dir)
    _prepare_out(out)
    header = _header(k, s, seed, sources)
    kept, old = _resume_entries(out, header)
    if old.get("created_utc") and kept:
        header["created_utc"] = old["created_utc"]
    seeds = patient_seeds(seed, len(sources))
    rec = _Recorder(out, header, kept, on_shard)
    for key in ("input_shape", "target_shape"):
        if kept:
            rec.doc[key] = old.get(key)
    rec.write()
    todo = [(k, s, src, i, seeds[i], assign_split(src.id, src.split, val_fraction, test_fraction), str(out))
            for i, src in enumerate(sources) if i not in kept]
    if scheduler is None:
        for args in todo:
            rec.add(_make_shard(*args))
    else:
        _run_on_dask(scheduler, todo, rec.add)
    return open_dataset(out)


def _run_on_dask(scheduler: Any, tasks: list[tuple], done: Callable[[dict], None]) -> None:
    """Run :func:`_make_shard` for every task on Dask; ``done(entry)`` in this process as each ends."""
    from persodose._optional import optional_import

    distributed = optional_import("dask.distributed", "dask")
    owned = []
    if isinstance(scheduler, distributed.Client):
        client = scheduler
    elif scheduler == "local":
        n = max(1, min(len(tasks), os.cpu_count() or 1, 4))
        cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
        client = distributed.Client(cluster)
        owned = [client, cluster]
    else:
        try:
            client = distributed.Client(str(scheduler), timeout="20s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(f"cannot reach the Dask scheduler {scheduler!r} ({' '.join(str(exc).split())})") \
                from None
        owned = [client]
    futures = []
    try:
        token = uuid.uuid4().hex[:8]
        futures = [client.submit(_make_shard, *t, key=f"persodose-shard-{t[3]}-{token}", pure=False) for t in tasks]
        for fut in distributed.as_completed(futures):
            done(fut.result())
    finally:
        for fut in futures:
            fut.cancel()
        for obj in owned:
            obj.close()


# --------------------------------------------------------------------------- merging
#: What datasets must share to be merged (besides the format): the same examples in every shard.
_MERGE_KEYS = ("kind", "settings", "input_shape", "target_shape", "channels", "physics_version")


def merge_datasets(sources: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> "Dataset":
    """One dataset from several of the same kind and settings: a training set grown without
    remaking the shards it already has (patients added later get their own dataset, then both
    are merged).

    The shards are hard-linked into ``out_dir`` (copied where the file system cannot link),
    renamed ``shard_NNNNN.h5`` in the order of ``sources``, with their checksums, splits and
    per-patient seeds unchanged; the manifest records each source's manifest and SHA-256 under
    ``merged_from`` and keeps the first source's ``seed``.

    Raises:
        InputError: fewer than two sources, a source that is incomplete, corrupt or of another
            kind, settings, shapes, channels or physics version, a patient in two sources, an
            output folder that exists and is not empty.
    """
    import shutil

    if len(sources) < 2:
        raise InputError("merging needs at least two datasets")
    opened = [open_dataset(src) for src in sources]  # complete, every checksum verified
    first = opened[0].manifest
    for ds in opened[1:]:
        for key in _MERGE_KEYS:
            if ds.manifest.get(key) != first.get(key):
                raise InputError(f"datasets {opened[0].path} and {ds.path} differ in {key}; only datasets of "
                                 "the same kind, settings and shapes can be merged")
    ids = [e["id"] for ds in opened for e in ds.manifest["patients"]]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise InputError(f"patient(s) {', '.join(dup)} are in more than one of the datasets; each patient once")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"output {out} exists and is not an empty folder; choose a new one")
    _prepare_out(out)
    doc = {k: first[k] for k in ("format", "kind", "settings", "seed", "input_shape", "target_shape")}
    doc.update(channels=first.get("channels"), physics_version=first.get("physics_version"),
               software=first.get("software"),
               created_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), patients=[],
               merged_from=[{"manifest": str(ds.path / "manifest.json"),
                             "sha256": sha256_file(ds.path / "manifest.json"), "seed": ds.manifest["seed"]}
                            for ds in opened], complete=True, planned=ids)
    written = []
    try:
        for ds in opened:
            for entry in ds.manifest["patients"]:
                i = len(written)
                src, dest = ds.path / entry["shard"], out / shard_name(i)
                try:
                    os.link(src, dest)
                except OSError:
                    shutil.copyfile(src, dest)
                written.append(dest)
                doc["patients"].append({**entry, "shard": dest.name, "index": i, "merged_from_shard": str(src)})
        _write_json_atomic(out / "manifest.json", doc)
    except BaseException:  # nothing half-written: the shards placed so far go again
        for f in written:
            f.unlink(missing_ok=True)
        raise
    return open_dataset(out)


# --------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class Dataset:
    """An opened dataset: its folder and manifest (see the module docstring for the format)."""

    path: Path
    manifest: dict

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def settings(self) -> dict:
        return self.manifest["settings"]

    @property
    def seed(self) -> int:
        return self.manifest["seed"]

    @property
    def input_shape(self) -> tuple:
        return tuple(self.manifest["input_shape"] or ())

    @property
    def target_shape(self) -> tuple:
        return tuple(self.manifest["target_shape"] or ())

    @property
    def patients(self) -> list[dict]:
        return list(self.manifest["patients"])

    def _entries(self, name: str) -> list[dict]:
        if name not in SPLITS:
            raise InputError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return [p for p in self.manifest["patients"] if p["split"] == name]

    def split(self, name: str) -> list[Path]:
        """Shard paths of the patients in split ``name`` (``train``, ``val`` or ``test``)."""
        return [self.path / p["shard"] for p in self._entries(name)]

    def count(self, name: str) -> int:
        """Number of examples in split ``name``."""
        return sum(int(p["n"]) for p in self._entries(name))

    def iter_examples(self, name: str) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
        """``(inputs (C,D,H,W), targets (C',D,H,W), meta)`` of split ``name``, shard by shard."""
        h5py = _h5py()
        for path in self.split(name):
            with h5py.File(path, "r") as f:
                metas = json.loads(f.attrs.get("meta_json", "[]"))
                x, y = f["inputs"], f["targets"]
                for i in range(x.shape[0]):
                    yield x[i], y[i], (metas[i] if i < len(metas) else {})

    def load_split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(inputs (N,C,D,H,W), targets (N,C',D,H,W))`` float32 of split ``name``."""
        xs, ys = [], []
        for path in self.split(name):
            x, y, _, _ = read_shard(path)
            xs.append(x)
            ys.append(y)
        if not xs:
            return (np.zeros((0,) + self.input_shape, np.float32), np.zeros((0,) + self.target_shape, np.float32))
        return np.concatenate(xs), np.concatenate(ys)

    def metas(self, name: str) -> list[dict]:
        """The meta dicts of the examples of split ``name``, in order (shard attributes only)."""
        h5py = _h5py()
        out: list[dict] = []
        for path in self.split(name):
            with h5py.File(path, "r") as f:
                raw = f.attrs.get("meta_json", "[]")
                n = int(f["inputs"].shape[0])
            metas = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
            out.extend(metas[i] if i < len(metas) else {} for i in range(n))
        return out

    def load_labels(self, name: str) -> tuple[np.ndarray | None, dict[int, str]]:
        """``(labels (N, D, H, W) uint16, {value: name})`` of split ``name``, or ``(None, {})`` when
        its shards carry no labels (all of them must, or none)."""
        labs, names = [], {}
        for path in self.split(name):
            lab, nm = read_shard_labels(path)
            if lab is None:
                if labs:
                    raise InputError(f"dataset {self.path}: shard {path.name} has no labels, others have")
                return None, {}
            labs.append(lab)
            names.update(nm)
        return (np.concatenate(labs), names) if labs else (None, {})


class ShardSamples:
    """The examples of one split, read from the shards on demand: a map-style sample source for
    ``torch.utils.data.DataLoader`` (``len``, ``[i] -> (inputs, targets)``) that never holds
    the split in memory.

    Each example is one HDF5 chunk (see the format), so reading example ``i`` decompresses
    only it; at most :attr:`MAX_OPEN` shard files are kept open. The values are those of
    :meth:`Dataset.load_split`, so training on it gives the same bits as training in memory.
    """

    MAX_OPEN = 16

    def __init__(self, dataset: "Dataset", split: str):
        entries = dataset._entries(split)
        self.split_name = split
        self.paths = [dataset.path / p["shard"] for p in entries]
        self.counts = [int(p["n"]) for p in entries]
        self.offsets = np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)])
        self.input_shape, self.target_shape = dataset.input_shape, dataset.target_shape
        self._open: dict[int, Any] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def nbytes(self) -> int:
        """Bytes of the split as float32 arrays (inputs and targets)."""
        return len(self) * 4 * (int(np.prod(self.input_shape)) + int(np.prod(self.target_shape)))

    def _file(self, k: int):
        f = self._open.pop(k, None)
        if f is None:
            if len(self._open) >= self.MAX_OPEN:
                self._open.pop(next(iter(self._open))).close()
            f = _h5py().File(self.paths[k], "r")
        self._open[k] = f  # most recently used last
        return f

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        f, j = self._file(k), i - int(self.offsets[k])
        return np.asarray(f["inputs"][j], np.float32), np.asarray(f["targets"][j], np.float32)

    def iter_shards(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(inputs, targets)`` of each shard in turn (one shard in memory at a time)."""
        for path in self.paths:
            x, y, _, _ = read_shard(path)
            yield x, y

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


def _check_entry(root: Path, entry: dict, manifest: dict, verify: bool) -> None:
    shard = root / str(entry.get("shard", ""))
    if not shard.is_file():
        raise InputError(f"dataset {root}: shard {entry.get('shard')} of patient {entry.get('id')} is missing")
    if verify and sha256_file(shard) != entry.get("sha256"):
        raise InputError(f"dataset {root}: shard {entry['shard']} of patient {entry.get('id')} is corrupt "
                         "(SHA-256 differs from the manifest)")
    h5py = _h5py()
    try:
        with h5py.File(shard, "r") as f:
            shapes = (tuple(f["inputs"].shape), tuple(f["targets"].shape))
    except (OSError, KeyError) as exc:
        raise InputError(f"dataset {root}: shard {entry['shard']} is corrupt ({' '.join(str(exc).split())})") \
            from None
    want = ((int(entry["n"]), *manifest["input_shape"]), (int(entry["n"]), *manifest["target_shape"]))
    if shapes != want:
        raise InputError(f"dataset {root}: shard {entry['shard']} holds {shapes}, the manifest says {want}")


def open_dataset(path: str | os.PathLike, verify: bool = True, allow_incomplete: bool = False) -> Dataset:
    """Open a dataset folder, checking its format and (``verify``) every shard's SHA-256.

    Raises:
        InputError: not a dataset folder, another format or version, an incomplete dataset
            (unless ``allow_incomplete``), a shard missing, corrupt or of another shape.
    """
    root = Path(path)
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise InputError(f"{root} is not a persodose dataset (no manifest.json)")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{mpath} cannot be read ({exc})") from None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if fmt != FORMAT:
        raise InputError(f"{root} is not a {FORMAT} dataset (its manifest says format {fmt!r})")
    missing = [k for k in ("kind", "settings", "seed", "patients", "input_shape", "target_shape") if k not in manifest]
    if missing:
        raise InputError(f"{mpath} lacks {', '.join(missing)}")
    if not manifest.get("complete", True) and not allow_incomplete:
        raise InputError(f"dataset {root} is incomplete ({len(manifest['patients'])} of "
                         f"{len(manifest.get('planned', []))} patients); rerun 'persodose dataset make' to finish it")
    for entry in manifest["patients"]:
        _check_entry(root, entry, manifest, verify)
    return Dataset(root, manifest)
