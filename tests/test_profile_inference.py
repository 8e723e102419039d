"""bench/profile_inference.py: seconds per batch of faces and the operators that took them."""

import subprocess
import sys
from pathlib import Path

from conftest import ROOT

from model import atomic_save, build_model, make_checkpoint


def test_it_times_and_profiles_each_model(tmp_path: Path) -> None:
    config = {"arch": "mobilenet", "channels": [8, 16], "blocks_per_stage": 2}
    atomic_save(make_checkpoint(build_model(config).eval(), config), tmp_path / "m.pt")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "profile_inference.py"), "--model",
                           str(tmp_path / "m.pt"), "--faces", "64"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "m.pt: " in done.stdout and " s per 64 faces" in done.stdout and "aten::" in done.stdout
    assert "minor page faults" in done.stdout and "freed memory kept" in done.stdout
