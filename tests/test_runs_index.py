"""tools/runs_index.py: runs/README.md generated from the histories and logs."""

import json
from pathlib import Path

import pytest

from tools import runs_index


def test_the_committed_index_is_what_the_script_writes() -> None:
    runs_index.main(["--check"])


def test_a_network_row_and_a_topic_come_from_their_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net = tmp_path / "vgg_full48_s0"
    net.mkdir()
    (net / "train.json").write_text(json.dumps({
        "args": {"arch": "vgg", "crop": 0, "epochs": 58}, "params": 2571151, "epoch": 58, "best_epoch": 58,
        "best_val_acc": 0.6758, "best_val_acc_tta": 0.6804, "elapsed": 7200, "torch": "2.14.1", "git_commit": "4542079ab",
        "finished": True}))
    topic = tmp_path / "speed"
    topic.mkdir()
    (topic / "avx2.log").write_text("$ python -m bench.speed   # a note\nreference 10 s\n")
    (topic / "plain.log").write_text("no command here\n")
    monkeypatch.setattr(runs_index, "RUNS", tmp_path)
    monkeypatch.setattr(runs_index, "RELEASED", {"default": ["vgg_full48_s0.q8", "b.q8"], "fast": ["vgg_full48_s0.q8"]})
    text = runs_index.index_text()
    assert ("| [vgg_full48_s0](vgg_full48_s0/) | default, fast | vgg, 48 px | 2,571,151 | 58 of 58 (finished), best 58 "
            "| 67.58 / 68.04 | 2.0 h | 2.14.1 | 4542079 |") in text
    assert "- `avx2.log`: `python -m bench.speed`\n- `plain.log`\n" in text


def test_check_fails_on_a_stale_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "README.md").write_text("hand-written\n")
    monkeypatch.setattr(runs_index, "RUNS", tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        runs_index.main(["--check"])
    assert exit_info.value.code == 1
