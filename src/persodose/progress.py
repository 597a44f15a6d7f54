"""Progress of long work: a rich bar with an ETA on a terminal, plain lines otherwise.

Monte Carlo batches, kernels, training epochs and the demo's steps report progress through
one callable ``update(done, total)``; :func:`progress` makes it. On a terminal (stderr is a
TTY) it draws a transient rich progress bar with elapsed time and ETA; elsewhere (CI, a log
file, a pipe) it logs a plain line at most every ``every_s`` seconds and at the end, with the
same ETA, through the ``persodose`` logger, so ``--quiet`` silences it.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator

from persodose.logs import get_logger

Update = Callable[[int, int], None]


def _eta_s(t0: float, done: int, total: int) -> float | None:
    if done <= 0 or total <= 0:
        return None
    return (time.perf_counter() - t0) * (total - done) / done


def format_eta(seconds: float | None) -> str:
    """``"ETA 1 min 05 s"`` style text (``"ETA ?"`` before the first step)."""
    if seconds is None:
        return "ETA ?"
    s = int(round(seconds))
    return f"ETA {s // 60} min {s % 60:02d} s" if s >= 60 else f"ETA {s} s"


@contextlib.contextmanager
def progress(description: str, total: int | None = None, *, unit: str = "batches", every_s: float = 10.0,
             terminal: bool | None = None) -> Iterator[Update]:
    """Yield ``update(done, total)`` that shows the progress of ``description``.

    Args:
        description: what is being done (e.g. ``"Lu-177: 2e6 decays"``).
        total: number of steps if known now (``update`` may give it later).
        unit: what a step is, for the plain lines.
        every_s: least seconds between two plain lines.
        terminal: force the bar (True) or the plain lines (False); default: whether stderr
            is a terminal.
    """
    tty = sys.stderr.isatty() if terminal is None else terminal
    if tty:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), "ETA", TimeRemainingColumn(), transient=True,
                      console=Console(file=sys.stderr)) as bar:
            task = bar.add_task(description, total=total)
            yield lambda done, tot: bar.update(task, completed=done, total=tot)
        return
    log = get_logger("progress")
    t0 = time.perf_counter()
    last = [t0 - every_s]

    def update(done: int, tot: int) -> None:
        now = time.perf_counter()
        if done >= tot or now - last[0] >= every_s:
            last[0] = now
            log.info(f"{description}: {done}/{tot} {unit}, {format_eta(_eta_s(t0, done, tot))}")

    yield update
