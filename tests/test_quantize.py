import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, write_train_csv

import train
from compact_int8 import COMPACT_FORMAT, load_compact, read_compact, write_compact
from tools import quantize

TINY_MOBILENET = ["--arch", "mobilenet", "--channels", "8,16,32,64", "--convs-per-stage", "1", "--batch-size", "32",
                  "--no-augment", "--epochs", "4", "--lr", "0.2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("quantize")
    csv = write_train_csv(tmp / "train.csv", n=700)
    result = train.main([str(csv), "--out", str(tmp / "m.pt"), *TINY_MOBILENET])
    assert result["best_val_acc"] >= 0.9  # the tiny net learnt the synthetic task
    return tmp / "m.pt", csv


def test_the_int8_file_keeps_the_accuracy(trained: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, csv = trained
    size = quantize.quantize(str(checkpoint), str(tmp_path / "c.q8"), max_bytes=225_000)
    result = quantize.compare(str(checkpoint), str(tmp_path / "c.q8"), str(csv))
    assert result["bytes"] == size and result["n_val"] == 70
    # (flip TTA, which compare() uses, does not suit the synthetic bars: a mirrored bar is another class)
    assert abs(result["val_acc_tta_int8"] - result["val_acc_tta_fp32"]) <= 2 / 70
    assert result["changed_predictions"] <= 2
    header = load_compact(tmp_path / "c.q8")[1]
    assert header["split"]["seed"] == 0 and header["source"] == "m.pt" and len(header["class_names"]) == 7


def test_an_oversized_file_is_refused_and_the_old_one_kept(trained: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "c.q8"
    out.write_bytes(b"the previous release")
    with pytest.raises(ValueError, match="over the 1,000-byte limit"):
        quantize.quantize(str(trained[0]), str(out), max_bytes=1000)
    assert out.read_bytes() == b"the previous release"
    assert [p.name for p in tmp_path.iterdir()] == ["c.q8"]


def test_repack_rewrites_an_old_file_with_the_same_tensors(trained: tuple[Path, Path], tmp_path: Path) -> None:
    quantize.quantize(str(trained[0]), str(tmp_path / "c.q8"), max_bytes=225_000)
    old = tmp_path / "old.q8"
    write_compact(old, *read_compact(tmp_path / "c.q8"), deflate=False)
    old_header, tensor_bytes = read_compact(old)
    before = old.stat().st_size
    not_compact = tmp_path / "notes.q8"
    not_compact.write_bytes(b"not a model")
    run = [sys.executable, "-m", "tools.quantize", "--repack"]
    done = subprocess.run([*run, str(old)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout == f"{old}: {before:,} -> {old.stat().st_size:,} bytes (format 2)\n"
    assert read_compact(old) == ({**old_header, "format": COMPACT_FORMAT}, tensor_bytes)
    assert old.read_bytes() == (tmp_path / "c.q8").read_bytes()  # the same file quantize writes today
    refused = subprocess.run([*run, str(not_compact)], capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode == 1 and refused.stderr.strip() == f"quantize.py: error: {not_compact}: not a compact " \
                                                                 f"model file of this project"
    assert not_compact.read_bytes() == b"not a model" and sorted(p.name for p in tmp_path.iterdir()) == [
        "c.q8", "notes.q8", "old.q8"]


def test_the_k_bit_file_keeps_the_accuracy_through_the_command_line(trained: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, csv = trained
    out = tmp_path / "c.q8"
    # six bits: at five, the tiny net's flip-averaged near-ties on the synthetic bars (a mirrored bar is another
    # class) turn a few faces either way, which says more about the synthetic task than about the format
    done = subprocess.run([sys.executable, "-m", "tools.quantize", str(checkpoint), str(out), "--bits", "6",
                           "--train-csv", str(csv)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {out}: {out.stat().st_size:,} bytes\n") and out.read_bytes()[:6] == b"FERQK\n"
    result = quantize.compare(str(checkpoint), str(out), str(csv))
    assert abs(result["val_acc_tta_int8"] - result["val_acc_tta_fp32"]) <= 2 / 70 and result["changed_predictions"] <= 2
