"""A self-contained HTML report: text, tables and matplotlib figures embedded as PNG.

The file has no external references, so it opens in any browser, offline, and can be
attached to a patient record as one file.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from persodose.outputs import atomic_file

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;line-height:1.4}
h1{border-bottom:2px solid #345;padding-bottom:.2em}h2{color:#345;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#eef2f5}
td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figcaption{font-size:.9em;color:#555}img{max-width:100%}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.4em .8em}
.small{font-size:.85em;color:#666}
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1e5 or abs(value) < 1e-3:
            return f"{value:.3e}"
        return f"{value:.4g}"
    return html.escape(str(value))


@dataclass
class Report:
    """Collects the parts of a report and writes them as one HTML file."""

    title: str
    parts: list[str] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def text(self, text: str, css_class: str | None = None) -> None:
        cls = f' class="{css_class}"' if css_class else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], caption: str | None = None) -> None:
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self.parts.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def figure(self, fig, caption: str = "", dpi: int = 90) -> None:
        """Embed a matplotlib figure (closed afterwards) as a PNG."""
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        self.parts.append(
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}"/>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def render(self) -> str:
        now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        from persodose import __version__

        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1>"
            f"<p class='small'>persodose {__version__}, {now}</p>"
            + "\n".join(self.parts)
            + "</body></html>"
        )

    def write(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        with atomic_file(path) as tmp:
            tmp.write_text(self.render(), encoding="utf-8")
        return path
