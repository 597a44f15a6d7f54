"""``persodose weights``: the shipped network weights, and checking a weights file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

weights_app = typer.Typer(help="Trained network weights: list the shipped ones, check a file.",
                          no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(weights_app, name="weights")


@weights_app.command("list")
def list_command() -> None:
    """The registered (shipped) weights, one line each."""
    from persodose.dl.weights_registry import list_weights

    entries = list_weights()
    if not entries:
        typer.echo("none shipped yet")
        return
    for e in entries:
        typer.echo(f"{e.name}  network={e.network or '-'}  {e.size_bytes} bytes  sha256={e.sha256[:12]}  "
                   f"epochs={e.epochs}  val_loss={e.final_validation_loss:.4g}  {e.description}".rstrip())


@weights_app.command("check")
def check_command(
    weights: str = typer.Argument(..., help="A registered name or a weights file."),
    sha256: Optional[str] = typer.Option(None, "--sha256", help="Expected SHA-256 (default the registry's, or FILE.json's)."),
) -> None:
    """Check a weights file's size and SHA-256 (and that PyTorch reads it)."""
    import json

    from persodose.dl.weights_registry import load_weights, verify_weights

    v = verify_weights(weights, sha256)
    side = Path(f"{v.path}.json")
    want = sha256
    if want is None and v.entry is None and side.is_file():
        try:
            want = json.loads(side.read_text(encoding="utf-8")).get("sha256")
        except (OSError, ValueError, AttributeError):
            want = None
    loaded = load_weights(weights, want)
    typer.echo(f"ok: {loaded.path} sha256 {loaded.sha256} ({loaded.size_bytes} bytes, "
               f"{len(loaded.state_dict)} tensors)")
