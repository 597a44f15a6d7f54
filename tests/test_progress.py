"""Progress lines off a terminal, and the log levels of --verbose / --quiet."""

import logging

from persodose.logs import configure
from persodose.progress import format_eta, progress


def test_plain_lines_with_eta_off_a_terminal(capsys):
    configure()
    with progress("unit test", 4, every_s=0.0, terminal=False) as update:
        for k in range(1, 5):
            update(k, 4)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("unit test: 1/4 batches, ETA") and err[-1].startswith("unit test: 4/4 batches, ETA 0 s")
    assert format_eta(65.2) == "ETA 1 min 05 s" and format_eta(None) == "ETA ?"


def test_quiet_silences_progress_and_verbose_shows_debug(capsys):
    configure(quiet=True)
    with progress("quiet", 2, every_s=0.0, terminal=False) as update:
        update(2, 2)
    logging.getLogger("persodose.x").warning("still shown")
    err = capsys.readouterr().err
    assert "quiet" not in err and "persodose: warning: still shown" in err
    configure(verbose=True)
    logging.getLogger("persodose.x").debug("detail")
    assert "detail" in capsys.readouterr().err
    configure()
