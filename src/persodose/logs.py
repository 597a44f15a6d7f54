"""Logging: one ``persodose`` logger, configured once by the command line.

Library code logs through ``logging.getLogger(__name__)`` (children of ``persodose``) and
never prints; the CLI's ``--verbose`` shows DEBUG, ``--quiet`` only warnings and errors.
Information goes to stderr as plain lines, warnings as ``persodose: warning: ...``; stdout
stays for results.
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "persodose"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (redirections follow)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # logging sets it in __init__; the property always answers sys.stderr
        pass


class _Formatter(logging.Formatter):
    """Information as it is; warnings and errors as ``persodose: warning: ...`` lines."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"persodose: {record.levelname.lower()}: {msg}"
        return msg


def info(message: str) -> None:
    """Log a line of progress information (what the CLI passes as ``log=`` to workflows)."""
    logging.getLogger(LOGGER_NAME).info(message)


def configure(verbose: bool = False, quiet: bool = False) -> logging.Logger:
    """Set the ``persodose`` logger's level and its one stderr handler (idempotent)."""
    from persodose.errors import InputError

    if verbose and quiet:
        raise InputError("give --verbose or --quiet, not both")
    logger = logging.getLogger(LOGGER_NAME)
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logger.setLevel(level)
    if not any(getattr(h, "_persodose", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_Formatter())
        handler._persodose = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    return logger


def get_logger(name: str = LOGGER_NAME) -> logging.Logger:
    """The logger of a persodose module (``__name__``) or the package's."""
    return logging.getLogger(name if name.startswith(LOGGER_NAME) else f"{LOGGER_NAME}.{name}")
