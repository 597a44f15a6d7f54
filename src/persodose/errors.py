"""One exception hierarchy for the whole package.

The CLI turns every :class:`PersodoseError` into a one-line message and exit code 2.
Anything else is a bug in persodose and keeps its traceback.
"""

from __future__ import annotations


class PersodoseError(Exception):
    """Base class of every error that is the user's input, not a bug."""


class InputError(PersodoseError):
    """A missing, unreadable or inconsistent input file or argument."""


class DicomError(InputError):
    """A DICOM file or series that cannot be used (not DICOM, mixed, incomplete)."""


class GeometryError(InputError):
    """Grids whose shapes, spacings or frames do not match."""


class UnitsError(InputError):
    """A quantity in the wrong or an unknown unit."""


class NuclideError(InputError):
    """A radionuclide name that is not in ICRP-107."""


class MaterialError(InputError):
    """An unknown material or a density outside the physical range."""


class OptionalDependencyError(PersodoseError):
    """A feature needs a package that is not installed."""


def require_finite(array, what: str) -> None:
    """Raise :class:`InputError` if ``array`` holds NaN or infinity.

    Args:
        array: any numpy array.
        what: name of the quantity and its origin, used in the message.
    """
    import numpy as np

    arr = np.asarray(array)
    if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        n = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise InputError(f"{what} contains {n} NaN or infinite value(s)")
