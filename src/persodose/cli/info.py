"""``persodose info``: versions, threads and accelerators."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command("info")(info)


def system_info() -> dict:
    """Versions of the key dependencies, CPU threads and GPUs (torch, when installed)."""
    import os
    import platform

    from persodose.outputs import versions

    info: dict = {"versions": versions(), "platform": platform.platform()}
    info["cpu_count"] = os.cpu_count()
    try:
        info["cpu_threads_available"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        info["cpu_threads_available"] = os.cpu_count()
    gpus: list[str] = []
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        info["torch_threads"] = None
    info["gpus"] = gpus
    return info


def info(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Print versions of the key dependencies, CPU threads and any GPU."""
    import json

    data = system_info()
    if json_out:
        typer.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="persodose", show_header=True)
    table.add_column("item")
    table.add_column("value")
    for name, version in data["versions"].items():
        table.add_row(name, version)
    table.add_row("platform", data["platform"])
    table.add_row("CPU threads", f"{data['cpu_threads_available']} of {data['cpu_count']}")
    table.add_row("torch threads", str(data["torch_threads"]))
    table.add_row("GPUs", ", ".join(data["gpus"]) or "none")
    Console().print(table)
