"""bench/gpu_suite.sh in SMOKE mode: every stage of the GPU suite, with tiny sizes, on this CPU."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import torch
from conftest import ROOT, write_train_csv

from model import load_checkpoint
from predict import ensemble_proba

SUITE = ROOT / "bench" / "gpu_suite.sh"
ENV = {**os.environ, "PYTHON": sys.executable, "SMOKE": "1", "SEEDS": "2"}
ABLATIONS = ["no_augment", "no_normalize", "no_label_smoothing", "mixup", "cutmix", "mlp"]


def suite(out: Path, csv: Path, stages: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SUITE), str(out), str(csv), stages], env=ENV, capture_output=True,
                          text=True, timeout=600)


def test_smoke_suite_runs_every_stage_and_brings_back_at_most_8_small_files(tmp_path: Path) -> None:
    csv = write_train_csv(tmp_path / "train.csv", n=900)
    out = tmp_path / "out"
    result = suite(out, csv, "all")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["fast.pt", "full_s0.pt", "full_s1.pt", "logs.tar.gz"]
    assert all(p.stat().st_size < 16 * 2**20 for p in out.iterdir())
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = set(tar.getnames())
        summary = json.load(tar.extractfile("logs/summary.json"))
        ensemble = json.load(tar.extractfile("logs/ensemble.json"))
    runs = summary["runs"]
    assert set(runs) == {"fast", "full_s0", "full_s1", *ABLATIONS}
    assert all(r["finished"] and r["exit"] == 0 and r["wall_seconds"] > 0 for r in runs.values())
    assert {f"logs/{name}.log" for name in runs} <= names and "logs/suite.log" in names
    assert summary["side_by_side"]["runs"] == 2
    assert ensemble["split"]["method"] == "grouped" and len(ensemble["models"]) == 2
    # the checkpoints come back with fp16 weights, and predict as they are
    checkpoint = load_checkpoint(out / "full_s0.pt")
    assert checkpoint["weights_stored_as"] == "float16" and checkpoint["train_args"]["preset"] == "full"
    probs = ensemble_proba([str(out / "full_s0.pt"), str(out / "full_s1.pt")], torch.zeros(3, 1, 48, 48, dtype=torch.uint8))
    assert probs.shape == (3, 7)


def test_a_smoke_failure_stops_the_suite_and_still_brings_back_the_logs(tmp_path: Path) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("label,feature\n9,1 2 3\n")
    out = tmp_path / "out"
    result = suite(out, csv, "core")
    assert result.returncode != 0
    assert sorted(p.name for p in out.iterdir()) == ["logs.tar.gz"]
    with tarfile.open(out / "logs.tar.gz") as tar:
        assert "train.csv:2: expected 2304 pixel values" in tar.extractfile("logs/smoke.log").read().decode()
        assert "fast" not in tar.extractfile("logs/suite.log").read().decode()
