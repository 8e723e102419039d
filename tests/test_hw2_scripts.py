"""hw2_train.sh then hw2_test.sh, run as a user would, from another folder."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, write_test_csv, write_train_csv

ENV = {**os.environ, "PYTHON": sys.executable}


def bash(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *args], cwd=cwd, env=ENV, capture_output=True, text=True)


def test_train_then_test_gives_a_valid_submission(tmp_path: Path) -> None:
    train_csv = write_train_csv(tmp_path / "train.csv", n=420)
    test_csv = write_test_csv(tmp_path / "test.csv", n=40, first_id=5)
    trained = bash(str(ROOT / "hw2_train.sh"), "train.csv", "--out", "model.pt", "--epochs", "3",
                   "--channels", "8,16", "--hidden", "32", "--batch-size", "32", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "best epoch" in trained.stdout and (tmp_path / "model.json").exists()
    tested = bash(str(ROOT / "hw2_test.sh"), "test.csv", "pred.csv", "--model", "model.pt", cwd=tmp_path)
    assert tested.returncode == 0, tested.stderr
    lines = (tmp_path / "pred.csv").read_text().splitlines()
    assert lines[0] == "id,label" and len(lines) == 41
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(5, 45))
    assert all(0 <= int(line.split(",")[1]) <= 6 for line in lines[1:])
    assert train_csv.exists() and test_csv.exists()


def test_scripts_print_usage_and_fail_without_arguments(tmp_path: Path) -> None:
    for script, args in (("hw2_train.sh", []), ("hw2_test.sh", ["only_one.csv"]), ("hw2_download.sh", ["--bogus"])):
        result = bash(str(ROOT / script), *args, cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.startswith("usage: bash " + script)


def test_a_failing_prediction_fails_the_script(tmp_path: Path) -> None:
    (tmp_path / "test.csv").write_text("id,feature\n1,1 2 3\n")
    result = bash(str(ROOT / "hw2_test.sh"), "test.csv", "pred.csv", "--model", "nowhere.pt", cwd=tmp_path)
    assert result.returncode == 2 and not (tmp_path / "pred.csv").exists()
