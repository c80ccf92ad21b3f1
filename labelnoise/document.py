"""Documents written both as Markdown and as self-contained HTML (figures embedded), and figure files.

    doc = Doc()
    doc.h(1, "Title"); doc.p("Some **bold** and `code`."); doc.table(["a", "b"], [["1", "2"]])
    write_text("report.md", doc.markdown(base)); write_text("report.html", doc.html("Title"))
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import atomic_path

if TYPE_CHECKING:  # matplotlib is the [report] extra: only figures need it
    from matplotlib.figure import Figure


def save_figure(fig: "Figure", path: Path, dpi: int = 90) -> Path:
    """A PNG written atomically; returns its path."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(path)


def fmt(x, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


class Doc:
    """Blocks rendered both as Markdown and as HTML."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def items(self, lines: list[str]):
        self.blocks.append(("ul", lines))

    def table(self, header: list[str], rows: list[list[str]], align: str | None = None):
        self.blocks.append(("table", header, rows, align or "l" + "r" * (len(header) - 1)))

    def image(self, path: Path | None, alt: str):
        if path is not None:
            self.blocks.append(("img", path, alt))

    def code(self, text: str):
        self.blocks.append(("code", text))

    def markdown(self, base: Path) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "ul":
                out.append("\n".join(f"- {line}" for line in b[1]))
            elif b[0] == "table":
                _, header, rows, align = b
                out.append("\n".join(["| " + " | ".join(header) + " |",
                                      "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|",
                                      *["| " + " | ".join(r) + " |" for r in rows]]))
            elif b[0] == "img":
                out.append(f"![{b[2]}]({b[1].relative_to(base).as_posix()})")
            elif b[0] == "code":
                out.append("```\n" + b[1] + "\n```")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
               "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
               "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px}"
               "td.r,th.r{text-align:right}img{max-width:100%}code,pre{background:#f4f4f4}"
               "pre{padding:.6em;overflow-x:auto}</style></head><body>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{_inline(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{_inline(b[1])}</p>")
            elif b[0] == "ul":
                out.append("<ul>" + "".join(f"<li>{_inline(line)}</li>" for line in b[1]) + "</ul>")
            elif b[0] == "table":
                _, header, rows, align = b
                cls = lambda i: ' class="r"' if align[i] == "r" else ""  # noqa: E731
                out.append("<table><tr>" + "".join(f"<th{cls(i)}>{_inline(h)}</th>" for i, h in enumerate(header))
                           + "</tr>" + "".join("<tr>" + "".join(f"<td{cls(i)}>{_inline(c)}</td>"
                                                                 for i, c in enumerate(r)) + "</tr>" for r in rows)
                           + "</table>")
            elif b[0] == "img":
                data = base64.b64encode(b[1].read_bytes()).decode("ascii")
                out.append(f'<p><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}"></p>')
            elif b[0] == "code":
                out.append(f"<pre><code>{html.escape(b[1])}</code></pre>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"


def _inline(text: str) -> str:
    """The Markdown this report uses inside a line (**bold**, `code`) as HTML."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


