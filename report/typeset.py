"""Typeset a report's markdown as a PDF with Typst (the `typst` package bundles the compiler: no LaTeX).

Handles the markdown make_report.py writes: a `# ` title, `## ` headings, paragraphs, `- ` lists, ``` blocks,
pipe tables under their "*Table N. ...*" caption, ![alt](figure.png) images over their "*Figure N. ...*"
caption, the blocks between "::: columns" and ":::" side by side, and inline **bold**, *italic*, `code`,
[links](url) and $maths$ (in Typst's notation). Images are
placed at their natural size (pixels / the dpi the PNG records), so a figure drawn at its print width keeps
its font sizes. The same markdown gives the same PDF bytes: the document carries no date.
"""

import json
import re
from pathlib import Path

import typst
from PIL import Image

from utils import atomic_write

PAGE_WIDTH_CM, MARGIN_CM = 21.0, 2.0  # A4
TEXT_WIDTH_IN = (PAGE_WIDTH_CM - 2 * MARGIN_CM) / 2.54  # the widest a figure may be drawn
PREAMBLE = f"""#set document(date: none)
#set page(paper: "a4", margin: {MARGIN_CM}cm, numbering: "1")
#set text(size: 10pt, lang: "en")
#set par(justify: true, spacing: 0.9em)
#set heading(numbering: none)
#show heading.where(level: 1): set text(size: 15pt)
#show heading.where(level: 2): set text(size: 12pt)
#show heading: set block(above: 1.2em, below: 0.7em)
#show raw: set text(size: 9pt)
#show figure.caption: set text(size: 9pt)
#set table(stroke: none, inset: (x: 4pt, y: 2.5pt))
#set list(indent: 0.6em)
"""
TABLE_TEXT = "8.5pt"  # table cells: small enough for seven columns, above the 8 pt floor for print
LONG_TABLE = 24  # rows: a longer table may break across pages; a shorter one moves whole, under its caption
# units that stay on the line of the number before them, and signs that stay between their numbers
UNIT = re.compile(r"(?<=\d) (?=(?:%|min|s|h|MB|kB|bytes|points|pt)(?![\w-]))")
BETWEEN = re.compile(r"(?<=\d) ([×±–]) (?=\d)")
INLINE = re.compile(r"`(?P<code>[^`]+)`|\$(?P<math>[^$]+)\$|\*\*(?P<bold>.+?)\*\*|\*(?P<italic>[^*\s][^*]*?)\*"
                    r"|\[(?P<text>[^\]]+)\]\((?P<url>[^)\s]+)\)")
SPECIAL = re.compile(r"([\\#*_`$<>@\[\]~/\-+=])")


def escape(text: str) -> str:
    """Plain text as Typst markup: every markup character escaped, numbers kept with their units."""
    text = BETWEEN.sub("\u00a0\\1\u00a0", UNIT.sub("\u00a0", text))
    return SPECIAL.sub(r"\\\1", text)


def string(text: str) -> str:
    """A Typst string literal."""
    return json.dumps(text, ensure_ascii=False)


def inline(text: str) -> str:
    """Markdown inline markup as Typst markup. Each function call ends in `;`, so that text after it that opens
    with a parenthesis or a bracket is not read as its arguments."""
    out, pos = [], 0
    for m in INLINE.finditer(text):
        out.append(escape(text[pos:m.start()]))
        if m["code"] is not None:  # each word unbreakable (no line ends inside a flag or a number), spaces free
            out.append(" ".join(f"#box(raw({string(word)}));" for word in m["code"].split(" ")))
        elif m["math"] is not None:
            out.append(f"${m['math']}$")
        elif m["bold"] is not None:
            out.append(f"#strong[{inline(m['bold'])}];")
        elif m["italic"] is not None:
            out.append(f"#emph[{inline(m['italic'])}];")
        else:
            out.append(f"#link({string(m['url'])})[{inline(m['text'])}];")
        pos = m.end()
    return "".join(out) + escape(text[pos:])


def caption(text: str) -> str:
    """The caption's markup, its "Figure N." or "Table N." in bold."""
    text = text.strip().removeprefix("*").removesuffix("*")
    label = re.match(r"((?:Figure|Table) \d+\.)\s*", text)
    if not label:
        return inline(text)
    return f"#strong[{label[1]}]; " + inline(text[label.end():])


def natural_width(path: Path) -> float:
    """The image's width in inches at the dpi its PNG records (96 where it records none)."""
    with Image.open(path) as img:
        return img.width / img.info.get("dpi", (96, 96))[0]


