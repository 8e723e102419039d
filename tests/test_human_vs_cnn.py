from pathlib import Path

import numpy as np
import pytest

from dataset import DataError
from tools import human_vs_cnn


def test_faces_are_distinct_held_out_rows_fixed_by_the_seed() -> None:
    val_idx = np.arange(100, 400, 3)
    rows = human_vs_cnn.pick_faces(val_idx, 60, seed=1)
    assert len(set(rows.tolist())) == 60 and set(rows.tolist()) <= set(val_idx.tolist())
    assert np.array_equal(rows, human_vs_cnn.pick_faces(val_idx, 60, seed=1))
    assert not np.array_equal(rows, human_vs_cnn.pick_faces(val_idx, 60, seed=2))


def test_answers_are_saved_after_every_face_and_scored(tmp_path: Path) -> None:
    labels = np.arange(20) % 7
    images = np.zeros((20, 48, 48), dtype=np.uint8)
    rows = np.array([3, 9, 12, 15, 18])
    out = tmp_path / "answers.csv"
    seen = []

    def person(face: np.ndarray, i: int, n: int) -> int | None:
        seen.append(i)
        assert out.exists() == (i > 0) and n == 5
        return None if i == 4 else (int(labels[rows[i]]) if i < 3 else 0)  # 3 right, 1 wrong, then q

    answers = human_vs_cnn.label_faces(images, rows, person, out)
    assert seen == [0, 1, 2, 3, 4] and human_vs_cnn.read_answers(out) == answers and len(answers) == 4
    model_labels = labels.copy()
    model_labels[3] = (labels[3] + 1) % 7  # the model misses one face the person got right
    result = human_vs_cnn.compare(answers, labels, model_labels)
    assert result == {"faces": 4, "human_acc": 0.75, "model_acc": 0.75, "agreement": 0.5}


@pytest.mark.parametrize("text, problem", [("row,label\n1,2\n", ":1: expected the header"),
                                           ("row,human\n1,2\n3\n", ":3: expected two integers"),
                                           ("row,human\n1,9\n", ":2: label 9 is not one of")])
def test_a_bad_answers_file_names_its_line(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=problem):
        human_vs_cnn.read_answers(path)
