"""Write the hand-in packages, as each course collects them.

  python tools/handin.py hw2 --student-id B12345678 [--report report/hw2.pdf] [--out .]
  python tools/handin.py hw8 [--report report/hw8.pdf] [--out hw8]

hw2: <student-id>_hw2.zip with the code, the homework's scripts, the released weights with their MANIFEST
(so that hw2_download.sh finds them intact without this repository's git history) and the report as
report.pdf; never the data.

hw8: a folder as HW8's TAs take it (clone, run hw8_download.sh, cut the network, move report.pdf out,
measure everything with du -sb, limit 225,000 bytes of model plus 25,000 of code): the compact int8 model
and its MANIFEST, hw8_download.sh (hw2_download.sh's checks), hw8_test.sh and hw8_train.sh, and the
Python modules they run in one zip file on PYTHONPATH (Python imports from a zip as from a folder), their
comments left out (the code, docstrings and help texts as they are), so that the code fits the limit.
hw8_test.sh predicts exactly as predict.py does with the same file.
"""

import argparse
import re
import shutil
import stat
import sys
import tempfile
import tokenize
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model import atomic_write  # noqa: E402
from predict import RELEASED_COMPACT  # noqa: E402

HW8_LIMIT = 250_000  # bytes of the folder without report.pdf: the 225,000-byte model limit plus 25,000 for code
HW2_CODE = ["dataset.py", "model.py", "train.py", "predict.py", "faces.py", "detector.py", "serve.py",
            "web/index.html", "web/app.js", "web/style.css", "hw2_train.sh", "hw2_test.sh", "hw2_download.sh",
            "requirements.txt", "README.md"]
HW8_MODULES = ["dataset.py", "model.py", "predict.py", "train.py", "tools/quantize.py"]  # what hw8_*.sh import
HW8_ZIP = "fer.pyz"
HW8_TEST = """#!/usr/bin/env bash
# Predict with the compact model: bash hw8_test.sh <test.csv> <pred.csv> [predict.py flags]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ $# -ge 2 ] || { echo "usage: bash hw8_test.sh <test.csv> <pred.csv>" >&2; exit 2; }
PYTHONPATH="$here/fer.pyz" exec "${PYTHON:-python3}" -m predict "$1" "$2" --model "$here/compact.q8" "${@:3}"
"""
HW8_TRAIN = """#!/usr/bin/env bash
# Train the compact network and write it as int8: bash hw8_train.sh <train.csv> [train.py flags]
# (without the teacher ensemble, which this folder's size limit leaves out: the full project distils from it)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ $# -ge 1 ] || { echo "usage: bash hw8_train.sh <train.csv>" >&2; exit 2; }
export PYTHONPATH="$here/fer.pyz"
"${PYTHON:-python3}" -m train "$1" --preset compact --teacher "" --out "$here/trained.pt" "${@:2}"
"${PYTHON:-python3}" -m quantize "$here/trained.pt" "$here/trained.q8"
"""


def fail(message: str) -> None:
    print(f"handin.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def manifest_lines() -> list[str]:
    """The released MANIFEST's file lines: <file> <sha256> <url>."""
    return [line for line in (ROOT / "weights" / "MANIFEST").read_text().splitlines()
            if line.split() and not line.startswith("#")]


def write_executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def folder_bytes(folder: Path, leave_out: str = "report.pdf") -> int:
    """What `du -sb` counts for the folder once leave_out is moved out: every file and folder's apparent size."""
    paths = [folder, *folder.rglob("*")]
    return sum(p.lstat().st_size for p in paths if p.name != leave_out)


def without_comments(source: str) -> str:
    """The module with its # comments cut out and lines that held only a comment dropped: the same program
    (tokenize finds comments, never a # inside a string), for a hand-in measured in bytes."""
    lines = source.splitlines(keepends=True)
    comments = [t.start for t in tokenize.generate_tokens(iter(lines).__next__) if t.type == tokenize.COMMENT]
    dropped = set()
    for row, col in comments:
        code = lines[row - 1][:col].rstrip()
        if code:
            lines[row - 1] = code + "\n"
        else:
            dropped.add(row - 1)
    return "".join(line for i, line in enumerate(lines) if i not in dropped)


def hw2_zip(student_id: str, report: Path, out: Path) -> Path:
    target = out / f"{student_id}_hw2.zip"
    with atomic_write(target) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
        for name in HW2_CODE:
            z.write(ROOT / name, name)
        # the weights kept in this repository; hw2_download.sh fetches the rest (the face detector's)
        kept = [line.split()[0] for line in manifest_lines() if line.split()[2] == "-"]
        for name in ["MANIFEST", *kept]:
            z.write(ROOT / "weights" / name, f"weights/{name}")
        z.write(report, "report.pdf")
    return target


def hw8_folder(report: Path, out: Path) -> Path:
    if out.exists():
        fail(f"{out} exists: give another --out")
    staging = Path(tempfile.mkdtemp(prefix=".hw8-", dir=out.parent))
    try:
        compact = Path(RELEASED_COMPACT)
        shutil.copy(compact, staging / compact.name)
        line = [line for line in manifest_lines() if line.split()[0] == compact.name]
        if not line:
            fail(f"weights/MANIFEST does not list {compact.name}")
        (staging / "MANIFEST").write_text(line[0] + "\n")
        download = (ROOT / "hw2_download.sh").read_text().replace("hw2_download.sh", "hw8_download.sh")
        write_executable(staging / "hw8_download.sh", download.replace('"$here/weights/MANIFEST"', '"$here/MANIFEST"'))
        write_executable(staging / "hw8_test.sh", HW8_TEST)
        write_executable(staging / "hw8_train.sh", HW8_TRAIN)
        with zipfile.ZipFile(staging / HW8_ZIP, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
            for name in HW8_MODULES:
                z.writestr(Path(name).name, without_comments((ROOT / name).read_text()))
        shutil.copy(report, staging / "report.pdf")
        size = folder_bytes(staging)
        if size > HW8_LIMIT:
            fail(f"the folder without report.pdf is {size:,} bytes, over the {HW8_LIMIT:,} allowed")
        staging.chmod(0o755)
        staging.replace(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("homework", choices=["hw2", "hw8"])
    p.add_argument("--student-id", help="hw2: the zip's name is <student-id>_hw2.zip")
    p.add_argument("--report", help="the report's PDF (default: report/<homework>.pdf); handed in as report.pdf")
    p.add_argument("--out", help="hw2: the folder the zip goes to (default: .); hw8: the folder to write "
                   "(default: hw8)")
    args = p.parse_args(argv)
    report = Path(args.report or ROOT / "report" / f"{args.homework}.pdf")
    if not report.is_file():
        fail(f"{report}: no such report (python report/make_report.py builds it)")
    if args.homework == "hw2":
        if not args.student_id or not re.fullmatch(r"[A-Za-z0-9_-]+", args.student_id):
            fail("hw2 needs --student-id of letters, digits, - or _: the zip is named after it")
        out = Path(args.out or ".")
        if not out.is_dir():
            fail(f"{out}: no such folder")
        written = hw2_zip(args.student_id, report, out)
    else:
        written = hw8_folder(report, Path(args.out or "hw8"))
    print(f"wrote {written}")
    return written


if __name__ == "__main__":
    main()
