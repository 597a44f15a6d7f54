"""Logging: one ``persodose`` logger, configured once by the command line.

Library code logs through ``logging.getLogger(__name__)`` (children of ``persodose``) and
never prints; the CLI's ``--verbose`` shows DEBUG, ``--quiet`` only warnings and errors.
Messages go to stderr as ``persodose: LEVEL: message`` lines, so stdout stays for results.
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "persodose"


def configure(verbose: bool = False, quiet: bool = False) -> logging.Logger:
    """Set the ``persodose`` logger's level and its one stderr handler (idempotent)."""
    from persodose.errors import InputError

    if verbose and quiet:
        raise InputError("give --verbose or --quiet, not both")
    logger = logging.getLogger(LOGGER_NAME)
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logger.setLevel(level)
    if not any(getattr(h, "_persodose", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("persodose: %(levelname)s: %(message)s"))
        handler._persodose = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    return logger


def get_logger(name: str = LOGGER_NAME) -> logging.Logger:
    """The logger of a persodose module (``__name__``) or the package's."""
    return logging.getLogger(name if name.startswith(LOGGER_NAME) else f"{LOGGER_NAME}.{name}")
