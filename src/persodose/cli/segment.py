"""``persodose segment``, ``persodose segment-lesions`` and ``persodose compare-labels``.

* ``segment --ct PATH --out FILE`` (or ``--pacs PACS --study UID`` for the study's CT, the
  SEG stored back in the study): organs from a CT (DICOM series or NIfTI/MHA/NRRD in HU) by a
  registered segmenter. ``FILE`` ending in ``.nii``/``.nii.gz``/``.mha``/``.nrrd`` is a label
  image with its names in ``FILE.json`` (``{"value": "name"}``, the phantom's
  ``labels.nii.gz.json`` convention, read back by ``--labels FILE`` of ``internal`` and ``ct``);
  ``FILE`` ending in ``.dcm`` is a DICOM SEG on the CT series (a DICOM CT only). Both get
  ``FILE.provenance.json``. ``segment --list`` lists the back-ends.
* ``segment-lesions --emission PATH --out FILE``: lesions of a PET/SPECT image
  (:mod:`persodose.segmentation.lesions`), label image and ``FILE.json`` on the emission grid.
* ``compare-labels --test FILE --reference FILE``: Dice, Jaccard, precision, recall and HD95
  per organ, matched by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from persodose.cli._common import about, label_sidecars, read_labels


def register(app: typer.Typer) -> None:
    app.command("segment")(segment)
    app.command("segment-lesions")(segment_lesions)
    app.command("compare-labels")(compare_labels)


def _parse_settings(items: Optional[List[str]]) -> dict:
    from persodose.errors import InputError

    out = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise InputError(f"--settings {item!r} must be NAME=VALUE")
        out[key.strip()] = value.strip()
    return out


def _output_kind(out: Path) -> str:
    from persodose.errors import InputError
    from persodose.io.image import WRITE_SUFFIXES

    name = str(out).lower()
    if name.endswith(".dcm"):
        return "seg"
    if name.endswith(tuple(WRITE_SUFFIXES)):
        return "image"
    raise InputError(f"--out {out}: give a label image ({', '.join(WRITE_SUFFIXES)}) or a DICOM SEG file (.dcm)")


def _write_label_image(labels, names: dict, out: Path) -> None:
    """The label image and its names sidecar ``out.json``, each written atomically."""
    import json

    import numpy as np

    from persodose.io.image import write_image
    from persodose.outputs import atomic_file

    top = max(names, default=0)
    dtype = np.uint8 if top < 256 else np.uint16
    with atomic_file(Path(str(out) + ".json")) as tmp:
        tmp.write_text(json.dumps({str(k): v for k, v in sorted(names.items())}, indent=2))
    write_image(labels.with_array(np.asarray(labels.array).astype(dtype)), out)


def _write_provenance(out: Path, command: str, **kw) -> None:
    from persodose.outputs import atomic_file, write_provenance

    with atomic_file(Path(str(out) + ".provenance.json")) as tmp:
        write_provenance(tmp, command, **kw)


def _list_backends() -> None:
    from persodose.segmentation import available_segmenters, get_segmenter

    typer.echo(f"{'back-end':18s} {'installed':9s}  organs")
    for name in available_segmenters():
        info = get_segmenter(name)
        inst = "yes" if info.installed else f"no (pip install 'persodose[{info.extra}]')" if info.extra else "no"
        typer.echo(f"{name:18s} {inst:9s}  {', '.join(info.organs)}")
        if info.summary:
            typer.echo(f"{'':18s} {'':9s}  {info.summary}")


def _volume_table(names: dict, volumes: dict) -> None:
    typer.echo(f"{'label':>5s}  {'organ':24s} {'volume_ml':>12s}")
    for value, name in sorted(names.items()):
        typer.echo(f"{value:5d}  {name:24s} {volumes.get(name, 0.0):12.1f}")


def segment(
    ct: Optional[Path] = typer.Option(None, "--ct", help="CT: DICOM series folder or file, or an image in HU."),
    out: Optional[Path] = typer.Option(None, "--out",
                                       help="Label image (.nii.gz, names in FILE.json) or DICOM SEG (.dcm)."),
    backend: str = typer.Option("threshold", "--backend", help="Segmenter ('persodose segment --list')."),
    organs: Optional[str] = typer.Option(None, "--organs", help="Comma-separated organs to keep (default: all)."),
    settings: Optional[List[str]] = typer.Option(None, "--settings", help="A back-end setting NAME=VALUE (repeat)."),
    list_: bool = typer.Option(False, "--list", help="List the back-ends, installed or not, and their organs."),
    pacs: Optional[str] = typer.Option(None, "--pacs", help="Read the study's CT from this PACS (URL or configured "
                                                            "node) instead of --ct, and store a DICOM SEG --out "
                                                            "back; needs --study."),
    study: Optional[str] = typer.Option(None, "--study", help="StudyInstanceUID on --pacs."),
) -> None:
    """Organ label map of a CT by a registered segmenter; per-organ volumes (mL)."""
    params = dict(locals())
    if pacs is not None or study is not None:  # pull the CT, segment, store the SEG: persodose.cli.pacs
        from persodose.cli.pacs import run_with_pacs
        from persodose.errors import InputError

        if out is None or list_:
            raise InputError("--pacs needs --out (a DICOM SEG .dcm is stored back) and no --list")
        return run_with_pacs(segment, params, emission=False)
    from persodose.errors import InputError
    from persodose.io.load import load_ct
    from persodose.outputs import check_output_paths
    from persodose.segmentation import get_segmenter
    from persodose.segmentation import segment as run_segment

    if list_:
        return _list_backends()
    if ct is None or out is None:
        raise InputError("give --ct and --out (or --list)")
    kind = _output_kind(out)
    info = get_segmenter(backend)
    options = _parse_settings(settings)
    info.make_settings(options)  # a bad setting is said before the CT is read
    wanted = [o.strip() for o in organs.split(",") if o.strip()] if organs is not None else None
    if wanted is not None and not wanted:
        raise InputError(f"--organs {organs!r} names no organ")
    sides = [out, Path(str(out) + ".provenance.json")] + ([Path(str(out) + ".json")] if kind == "image" else [])
    check_output_paths(inputs={"--ct": ct}, output_files={"--out": sides})
    with about("--ct", ct):
        ct_grid, ct_info = load_ct(ct)
    if kind == "seg" and ct_info is None:
        raise InputError(f"--out {out}: a DICOM SEG needs a DICOM CT series as --ct (got the image {ct}); "
                         "write a .nii.gz instead")
    with about("--ct", ct):
        result = run_segment(ct_grid, backend=info.name, organs=wanted, settings=options)
    if not result.names:
        raise InputError(f"segmenter {info.name!r} found none of the organs asked for in {ct}")
    if kind == "seg":
        from persodose.io.seg import write_seg

        write_seg(result.labels, result.names, out, list(ct_info.files), algorithm_name=f"persodose {info.name}")
    else:
        _write_label_image(result.labels, result.names, out)
    volumes = result.volumes_ml()
    _write_provenance(out, "segment", settings=result.provenance(), inputs={"ct": str(ct)}, volumes_ml=volumes)
    _volume_table(result.names, volumes)
    typer.echo(f"labels: {out}" + (f" (names: {out}.json)" if kind == "image" else " (DICOM SEG)"))


def _within_mask(spec: str, emission):
    """``--within LABELS[:NAMES]`` as a mask on the emission grid (names or values, comma-separated)."""
    import numpy as np

    from persodose.errors import InputError

    path, names_text = Path(spec), None
    if not path.exists() and ":" in spec:
        head, _, names_text = spec.rpartition(":")
        path = Path(head)
    lab, names = read_labels(path, emission, option="--within")
    if not lab.same_geometry(emission):
        lab = lab.resample_to(emission)
    arr = np.asarray(lab.array)
    if names_text is None:
        return arr > 0, path
    values = []
    by_name = {v: k for k, v in (names or {}).items()}
    for item in (x.strip() for x in names_text.split(",")):
        if not item:
            continue
        if item in by_name:
            values.append(by_name[item])
        elif item.isdigit():
            values.append(int(item))
        else:
            known = ", ".join(sorted(by_name)) or "none (no names file)"
            raise InputError(f"--within {spec}: no label named {item!r}; names: {known}")
    if not values:
        raise InputError(f"--within {spec}: give label names or values after ':'")
    mask = np.isin(arr, values)
    if not mask.any():
        raise InputError(f"--within {spec}: labels {values} hold no voxel of the emission grid")
    return mask, path


def segment_lesions(
    emission: Path = typer.Option(..., "--emission", help="PET or SPECT image: DICOM series or NIfTI."),
    out: Path = typer.Option(..., "--out", help="Lesion label image (.nii.gz), names in FILE.json."),
    within: Optional[str] = typer.Option(None, "--within", help="LABELS[:NAMES]: lesions only inside these labels "
                                                                "(names or values, comma-separated; default all)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Seed points x,y,z in mm (patient LPS), ';' between."),
    names: Optional[str] = typer.Option(None, "--names", help="Comma-separated lesion names, one per seed."),
    fraction: float = typer.Option(0.42, "--fraction", help="Each lesion: voxels >= this fraction of its maximum."),
    background_multiple: float = typer.Option(3.0, "--background-multiple",
                                              help="Automatic hot spots: >= this x the median inside --within."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Automatic hot spots: also >= this value "
                                                                        "(image unit, e.g. SUV)."),
    min_volume_ml: float = typer.Option(0.5, "--min-volume-ml", help="Automatic lesions: drop smaller ones (mL)."),
    units: Optional[str] = typer.Option(None, "--units", help="Unit of an untagged image file, e.g. Bq/mL."),
) -> None:
    """Lesions of a PET/SPECT image, found automatically or from seeds, each at 42 % of its maximum."""
    from persodose.errors import InputError
    from persodose.io.load import load_emission
    from persodose.outputs import check_output_paths
    from persodose.segmentation.lesions import LesionSettings, parse_seeds
    from persodose.segmentation.lesions import segment_lesions as run

    if _output_kind(out) != "image":
        raise InputError(f"--out {out}: lesions are written as a label image (.nii.gz)")
    settings = LesionSettings(fraction=fraction, background_multiple=background_multiple,
                              absolute_threshold=threshold, min_volume_ml=min_volume_ml)
    points = parse_seeds(seeds) if seeds is not None else None
    lesion_names = [n.strip() for n in names.split(",")] if names is not None else None
    if lesion_names is not None and (points is None or not all(lesion_names)):
        raise InputError("--names gives one non-empty name per --seeds point")
    within_path = None
    if within is not None:
        head = within if Path(within).exists() else within.rpartition(":")[0] or within
        within_path = label_sidecars(head, None)
    outs = [out, Path(str(out) + ".json"), Path(str(out) + ".provenance.json")]
    check_output_paths(inputs={"--emission": emission, "--within": within_path}, output_files={"--out": outs})
    with about("--emission", emission):
        grid, _ = load_emission(emission, unit=units)
    mask = None
    if within is not None:
        mask, _ = _within_mask(within, grid)
    with about("--emission", emission):
        result = run(grid, within=mask, seeds_mm=points, names=lesion_names, settings=settings)
    if len(set(result.names.values())) != len(result.names):
        raise InputError("--names: give each lesion its own name")
    if result.lesions:
        _write_label_image(result.labels, result.names, out)
    else:
        raise InputError(f"no lesion found in {emission} (background {result.background:.4g} {grid.unit}; "
                         f"hot spots need {background_multiple:g} x that): lower --background-multiple or give --seeds")
    _write_provenance(out, "segment-lesions", settings=settings, inputs={"emission": str(emission), "within": within,
                      "seeds_mm": points}, lesions=result.lesions, background=result.background)
    typer.echo(f"background (median inside --within): {result.background:.4g} {grid.unit}")
    typer.echo(f"{'label':>5s}  {'lesion':20s} {'max':>11s} {'volume_ml':>10s}  max at (x, y, z) mm")
    for les in result.lesions:
        x, y, z = les.max_point_mm
        typer.echo(f"{les.label:5d}  {les.name:20s} {les.max_value:11.4g} {les.volume_ml:10.2f}  "
                   f"({x:.1f}, {y:.1f}, {z:.1f})")
    typer.echo(f"labels: {out} (names: {out}.json)")


def _read_reference(path: Path):
    """A reference label map on its own grid: a label image (names from FILE.json) or a DICOM SEG."""
    from persodose.errors import InputError
    from persodose.grid import Kind
    from persodose.io.image import is_image_file, read_image

    with about("--reference", path):
        if is_image_file(path):
            grid = read_image(path, kind=Kind.LABELS)
            return read_labels(path, grid, option="--reference")
        if not path.is_file():
            raise InputError("is neither a label image nor a DICOM SEG file")
        from persodose.io.seg import read_seg

        return read_seg(path)


def compare_labels(
    test: Path = typer.Option(..., "--test", help="Label map to evaluate (NIfTI + FILE.json, DICOM SEG or RTSTRUCT)."),
    reference: Path = typer.Option(..., "--reference", help="Reference label map (NIfTI + FILE.json or DICOM SEG)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the scores as JSON here."),
) -> None:
    """Dice, Jaccard, precision, recall and HD95 (mm) per organ, matched by name."""
    import json
    import math

    from persodose.errors import InputError
    from persodose.metrics.segmentation import label_overlap
    from persodose.outputs import atomic_file, check_output_paths, jsonable

    if json_out is not None:
        check_output_paths(inputs={"--test": label_sidecars(test, None),
                                   "--reference": label_sidecars(reference, None)}, output_files={"--json": json_out})
    ref, ref_names = _read_reference(reference)
    tst, tst_names = read_labels(test, ref, option="--test")
    if not tst.same_geometry(ref):
        tst = tst.resample_to(ref)
    if ref_names is None or tst_names is None:
        which = "--reference" if ref_names is None else "--test"
        raise InputError(f"{which}: organs are matched by name; give its names (FILE.json beside a label image)")
    scores = label_overlap(tst, ref, tst_names, ref_names)
    typer.echo(f"{'organ':24s} {'dice':>6s} {'jaccard':>7s} {'precision':>9s} {'recall':>6s} {'hd95_mm':>8s} "
               f"{'test_ml':>9s} {'ref_ml':>9s}")

    def f(x, w, p):
        return f"{'-':>{w}s}" if math.isnan(x) else f"{x:{w}.{p}f}"

    for name, s in scores.items():
        typer.echo(f"{name:24s} {f(s.dice, 6, 3)} {f(s.jaccard, 7, 3)} {f(s.precision, 9, 3)} {f(s.recall, 6, 3)} "
                   f"{f(s.hd95_mm, 8, 1)} {s.test_volume_ml:9.1f} {s.reference_volume_ml:9.1f}")
    if json_out is not None:
        doc = {"test": str(test), "reference": str(reference), "spacing_zyx_mm": list(ref.spacing_zyx_mm),
               "organs": {n: {k: (None if isinstance(v, float) and math.isnan(v) else v)
                              for k, v in jsonable(s).items()} for n, s in scores.items()}}
        with atomic_file(json_out) as tmp:
            tmp.write_text(json.dumps(doc, indent=2, allow_nan=False))
        typer.echo(f"scores: {json_out}")