def table(block: str, title: str) -> str:
    """A pipe table (its second line the |---| rule) as a figure with its caption above; columns whose cells
    all start with a digit or a sign are right-aligned."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.splitlines()]
    header, body = rows[0], rows[2:]
    numeric = [all(re.match(r"[-+±−\d]", r[i]) for r in body if r[i]) for i in range(len(header))]
    align = ", ".join("right" if n else "left" for n in numeric)
    cells = ", ".join(f"[{inline(c)}]" for c in header)
    lines = ["#figure(kind: table, supplement: none, numbering: none,",
             f"  caption: figure.caption(position: top, [{caption(title)}]),",
             f"  text(size: {TABLE_TEXT})[#table(columns: {len(header)}, align: ({align},),",
             "    table.hline(stroke: 0.7pt),",
             f"    table.header({cells}),",
             "    table.hline(stroke: 0.4pt),"]
    lines += ["    " + ", ".join(f"[{inline(c)}]" for c in r) + "," for r in body]
    lines += ["    table.hline(stroke: 0.7pt))])"]
    if len(body) > LONG_TABLE:
        lines = ["#[#show figure: set block(breakable: true)", *lines, "]"]
    return "\n".join(lines)


def figure(path: str, title: str, folder: Path) -> str:
    width = natural_width(folder / path)
    return (f"#figure(kind: image, supplement: none, numbering: none, caption: [{caption(title)}],\n"
            f"  image({string(path)}, width: {min(width, TEXT_WIDTH_IN):.3f}in))")


def marker(name: str) -> str:
    """An invisible record of where name falls: its page and height, which layout() reads back."""
    return f"#context [#metadata((name: {string(name)}, page: here().page(), y: here().position().y.pt())) <pos>]"


def convert(blocks: list[str], folder: Path) -> list[str]:
    """Markdown blocks as Typst elements, a figure or table with its caption as one; the blocks between
    "::: columns" and ":::" as one row of elements side by side."""
    out, i = [], 0
    while i < len(blocks):
        block, following = blocks[i], blocks[i + 1] if i + 1 < len(blocks) else ""
        i += 1
        if block == "::: columns":
            end = blocks.index(":::", i)
            cells = convert(blocks[i:end], folder)
            out.append(f"#grid(columns: {len(cells)}, column-gutter: 1.5em, align: top,\n"
                       + ",\n".join(f"[{c}]" for c in cells) + ")")
            i = end + 1
        elif block.startswith("#"):
            level = len(block) - len(block.lstrip("#"))
            title = block[level:].strip()
            out.append(f"{'=' * level} {inline(title)}\n{marker(title)}")
        elif image := re.fullmatch(r"!\[[^\]]*\]\(([^)]+)\)", block):
            title = following if following.startswith("*Figure") else ""
            i += bool(title)
            out.append(figure(image[1], title, folder))
        elif block.startswith("*Table") and following.startswith("|"):
            out.append(table(following, block))
            i += 1
        elif block.startswith("|"):
            out.append(table(block, ""))
        elif block.startswith("```"):
            code = "\n".join(block.splitlines()[1:-1])
            out.append(f"#block(width: 100%)[#raw(block: true, {string(code)})]")
        elif block.startswith("- "):
            out.append("\n".join("- " + inline(item[2:].replace("\n", " "))
                                 for item in re.split(r"\n(?=- )", block)))
        else:
            out.append(inline(block.replace("\n", " ")))
    return out


def markdown_to_typst(md: str, folder: Path) -> str:
    """The report's markdown as a Typst document; images are read from folder for their sizes."""
    blocks = [b.strip("\n") for b in re.split(r"\n\s*\n", md.strip())]
    title = next((b[2:] for b in blocks if b.startswith("# ")), "")
    return "\n\n".join([PREAMBLE + f"#set document(title: {string(title)})\n", *convert(blocks, folder),
                          marker("end")]) + "\n"


def compile_pdf(typ: Path, pdf: Path) -> dict:
    """Write pdf (atomically) from typ, whose images lie beside it; return its layout: the page of each heading
    and the pages in all, the last counted as the share of its height used."""
    # the fonts built into typst alone (the same on every machine); untagged: poppler misreads Typst's tag tree
    data = typst.compile(str(typ), root=str(typ.parent), ignore_system_fonts=True, timestamp=0, pdf_tags=False)
    with atomic_write(pdf) as f:
        f.write(data)
    return layout(typ)


def layout(typ: Path) -> dict:
    marks = json.loads(typst.query(str(typ), "<pos>", field="value", root=str(typ.parent), ignore_system_fonts=True))
    end = next(m for m in marks if m["name"] == "end")
    page_height, margin = 841.89, MARGIN_CM / 2.54 * 72  # A4 in points
    used = (end["y"] - margin) / (page_height - 2 * margin)
    return {"pages": round(end["page"] - 1 + used, 2), "headings": {m["name"]: m["page"] for m in marks
                                                                    if m["name"] != "end"}}


def markdown_to_pdf(md: Path, pdf: Path) -> dict:
    """md -> md.typ beside it -> pdf; the layout as compile_pdf gives it."""
    typ = md.with_suffix(".typ")
    with atomic_write(typ, "w") as f:
        f.write(markdown_to_typst(md.read_text(), md.parent))
    return compile_pdf(typ, pdf)
