"""bench/ensemble.py: greedy forward selection of members on the held-out split."""

import pytest
import torch

from bench import ensemble
from model import build_model


def one_hot_votes(labels: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Probabilities that put 0.6 on the label where right, else on the next class."""
    chosen = torch.where(right, labels, (labels + 1) % 7)
    probs = torch.full((len(labels), 7), 0.4 / 6)
    probs[torch.arange(len(labels)), chosen] = 0.6
    return probs


def test_selection_adds_what_helps_and_stops_when_nothing_does() -> None:
    labels = torch.arange(12) % 7
    a = one_hot_votes(labels, torch.tensor([1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0], dtype=torch.bool))  # 8 of 12
    b = one_hot_votes(labels, torch.tensor([1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1], dtype=torch.bool))  # 8 of 12, other
    bad = one_hot_votes(labels, torch.zeros(12, dtype=torch.bool))  # never right
    path = ensemble.greedy_selection({"a": a, "b": b, "bad": bad}, labels)
    assert "bad" not in path[-1]["weights"]
    assert path[0]["acc"] == pytest.approx(8 / 12)
    assert [step["acc"] for step in path] == sorted(step["acc"] for step in path)  # each pick helped
    assert sum(path[-1]["weights"].values()) == len(path) <= ensemble.MAX_STEPS


def test_ties_in_accuracy_go_to_the_lower_log_loss() -> None:
    labels = torch.zeros(4, dtype=torch.long)
    sure, unsure = torch.full((4, 7), 0.01), torch.full((4, 7), 0.1)
    sure[:, 0], unsure[:, 0] = 0.94, 0.4
    path = ensemble.greedy_selection({"unsure": unsure, "sure": sure}, labels, steps=1)
    assert path == [{"weights": {"sure": 1}, "acc": 1.0, "log_loss": pytest.approx(-torch.tensor(0.94).log().item())}]


def test_ten_crops_are_a_candidate_only_for_models_trained_on_crops() -> None:
    config = {"arch": "vgg", "channels": [8, 16], "hidden": 16}
    assert ensemble.candidate_views(build_model({**config, "side": 40}), "all") == ["flip", "crops"]
    assert ensemble.candidate_views(build_model(config), "all") == ["flip"]
    assert ensemble.candidate_views(build_model({**config, "side": 40}), "flip") == ["flip"]
