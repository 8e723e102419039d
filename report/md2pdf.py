"""Render the report's markdown to PDF with matplotlib alone (no pandoc or LaTeX on the machines).

Handles the subset make_report.py writes: # and ## headings, paragraphs, "- " bullets, pipe tables
(set in a monospace font) and ![alt](figure.png) images beside the markdown file; inline **, * and `
markers are dropped.
"""

import re
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.backends.backend_pdf import PdfPages

from model import atomic_write

WIDTH, HEIGHT, MARGIN = 8.27, 11.69, 0.7  # A4 portrait, inches
TEXT_WIDTH = WIDTH - 2 * MARGIN


def plain(text: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"\*\*|`|(?<![\w*])\*(?=\S)|(?<=\S)\*(?![\w*])", "", text)


class Page:
    """A cursor moving down A4 pages; y is inches from the bottom edge."""

    def __init__(self, pdf: PdfPages):
        self.pdf, self.fig, self.y = pdf, None, 0.0
        self.new_page()

    def new_page(self) -> None:
        if self.fig is not None:
            self.pdf.savefig(self.fig)
            plt.close(self.fig)
        self.fig = plt.figure(figsize=(WIDTH, HEIGHT))
        self.y = HEIGHT - MARGIN

    def make_room(self, height: float) -> None:
        if self.y - height < MARGIN:
            self.new_page()

    def line(self, text: str, size: float, indent: float = 0.0, **style) -> None:
        height = size * 1.4 / 72
        self.make_room(height)
        self.fig.text((MARGIN + indent) / WIDTH, self.y / HEIGHT, text, fontsize=size, va="top", **style)
        self.y -= height

    def paragraph(self, text: str, size: float = 9.0, indent: float = 0.0, first: str = "", **style) -> None:
        chars = int((TEXT_WIDTH - indent) * 72 / (0.54 * size))  # ~0.54 em per character in a sans font
        for i, row in enumerate(textwrap.wrap(plain(text), chars) or [""]):
            self.line((first if i == 0 else " " * len(first)) + row, size, indent, **style)
        self.y -= size * 0.5 / 72

    def table(self, rows: list[list[str]]) -> None:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        size = min(8.0, TEXT_WIDTH * 72 / (0.6 * max(map(len, lines))))  # monospace: 0.6 em per character
        for text in lines:
            self.line(text, size, family="monospace")
        self.y -= 0.08

    def image(self, path: Path) -> None:
        img = plt.imread(path)
        width = min(TEXT_WIDTH, img.shape[1] / 110)  # the figures are saved at 110 dpi
        height = width * img.shape[0] / img.shape[1]
        if height > HEIGHT - 2 * MARGIN:
            width, height = width * (HEIGHT - 2 * MARGIN) / height, HEIGHT - 2 * MARGIN
        self.make_room(height)
        ax = self.fig.add_axes(((WIDTH - width) / 2 / WIDTH, (self.y - height) / HEIGHT, width / WIDTH,
                                height / HEIGHT))
        ax.imshow(img)
        ax.axis("off")
        self.y -= height + 0.1

    def close(self) -> None:
        self.pdf.savefig(self.fig)
        plt.close(self.fig)


def markdown_to_pdf(md_path: Path, pdf_path: Path) -> None:
    """Write pdf_path (atomically) from md_path; images are looked up beside md_path."""
    blocks = Path(md_path).read_text().split("\n\n")
    with atomic_write(pdf_path) as f, PdfPages(f) as pdf:
        page = Page(pdf)
        for block in blocks:
            block = block.strip("\n")
            if block.startswith("## "):
                page.make_room(0.9)  # keep a heading with what follows it
                page.paragraph(block[3:], 12, weight="bold")
            elif block.startswith("# "):
                page.paragraph(block[2:], 15, weight="bold")
            elif image := re.fullmatch(r"!\[[^\]]*\]\(([^)]+)\)", block):
                page.image(Path(md_path).parent / image.group(1))
            elif block.startswith("|"):
                rows = [[plain(c.strip()) for c in r.strip("|").split("|")] for r in block.splitlines()]
                page.table([r for i, r in enumerate(rows) if i != 1])  # row 1 is the |---| rule
            elif block.startswith("- "):
                for item in re.split(r"\n(?=- )", block):
                    page.paragraph(item[2:].replace("\n", " "), indent=0.15, first="• ")
            elif block:
                page.paragraph(block.replace("\n", " "))
        page.close()
