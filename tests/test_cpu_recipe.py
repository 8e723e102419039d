"""bench/cpu_recipe.py: proxy runs of each recipe, resumable, and their table."""

from pathlib import Path

import pytest
from conftest import write_train_csv

from bench import cpu_recipe


def test_runs_are_skipped_once_finished_and_tabled_with_their_own_tta(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    csv = write_train_csv(tmp_path / "train.csv", n=280)
    monkeypatch.setattr(cpu_recipe, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(cpu_recipe, "PROXY", ["--epochs", "2", "--channels", "4,8", "--hidden", "8"])
    monkeypatch.setattr(cpu_recipe, "RECIPES", {name: cpu_recipe.RECIPES[name] for name in ("base", "crop40")})
    argv = [str(csv), "--only", "base", "crop40", "--seeds", "0"]
    cpu_recipe.main(argv)
    assert (tmp_path / "runs" / "crop40_s0.log").read_text().startswith("$ ") and cpu_recipe.finished("base_s0", tmp_path / "runs")
    cpu_recipe.main(argv)  # again: nothing to run
    assert capsys.readouterr().out.count(": done") == 2
    rows = cpu_recipe.table().splitlines()
    assert len(rows) == 4 and rows[2].startswith("| base | 0 |") and rows[3].startswith("| crop40 | 0 |")
    assert rows[2].split("|")[5].strip() == "-" and rows[3].split("|")[5].strip() != "-"  # ten crops: crop nets only


def test_round_3_names_the_teachers_its_logged_runs_had_and_a_missing_one_is_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for recipe in ("crop40_kd_fixed", "crop40_kd_consistent"):  # the round-3 runs that have logs
        command = (cpu_recipe.ROOT / "runs" / "cpu_recipe" / f"{recipe}_s0.log").read_text().splitlines()[0].split()
        logged = command[command.index("--teacher") + 1].split(",")
        assert [Path(t).name for t in logged] == [Path(t).name for t in cpu_recipe.TEACHERS.split(",")]
    monkeypatch.setattr(cpu_recipe, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(cpu_recipe, "RECIPES", {"kd": ["--teacher", str(tmp_path / "gone.q8")]})
    with pytest.raises(SystemExit, match=r"gone\.q8: missing, a teacher of kd"):
        cpu_recipe.run("kd", 0, str(tmp_path / "train.csv"))
    assert not (tmp_path / "runs").exists()  # nothing started, no log begun
