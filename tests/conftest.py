import os
import subprocess
import sys

import pytest

# Keep the suite deterministic and quiet on the 2-core CI machine.
os.environ.setdefault("MPLBACKEND", "Agg")


def run_cli(*args, cwd=None):
    """Run the ``persodose`` command in a subprocess (end-to-end checks); returns CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "persodose.cli.main", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def run_cli_in_process(*args, cwd=None):
    """Run the ``persodose`` command in this process (the CLI's own entry point, its exit code and
    its stdout/stderr); returns a CompletedProcess like :func:`run_cli`."""
    import contextlib
    import io

    from persodose.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
    finally:
        os.chdir(old)
    return subprocess.CompletedProcess(["persodose", *map(str, args)], code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli():
    """The CLI, in-process (Typer's app through persodose.cli.main.main)."""
    return run_cli_in_process


@pytest.fixture
def cli_subprocess():
    """The CLI as a separate process, for the few end-to-end checks of the installed command."""
    return run_cli
