"""Render the report's markdown to PDF with matplotlib alone (no pandoc or LaTeX on the machines).

Handles the subset make_report.py writes: # and ## headings, paragraphs, "- " bullets, pipe tables
(in the body font, cells wrapped within their columns) and ![alt](figure.png) images beside the markdown
file; inline **, * and ` markers are dropped.
"""

import re
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.lines import Line2D
from PIL import Image

from model import atomic_write

WIDTH, HEIGHT, MARGIN = 8.27, 11.69, 0.7  # A4 portrait, inches
TEXT_WIDTH = WIDTH - 2 * MARGIN
BODY = 9.0  # points
TABLE = 8.0  # points: the smallest size a table is set in, readable in print
CHAR = 0.54  # ems per character of the sans font, on average: how text is wrapped
TABLE_CHAR = 0.62  # ems per character in a table cell: digits are wider than the average letter
KEEP_WHOLE = 3.5  # inches: a table up to this tall is kept on one page; a longer one flows on to the next
KEEP_NEXT = 1.5  # inches: at most this much of what follows a heading must fit on its page
MIN_SCALE = 0.7  # a figure may shrink this far to stay on a page whose remaining space is too short for it


def plain(text: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"\*\*|`|(?<![\w*])\*(?=\S)|(?<=\S)\*(?![\w*])", "", text)


class Page:
    """A cursor moving down A4 pages; y is inches from the bottom edge."""

    def __init__(self, pdf: PdfPages):
        self.pdf, self.fig, self.y, self.number = pdf, None, 0.0, 0
        self.new_page()

    def new_page(self) -> None:
        if self.fig is not None:
            self.pdf.savefig(self.fig)
            plt.close(self.fig)
        self.fig = plt.figure(figsize=(WIDTH, HEIGHT))
        self.y = HEIGHT - MARGIN
        self.number += 1

    def make_room(self, height: float) -> None:
        if self.y - height < MARGIN:
            self.new_page()

    def line(self, text: str, size: float, indent: float = 0.0, **style) -> None:
        height = size * 1.4 / 72
        self.make_room(height)
        self.fig.text((MARGIN + indent) / WIDTH, self.y / HEIGHT, text, fontsize=size, va="top", **style)
        self.y -= height

    @staticmethod
    def wrap(text: str, size: float, indent: float = 0.0) -> list[str]:
        chars = int((TEXT_WIDTH - indent) * 72 / (CHAR * size))
        return textwrap.wrap(plain(text), chars) or [""]

    def paragraph(self, text: str, size: float = BODY, indent: float = 0.0, first: str = "", **style) -> None:
        for i, row in enumerate(self.wrap(text, size, indent)):
            self.line((first if i == 0 else " " * len(first)) + row, size, indent, **style)
        self.y -= size * 0.5 / 72

    def table_cells(self, rows: list[list[str]]) -> list[list[list[str]]]:
        """Each cell's lines, wrapped within its column."""
        columns = self.column_widths(rows)
        return [[textwrap.wrap(c, w) or [""] for c, w in zip(row, columns, strict=True)] for row in rows]

    def table_height(self, rows: list[list[str]]) -> float:
        return sum(max(map(len, row)) for row in self.table_cells(rows)) * TABLE * 1.3 / 72 + 0.14

    def table(self, rows: list[list[str]]) -> None:
        """A table in the body font at TABLE pt, cells wrapped within their columns so that it fits the
        text width; the header in bold above a rule; on one page where it is short enough."""
        columns, cells = self.column_widths(rows), self.table_cells(rows)
        line, height = TABLE * 1.3 / 72, self.table_height(rows)
        if height <= KEEP_WHOLE:
            self.make_room(height)
        for i, row in enumerate(cells):
            self.make_room(max(map(len, row)) * line)
            x = MARGIN
            for lines, width in zip(row, columns, strict=True):
                for k, text in enumerate(lines):
                    self.fig.text(x / WIDTH, (self.y - k * line) / HEIGHT, text, fontsize=TABLE, va="top",
                                  weight="bold" if i == 0 else "normal")
                x += (width + 2) * TABLE_CHAR * TABLE / 72
            self.y -= max(map(len, row)) * line
            if i == 0:  # the rule under the header, as wide as the table
                self.fig.add_artist(Line2D([MARGIN / WIDTH, (x - 2 * TABLE_CHAR * TABLE / 72) / WIDTH],
                                           [(self.y - 0.02) / HEIGHT] * 2, lw=0.5, color="black"))
                self.y -= 0.04
        self.y -= 0.1

    @staticmethod
    def column_widths(rows: list[list[str]]) -> list[int]:
        """Characters per column: each column's longest cell, the widest narrowed (down to its longest word)
        until the columns and their gaps fit the text width."""
        room = int(TEXT_WIDTH * 72 / (TABLE_CHAR * TABLE))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        floors = [max(len(word) for r in rows for word in r[i].split() or [""]) for i in range(len(rows[0]))]
        while sum(widths) + 2 * (len(widths) - 1) > room:
            i = max(range(len(widths)), key=lambda j: widths[j] - floors[j])
            if widths[i] <= floors[i]:
                break  # every column at its longest word: let it run wide rather than break words
            widths[i] -= 1
        return widths

    def image_size(self, path: Path) -> tuple[float, float]:
        """(width, height) in inches at full size: the figures are saved at 110 dpi, at most the text's width."""
        with Image.open(path) as img:  # the header alone: layout asks for sizes before a figure is drawn
            pixels_wide, pixels_high = img.size
        width = min(TEXT_WIDTH, pixels_wide / 110)
        height = width * pixels_high / pixels_wide
        if height > HEIGHT - 2 * MARGIN:
            width, height = width * (HEIGHT - 2 * MARGIN) / height, HEIGHT - 2 * MARGIN
        return width, height

    def image(self, path: Path, keep_with: float = 0.0) -> None:
        """The figure, with keep_with inches (its caption) on the same page; shrunk to at most MIN_SCALE of
        its size rather than leave the rest of the page empty."""
        width, height = self.image_size(path)
        room = self.y - MARGIN - keep_with - 0.1
        if height > room >= MIN_SCALE * height:
            width, height = width * room / height, room
        self.make_room(height + keep_with)
        ax = self.fig.add_axes(((WIDTH - width) / 2 / WIDTH, (self.y - height) / HEIGHT, width / WIDTH,
                                height / HEIGHT))
        ax.imshow(plt.imread(path))
        ax.axis("off")
        self.y -= height + 0.1

    def close(self) -> None:
        self.pdf.savefig(self.fig)
        plt.close(self.fig)


