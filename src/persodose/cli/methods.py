"""``persodose methods``: the registered dose methods, what they need and their settings."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command("methods")(methods)


def methods(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List every registered dose method (built-in and plug-ins) with its settings and defaults."""
    import json

    from persodose.dose.registry import available_methods, get_spec, settings_doc

    rows = []
    for name in available_methods():
        spec = get_spec(name)
        rows.append({"name": name, "summary": spec.summary, "needs": sorted(spec.needs),
                     "linear": spec.linear, "stochastic": spec.stochastic, "module": spec.function.__module__,
                     "settings": [{"name": f, "type": t, "default": d} for f, t, d in settings_doc(spec.settings_type)]})
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=True, title="dose methods (--method NAME, --method-option NAME.SETTING=VALUE)")
    for col in ("method", "what it is", "needs", "settings (default)"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["summary"], ", ".join(r["needs"]),
                      "\n".join(f"{s['name']}: {s['type']} = {s['default']}" for s in r["settings"]) or "-")
    Console().print(table)
