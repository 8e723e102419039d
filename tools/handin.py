"""Write the hand-in packages, as each course collects them.

  python -m tools.handin hw2 --student-id B12345678 [--name N --department D --collaborators C | --report PDF]
                         [--out .]
  python -m tools.handin hw8 --submission pred.csv --test-csv test.csv [--name N --student-id S ... | --report PDF]
                         [--out hw8]

The report: --report names a built PDF, handed in as it is; otherwise the identity flags (--name, --student-id,
--department, --collaborators), when any is given, go to report.make_report, which builds the report with them
in its header; with neither, report/<homework>.pdf as committed.

hw2: <student-id>_hw2.zip with the code, the homework's scripts, the released weights with their MANIFEST
(so that hw2_download.sh finds them intact without this repository's git history) and the report as
report.pdf; never the data.

hw8: a folder as HW8's TAs take it (clone, move report.pdf out, run hw8_download.sh, measure everything with
du --apparent-size --bytes: at most 250,000 bytes, the model file at most 225,000). HW8 allows compression
written in Python on the network (pruning, quantisation) but no ready-made compressor, so the folder holds
none: the compact model as quantized.py's k-bit file with its MANIFEST, hw8_download.sh (its sha256 check),
hw8_test.sh, hw8_train.sh, the Python modules they run as plain .py files, and a README.md that gives the
Kaggle submission's sha256. The folder is built only if its hw8_test.sh, run on --test-csv, writes that
submission byte for byte.
"""

import argparse
import hashlib
import math
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from functools import partial
from pathlib import Path

import utils
from csv_gzip import MAGIC as COMPRESSED_CSV_MAGIC
from predict import released
from quantized import SMALL_ROW, read_quantized
from utils import atomic_write

ROOT = Path(__file__).resolve().parent.parent

HW8_LIMIT = 250_000  # bytes of the folder without report.pdf: the 225,000-byte model limit plus 25,000 for code
HW8_MODEL_LIMIT = 225_000  # bytes of the model file alone
HW2_CODE = ["dataset.py", "csv_gzip.py", "model.py", "compact_int8.py", "quantized.py", "utils.py", "train.py",
            "predict.py", "faces.py", "detector.py", "serve.py", "web/index.html", "web/app.js", "web/style.css",
            "hw2_train.sh", "hw2_test.sh", "hw2_download.sh", "requirements.txt", "README.md"]
HW8_MODULES = ["dataset.py", "model.py", "quantized.py", "predict.py", "train.py", "utils.py"]  # what hw8_*.sh import
IDENTITY = ("name", "student_id", "department", "collaborators")  # report.make_report's header flags
HW8_TEST = """#!/usr/bin/env bash
# Predict with the compact model: bash hw8_test.sh <test.csv> <pred.csv> [predict.py flags]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ $# -ge 2 ] || { echo "usage: bash hw8_test.sh <test.csv> <pred.csv>" >&2; exit 2; }
exec "${PYTHON:-python3}" "$here/predict.py" "$1" "$2" --model "$here/compact.q8" "${@:3}"
"""
HW8_DOWNLOAD = """#!/usr/bin/env bash
# Check the model files against their sha256 in MANIFEST: bash hw8_download.sh
# (they are kept in this folder; a missing or damaged one is restored from git where the folder is a clone)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
status=0
while read -r file sha url; do
  if [ -f "$here/$file" ] && [ "$(sha256sum "$here/$file" | cut -d' ' -f1)" = "$sha" ]; then
    echo "ok        $file"; continue
  fi
  tmp="$(mktemp "$here/.$file.XXXXXX")"
  if git -C "$here" show "HEAD:./$file" > "$tmp" 2>/dev/null && [ "$(sha256sum "$tmp" | cut -d' ' -f1)" = "$sha" ]; then
    chmod 644 "$tmp"; mv -f "$tmp" "$here/$file"; echo "fetched   $file (restored from git)"
  else
    rm -f "$tmp"; status=1
    echo "hw8_download.sh: $file: missing or damaged, and git holds no intact copy (clone the folder again)" >&2
  fi
done < "$here/MANIFEST"
exit "$status"
"""
HW8_TRAIN = """#!/usr/bin/env bash
# Train the compact network and quantise it: bash hw8_train.sh <train.csv> [train.py flags]
# (without the teacher ensemble, which this folder's size limit leaves out: the full project distils from it)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ $# -ge 1 ] || { echo "usage: bash hw8_train.sh <train.csv>" >&2; exit 2; }
"${PYTHON:-python3}" "$here/train.py" "$1" --preset compact --teacher "" --out "$here/trained.pt" "${@:2}"
"${PYTHON:-python3}" "$here/quantized.py" "$here/trained.pt" "$here/trained.q8"
"""
HW8_README = """# HW8: the compact FER2013 model

- `compact.q8` ({model_bytes:,} bytes): the compact network ({description}), BatchNorm folded into the
  convolutions, each conv and linear weight quantised per output channel to {bits}: codes packed bit by bit, one
  float16 scale per channel, biases float16; written and read by `quantized.py`, no compressor.
- `bash hw8_download.sh`: checks `compact.q8` against the sha256 in `MANIFEST`.
- `bash hw8_test.sh test.csv pred.csv`: the Kaggle submission. The submitted file's sha256 is
  `{submission_sha256}`; this folder's `hw8_test.sh` wrote it byte for byte from the course's test.csv.
- `bash hw8_train.sh train.csv`: trains the network (`train.py --preset compact`, without the teacher ensemble
  that the shipped model was distilled from) and quantises it (`quantized.py`) into `trained.q8`.
- The `.py` files are the project's own, unchanged; they need Python 3.11 or later with torch, numpy, pandas and tqdm,
  and read plain CSV files.
"""


