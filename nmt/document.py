"""A tiny document model — sections of headings, paragraphs, tables and figures — written out as
Markdown or as one self-contained HTML file (inline CSS, images as base64 data, no links out).

nmt.report decides what a report says; this module only decides how it looks, so the Markdown and
HTML versions can never say different things.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field


class Verbatim(str):
    """Text from the data (a sentence, a translation): shown as it is, nothing in it read as markup
    (a backtick in a sentence is a backtick, ``<b>`` in a subtitle is those three characters)."""


Text = str | tuple[str, ...]  # markup, or spans one after the other, each markup or Verbatim


@dataclass
class Paragraph:
    text: Text  # in markup, `backticks` mark code; nothing else is markup
    note: bool = False  # the section's "how to read this" line


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    numeric: list[bool] = field(default_factory=list)  # right-align these columns
    caption: str = ""


@dataclass
class Image:
    name: str  # key into the figures: figures/<name>.png next to the Markdown
    alt: str


@dataclass
class Subheading:
    text: str


Block = Paragraph | Table | Image | Subheading


@dataclass
class Section:
    id: str  # HTML anchor
    title: str
    blocks: list[Block]


# ---- Markdown -------------------------------------------------------------------------------


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<&~$"})  # what Markdown viewers could read as markup


def _md_text(text: Text) -> str:
    if isinstance(text, tuple):
        return "".join(map(_md_text, text))
    return text.translate(_MD_SPECIAL) if isinstance(text, Verbatim) else str(text)


def _md_cell(text: Text) -> str:
    return _md_text(text).replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> list[str]:
    numeric = table.numeric + [False] * (len(table.header) - len(table.numeric))
    lines = [f"**{_md_cell(table.caption)}**", ""] if table.caption else []
    lines.append("| " + " | ".join(_md_cell(h) for h in table.header) + " |")
    lines.append("| " + " | ".join("---:" if n else "---" for n in numeric) + " |")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return lines


def _md_block(block: Block) -> list[str]:
    if isinstance(block, Paragraph):
        text = _md_text(block.text)
        return [f"> **How to read this.** {text}" if block.note else text]
    if isinstance(block, Table):
        return _md_table(block)
    if isinstance(block, Image):
        return [f"![{block.alt}](figures/{block.name}.png)"]
    return [f"### {block.text}"]


def to_markdown(title: str, preamble: list[str], sections: list[Section]) -> str:
    lines = [f"# {title}", "", *preamble, ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            lines += _md_block(block) + [""]
    return "\n".join(lines).rstrip() + "\n"


# ---- HTML -----------------------------------------------------------------------------------

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330;
       max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; background: #fbfbfc; }
h1 { font-size: 26px; margin: 0 0 6px; }
h2 { font-size: 20px; margin: 36px 0 4px; padding-top: 12px; border-top: 1px solid #e3e6ec; }
h3 { font-size: 16px; margin: 20px 0 4px; color: #39414f; }
ul.meta { margin: 6px 0 0; padding-left: 18px; color: #39414f; }
nav { margin: 16px 0 0; display: flex; flex-wrap: wrap; gap: 6px; }
nav a { text-decoration: none; font-size: 13px; color: #23508a; background: #e9eff8; padding: 3px 10px;
        border-radius: 12px; }
p.how { background: #f1f5fb; border-left: 3px solid #6b93c9; padding: 7px 12px; margin: 8px 0 12px;
        font-size: 14px; color: #2d3748; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 13.5px; background: #fff; }
caption { caption-side: top; text-align: left; font-style: italic; color: #566070; padding-bottom: 4px; }
th, td { border: 1px solid #dde1e8; padding: 4px 9px; vertical-align: top; }
th { background: #f0f2f6; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text { max-width: 380px; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0 14px; border: 1px solid #eceef2;
      background: #fff; }
code { font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #eef0f4;
       padding: 1px 4px; border-radius: 3px; word-break: break-all; }
"""


def _inline(text: Text) -> str:
    """Escape ``text`` for HTML; in markup, spans between backticks become <code>."""
    if isinstance(text, tuple):
        return "".join(map(_inline, text))
    if isinstance(text, Verbatim):
        return html.escape(text)
    parts = str(text).split("`")
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def _html_table(table: Table) -> str:
    numeric = table.numeric + [False] * (len(table.header) - len(table.numeric))
    head = "".join(f"<th>{_inline(h)}</th>" for h in table.header)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"num" if n else "text"}">{_inline(c)}</td>' for c, n in zip(row, numeric))
        + "</tr>"
        for row in table.rows
    )
    caption = f"<caption>{_inline(table.caption)}</caption>" if table.caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_block(block: Block, images: dict[str, bytes]) -> str:
    if isinstance(block, Paragraph):
        if block.note:
            return f'<p class="how"><b>How to read this.</b> {_inline(block.text)}</p>'
        return f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Image):
        data = base64.b64encode(images[block.name]).decode("ascii")
        return f'<img alt="{html.escape(block.alt)}" src="data:image/png;base64,{data}">'
    return f"<h3>{_inline(block.text)}</h3>"


def to_html(title: str, preamble: list[str], sections: list[Section], images: dict[str, bytes]) -> str:
    """One HTML file that needs nothing else: every image is embedded, every link is internal."""
    meta = "".join(f"<li>{_inline(line.removeprefix('- '))}</li>" for line in preamble)
    nav = "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>'
        + "".join(_html_block(b, images) for b in s.blocks) + "</section>"
        for s in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>{html.escape(title)}</h1><ul class="meta">{meta}</ul><nav>{nav}</nav></header>'
        f"{body}</body></html>\n"
    )