def table_rows(block: str) -> list[list[str]]:
    rows = [[plain(c.strip()) for c in r.strip("|").split("|")] for r in block.splitlines()]
    return [r for i, r in enumerate(rows) if i != 1]  # row 1 is the |---| rule


def height_of(block: str, page: Page, md_dir: Path) -> float:
    """About how many inches a block takes (headings and paragraphs by their wrapped lines)."""
    if image := re.fullmatch(r"!\[[^\]]*\]\(([^)]+)\)", block):
        return page.image_size(md_dir / image.group(1))[1] + 0.1
    if block.startswith("|"):
        return page.table_height(table_rows(block))
    size = 15 if block.startswith("# ") else 12 if block.startswith("## ") else BODY
    lines = block.count("\n") + 1 if block.startswith("- ") else len(page.wrap(block.replace("\n", " "), size))
    return lines * size * 1.4 / 72 + size * 0.5 / 72


def markdown_to_pdf(md_path: Path, pdf_path: Path) -> dict:
    """Write pdf_path (atomically) from md_path; images are looked up beside md_path. A heading stays on
    the page of what follows it up to the first figure or table; a figure stays with its caption, and a table
    with the caption above it. Returns the layout: pages (the last counted as the share of it used) and the
    page of each heading."""
    md_dir = Path(md_path).parent
    blocks = [b.strip("\n") for b in Path(md_path).read_text().split("\n\n")]
    with atomic_write(pdf_path) as f, PdfPages(f, metadata={"CreationDate": None}) as pdf:  # same text, same bytes
        page, headings = Page(pdf), {}
        for i, block in enumerate(blocks):
            following = blocks[i + 1:]
            if block.startswith("#"):
                chain = []
                for nxt in following[:4]:
                    chain.append(nxt)
                    if re.match(r"[|!-]", nxt):  # a figure, table or list ends the chain; text and headings go on
                        break
                keep = sum(height_of(b, page, md_dir) for b in chain)
                heading = height_of(block, page, md_dir)
                page.make_room(heading + min(keep, KEEP_NEXT))
                level = len(block) - len(block.lstrip("#"))
                page.paragraph(block[level + 1:], 15 if level == 1 else 12, weight="bold")
                headings[plain(block[level + 1:])] = page.number
            elif image := re.fullmatch(r"!\[[^\]]*\]\(([^)]+)\)", block):
                caption = following[0] if following and following[0].startswith("*Figure") else ""
                page.image(md_dir / image.group(1), height_of(caption, page, md_dir) if caption else 0.0)
            elif block.startswith("|"):
                page.table(table_rows(block))
            elif block.startswith("- "):
                for item in re.split(r"\n(?=- )", block):
                    page.paragraph(item[2:].replace("\n", " "), indent=0.15, first="• ")
            elif block:
                if block.startswith("*Table") and following and following[0].startswith("|"):
                    table = height_of(following[0], page, md_dir)
                    page.make_room(height_of(block, page, md_dir) + (table if table <= KEEP_WHOLE else KEEP_NEXT / 2))
                page.paragraph(block.replace("\n", " "))
        used = (HEIGHT - MARGIN - page.y) / (HEIGHT - 2 * MARGIN)
        page.close()
    return {"pages": round(page.number - 1 + used, 2), "headings": headings}
