"""report/collect.py: the test set, the scores, the held-out faces with a copy in training, and what the released
files and the committed logs say."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import pixel_strings, synthetic_faces, write_csv

from dataset import duplicate_groups, read_faces
from report import collect


def test_the_test_set_is_the_labelled_ids_or_the_private_test_rows(tmp_path: Path) -> None:
    images, labels = synthetic_faces(12)
    pixels = pixel_strings(images)
    test = write_csv(tmp_path / "test.csv", "id,feature", [f"{i + 100},{p}" for i, p in enumerate(pixels)])
    ids = tmp_path / "labels.csv"
    ids.write_text("id,label\n" + "".join(f"{i},{y}\n" for i, y in ((105, 3), (101, 6))))
    x, y, found, what = collect.test_set(test, ids)
    assert y.tolist() == [3, 6] and found.tolist() == [105, 101]
    assert torch.equal(x, torch.from_numpy(images[[5, 1]]).view(-1, 1, 48, 48))
    assert "2 faces, ids 101..105" in what and "Kaggle's public score" in what
    usage = ["Training", "PublicTest", "PrivateTest"] * 4
    icml = write_csv(tmp_path / "icml.csv", "emotion, Usage, pixels",
                     [f"{y}, {u}, {p}" for y, u, p in zip(labels, usage, pixels, strict=True)])
    x, y, _, what = collect.test_set(icml, ids)
    assert y.tolist() == labels[2::3].tolist() and "4 PrivateTest rows" in what
    ids.write_text("id,label\n999,1\n")
    with pytest.raises(SystemExit, match="id 999 is not in"):
        collect.test_set(test, ids)


def test_a_resumed_run_counts_the_epochs_of_every_session(tmp_path: Path) -> None:
    history = {"params": 10, "device": "cpu", "bf16": False, "git_commit": "x", "split": {"method": "grouped"},
               "args": {}, "best_epoch": 2, "epoch": 2, "best_val_acc": 0.5, "history": [{"val_acc": 0.5}] * 2}
    for wall, elapsed, expected in ((120.0, 100.0, 120.0), (60.0, 100.0, 100.0), (None, 100.0, None)):
        path = tmp_path / "run.json"
        path.write_text(json.dumps({**history, "wall_seconds": wall, "elapsed": elapsed}))
        assert collect.summarize_history(path)["wall_seconds"] == expected


def test_per_class_scores_on_a_known_case() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 4, 5, 6])
    predicted = np.array([0, 0, 1, 1, 0, 2, 3, 4, 5, 6])
    s = collect.per_class_scores(labels, predicted)
    assert s["accuracy"] == pytest.approx(0.8)
    assert s["precision"][0] == pytest.approx(2 / 3) and s["recall"][0] == pytest.approx(2 / 3)
    assert s["precision"][1] == pytest.approx(1 / 2) and s["recall"][1] == pytest.approx(1 / 2)
    assert s["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 5) / 7)
    assert s["support"] == [3, 2, 1, 1, 1, 1, 1] and s["confusion"][0][1] == 1 and s["confusion"][1][0] == 1


def test_logit_adjustment_moves_close_calls_to_the_rare_class() -> None:
    probs = np.array([[0.5, 0.45, 0, 0, 0, 0, 0.05], [0.97, 0.01, 0, 0, 0, 0, 0.02]]) + 1e-3
    prior = np.array([0.5, 0.02, 0.1, 0.1, 0.1, 0.1, 0.08])
    assert probs.argmax(1).tolist() == [0, 0]
    assert collect.logit_adjusted(probs, prior).tolist() == [1, 0]


def test_top_confusions_are_the_largest_off_diagonal_shares() -> None:
    cm = np.eye(7, dtype=int) * 10
    cm[2, 4], cm[1, 0], cm[6, 4], cm[1, 1] = 5, 3, 1, 2  # disgust is rare: 3 of its 5 faces go to angry
    top = collect.top_confusions(cm, 2)
    assert [(t, p) for t, p, _ in top] == [(1, 0), (2, 4)]  # shares of the true class: 3/5 > 5/15, not counts
    assert top[0][2] == pytest.approx(0.6)


def test_held_out_faces_with_a_copy_in_training_are_told_apart(tmp_path: Path) -> None:
    """On the row split, exactly the held-out faces whose pixels recur in the training part are flagged; the
    grouped split has none; accuracy(clean=True) scores only the others."""
    images, labels = synthetic_faces(280)
    images[200:] = images[:80]  # 80 copies, some of which the row split puts on the other side
    labels[200:] = labels[:80]
    data = write_csv(tmp_path / "train.csv", "label,feature",
                     [f"{y},{p}" for y, p in zip(labels, pixel_strings(images), strict=True)])
    faces = read_faces(data, require_labels=True)
    groups = duplicate_groups(faces.images)
    held = collect.HeldOut(faces, groups, collect.SPLIT)
    train_idx = np.setdiff1d(np.arange(280), held.rows)
    has_copy = [any((images[t] == images[v]).all() for t in train_idx) for v in held.rows]
    assert (~held.clean).tolist() == has_copy and any(has_copy)
    grouped = collect.HeldOut(faces, groups, {"method": "grouped", "val_fraction": 0.1, "seed": 0})
    assert grouped.clean.all()
    model = tmp_path / "m.pt"
    held.scored[model] = np.eye(7)[np.where(held.clean, held.labels, (held.labels + 1) % 7)]  # right only where clean
    assert held.accuracy(model, clean=True) == 1.0
    assert held.accuracy(model) == pytest.approx(held.clean.mean())


def test_each_released_file_has_the_one_training_history_it_came_from() -> None:
    found = collect.histories()
    for name in [*collect.released_networks(), "compact.q8"]:
        history = collect.history_of(collect.WEIGHTS / name, found)  # exits unless exactly one matches
        assert history.suffix == ".json" and "runs" in history.parts


def test_a_speed_log_names_each_option_s_models_and_an_unfinished_run_counts_as_none() -> None:
    header = ("torch 2.14.1, 2 threads, python 3.11.7; Some CPU, flags: avx2\n"
              "reference: r.q8; default: a.q8, b.q8, c.q8; fast: a.q8, b.q8; flip views; test.csv.gz\n")
    done = ("$ ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python -m bench.speed   # abc\n" + header
            + "reference    20.0 s   1.00x the reference  (min 19.0, max 21.0, n=3; byte-identical: True)\n"
            + "fast         50.5 s   2.52x the reference  (min 50.0, max 52.0, n=3; byte-identical: False)\n")
    unfinished = "$ .venv/bin/python -m bench.speed\n" + header
    runs = collect.speed_runs(done + unfinished, "runs/speed/x.log")
    assert len(runs) == 1 and runs[0]["isa"] == "AVX2" and runs[0]["python"] == "3.11.7"
    assert runs[0]["options"]["fast"] == {"models": ["a.q8", "b.q8"], "seconds": 50.5, "ratio": 2.52, "min": 50.0,
                                          "max": 52.0, "n": 3, "identical": False}
    assert runs[0]["options"]["reference"]["models"] == ["r.q8"]


def test_the_committed_speed_logs_name_released_models() -> None:
    for run in collect.speed_logs():
        assert run["torch"] and run["python"] and run["cpu"]
        for option in run["options"].values():
            assert set(option["models"]) <= {*collect.released_networks(), collect.COMPACT} and option["seconds"] > 0


def test_the_hw8_folder_size_is_the_last_du_of_its_log() -> None:
    size = collect.handin_size()
    du_lines = [line for line in (collect.ROOT / size["log"]).read_text().splitlines() if "\t" in line]
    assert du_lines and du_lines[-1].startswith(f"{size['bytes']}\t")
