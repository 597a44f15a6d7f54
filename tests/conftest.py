import os
import subprocess
import sys

import pytest

# Keep the suite deterministic and quiet on the 2-core CI machine.
os.environ.setdefault("MPLBACKEND", "Agg")


def run_cli(*args, cwd=None):
    """Run the installed ``persodose`` command in a subprocess; returns CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "persodose.cli.main", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture
def cli():
    return run_cli
