"""bench/cpu_epoch.py: one-epoch cpu-preset runs of a source tree, timed from train.py's own epoch line."""

import subprocess
import sys

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
