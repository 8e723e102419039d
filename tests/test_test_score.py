"""bench/test_score.py: accuracy and macro-F1 of a submission on the public half, and its bad inputs."""

from pathlib import Path

import pytest

from bench import test_score


def write(path: Path, rows: list[tuple]) -> str:
    path.write_text("id,label\n" + "".join(f"{i},{c}\n" for i, c in rows))
    return str(path)


def test_it_scores_the_public_ids_only(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    labels = write(tmp_path / "labels.csv", [(0, 3), (1, 3), (2, 0), (3, 6)])
    # ids 4 and 5 are the private half: not scored; id 3 is wrong (neutral read as happy)
    pred = write(tmp_path / "pred.csv", [(5, 1), (3, 3), (2, 0), (1, 3), (0, 3), (4, 2)])
    result = test_score.main([pred, "--labels", labels])
    assert result["n"] == 4 and result["accuracy"] == 0.75
    # F1: happy 2*2/(3+2) = 0.8, angry 1, neutral 0; the four absent classes 0: mean 1.8 / 7
    assert result["macro_f1"] == pytest.approx(1.8 / 7)
    assert "accuracy 75.00%" in capsys.readouterr().out


@pytest.mark.parametrize(("rows", "header", "message"), [
    ([(0, 3)], "id,label", "no row for 1 of the 2 public ids (first: 1)"),
    ([(0, 3), (1, 9)], "id,label", "pred.csv:3: label 9 is not one of 0..6"),
    ([(0, 3), (1, "x")], "id,label", "pred.csv:3: label 'x' is not a number"),
    ([(0, 3), (0, 3)], "id,label", "pred.csv:3: id 0 appears twice"),
    ([(0, 3), (1, 3)], "id,emotion", "pred.csv:1: expected the header id,label"),
])
def test_a_bad_submission_is_one_line(tmp_path: Path, rows, header, message) -> None:
    labels = write(tmp_path / "labels.csv", [(0, 3), (1, 4)])
    pred = tmp_path / "pred.csv"
    pred.write_text(header + "\n" + "".join(f"{i},{c}\n" for i, c in rows))
    with pytest.raises(SystemExit) as exit_info:
        test_score.main([str(pred), "--labels", labels])
    assert message in str(exit_info.value) and "\n" not in str(exit_info.value)
