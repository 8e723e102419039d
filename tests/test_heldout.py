"""bench/heldout.py: held-out accuracy of models and their ensemble on the split they record."""

import json
from pathlib import Path

import pytest
import torch
from conftest import pixel_strings, synthetic_faces, write_csv, write_train_csv

import train
from bench import heldout
from dataset import read_faces, recorded_split
from predict import predict_proba
from quantized import load_model

TINY = ["--channels", "8,16", "--hidden", "32", "--batch-size", "32", "--bf16", "off", "--no-augment", "--crop", "0",
        "--epochs", "2"]


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return (probs.argmax(1) == labels).float().mean().item()


def test_each_model_and_the_ensemble_score_as_predict_py_does(tmp_path: Path) -> None:
    csv = write_train_csv(tmp_path / "train.csv")
    models = [tmp_path / f"m{seed}.pt" for seed in (0, 1)]
    for seed, path in enumerate(models):
        train.main([str(csv), "--out", str(path), *TINY, "--seed", str(seed)])
    flags = [str(csv), "--model", str(models[0]), "--model", str(models[1]), "--tta", "flip"]
    result = heldout.main([*flags, "--json", str(tmp_path / "h.json")])
    faces = read_faces(csv, require_labels=True)
    val_idx = recorded_split(faces, load_model(models[0])[1]["split"])[1]
    images, labels = faces.images[val_idx], faces.labels[val_idx]
    probs = [predict_proba(load_model(m)[0], images, tta="flip") for m in models]
    assert [r["val_acc_tta"] for r in result["models"]] == [accuracy(p, labels) for p in probs]
    assert [r["val_acc"] for r in result["models"]] == [accuracy(predict_proba(load_model(m)[0], images, tta=False),
                                                                 labels) for m in models]
    assert result["ensemble_val_acc_tta"] == accuracy(probs[0] + probs[1], labels)
    assert result["n_val"] == len(val_idx) == result["n_val_clean"]  # the grouped split keeps copies together
    assert json.loads((tmp_path / "h.json").read_text()) == result


def test_held_out_faces_with_a_copy_in_training_are_counted_apart(tmp_path: Path) -> None:
    images, labels = synthetic_faces(140, 0)
    rows = [f"{y},{p}" for y, p in zip(labels, pixel_strings(images), strict=True)]
    csv = write_csv(tmp_path / "train.csv", "label,feature", rows + rows)  # every face twice
    for method in ("stratified", "grouped"):
        model = tmp_path / f"{method}.pt"
        train.main([str(csv), "--out", str(model), *TINY, "--epochs", "1", "--split-method", method])
        result = heldout.main([str(csv), "--model", str(model)])
        leaked = result["n_val"] - result["n_val_clean"]
        assert leaked > 0 if method == "stratified" else leaked == 0
        assert (result["ensemble_val_acc_tta_copies"] is None) == (method == "grouped")


def test_models_on_different_splits_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv = write_train_csv(tmp_path / "train.csv")
    for seed in (0, 1):
        train.main([str(csv), "--out", str(tmp_path / f"t{seed}.pt"), *TINY, "--epochs", "1", "--split-seed", str(seed)])
    with pytest.raises(SystemExit) as exit_info:
        heldout.main([str(csv), "--model", str(tmp_path / "t0.pt"), "--model", str(tmp_path / "t1.pt"),
                      "--json", str(tmp_path / "h.json")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "heldout.py: error:" in err and "different splits" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "h.json").exists()
