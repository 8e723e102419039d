"""bench/speed.py: predict.py timed as a user runs it, under one interpreter or several taking turns."""

import sys
from pathlib import Path

from conftest import ROOT, write_test_csv

from model import atomic_save, build_model, make_checkpoint

sys.path.insert(0, str(ROOT / "bench"))
import speed


def test_setups_take_turns_and_their_submissions_are_compared(tmp_path: Path) -> None:
    config = {"arch": "mobilenet", "channels": [8, 16], "blocks_per_stage": 1}
    atomic_save(make_checkpoint(build_model(config).eval(), config), tmp_path / "m.pt")
    test_csv = write_test_csv(tmp_path / "test.csv", n=20)
    alias = tmp_path / "python-alias"  # a second name for this interpreter: two entries, as two venvs would give
    alias.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    alias.chmod(0o755)
    setups = [(sys.executable, ROOT), (str(alias), ROOT)]
    timings = speed.time_predict(test_csv, [str(tmp_path / "m.pt")], 2, ["--tta", "none"], setups)
    assert list(timings) == setups
    for seconds, digests in timings.values():
        assert len(seconds) == 2 and all(s > 0 for s in seconds)
        assert len(digests) == 1  # the same input gives the same bytes
    assert timings[setups[0]][1] == timings[setups[1]][1]
    assert speed.torch_version(sys.executable) == speed.torch_version(str(alias))
