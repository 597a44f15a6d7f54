"""``persodose pacs``: find, pull and push DICOM on a PACS (DICOMweb or DIMSE).

* ``persodose pacs find --pacs PACS [--patient-id ID] [--study UID] [--modality M]
  [--date YYYYMMDD[-YYYYMMDD]] [--series] [--json]``: the matching studies (or, with
  ``--series``, the series of ``--study``).
* ``persodose pacs pull --pacs PACS --study UID [--series UID ...] [--modality M] --out DIR``:
  the study (or some series) into ``DIR/<SeriesInstanceUID>/`` with ``pull.json``.
* ``persodose pacs push --pacs PACS PATH ...``: the DICOM files under the paths.

``PACS`` is a URL (``https://host/dicom-web``, ``dicom://AET@host:port``) or a node name of
the configuration file; credentials come from the environment or that file only (see
:mod:`persodose.io.pacs`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

group = typer.Typer(name="pacs", help="Find, pull and push DICOM on a PACS (DICOMweb or DIMSE).",
                    no_args_is_help=True)

_PACS_HELP = ("PACS URL (https://host/dicom-web, dicom://AET@host:port) or a node name of the configuration "
              "file; credentials from PERSODOSE_PACS_USERNAME/PASSWORD/TOKEN or the file, never here.")
_CONFIG_HELP = "PACS configuration file (default $PERSODOSE_PACS_CONFIG or ~/.config/persodose/pacs.toml)."


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="pacs")


def _node(pacs: str, config: Optional[Path]):
    from persodose.io.pacs import resolve_node

    return resolve_node(pacs, config_path=config)


@group.command("find")
def find(
    pacs: str = typer.Option(..., "--pacs", envvar="PERSODOSE_PACS", help=_PACS_HELP),
    patient_id: Optional[str] = typer.Option(None, "--patient-id", help="Patient ID (wildcards * and ? allowed)."),
    study: Optional[str] = typer.Option(None, "--study", help="StudyInstanceUID."),
    modality: Optional[str] = typer.Option(None, "--modality", help="A modality in the study (CT, NM, PT, ...)."),
    date: Optional[str] = typer.Option(None, "--date", help="Study date YYYYMMDD or range YYYYMMDD-YYYYMMDD."),
    series: bool = typer.Option(False, "--series", help="List the series of --study instead of studies."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="At most this many studies."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    config: Optional[Path] = typer.Option(None, "--config", help=_CONFIG_HELP),
) -> None:
    """Find studies (or the series of one study) on a PACS."""
    import dataclasses

    from persodose.errors import InputError
    from persodose.io.pacs import find_series, find_studies

    node = _node(pacs, config)
    if series:
        if not study:
            raise InputError("--series lists the series of one study: give --study UID")
        rows = find_series(node, study, modality=modality)
        cols = ("modality", "series_number", "series_description", "n_instances", "series_instance_uid")
    else:
        rows = find_studies(node, patient_id=patient_id, study_uid=study, modality=modality, study_date=date,
                            limit=limit)
        cols = ("patient_id", "study_date", "modalities", "n_series", "n_instances", "study_description",
                "study_instance_uid")
    if json_out:
        typer.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))
        return
    _table(rows, cols)
    typer.echo(f"{len(rows)} {'series' if series else 'stud' + ('y' if len(rows) == 1 else 'ies')} on {node.url}",
               err=True)


def _table(rows, cols) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=True)
    for c in cols:
        table.add_column(c.replace("_", " "))
    for r in rows:
        cells = []
        for c in cols:
            v = getattr(r, c)
            cells.append("\\".join(v) if isinstance(v, tuple) else "" if v is None else str(v))
        table.add_row(*cells)
    Console(width=200).print(table)


@group.command("pull")
def pull(
    pacs: str = typer.Option(..., "--pacs", envvar="PERSODOSE_PACS", help=_PACS_HELP),
    study: str = typer.Option(..., "--study", help="StudyInstanceUID to retrieve."),
    series: Optional[List[str]] = typer.Option(None, "--series", help="Only this SeriesInstanceUID; repeat."),
    modality: Optional[str] = typer.Option(None, "--modality", help="Only the series of this modality."),
    out: Path = typer.Option(..., "--out", help="Folder to write (one sub-folder per series, pull.json)."),
    config: Optional[Path] = typer.Option(None, "--config", help=_CONFIG_HELP),
) -> None:
    """Retrieve a study (or some of its series) from a PACS into a folder."""
    from persodose.io.pacs import pull as do_pull
    from persodose.outputs import check_output_paths

    node = _node(pacs, config)
    check_output_paths(inputs={}, output_dirs={"--out": out})
    res = do_pull(node, out, study_uid=study, series_uids=series or None, modality=modality)
    for s in res.series:
        typer.echo(f"  {s['modality'] or '?':8s} {s['files']:5d} file(s)  {s['series_description']}  -> {s['folder']}",
                   err=True)
    typer.echo(f"pulled {res.n_instances} instance(s) in {len(res.series)} series of study {study} -> {out}")


@group.command("push")
def push(
    paths: List[Path] = typer.Argument(..., help="DICOM files or folders (searched recursively)."),
    pacs: str = typer.Option(..., "--pacs", envvar="PERSODOSE_PACS", help=_PACS_HELP),
    config: Optional[Path] = typer.Option(None, "--config", help=_CONFIG_HELP),
) -> None:
    """Store DICOM files on a PACS."""
    from persodose.io.pacs import push as do_push

    node = _node(pacs, config)
    res = do_push(node, paths)
    typer.echo(f"stored {res.n_stored} of {res.n_sent} instance(s) on {node.url} "
               f"(stud{'y' if len(res.study_instance_uids) == 1 else 'ies'} {', '.join(res.study_instance_uids)})")


# ----------------------------------------------------------------------------- --pacs on other commands
#: Help of the ``--pacs`` / ``--study`` options that ``internal`` and ``ct`` take.
PACS_RUN_HELP = ("Read the study from this PACS (URL or configured node; credentials from the environment or "
                 "the configuration file) instead of --ct/--emission, and store the DICOM results (RT Dose, and "
                 "the SEG of --labels) back; needs --study.")
STUDY_RUN_HELP = "StudyInstanceUID of the study on --pacs."


def _series_order(folder: Path):
    """Acquisition date-time of the series in ``folder`` (for ordering time points)."""
    import datetime as dt

    from persodose.io.dicom import list_series

    infos = list_series(folder)
    when = [i.acquisition_datetime for i in infos if i.acquisition_datetime is not None]
    return min(when) if when else dt.datetime.max


def _pick_inputs(pulled, root: Path, need_emission: bool) -> tuple[Path, list[Path]]:
    """The CT series (the one with the most instances) and the NM/PT series in acquisition
    order, from what :func:`persodose.io.pacs.pull` wrote."""
    from persodose.errors import InputError

    cts = [s for s in pulled.series if s["modality"] == "CT"]
    if not cts:
        raise InputError(f"study {pulled.study_instance_uid} on the PACS has no CT series")
    ct_dir = root / max(cts, key=lambda s: s["files"])["folder"]
    emission = [root / s["folder"] for s in pulled.series if s["modality"] in ("NM", "PT")]
    if need_emission and not emission:
        raise InputError(f"study {pulled.study_instance_uid} on the PACS has no NM or PT series")
    return ct_dir, sorted(emission, key=_series_order)


def _labels_as_seg(params: dict, ct_dir: Path, work: Path) -> Path | None:
    """``--labels`` (``auto``/``auto:NAME`` or a label image) on the pulled CT, as a DICOM
    SEG on its slices in ``work`` (:func:`persodose.io.seg.write_seg`), or ``None`` for a
    DICOM SEG or RTSTRUCT given as it is (already DICOM, not stored again)."""
    import numpy as np

    from persodose.cli._common import about, read_labels
    from persodose.io.image import is_image_file
    from persodose.io.load import load_ct
    from persodose.io.seg import write_seg
    from persodose.segmentation import is_auto_spec

    labels = params["labels"]
    if not (is_auto_spec(str(labels)) or is_image_file(Path(labels))):
        return None
    with about("--ct", ct_dir):
        ct_grid, ct_info = load_ct(ct_dir)
    lab, names = read_labels(labels, ct_grid, params.get("label_names"))
    on_ct = lab if lab.same_geometry(ct_grid) else lab.resample_to(ct_grid)
    if not names:
        names = {int(k): f"label_{int(k)}" for k in np.unique(on_ct.array) if k > 0}
    what = f"persodose {labels}" if is_auto_spec(str(labels)) else "persodose (user labels)"
    return write_seg(on_ct, names, work / "labels_seg.dcm", list(ct_info.files), algorithm_name=what[:64])


def _add_to_results(seg: Path, out: Path) -> None:
    """Copy the SEG into the command's output folder (atomically) to be stored with it."""
    import shutil

    from persodose.outputs import atomic_file

    folder = out if out.is_dir() else out.parent
    with atomic_file(folder / "labels_seg.dcm") as tmp:
        shutil.copyfile(seg, tmp)


