"""report/typeset.py: markdown to Typst to PDF, its markup escaped, numbers kept with their units, the same bytes
every time, and the layout read back."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from report import typeset


def test_plain_text_is_escaped_and_markup_converted() -> None:
    text = typeset.inline("**Bold** and *italic*, `vgg_cpu_s0.q8`, $sigma sqrt(2)$, a_b #1 [x] // 2*3 --best")
    assert "#strong[Bold];" in text and "#emph[italic];" in text
    assert '#box(raw("vgg_cpu_s0.q8"));' in text and "$sigma sqrt(2)$" in text
    assert '#box(raw("--crop")); #box(raw("0"));' in typeset.inline("`--crop 0`")  # a line may end between words only
    assert r"a\_b \#1 \[x\] \/\/ 2\*3 \-\-best" in text


def test_numbers_stay_with_their_units_and_signs() -> None:
    text = typeset.escape("49.0 min, 68.21 %, 2 \u00d7 2,571,151 and 62.60 ± 0.20 points")
    assert "49.0\u00a0min" in text and "68.21\u00a0%" in text
    assert "2\u00a0\u00d7\u00a02,571,151" in text and "62.60\u00a0±\u00a00.20\u00a0points" in text
    assert "3 sizes" in typeset.escape("3 sizes")  # not a unit: the space may break


def test_a_table_is_a_figure_with_its_caption_above_and_numbers_to_the_right() -> None:
    typ = typeset.table("| model | accuracy |\n| --- | --- |\n| a_1 | 60.00 % |\n| b | 61.00 % |", "*Table 2. Two.*")
    assert "position: top" in typ and "#strong[Table 2.];" in typ
    assert "align: (left, right,)" in typ and r"[a\_1]" in typ
    assert "breakable" not in typ  # a short table moves whole, under its caption


def write_figure(path: Path, width: float) -> None:
    fig, ax = plt.subplots(figsize=(width, 1.5))
    ax.plot([0, 1])
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report_markdown(folder: Path) -> Path:
    write_figure(folder / "f.png", 3.0)
    md = folder / "r.md"
    md.write_text("# Title\n\nName: not given\n\n## First\n\n" + "Some words, **bold**. " * 300
                  + "\n\n![a figure](f.png)\n\n*Figure 1. A figure.*\n\n## Second\n\n*Table 1. A table.*\n\n"
                  "| a | b |\n| --- | --- |\n| 1 | 2 |\n\n::: columns\n\n*Table 2. Left.*\n\n| x |\n| --- |\n| 1 |\n\n"
                  "*Table 3. Right.*\n\n| y |\n| --- |\n| 2 |\n\n:::\n\n```\npython x.py --flag\n```\n\n- one\n- two\n")
    return md


def test_the_pdf_is_the_same_bytes_every_time_and_its_layout_is_read_back(tmp_path: Path) -> None:
    md = report_markdown(tmp_path)
    layout = typeset.markdown_to_pdf(md, tmp_path / "a.pdf")
    first = (tmp_path / "a.pdf").read_bytes()
    typeset.markdown_to_pdf(md, tmp_path / "b.pdf")
    assert first.startswith(b"%PDF") and first == (tmp_path / "b.pdf").read_bytes()
    assert layout["headings"] == {"Title": 1, "First": 1, "Second": 2} and 1 < layout["pages"] < 3
    typ = (tmp_path / "r.typ").read_text()
    assert "#grid(columns: 2" in typ and 'image("f.png", width: 3.000in)' in typ


def test_a_long_table_may_break_across_pages() -> None:
    rows = "\n".join(f"| {i} |" for i in range(typeset.LONG_TABLE + 1))
    assert "breakable: true" in typeset.table(f"| n |\n| --- |\n{rows}", "*Table 1. Long.*")
