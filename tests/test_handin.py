"""tools/handin.py: the HW2 zip and the HW8 folder, each as its course collects it."""

import gzip
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, write_test_csv, write_train_csv

import predict
from tools import handin

ENV = {"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}  # the folder's own code, not this repository's
# A ready-made compressor or archive, as code or a file name: the words as the modules, formats and tools go by
# (Python's zip() builtin, which pairs lists, excepted).
COMPRESSOR_WORDS = re.compile(r"\b(zlib|gzip|gunzip|lzma|bz2|bzip2|xz|zstd|brotli|deflate\w*|inflate\w*|zipfile|"
                              r"zipimport|tarfile|pyz|make_archive|unpack_archive)\b|\bzip\b(?!\()|\.(zip|gz|tgz|7z)\b",
                              re.IGNORECASE)
COMPRESSED_MAGIC = (b"PK\x03\x04", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"(\xb5/\xfd", b"7z\xbc\xaf")  # zip, gzip, ...


@pytest.fixture
def report(tmp_path: Path) -> Path:
    path = tmp_path / "my_report.pdf"
    path.write_bytes(b"%PDF-1.4 a stand-in for the built report\n")
    return path


@pytest.fixture(scope="module")
def hw8(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An HW8 folder built as the hand-in is, for a submission that predict.py wrote for a synthetic test file."""
    tmp = tmp_path_factory.mktemp("hw8")
    (tmp / "report.pdf").write_bytes(b"%PDF-1.4 a stand-in for the built report\n")
    csv = write_test_csv(tmp / "test.csv", n=40)
    predict.main([str(csv), str(tmp / "submission.csv"), "--model", predict.released("compact")[0]])
    folder = handin.main(["hw8", "--report", str(tmp / "report.pdf"), "--submission", str(tmp / "submission.csv"),
                          "--test-csv", str(csv), "--out", str(tmp / "hw8")])
    return {"folder": folder, "tmp": tmp, "submission": tmp / "submission.csv"}


def test_the_hw2_zip_holds_the_code_the_weights_and_report_pdf(tmp_path: Path, report: Path) -> None:
    zip_path = handin.main(["hw2", "--student-id", "B12345678", "--report", str(report), "--out", str(tmp_path)])
    assert zip_path == tmp_path / "B12345678_hw2.zip"
    with zipfile.ZipFile(zip_path) as z:
        names = set(z.namelist())
        assert z.read("report.pdf") == report.read_bytes()
        assert z.read("weights/compact.q8") == (ROOT / "weights" / "compact.q8").read_bytes()
    assert {"predict.py", "train.py", "faces.py", "detector.py", "hw2_test.sh", "hw2_download.sh",
            "weights/MANIFEST"} <= names
    assert not any(name.startswith("weights/mtcnn_") for name in names)  # fetched by hw2_download.sh, not handed in
    assert not [n for n in names if n.endswith((".csv", ".csv.gz"))]  # never the data
    folder = tmp_path / "unzipped"
    zipfile.ZipFile(zip_path).extractall(folder)
    fetched = [line.split()[0] for line in handin.manifest_lines() if line.split()[2] != "-"]
    for name in fetched:  # as a first hw2_download.sh run leaves them (here from this tree's own run)
        if (ROOT / "weights" / name).exists():
            shutil.copy(ROOT / "weights" / name, folder / "weights" / name)
    check = subprocess.run(["bash", str(folder / "hw2_download.sh")], capture_output=True, text=True)
    released = len(handin.manifest_lines())
    assert released - len(fetched) >= 5 and check.returncode == 0
    assert check.stdout.count("ok ") + check.stdout.count("fetched ") == released  # every file, intact
    csv = write_test_csv(tmp_path / "test.csv.gz", n=20)  # a compressed test file, an int8 and a k-bit model
    run = subprocess.run([sys.executable, str(folder / "predict.py"), str(csv), str(tmp_path / "pred.csv"), "--model",
                          str(folder / "weights" / "vgg_crop40_s0.q8"), "--model", str(folder / "weights" / "compact.q8")],
                         capture_output=True, text=True, cwd=tmp_path, env=ENV)
    assert run.returncode == 0, run.stderr
    assert len((tmp_path / "pred.csv").read_text().splitlines()) == 21


def test_the_hw8_folder_holds_plain_files_within_the_limits(hw8: dict[str, Path]) -> None:
    folder = hw8["folder"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "MANIFEST", "README.md", "compact.q8", "dataset.py", "hw8_download.sh", "hw8_test.sh", "hw8_train.sh",
        "model.py", "predict.py", "quantized.py", "report.pdf", "train.py", "utils.py"]
    for name in handin.HW8_MODULES:
        assert (folder / name).read_bytes() == (ROOT / name).read_bytes()  # the project's code, unchanged
    (folder / "report.pdf").rename(hw8["tmp"] / "moved_report.pdf")  # as the TAs do before measuring
    try:
        download = subprocess.run(["bash", str(folder / "hw8_download.sh")], capture_output=True, text=True)
        assert download.returncode == 0 and download.stdout.strip() == "ok        compact.q8"
        du = subprocess.run(["du", "--apparent-size", "--bytes", "--max-depth=0", str(folder)], capture_output=True,
                            text=True, check=True)
        size = int(du.stdout.split()[0])
        assert size == handin.folder_bytes(folder) <= handin.HW8_LIMIT == 250_000
        assert (folder / "compact.q8").stat().st_size <= handin.HW8_MODEL_LIMIT == 225_000
    finally:
        (hw8["tmp"] / "moved_report.pdf").rename(folder / "report.pdf")


def test_nothing_in_the_hw8_folder_uses_or_is_a_compressor(hw8: dict[str, Path]) -> None:
    folder = hw8["folder"]
    for path in folder.iterdir():
        data = path.read_bytes()
        assert not data.startswith(COMPRESSED_MAGIC), path.name
        if path.suffix in (".py", ".sh", ".md") or path.name == "MANIFEST":
            hits = [m.group(0) for m in COMPRESSOR_WORDS.finditer(data.decode())]
            assert not hits, f"{path.name}: {hits}"
    header = b"".join(p.read_bytes() for p in folder.glob("*.py"))
    assert b"import compact_int8" not in header or b"compact_int8 = None" in header  # only as a module it may lack
    assert not (folder / "compact_int8.py").exists() and not (folder / "csv_gzip.py").exists()


def test_the_compressor_check_would_catch_one() -> None:
    caught = ["import zlib", "from gzip import open", "lzma.compress(x)", "PYTHONPATH=fer.pyz", "zipfile.ZipFile(f)",
              "tensor bytes deflated", "weights.zip", "bz2.open(p)", "tar cf - . | xz > a.tar.xz"]
    assert all(COMPRESSOR_WORDS.search(text) for text in caught)
    assert not COMPRESSOR_WORDS.search("for a, b in zip(xs, ys, strict=True): pass  # zip( pairs them")


def test_the_hw8_readme_gives_the_submission_sha256(hw8: dict[str, Path]) -> None:
    readme = (hw8["folder"] / "README.md").read_text()
    assert handin.sha256(hw8["submission"]) in readme
    assert f"`compact.q8` ({(hw8['folder'] / 'compact.q8').stat().st_size:,} bytes)" in readme


def test_hw8_test_writes_what_predict_py_writes_with_the_same_model(hw8: dict[str, Path], tmp_path: Path) -> None:
    csv = write_test_csv(tmp_path / "test.csv", n=30, seed=7)
    run = subprocess.run(["bash", str(hw8["folder"] / "hw8_test.sh"), str(csv), str(tmp_path / "hw8.csv")], env=ENV,
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    predict.main([str(csv), str(tmp_path / "project.csv"), "--model", predict.released("compact")[0]])
    assert (tmp_path / "hw8.csv").read_bytes() == (tmp_path / "project.csv").read_bytes()


def test_hw8_test_refuses_a_compressed_csv_in_one_line(hw8: dict[str, Path], tmp_path: Path) -> None:
    csv = write_test_csv(tmp_path / "test.csv.gz", n=5)
    assert gzip.decompress(csv.read_bytes())  # a real compressed CSV, which the project reads but this folder not
    run = subprocess.run(["bash", str(hw8["folder"] / "hw8_test.sh"), str(csv), str(tmp_path / "p.csv")], env=ENV,
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr == f"predict.py: error: {csv}: not a text CSV file\n"
    assert not (tmp_path / "p.csv").exists()


def test_a_submission_the_folder_does_not_reproduce_is_refused(hw8: dict[str, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    other = tmp_path / "other.csv"
    other.write_bytes(hw8["submission"].read_bytes().replace(b"\n0,", b"\n0,1", 1))
    with pytest.raises(SystemExit) as exit_info:
        handin.main(["hw8", "--report", str(hw8["folder"] / "report.pdf"), "--submission", str(other),
                     "--test-csv", str(hw8["tmp"] / "test.csv"), "--out", str(tmp_path / "hw8")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "does not write" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.csv"]  # no folder, no staging left


def test_hw8_train_trains_and_writes_the_k_bit_file(hw8: dict[str, Path], tmp_path: Path) -> None:
    csv = write_train_csv(tmp_path / "train.csv", n=280)
    run = subprocess.run(["bash", str(hw8["folder"] / "hw8_train.sh"), str(csv), "--epochs", "1", "--channels",
                          "8,16"], env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    try:
        assert run.returncode == 0, run.stderr[-2000:]
        assert (hw8["folder"] / "trained.q8").read_bytes()[:6] == b"FERQK\n"
    finally:
        for name in ("trained.pt", "trained.q8", "trained.json"):
            (hw8["folder"] / name).unlink(missing_ok=True)


def test_the_identity_flags_go_to_the_report_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands = []

    def build(command: list[str], cwd: Path) -> subprocess.CompletedProcess:  # the real build takes minutes
        commands.append(command)
        out = Path(command[command.index("--out") + 1])
        (out / "hw2.pdf").write_bytes(b"%PDF-1.4 built with the identity\n")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(handin.subprocess, "run", build)
    zip_path = handin.main(["hw2", "--student-id", "B12345678", "--name", "Ada Lovelace", "--department",
                            "CSIE, year 3", "--collaborators", "none", "--out", str(tmp_path)])
    assert zipfile.ZipFile(zip_path).read("report.pdf") == b"%PDF-1.4 built with the identity\n"
    assert commands[0][1:3] == ["-m", "report.make_report"]
    assert commands[0][5:] == ["--name", "Ada Lovelace", "--student-id", "B12345678", "--department", "CSIE, year 3",
                               "--collaborators", "none"]


def test_the_report_build_takes_each_identity_flag() -> None:
    usage = subprocess.run([sys.executable, "-m", "report.make_report", "--help"], capture_output=True, text=True,
                           check=True, cwd=ROOT).stdout
    flags = handin.report_command({key: "x" for key in handin.IDENTITY}, Path("out"))[3:]
    assert all(flag in usage for flag in flags if flag.startswith("--"))


def test_bad_arguments_are_one_line(tmp_path: Path, report: Path, capsys: pytest.CaptureFixture) -> None:
    csv = write_test_csv(tmp_path / "t.csv", n=3)
    gz = write_test_csv(tmp_path / "t.csv.gz", n=3)
    hw8 = ["hw8", "--report", str(report), "--submission", str(csv)]
    for argv, message in [
            ([*hw8, "--test-csv", str(csv), "--report", str(tmp_path / "none.pdf")], "none.pdf: no such report"),
            (["hw2", "--report", str(report), "--student-id", "../x"], "hw2 needs --student-id"),
            ([*hw8, "--test-csv", str(csv), "--out", str(tmp_path)], "exists: give another --out"),
            (["hw8", "--report", str(report), "--test-csv", str(csv)], "hw8 needs --submission"),
            ([*hw8, "--test-csv", str(gz)], "compressed; give the plain CSV"),
            ([*hw8, "--test-csv", str(csv), "--name", "Ada"], "give --name without --report"),
            (["hw2", "--report", str(report), "--student-id", "B1", "--department", "CSIE"],
             "give --department without --report")]:
        with pytest.raises(SystemExit) as exit_info:
            handin.main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err