fail = partial(utils.fail, "handin.py")  # one line on stderr, exit code 2


def manifest_lines() -> list[str]:
    """The released MANIFEST's file lines: <file> <sha256> <url>."""
    return [line for line in (ROOT / "weights" / "MANIFEST").read_text().splitlines()
            if line.split() and not line.startswith("#")]


def write_executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def folder_bytes(folder: Path, leave_out: str = "report.pdf") -> int:
    """What `du --apparent-size --bytes --max-depth=0` counts for the folder once leave_out is moved out: every
    file and folder's apparent size."""
    paths = [folder, *folder.rglob("*")]
    return sum(p.lstat().st_size for p in paths if p.name != leave_out)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def report_command(identity: dict[str, str], out: Path) -> list[str]:
    """The report build with the given identity flags in its header, its PDFs written in out."""
    flags = [arg for key, value in identity.items() for arg in (f"--{key.replace('_', '-')}", value)]
    return [sys.executable, "-m", "report.make_report", "--out", str(out), *flags]


def build_report(homework: str, identity: dict[str, str], out: Path) -> Path:
    """report.make_report run with the identity; the homework's PDF it wrote."""
    command = report_command(identity, out)
    done = subprocess.run(command, cwd=ROOT)
    pdf = out / f"{homework}.pdf"
    if done.returncode != 0 or not pdf.is_file():
        fail(f"the report build ({' '.join(command[1:])}) wrote no {pdf.name}")
    return pdf


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


def model_description(model_file: Path) -> tuple[str, str]:
    """The network and its bit widths, in words, from the k-bit file's header."""
    header = read_quantized(model_file)[0]
    config, tensors = header["config"], header["tensors"]
    params = sum(math.prod(t["shape"]) for t in tensors if t["shape"])  # not the normalisation's two scalars
    description = f"{config['arch']}, widths {'-'.join(map(str, config['channels']))}, {params:,} parameters"
    small = {t["bits"] for t in tensors if "bits" in t and math.prod(t["shape"][1:]) <= SMALL_ROW}
    large = {t["bits"] for t in tensors if "bits" in t and math.prod(t["shape"][1:]) > SMALL_ROW}
    bits = " or ".join(f"{b} bits" for b in sorted(large))
    return description, bits + (f", the 3x3 filters (depthwise and stem) to {' or '.join(map(str, sorted(small)))}"
                                if small and small != large else "")


def check_submission(folder: Path, test_csv: Path, submission: Path) -> None:
    """The folder's hw8_test.sh run on test_csv must write the submission's very bytes."""
    out = folder / ".check.csv"
    run = subprocess.run(["bash", str(folder / "hw8_test.sh"), str(test_csv), str(out)], capture_output=True,
                         text=True, env={**os.environ, "PYTHON": sys.executable})
    if run.returncode != 0:
        fail(f"hw8_test.sh failed on {test_csv}: {(run.stderr.strip().splitlines() or ['no message'])[-1]}")
    same = out.read_bytes() == submission.read_bytes()
    out.unlink()
    if not same:
        fail(f"the folder's hw8_test.sh does not write {submission} byte for byte from {test_csv}")


