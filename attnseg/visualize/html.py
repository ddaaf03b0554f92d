"""A self-contained HTML page: inline CSS, pictures as base64 data URIs, no script, nothing fetched.

The page opens from a file or an e-mail attachment on a machine without network access, prints
cleanly, and shows the same in every browser. Every text that comes from a file is escaped.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #1d232a; background: #ffffff; margin: 0; }
main { max-width: 1280px; margin: 0 auto; padding: 1.5rem 2rem 4rem; }
header { background: #18324a; color: #f4f7fa; padding: 1.4rem 2rem; }
header h1 { margin: 0 0 .3rem; font-size: 1.6rem; }
header p { margin: 0; opacity: .85; }
nav { margin: 1rem 0 0; font-size: .9rem; }
nav a { color: #cfe3f3; margin-right: 1rem; text-decoration: none; }
h2 { border-bottom: 2px solid #d7dee5; padding-bottom: .25rem; margin-top: 2.4rem; }
.cards { display: flex; flex-wrap: wrap; gap: .8rem; margin: 1rem 0; }
.card { border: 1px solid #d7dee5; border-radius: 6px; padding: .6rem 1rem; min-width: 10rem; }
.card .value { font-size: 1.4rem; font-weight: 600; }
.card .label { font-size: .8rem; color: #56626e; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .88rem; }
caption { text-align: left; font-size: .85rem; color: #56626e; padding-bottom: .3rem; }
th, td { border: 1px solid #d7dee5; padding: .25rem .55rem; text-align: right; white-space: nowrap; }
th { background: #eef2f6; }
td.text, th.text { text-align: left; }
tbody tr:nth-child(even) { background: #f8fafb; }
.scroll { overflow-x: auto; }
figure { margin: 1rem 0 2rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e8ed; }
figcaption { font-size: .85rem; color: #56626e; margin-top: .3rem; }
pre { background: #f4f6f8; border: 1px solid #e3e8ed; padding: .8rem; overflow-x: auto; font-size: .8rem; }
.note { color: #56626e; font-size: .9rem; }
.flag { color: #a33b00; font-weight: 600; }
"""


@dataclass(frozen=True)
class Cell:
    """A table cell: its text, and optionally a fraction in [0, 1] drawn as a bar behind it."""

    text: str
    bar: float | None = None
    css_class: str = ""


def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def number(value: object, digits: int = 3) -> str:
    """A number for a table: fixed digits, 'n/a' for NaN or missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else f"{value:,}"


def image(png: bytes, alt: str, caption: str = "") -> str:
    """A figure with the PNG embedded as a data URI."""
    data = base64.b64encode(png).decode("ascii")
    text = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{escape(alt)}">{text}</figure>'


def table(
    headers: Sequence[str], rows: Sequence[Sequence[Cell | str]], *, table_id: str = "", caption: str = ""
) -> str:
    """An HTML table; the first column is left-aligned text, the others numbers."""
    head = "".join(f'<th class="{"text" if i == 0 else ""}">{escape(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(_cell(c, i) for i, c in enumerate(row)) + "</tr>" for row in rows)
    identifier = f' id="{escape(table_id)}"' if table_id else ""
    title = f"<caption>{escape(caption)}</caption>" if caption else ""
    inner = f"{title}<thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
    return f'<div class="scroll"><table{identifier}>{inner}</table></div>'


def _cell(cell: Cell | str, column: int) -> str:
    cell = cell if isinstance(cell, Cell) else Cell(cell)
    classes = " ".join(c for c in ("text" if column == 0 else "", cell.css_class) if c)
    style = ""
    if cell.bar is not None and not math.isnan(cell.bar):
        percent = 100 * min(max(cell.bar, 0.0), 1.0)
        style = f' style="background: linear-gradient(90deg, #cfe3f3 {percent:.1f}%, transparent {percent:.1f}%)"'
    return f'<td class="{classes}"{style}>{escape(cell.text)}</td>'


def preformatted(text: str) -> str:
    return f"<pre>{escape(text)}</pre>"


def details(summary: str, body: str) -> str:
    return f"<details><summary>{escape(summary)}</summary>{body}</details>"


def cards(items: Sequence[tuple[str, str]]) -> str:
    """Headline numbers: (label, value) pairs."""
    inner = "".join(
        f'<div class="card"><div class="value">{escape(value)}</div><div class="label">{escape(label)}</div></div>'
        for label, value in items
    )
    return f'<div class="cards">{inner}</div>'


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document: a header with a table of contents, then (id, heading, body) sections."""
    nav = "".join(f'<a href="#{escape(i)}">{escape(h)}</a>' for i, h, _ in sections)
    body = "".join(f'<section id="{escape(i)}"><h2>{escape(h)}</h2>{b}</section>' for i, h, b in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'  # no favicon request: nothing is fetched, not even that
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p><nav>{nav}</nav></header>"
        f"<main>{body}</main></body></html>\n"
    )
