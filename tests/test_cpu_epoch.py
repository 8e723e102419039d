"""bench/cpu_epoch.py: one-epoch cpu-preset runs of a source tree, timed from train.py's own epoch line."""

import subprocess
import sys

import torch
from conftest import ROOT, write_train_csv


def test_it_times_an_epoch_of_each_tree(tmp_path) -> None:
    csv = write_train_csv(tmp_path / "train.csv", n=300)
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "cpu_epoch.py"), str(csv), "--tree", str(ROOT),
                             "--repeats", "1", "--flags", "--channels 4,8 --hidden 8"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(f"{ROOT}: median ") and "s per cpu-preset epoch" in last and "n=1" in last
    assert "faces/s" in last
    assert float(last.split("median ")[1].split(" s")[0]) > 0


def test_it_times_each_variant_and_the_first_epochs_excess(tmp_path) -> None:
    csv = write_train_csv(tmp_path / "train.csv", n=300)
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "cpu_epoch.py"), str(csv), "--variant", "",
                             "--variant", "--crop 40", "--epochs", "2", "--repeats", "1",
                             "--flags", "--channels 4,8 --hidden 8"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = result.stdout.strip().splitlines()[-2:]
    assert summary[0].startswith(f"{ROOT}: median ") and summary[1].startswith(f"{ROOT} --crop 40: median ")
    assert all("faces/s; first epoch " in line for line in summary)


def test_it_labels_each_interpreter_with_its_torch_release(tmp_path) -> None:
    csv = write_train_csv(tmp_path / "train.csv", n=300)
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "cpu_epoch.py"), str(csv), "--python",
                             sys.executable, "--repeats", "1", "--flags", "--channels 4,8 --hidden 8"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{sys.executable}: torch {torch.__version__}" in result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith(f"torch {torch.__version__} {ROOT}: median ")


def test_an_interpreter_without_torch_is_refused(tmp_path) -> None:
    csv = write_train_csv(tmp_path / "train.csv", n=300)
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "cpu_epoch.py"), str(csv), "--python",
                             "/bin/false"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "/bin/false: cannot import torch" in result.stderr
    missing = tmp_path / "no-python"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "cpu_epoch.py"), str(csv), "--python",
                             str(missing)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and result.stderr.strip() == f"cpu_epoch.py: {missing}: No such file or directory"
