"""A report as Markdown and self-contained HTML (every image embedded as base64), written
atomically.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import pandas as pd

from lfsearch.experiments import tables as tables_mod
from lfsearch.search import config as config_mod


# --------------------------------------------------------------------------------- document
class Document:
    """Blocks rendered both to Markdown (figures as relative links) and to self-contained HTML."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blocks: list[tuple] = []

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, frame: pd.DataFrame, note: str | None = None) -> None:
        self.blocks.append(("table", frame, note))

    def figure(self, path: Path | None, caption: str) -> None:
        if path is not None:
            self.blocks.append(("img", path, caption))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2] + "\n")
            elif b[0] == "p":
                out.append(b[1] + "\n")
            elif b[0] == "table":
                out.append(tables_mod.markdown_table(b[1]))
                if b[2]:
                    out.append(b[2] + "\n")
            elif b[0] == "img":
                rel = b[1].relative_to(self.root).as_posix()
                out.append(f"![{b[2]}]({rel})\n\n*{b[2]}*\n")
        return "\n".join(out)

    def html(self, title: str) -> str:
        e = html.escape
        body = []
        for b in self.blocks:
            if b[0] == "h":
                body.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                body.append(f"<p>{_inline(b[1])}</p>")
            elif b[0] == "table":
                head = "".join(f"<th>{e(str(c))}</th>" for c in b[1].columns)
                rows = "".join("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in r) + "</tr>"
                               for r in b[1].itertuples(index=False))
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
                if b[2]:
                    body.append(f'<p class="note">{e(b[2])}</p>')
            elif b[0] == "img":
                data = base64.b64encode(b[1].read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{e(b[2])}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{e(b[2])}</figcaption></figure>")
        style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;"
                 "padding:0 1em;color:#222}table{border-collapse:collapse;margin:1em 0;"
                 "font-size:0.9em}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}"
                 "th{background:#f3f3f3}img{max-width:100%}figure{margin:1.5em 0}"
                 "figcaption{font-size:0.9em;color:#555}.note{font-size:0.85em;color:#555}"
                 "code{background:#f3f3f3;padding:0 3px}")
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{e(title)}</title><style>{style}</style></head><body>\n"
                + "\n".join(body) + "\n</body></html>\n")


def _inline(text: str) -> str:
    """Escape text and turn `code` spans into <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _write_document(doc: Document, root: Path, title: str) -> dict[str, Path]:
    md, page = root / "report.md", root / "report.html"
    config_mod.atomic_write_text(md, doc.markdown())
    config_mod.atomic_write_text(page, doc.html(title))
    return {"markdown": md, "html": page}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.4g}"
    return str(v)