def run_with_pacs(command, params: dict, *, emission: bool) -> None:
    """Run ``command`` (``internal``, ``ct`` or ``segment``, the Typer function) on a study
    of a PACS: pull the study into a temporary folder beside ``--out``, fill ``--ct`` (and
    ``--emission``, one per NM/PT series in acquisition order), run, then store every DICOM
    file the command wrote under ``--out`` (its RT Dose, or its SEG) back in the study. With
    ``--labels`` (``auto``, ``auto:NAME`` or a label image) the labels are first written as a
    DICOM SEG on the pulled CT, which the command reads and which is stored back too
    (``labels_seg.dcm`` in ``--out``). The temporary folder is removed in any case; nothing
    is stored if the command fails.

    Args:
        command: the command function; called again with ``pacs=None, study=None``.
        params: its arguments (``--pacs`` and ``--study`` given, ``--ct``/``--emission`` not).
        emission: whether the command needs emission series.
    """
    import shutil
    import tempfile

    from persodose.errors import InputError
    from persodose.io.pacs import dicom_files, pull as do_pull, push as do_push, resolve_node

    pacs, study = params.get("pacs"), params.get("study")
    if not pacs or not study:
        raise InputError("--pacs and --study go together: give both")
    if params.get("ct") is not None or (emission and params.get("emission")):
        raise InputError("--pacs reads the images from the PACS: give --pacs and --study, or --ct"
                         + ("/--emission" if emission else "") + ", not both")
    node = resolve_node(pacs)
    out = Path(params["out"])
    out.resolve().parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".persodose-pacs-", dir=out.resolve().parent))
    try:
        pulled = do_pull(node, work / "study", study_uid=study)
        typer.echo(f"pulled {pulled.n_instances} instance(s) of study {study} from {node.url}", err=True)
        ct_dir, em = _pick_inputs(pulled, work / "study", emission)
        args = {**params, "pacs": None, "study": None, "ct": ct_dir}
        if emission:
            args["emission"] = em
        seg = _labels_as_seg(params, ct_dir, work) if params.get("labels") is not None else None
        if seg is not None:  # the command reads the SEG: the labels it used are the ones stored
            args["labels"], args["label_names"] = seg, None
        command(**args)
        if seg is not None:
            _add_to_results(seg, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    try:
        results = dicom_files([out])
    except InputError:
        typer.echo(f"no DICOM result under {out} to store on {node.url}", err=True)
        return
    res = do_push(node, results)
    typer.echo(f"stored {res.n_stored} DICOM result(s) on {node.url} (study {study})")