def hw8_folder(report: Path, out: Path, submission: Path, test_csv: Path) -> Path:
    if out.exists():
        fail(f"{out} exists: give another --out")
    staging = Path(tempfile.mkdtemp(prefix=".hw8-", dir=out.parent))
    try:
        compact = Path(released("compact")[0])
        if compact.stat().st_size > HW8_MODEL_LIMIT:
            fail(f"{compact} is {compact.stat().st_size:,} bytes, over the {HW8_MODEL_LIMIT:,} allowed")
        shutil.copy(compact, staging / compact.name)
        line = [line for line in manifest_lines() if line.split()[0] == compact.name]
        if not line:
            fail(f"weights/MANIFEST does not list {compact.name}")
        (staging / "MANIFEST").write_text(line[0] + "\n")
        write_executable(staging / "hw8_download.sh", HW8_DOWNLOAD)
        write_executable(staging / "hw8_test.sh", HW8_TEST)
        write_executable(staging / "hw8_train.sh", HW8_TRAIN)
        for name in HW8_MODULES:
            shutil.copy(ROOT / name, staging / Path(name).name)
        description, bits = model_description(compact)
        (staging / "README.md").write_text(HW8_README.format(model_bytes=compact.stat().st_size,
                                                             description=description, bits=bits,
                                                             submission_sha256=sha256(submission)))
        check_submission(staging, test_csv, submission)
        shutil.copy(report, staging / "report.pdf")
        size = folder_bytes(staging)
        if size > HW8_LIMIT:
            fail(f"the folder without report.pdf is {size:,} bytes, over the {HW8_LIMIT:,} allowed")
        staging.chmod(0o755)
        staging.replace(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def chosen_report(args: argparse.Namespace, work: Path) -> Path:
    """--report as given, or the report built with the identity flags, or the committed report/<homework>.pdf."""
    identity = {key: getattr(args, key) for key in IDENTITY if getattr(args, key) is not None}
    if args.report:
        zip_name = {"student_id"} if args.homework == "hw2" else set()  # hw2's --student-id also names the zip
        header_flags = [f"--{key.replace('_', '-')}" for key in identity if key not in zip_name]
        if header_flags:
            fail(f"--report is a built PDF, its header set when it was built: give {' and '.join(header_flags)} "
                 f"without --report, which builds it with them")
        report = Path(args.report)
    elif identity:
        report = build_report(args.homework, identity, work)
    else:
        report = ROOT / "report" / f"{args.homework}.pdf"
    if not report.is_file():
        fail(f"{report}: no such report (python -m report.make_report builds it)")
    return report


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("homework", choices=["hw2", "hw8"])
    p.add_argument("--name", help="the student's name, for the report's header (builds the report)")
    p.add_argument("--student-id", help="for the report's header (builds the report); hw2: the zip is "
                   "<student-id>_hw2.zip")
    p.add_argument("--department", help="department and year, for the report's header (builds the report)")
    p.add_argument("--collaborators", help="for the report's header (builds the report)")
    p.add_argument("--report", help="a built report PDF, handed in as report.pdf (default: built with the identity "
                   "flags when any is given, else report/<homework>.pdf)")
    p.add_argument("--submission", type=Path, help="hw8: the CSV submitted to Kaggle, whose sha256 the folder's "
                   "README gives")
    p.add_argument("--test-csv", type=Path, help="hw8: the plain test CSV that hw8_test.sh must turn into "
                   "--submission, byte for byte")
    p.add_argument("--out", help="hw2: the folder the zip goes to (default: .); hw8: the folder to write "
                   "(default: hw8)")
    args = p.parse_args(argv)
    if args.homework == "hw2":
        if not args.student_id or not re.fullmatch(r"[A-Za-z0-9_-]+", args.student_id):
            fail("hw2 needs --student-id of letters, digits, - or _: the zip is named after it")
        out = Path(args.out or ".")
        if not out.is_dir():
            fail(f"{out}: no such folder")
    else:
        out = Path(args.out or "hw8")
        for flag, path in (("--submission", args.submission), ("--test-csv", args.test_csv)):
            if path is None or not path.is_file():
                fail(f"hw8 needs {flag}: {path or 'not given'}: no such file")
        with open(args.test_csv, "rb") as f:
            if f.read(len(COMPRESSED_CSV_MAGIC)) == COMPRESSED_CSV_MAGIC:
                fail(f"{args.test_csv}: compressed; give the plain CSV (the HW8 folder reads plain CSV only)")
    with tempfile.TemporaryDirectory(prefix="handin-report-") as work:
        report = chosen_report(args, Path(work))
        if args.homework == "hw2":
            written = hw2_zip(args.student_id, report, out)
        else:
            written = hw8_folder(report, out, args.submission, args.test_csv)
    print(f"wrote {written}")
    return written


if __name__ == "__main__":
    main()
