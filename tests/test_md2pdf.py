"""report/md2pdf.py: tables fit the text width in a readable size, and the layout reports its pages."""

import sys
from pathlib import Path

from conftest import ROOT

sys.path.insert(0, str(ROOT / "report"))

import md2pdf


def test_a_wide_table_wraps_its_cells_to_fit_the_text_width() -> None:
    rows = [["model", "what it is"], ["vgg", "a long description " * 12], ["mobilenet", "short"]]
    widths = md2pdf.Page.column_widths(rows)
    room = int(md2pdf.TEXT_WIDTH * 72 / (md2pdf.TABLE_CHAR * md2pdf.TABLE))
    assert sum(widths) + 2 * (len(widths) - 1) <= room
    assert widths[0] == len("mobilenet")  # the narrow column keeps its longest cell; the wide one wraps
    assert widths[1] < len(rows[1][1])


def test_a_table_of_long_words_is_never_cut_inside_a_word() -> None:
    rows = [[f"column{i}" for i in range(8)], ["x" * 30] * 8]
    widths = md2pdf.Page.column_widths(rows)
    assert widths == [30] * 8  # too wide for the page, but every word whole


def test_the_layout_gives_each_heading_its_page(tmp_path: Path) -> None:
    paragraph = " ".join(["word"] * 400)
    md = tmp_path / "r.md"
    md.write_text(f"# Title\n\n## First\n\n{paragraph}\n\n{paragraph}\n\n{paragraph}\n\n## Second\n\nshort\n\n"
                  "*Table 1. A table.*\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n")
    layout = md2pdf.markdown_to_pdf(md, tmp_path / "r.pdf")
    assert layout["headings"]["Title"] == 1 and layout["headings"]["First"] == 1
    assert layout["headings"]["Second"] == 2 and 1 < layout["pages"] < 2
    pdf = (tmp_path / "r.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") >= 2
