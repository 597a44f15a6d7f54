"""``persodose mc``: Monte Carlo absorbed dose from a time-integrated activity map."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from persodose.cli._common import MAX_SEED, about, count, target_above_opt, target_uncertainty_opt

#: Batches without and with a target uncertainty (when --batches is not given).
BATCHES, TARGET_BATCHES = 10, 50


#: Help of ``--emissions`` (``mc`` and ``kernel``); the names are those of
#: :data:`persodose.mc.settings.EMISSION_CATEGORIES`.
EMISSIONS_HELP = ("Decay emissions to simulate: all, or a comma list of beta, positron, gamma, xray, ic "
                  "(conversion electrons), auger, alpha; e.g. beta,gamma,xray to compare with tables made "
                  "without conversion and Auger electrons. Annihilation photons follow the positrons.")
#: Help of ``--photon-estimator``.
ESTIMATOR_HELP = "Photon energy deposition: analog (every interaction) or tle (track-length estimator)."


def register(app: typer.Typer) -> None:
    app.command("mc")(mc)


def run_settings(nuclide: str, emissions: str, photon_estimator: str, control_variate: bool = True, **fields):
    """The run's :class:`~persodose.mc.MCSettings` and its decay tables, checked before any input is read.

    Args:
        nuclide: canonical nuclide name.
        emissions: the ``--emissions`` value; photon_estimator: the ``--photon-estimator`` value;
        control_variate: ``--control-variate`` / ``--no-control-variate``.
        fields: other MCSettings fields (seed, backend, n_batches).

    Returns:
        ``(settings, decay)``: the settings and the nuclide's
        :class:`~persodose.mc.sources.DecayTables` for them (energy emitted and left out).

    Raises:
        InputError: an unknown emission or estimator, or a selection that emits nothing of the nuclide.
    """
    from persodose.mc import MCSettings, TransportSettings
    from persodose.mc.settings import normalise_emissions
    from persodose.mc.sources import decay_tables

    from persodose.errors import InputError

    try:
        transport = TransportSettings(photon_estimator=photon_estimator.strip().lower(),
                                      control_variate=bool(control_variate))
    except InputError as exc:
        raise InputError(f"--photon-estimator {photon_estimator}: {exc}") from None
    try:
        chosen = normalise_emissions(emissions)
    except InputError as exc:
        raise InputError(f"--emissions {emissions}: {exc}") from None
    settings = MCSettings(transport=transport, emissions=chosen, **fields)
    ts = settings.transport
    decay = decay_tables(nuclide, ts.photon_cut_mev, ts.electron_cut_mev, ts.emax_mev)  # errors of the nuclide
    if chosen is not None:
        try:
            decay = decay_tables(nuclide, ts.photon_cut_mev, ts.electron_cut_mev, ts.emax_mev, chosen)
        except InputError as exc:  # the selection emits nothing of this nuclide
            raise InputError(f"--emissions {emissions}: {exc}") from None
    return settings, decay


def emissions_record(decay) -> dict:
    """Provenance of an emission selection: the categories and the energy per decay emitted and left out."""
    return {"emissions": list(decay.emissions) if decay.emissions is not None else "all",
            "emitted_mev_per_decay": decay.mean_emitted_mev,
            "full_decay_mev_per_decay": decay.full_emitted_mev,
            "left_out_mev_per_decay": decay.left_out_mev}


def emissions_line(decay) -> str:
    """One line for the terminal: what a selection emits and leaves out (empty for all emissions)."""
    if decay.emissions is None:
        return ""
    return (f"emissions {','.join(decay.emissions)}: {decay.mean_emitted_mev:.6g} of {decay.full_emitted_mev:.6g} "
            f"MeV per decay emitted ({decay.left_out_mev:.6g} MeV left out)")


def load_phantom(density: Optional[Path], materials: Optional[Path], ct: Optional[Path]):
    """A VoxelPhantom from a density + material map pair, or from a CT."""
    import json

    from persodose.errors import InputError
    from persodose.grid import Kind
    from persodose.io.image import read_image
    from persodose.mc import VoxelPhantom
    from persodose.physics.materials import default_materials, materials_from_table

    if ct is not None:
        if density is not None or materials is not None:
            raise InputError("give either --ct or --density with --materials, not both")
        from persodose.io.load import load_ct

        with about("--ct", ct):
            ct_grid, _ = load_ct(ct)
            return VoxelPhantom.from_ct(ct_grid)
    if density is None or materials is None:
        raise InputError("give --density and --materials (as written by 'persodose density'), or --ct")
    with about("--density", density):
        dens = read_image(density, kind=Kind.DENSITY)
    with about("--materials", materials):
        mats = read_image(materials, kind=Kind.MATERIAL)
        table = Path(str(materials) + ".json")
        if table.exists():
            try:
                rows = json.loads(table.read_text())
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot read the materials table {table}: {exc}") from None
            mat_list = materials_from_table(rows, str(table))
        else:
            mat_list = default_materials()
        top = int(mats.array.max()) if mats.array.size else 0
        if top >= len(mat_list):
            raise InputError(f"material index {top} has no material: the table "
                             f"{table if table.exists() else '(built-in)'} holds {len(mat_list)}")
        if not mats.same_geometry(dens):
            raise InputError(f"its grid {mats.shape} does not match --density {density} {dens.shape}")
    with about("--density", density):
        return VoxelPhantom(dens, mats.with_array(mats.array.astype("uint8" if top < 256 else "uint16")),
                            tuple(mat_list))


def _read_tia(tia: Path, tia_units: Optional[str], phantom):
    """The TIA on the phantom's grid; refused when it is not a TIA or misses the phantom."""
    import numpy as np

    from persodose.errors import InputError
    from persodose.grid import Kind
    from persodose.io.image import read_image

    source = read_image(tia, unit=tia_units) if tia_units else read_image(tia)
    if source.kind is not Kind.TIA:
        raise InputError(f"holds {source.kind.value} ({source.unit}); --tia needs a time-integrated "
                         "activity in Bq s (give --tia-units if the file is not tagged)")
    total = float(np.sum(source.array, dtype=np.float64))
    if not np.any(source.array > 0):
        raise InputError("the time-integrated activity is zero everywhere: nothing to simulate")
    if not source.same_geometry(phantom.density):
        source = source.resample_to(phantom.density)  # sum-preserving
        kept = float(np.sum(source.array, dtype=np.float64))
        if not kept > 0:
            raise InputError("lies wholly outside the phantom's grid: no activity is left on it")
        if kept < 0.999 * total:
            raise InputError(f"only {100 * kept / total:.1f} % of its activity lies inside the phantom's grid; "
                             "crop or register it to the phantom first")
        typer.echo("TIA resampled onto the density grid (sum-preserving)")
    return source


