"""The ``persodose`` command.

Each command group lives in its own module with a ``register(app)`` function; heavy
imports happen inside the commands so that ``persodose --help`` stays fast. Every
:class:`~persodose.errors.PersodoseError` becomes a one-line message on stderr and exit
code 2; no traceback is shown for a user's mistake.
"""

from __future__ import annotations

import sys
import warnings
from typing import List, Optional

import typer

import importlib
import importlib.util

app = typer.Typer(
    name="persodose",
    help="Personalised patient dosimetry for nuclear medicine and CT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Command groups, one module each in persodose/cli with a ``register(app)`` function; a new
#: group is one file plus its name here (a name whose module does not exist yet is skipped).
COMMAND_MODULES = ("info", "series", "nuclide", "density", "internal", "ct", "mc", "kernel", "compare", "phantom",
                   "demo", "methods", "dataset", "train", "weights", "evaluate", "segment", "pacs", "record",
                   "marrow")

for _name in COMMAND_MODULES:
    if importlib.util.find_spec(f"persodose.cli.{_name}") is not None:
        importlib.import_module(f"persodose.cli.{_name}").register(app)


@app.callback()
def _root(
    plugin: Optional[List[str]] = typer.Option(None, "--plugin",
                                               help="Load a plug-in (a .py file or a module name) that registers dose "
                                                    "methods; repeat for more. PERSODOSE_PLUGINS works too."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Say more of what is done (log level DEBUG)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors."),
) -> None:
    """Personalised patient dosimetry for nuclear medicine and CT."""
    from persodose.logs import configure
    from persodose.plugins import load_from_environment, load_plugin

    configure(verbose=verbose, quiet=quiet)
    load_from_environment()
    for p in plugin or []:
        load_plugin(p)


def _format_warning(message, category, filename, lineno, line=None):  # pragma: no cover
    return f"persodose: warning: {' '.join(str(message).split())}\n"


class _Interrupted(BaseException):
    """Ctrl-C, raised by our own SIGINT handler so that no library swallows it."""


def _on_sigint(signum, frame):
    raise _Interrupted()


def _error(message: str) -> int:
    msg = " ".join(str(message).split())
    print(f"persodose: error: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run the app and return the exit code: 0 done, 2 a user's error, 130 interrupted.

    A user's error (bad option, bad input, a place that cannot be written) is one line on
    stderr, never a traceback; a traceback means a bug in persodose.
    """
    import signal

    from persodose.errors import PersodoseError

    warnings.formatwarning = _format_warning
    previous = None
    try:
        previous = signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread (e.g. called from a worker): keep the default
        pass
    try:
        rv = app(args=argv, prog_name="persodose", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except PersodoseError as exc:
        return _error(str(exc))
    except typer.TyperException as exc:  # Click's usage errors: bad or missing option, no such command
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help was printed already
            return 0
        hint = f" (see 'persodose {ctx.info_name} --help')" if ctx is not None and ctx.parent else ""
        return _error(exc.format_message() + hint)
    except (_Interrupted, KeyboardInterrupt, typer.Abort):
        print("persodose: interrupted; nothing was written", file=sys.stderr)
        return 130
    except OSError as exc:  # the machine's, not persodose's: disk full, permission, ...
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return _error(f"{exc.strerror or exc}{where}")
    except MemoryError:
        return _error("out of memory: use a coarser --dose-voxel-mm, fewer histories per batch or a bigger machine")
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def run(argv: list[str] | None = None) -> None:
    """Console entry point: :func:`main` with its exit code."""
    sys.exit(main(argv))


if __name__ == "__main__":  # pragma: no cover
    run()
