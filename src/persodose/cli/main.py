"""The ``persodose`` command.

Each command group lives in its own module with a ``register(app)`` function; heavy
imports happen inside the commands so that ``persodose --help`` stays fast. Every
:class:`~persodose.errors.PersodoseError` becomes a one-line message on stderr and exit
code 2; no traceback is shown for a user's mistake.
"""

from __future__ import annotations

import sys
import warnings

import typer

from persodose.cli import compare, ct, density, demo, info, internal, kernel, mc, nuclide, phantom, series

app = typer.Typer(
    name="persodose",
    help="Personalised patient dosimetry for nuclear medicine and CT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (info, series, nuclide, density, internal, ct, mc, kernel, compare, phantom, demo):
    module.register(app)


def _format_warning(message, category, filename, lineno, line=None):  # pragma: no cover
    return f"persodose: warning: {message}\n"


def run(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning user errors into exit code 2."""
    from persodose.errors import PersodoseError

    warnings.formatwarning = _format_warning
    try:
        app(args=argv, prog_name="persodose", standalone_mode=True)
    except PersodoseError as exc:
        msg = " ".join(str(exc).split())
        print(f"persodose: error: {msg}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("persodose: interrupted; nothing was written", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    run()
