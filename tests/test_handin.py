"""tools/handin.py: the HW2 zip and the HW8 folder, each as its course collects it."""

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, write_test_csv, write_train_csv

import predict
from tools import handin


@pytest.fixture
def report(tmp_path: Path) -> Path:
    path = tmp_path / "my_report.pdf"
    path.write_bytes(b"%PDF-1.4 a stand-in for the built report\n")
    return path


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


def test_the_hw8_folder_fits_and_predicts_as_predict_py(tmp_path: Path, report: Path) -> None:
    folder = handin.main(["hw8", "--report", str(report), "--out", str(tmp_path / "hw8")])
    assert sorted(p.name for p in folder.iterdir()) == ["MANIFEST", "compact.q8", "fer.pyz", "hw8_download.sh",
                                                      "hw8_test.sh", "hw8_train.sh", "report.pdf"]
    (folder / "report.pdf").rename(tmp_path / "report.pdf")  # as the TAs do before measuring
    du = int(subprocess.run(["du", "-sb", str(folder)], capture_output=True, text=True).stdout.split()[0])
    assert du == handin.folder_bytes(folder) <= handin.HW8_LIMIT
    download = subprocess.run(["bash", str(folder / "hw8_download.sh")], capture_output=True, text=True)
    assert download.returncode == 0 and download.stdout.strip() == "ok        compact.q8"
    csv = write_test_csv(tmp_path / "test.csv", n=50)
    env = {"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}
    run = subprocess.run(["bash", str(folder / "hw8_test.sh"), str(csv), str(tmp_path / "hw8.csv")], env=env,
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    predict.main([str(csv), str(tmp_path / "project.csv"), "--model", predict.RELEASED_COMPACT])
    assert (tmp_path / "hw8.csv").read_bytes() == (tmp_path / "project.csv").read_bytes()


@pytest.mark.parametrize("name", handin.HW8_MODULES)
def test_the_hw8_modules_lose_their_comments_and_nothing_else(name: str) -> None:
    source = (ROOT / name).read_text()
    packed = handin.without_comments(source)
    assert ast.dump(ast.parse(packed)) == ast.dump(ast.parse(source))  # the same program, docstrings included
    assert "#" in source and len(packed) < len(source)
    assert not [line for line in packed.splitlines() if line.lstrip().startswith("#")]


def test_without_comments_keeps_a_hash_inside_a_string() -> None:
    source = 'x = "a # b"  # a comment\n    # an indented comment line\ny = f"{x}#"\n'
    assert handin.without_comments(source) == 'x = "a # b"\ny = f"{x}#"\n'


def test_hw8_train_trains_and_writes_the_int8_file(tmp_path: Path, report: Path) -> None:
    folder = handin.main(["hw8", "--report", str(report), "--out", str(tmp_path / "hw8")])
    csv = write_train_csv(tmp_path / "train.csv", n=280)
    env = {"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}
    run = subprocess.run(["bash", str(folder / "hw8_train.sh"), str(csv), "--epochs", "1", "--channels", "8,16"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (folder / "trained.q8").read_bytes()[:6] == b"FERQ8\n"


def test_a_missing_report_or_a_bad_id_is_one_line(tmp_path: Path, report: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    for argv, message in [(["hw8", "--report", str(tmp_path / "none.pdf")], "none.pdf: no such report"),
                          (["hw2", "--report", str(report), "--student-id", "../x"], "hw2 needs --student-id"),
                          (["hw8", "--report", str(report), "--out", str(tmp_path)], "exists: give another --out")]:
        with pytest.raises(SystemExit) as exit_info:
            handin.main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err
