"""``persodose nuclide``: radionuclide data from ICRP Publication 107."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command("nuclide")(nuclide)


def nuclide(
    name: str = typer.Argument(..., help="Radionuclide, e.g. Lu-177, Lu177, 177Lu, F-18, Tc-99m."),
    lines: bool = typer.Option(False, "--lines", help="Also list the photon lines above 1% yield."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Half-life and mean energy emitted per decay, by radiation type (ICRP 107)."""
    import json

    from persodose.physics.radionuclides import get_nuclide

    nuc = get_nuclide(name)
    energies = {k: v for k, v in nuc.mean_energy_per_decay_mev().items() if v > 0}
    photons = []
    for kind in ("gamma", "xray", "annihilation"):
        em = nuc.lines[kind]
        for e, y in zip(em.energy_mev, em.yield_per_decay):
            if y >= 0.01:
                photons.append({"type": kind, "energy_mev": float(e), "yield_per_decay": float(y)})
    doc = {
        "name": nuc.name,
        "half_life_s": nuc.half_life_s,
        "mean_energy_per_decay_mev": energies,
        "electron_energy_per_decay_mev": nuc.electron_energy_per_decay_mev(),
        "photon_energy_per_decay_mev": nuc.photon_energy_per_decay_mev(),
        "source": "ICRP Publication 107 (2008), via the icrp107-database package",
    }
    if lines:
        doc["photon_lines"] = sorted(photons, key=lambda p: -p["yield_per_decay"])
    if json_out:
        typer.echo(json.dumps(doc, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{nuc.name} (ICRP 107)")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    hl = nuc.half_life_s
    table.add_row("half-life", f"{hl / 86400:.5g} d" if hl >= 86400 else f"{hl / 3600:.5g} h" if hl >= 3600 else f"{hl:.5g} s")
    for kind, e in energies.items():
        table.add_row(f"mean {kind} energy per decay (MeV)", f"{e:.5f}")
    table.add_row("electrons, all (MeV per decay)", f"{doc['electron_energy_per_decay_mev']:.5f}")
    table.add_row("photons, all (MeV per decay)", f"{doc['photon_energy_per_decay_mev']:.5f}")
    if lines:
        for p in doc["photon_lines"]:
            table.add_row(f"{p['type']} {p['energy_mev'] * 1000:.2f} keV", f"{p['yield_per_decay']:.4f} /decay")
    Console().print(table)