def mc(
    tia: Path = typer.Option(..., "--tia", help="Time-integrated activity (NIfTI/MHA/NRRD), Bq s per voxel."),
    nuclide: str = typer.Option(..., "--nuclide", help="Radionuclide (ICRP-107), e.g. Lu-177, F-18, Y-90."),
    decays: int = typer.Option(..., "--decays", callback=count(),
                               help="Number of decays to simulate (all batches; the most, with --target-uncertainty)."),
    out: Path = typer.Option(..., "--out", help="Output directory (dose, uncertainty, provenance)."),
    density: Optional[Path] = typer.Option(None, "--density", help="Density map, g/cm3."),
    materials: Optional[Path] = typer.Option(None, "--materials", help="Material-index map (its FILE.json table beside it)."),
    ct: Optional[Path] = typer.Option(None, "--ct", help="A CT (DICOM or image in HU) instead of density and materials."),
    tia_units: Optional[str] = typer.Option(None, "--tia-units", help="Unit of the TIA file if it is not tagged, e.g. 'Bq s', 'MBq h'."),
    batches: Optional[int] = typer.Option(None, "--batches", callback=count(1, 10_000),
                                          help="Independent batches (uncertainty from their spread); default 10, "
                                               "or 50 (the most) with --target-uncertainty."),
    target_uncertainty: Optional[str] = target_uncertainty_opt("--decays and --batches (50 by default)"),
    target_above: Optional[float] = target_above_opt(),
    seed: int = typer.Option(12345, "--seed", callback=count(0, MAX_SEED), help="Random seed."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Save the running tally here after every batch (.npz)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run saved in --checkpoint."),
    backend: str = typer.Option("cpu", "--backend", help="cpu, or cuda (an NVIDIA GPU, one thread per chunk: 131072 chunks per batch)."),
    emissions: str = typer.Option("all", "--emissions", help=EMISSIONS_HELP),
    photon_estimator: str = typer.Option("analog", "--photon-estimator", help=ESTIMATOR_HELP),
    control_variate: bool = typer.Option(
        True, "--control-variate/--no-control-variate",
        help="Tally each decay's locally left and charged-particle energy at its expectation and sample only "
             "what leaves the birth voxel (lower voxel noise, same mean); off: every deposit as sampled."),
) -> None:
    """Absorbed dose (Gy) and its uncertainty by Monte Carlo transport of every emission."""
    import json

    import numpy as np

    from persodose.errors import InputError
    from persodose.io.image import write_image
    from persodose.mc import Tally, simulate_decays
    from persodose.mc.engine import check_backend
    from persodose.outputs import atomic_dir, check_output_paths, write_provenance
    from persodose.physics.radionuclides import get_nuclide

    check_backend(backend)
    nuc = get_nuclide(nuclide)
    if target_above is not None and target_uncertainty is None:
        raise InputError("--target-above needs --target-uncertainty")
    if batches is None:
        batches = TARGET_BATCHES if target_uncertainty is not None else BATCHES
    target = None
    if target_uncertainty is not None:
        from persodose.mc.tally import UncertaintyTarget

        target = UncertaintyTarget(target_uncertainty, 0.1 if target_above is None else float(target_above))
        if batches < target.min_batches:
            raise InputError(f"--target-uncertainty needs at least {target.min_batches} --batches, got {batches}")
    if decays < batches:
        raise InputError(f"--decays {decays} cannot fill --batches {batches}: give at least one decay per batch")
    if resume and checkpoint is None:
        raise InputError("--resume needs --checkpoint")
    if resume and not checkpoint.is_file():
        raise InputError(f"--checkpoint {checkpoint} does not exist: nothing to --resume")
    settings, decay = run_settings(nuc.name, emissions, photon_estimator, control_variate, n_batches=batches,
                                   seed=seed, backend=backend)
    check_output_paths(
        inputs={"--tia": tia, "--density": density, "--materials": materials,
                "--materials table": Path(str(materials) + ".json") if materials else None, "--ct": ct},
        output_dirs={"--out": out}, output_files={"--checkpoint": checkpoint})
    phantom = load_phantom(density, materials, ct)
    with about("--tia", tia):
        source = _read_tia(tia, tia_units, phantom)
    with about("--checkpoint", checkpoint):
        tally = Tally.load(checkpoint) if resume else None
    from persodose.progress import progress

    what = f"up to {decays:.3g} decays" if target is not None else f"{decays:.3g} decays"
    with progress(f"{nuc.name}: {what}", batches) as update, about("--tia", tia):
        result = simulate_decays(phantom, source, nuc.name, decays, settings, resume=tally,
                                 checkpoint=checkpoint, progress=update, target=target)
    with atomic_dir(out) as work:
        write_image(result.dose_gy, work / "dose.nii.gz")
        write_image(result.relative_uncertainty, work / "uncertainty.nii.gz")
        write_provenance(
            work / "provenance.json", "mc",
            settings={"n_batches": batches, "seed": seed, "backend": backend,
                      "chunks_per_batch": settings.chunks_per_batch, "transport": settings.transport,
                      "emissions": list(settings.emissions) if settings.emissions is not None else "all"},
            inputs={"tia": str(tia), "density": str(density) if density else None,
                    "materials": str(materials) if materials else None, "ct": str(ct) if ct else None},
            nuclide=nuc.name, decays_simulated=result.tally.n_primaries,
            decays_in_source=result.info["total_decays_of_source"], batches=result.tally.batch_ids,
            energy_balance_mev_per_decay=result.energy_balance, wall_time_s=result.seconds,
            decays_per_second=result.primaries_per_second, backend=result.info["backend"],
            emission_selection=emissions_record(decay), target_uncertainty=result.info.get("target"),
        )
    dose = result.dose_gy.array
    unc = result.relative_uncertainty.array
    hot = dose >= 0.5 * float(dose.max()) if dose.max() > 0 else np.zeros(dose.shape, bool)
    typer.echo(f"dose: {out / 'dose.nii.gz'} (max {float(dose.max()):.4g} Gy); "
               f"median uncertainty above 50% of max: {100 * float(np.median(unc[hot])) if hot.any() else float('nan'):.2f}%; "
               f"{result.primaries_per_second:.3g} decays/s")
    if emissions_line(decay):
        typer.echo(emissions_line(decay))
    if target is not None and result.info["target"]["met"]:  # an unmet target is a warning already
        from persodose.mc.tally import TargetOutcome

        typer.echo(TargetOutcome(**result.info["target"]).summary("decays"))
    b = result.energy_balance
    typer.echo("energy per decay (MeV): " + json.dumps({k: round(v, 6) for k, v in b.items()}))
