"""The one place where a compute device for networks is chosen.

``select_device("auto")`` picks the first CUDA device when PyTorch sees one and the CPU
otherwise; ``"cpu"``, ``"cuda"`` (= ``"cuda:0"``) and ``"cuda:N"`` ask for one. Asking for a
CUDA device that is not there is the user's mistake and a one-line
:class:`~persodose.errors.InputError`, never a silent fall-back to the CPU. PyTorch is
imported here, when a device is needed, and not before (:func:`parse_device` checks a
``--device`` value without it).
"""

from __future__ import annotations

import re
from typing import Any

from persodose._optional import optional_import
from persodose.errors import InputError

__all__ = ["DEVICE_CHOICES", "parse_device", "select_device", "accelerator_info"]

#: The forms a device may be asked for in.
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
_CUDA = re.compile(r"^cuda(?::(\d+))?$")


def parse_device(spec: str = "auto") -> str:
    """``spec`` normalised (``"auto"``, ``"cpu"`` or ``"cuda:N"``), checked without PyTorch.

    Raises:
        InputError: not one of :data:`DEVICE_CHOICES`.
    """
    text = str(spec).strip().lower()
    if text in ("auto", "cpu"):
        return text
    m = _CUDA.match(text)
    if m is None:
        raise InputError(f"device {spec!r} must be one of {', '.join(DEVICE_CHOICES)}")
    return f"cuda:{int(m.group(1) or 0)}"


def select_device(spec: str = "auto") -> Any:
    """The ``torch.device`` to run networks on.

    Args:
        spec: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns:
        ``torch.device``.

    Raises:
        InputError: an unknown form, CUDA asked for without a CUDA device, or ``cuda:N`` with
            ``N`` beyond the devices present.
        OptionalDependencyError: PyTorch is not installed (``pip install 'persodose[dl]'``).
    """
    text = parse_device(spec)
    torch = optional_import("torch", "dl")
    if text == "cpu":
        return torch.device("cpu")
    available = bool(torch.cuda.is_available())
    if text == "auto":
        return torch.device("cuda:0" if available else "cpu")
    if not available:
        raise InputError(f"device {spec!r} asked for, but PyTorch {torch.__version__} sees no CUDA device; "
                         "use 'cpu' or 'auto'")
    index = int(text.split(":")[1])
    count = int(torch.cuda.device_count())
    if index >= count:
        raise InputError(f"device {spec!r} does not exist: PyTorch sees {count} CUDA device(s) "
                         f"(cuda:0..cuda:{count - 1})")
    return torch.device(text)


def accelerator_info() -> dict[str, Any]:
    """PyTorch version and the CUDA devices it sees, for ``persodose info`` (imports PyTorch).

    Returns ``{"torch": None}`` when PyTorch is not installed.
    """
    try:
        import torch
    except ImportError:
        return {"torch": None}
    available = bool(torch.cuda.is_available())
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if available else []
    return {"torch": torch.__version__, "cuda_available": available, "cuda_version": torch.version.cuda,
            "cuda_devices": names, "threads": torch.get_num_threads()}
