"""Registry of trained network weights: what each file is, how it was made, and its checksum.

The weights persodose ships are listed in the JSON manifest :data:`MANIFEST_PATH`
(``persodose/dl/weights/manifest.json``): a list of objects with the fields of
:class:`WeightsEntry`, the weights files lying next to it. Every entry records how it was
trained (command, seed, data manifest, epochs, final validation loss), so that the file can
be made again, and its SHA-256 and size, so that a damaged or substituted file is refused
before PyTorch reads it. A user's own weights file is accepted by path, with an optional
expected SHA-256.

Reading the manifest and checking files needs no PyTorch; :func:`load_weights` imports it
to read the state dict (``torch.load(..., weights_only=True)``: tensors only, no pickled
code).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from persodose.errors import InputError

__all__ = ["WEIGHTS_DIR", "MANIFEST_PATH", "WeightsEntry", "VerifiedWeights", "LoadedWeights", "read_manifest",
           "list_weights", "get_weights", "sha256_file", "verify_weights", "load_weights"]

#: Package folder of the shipped weights and their manifest.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST_PATH = WEIGHTS_DIR / "manifest.json"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _check_sha256(value: Any, what: str) -> str:
    text = str(value).strip().lower()
    if not _SHA256.match(text):
        raise InputError(f"{what} must be 64 hexadecimal digits (a SHA-256), got {value!r}")
    return text


@dataclass(frozen=True)
class WeightsEntry:
    """One trained weights file and how it was made.

    Attributes:
        name: registry name (as given to ``load_weights`` or ``--weights``).
        file: file name relative to the manifest's folder (POSIX, no ``..``).
        sha256: SHA-256 of the file, 64 lower-case hexadecimal digits.
        size_bytes: file size, bytes.
        training_command: the command line that trained it.
        seed: the random seed of the training.
        data_manifest: the training data (a manifest file name and its SHA-256, or a
            description of how the data were generated).
        epochs: number of training epochs.
        final_validation_loss: validation loss after the last epoch (in the loss's own unit).
        network: the network it is for (architecture name), empty if not stated.
        description: one line for listings.
    """

    name: str
    file: str
    sha256: str
    size_bytes: int
    training_command: str
    seed: int
    data_manifest: str
    epochs: int
    final_validation_loss: float
    network: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not str(self.name).strip() or "/" in self.name or "\\" in self.name:
            raise InputError(f"weights name must be a non-empty word without slashes, got {self.name!r}")
        p = PurePosixPath(str(self.file))
        if not str(self.file).strip() or p.is_absolute() or ".." in p.parts or "\\" in str(self.file):
            raise InputError(f"weights {self.name!r}: file must be a relative path inside the weights folder, "
                             f"got {self.file!r}")
        object.__setattr__(self, "sha256", _check_sha256(self.sha256, f"weights {self.name!r}: sha256"))
        for key in ("size_bytes", "seed", "epochs"):
            v = getattr(self, key)
            least, kind = (0, "non-negative") if key == "seed" else (1, "positive")
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise InputError(f"weights {self.name!r}: {key} must be a {kind} integer, got {v!r}")
        loss = self.final_validation_loss
        if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not math.isfinite(loss):
            raise InputError(f"weights {self.name!r}: final_validation_loss must be a finite number, got {loss!r}")
        if not str(self.training_command).strip() or not str(self.data_manifest).strip():
            raise InputError(f"weights {self.name!r}: training_command and data_manifest must say how it was made")

    def path(self, base: Path | str = WEIGHTS_DIR) -> Path:
        """Where the file lies, given the manifest's folder."""
        return Path(base) / PurePosixPath(self.file)


@dataclass(frozen=True)
class VerifiedWeights:
    """A weights file whose size and checksum were checked.

    Attributes:
        path: the file.
        sha256: its SHA-256.
        size_bytes: its size, bytes.
        entry: its registry entry, ``None`` for a user's own file.
    """

    path: Path
    sha256: str
    size_bytes: int
    entry: WeightsEntry | None

    def provenance(self) -> dict[str, Any]:
        """What goes into the provenance JSON of a result made with these weights."""
        out: dict[str, Any] = {"weights_file": str(self.path), "sha256": self.sha256,
                               "size_bytes": self.size_bytes}
        if self.entry is not None:
            out["weights"] = dataclasses.asdict(self.entry)
        return out


@dataclass(frozen=True)
class LoadedWeights(VerifiedWeights):
    """Verified weights and their state dict (``{parameter name: torch.Tensor}``)."""

    state_dict: Any = None


_FIELDS = {f.name: f for f in dataclasses.fields(WeightsEntry)}
_REQUIRED = [n for n, f in _FIELDS.items() if f.default is dataclasses.MISSING]


def read_manifest(path: Path | str = MANIFEST_PATH) -> list[WeightsEntry]:
    """The entries of a weights manifest (a JSON list of :class:`WeightsEntry` objects).

    Raises:
        InputError: unreadable file, not a JSON list, unknown or missing fields, bad values,
            duplicate names; the message names the file and the entry.
        FileNotFoundError: the package's own manifest is missing (a packaging error).
    """
    p = Path(path)
    if p == MANIFEST_PATH and not p.is_file():
        raise FileNotFoundError(f"persodose's weights manifest is missing: {p} (packaging error)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"weights manifest {p}: cannot read it ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, list):
        raise InputError(f"weights manifest {p}: must be a JSON list of entries, got {type(data).__name__}")
    entries: list[WeightsEntry] = []
    for i, item in enumerate(data):
        where = f"weights manifest {p}: entry {i}"
        if not isinstance(item, dict):
            raise InputError(f"{where}: must be an object, got {type(item).__name__}")
        unknown = sorted(set(item) - set(_FIELDS))
        missing = [k for k in _REQUIRED if k not in item]
        if unknown or missing:
            raise InputError(f"{where}: " + "; ".join(
                ([f"unknown field(s) {', '.join(unknown)}"] if unknown else [])
                + ([f"missing field(s) {', '.join(missing)}"] if missing else [])))
        try:
            entry = WeightsEntry(**item)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        if any(e.name == entry.name for e in entries):
            raise InputError(f"{where}: the name {entry.name!r} is listed twice")
        entries.append(entry)
    return entries


def list_weights(manifest: Path | str = MANIFEST_PATH) -> list[WeightsEntry]:
    """The registered weights (the package's manifest unless another is given)."""
    return read_manifest(manifest)


def get_weights(name: str, manifest: Path | str = MANIFEST_PATH) -> WeightsEntry:
    """The entry registered as ``name``.

    Raises:
        InputError: no such entry; the message lists the registered names.
    """
    entries = {e.name: e for e in read_manifest(manifest)}
    if name not in entries:
        raise InputError(f"unknown weights {name!r}; registered: {', '.join(sorted(entries)) or 'none'}")
    return entries[name]


def sha256_file(path: Path | str, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file's content, 64 lower-case hexadecimal digits (read in chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_bytes), b""):
            h.update(block)
    return h.hexdigest()


def _resolve(name_or_path: str | Path, manifest: Path | str) -> tuple[Path, WeightsEntry | None]:
    """The file and entry of a registered name, or a user's file."""
    text = str(name_or_path)
    entries = {e.name: e for e in read_manifest(manifest)}
    if text in entries:
        entry = entries[text]
        path = entry.path(Path(manifest).parent)
        if not path.is_file():
            raise InputError(f"weights {text!r}: its file {path} is missing; reinstall persodose")
        return path, entry
    path = Path(text).expanduser()
    if path.is_file():
        return path, None
    if path.exists():
        raise InputError(f"weights {text}: not a file")
    raise InputError(f"weights {text!r}: no such file, and not a registered name "
                     f"(registered: {', '.join(sorted(entries)) or 'none'})")


def verify_weights(name_or_path: str | Path, expected_sha256: str | None = None,
                   manifest: Path | str = MANIFEST_PATH) -> VerifiedWeights:
    """Find a weights file and check its size and SHA-256, without PyTorch.

    Args:
        name_or_path: a registered name (:func:`list_weights`) or the path of a user's file.
        expected_sha256: SHA-256 the file must have; for a registered name it must also agree
            with the registry's. ``None``: a user's file is accepted as it is (its SHA-256 is
            recorded), a registered one is checked against the registry.
        manifest: the manifest that registers the names (default: the package's).

    Returns:
        :class:`VerifiedWeights`.

    Raises:
        InputError: unknown name and no such file, missing file, wrong size or checksum
            (the file is refused), malformed ``expected_sha256``.
    """
    expected = None if expected_sha256 is None else _check_sha256(expected_sha256, "expected sha256")
    path, entry = _resolve(name_or_path, manifest)
    label = f"{entry.name!r} ({path})" if entry is not None else str(path)
    size = path.stat().st_size
    if entry is not None and size != entry.size_bytes:
        raise InputError(f"weights {label}: {size} bytes, the registry says {entry.size_bytes}; refusing the file")
    if entry is not None and expected is not None and expected != entry.sha256:
        raise InputError(f"weights {label}: the expected sha256 {expected[:12]}... differs from the registry's "
                         f"{entry.sha256[:12]}...; refusing the file")
    want = expected if expected is not None else (entry.sha256 if entry is not None else None)
    got = sha256_file(path)
    if want is not None and got != want:
        raise InputError(f"weights {label}: sha256 {got[:12]}... does not match the expected {want[:12]}...; "
                         "refusing the file (damaged or not the right file)")
    return VerifiedWeights(path, got, size, entry)


def load_weights(name_or_path: str | Path, expected_sha256: str | None = None, *,
                 manifest: Path | str = MANIFEST_PATH, device: str = "cpu") -> LoadedWeights:
    """Verify a weights file (:func:`verify_weights`) and read its state dict with PyTorch.

    Args:
        name_or_path, expected_sha256, manifest: see :func:`verify_weights`.
        device: where the tensors are put (:func:`persodose.dl.device.select_device` forms).

    Returns:
        :class:`LoadedWeights` (the verified file and ``state_dict``).

    Raises:
        InputError: see :func:`verify_weights`; a file that is not a PyTorch weights file.
        OptionalDependencyError: PyTorch is not installed.
    """
    from persodose.dl.device import select_device

    v = verify_weights(name_or_path, expected_sha256, manifest)
    dev = select_device(device)
    import torch

    try:
        state = torch.load(v.path, map_location=dev, weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; report it in one line
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(f"weights {v.path}: not a readable PyTorch weights file "
                         f"({type(exc).__name__}{': ' + msg[:120] if msg else ''})") from None
    return LoadedWeights(v.path, v.sha256, v.size_bytes, v.entry, state)
