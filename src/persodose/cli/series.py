"""``persodose series``: list the DICOM series under a path."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("series")(series)


def series(path: Path = typer.Argument(..., help="A DICOM file or a directory (searched recursively).")) -> None:
    """List the DICOM image series found under PATH with their times and units."""
    from rich.console import Console
    from rich.table import Table

    from persodose.errors import InputError
    from persodose.io.dicom import list_series

    if not path.exists():
        raise InputError(f"path does not exist: {path}")
    infos = list_series(path)
    if not infos:
        raise InputError(f"no DICOM image series found in {path}")
    table = Table(show_header=True)
    for col in ("modality", "description", "acquired", "units", "files", "series UID"):
        table.add_column(col)
    for i in infos:
        when = i.acquisition_datetime.isoformat(sep=" ") if i.acquisition_datetime else "MISSING"
        table.add_row(i.modality, i.series_description, when, i.units, str(len(i.files)),
                      i.series_instance_uid)
    Console().print(table)
