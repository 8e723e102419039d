"""bench/speed.py: predict.py timed as a user runs it, each option as a ratio to the reference run."""

from pathlib import Path

from conftest import write_test_csv

from bench import speed
from model import atomic_save, build_model, make_checkpoint


def test_options_take_turns_and_each_repeat_gives_the_same_bytes(tmp_path: Path) -> None:
    config = {"arch": "mobilenet", "channels": [8, 16], "blocks_per_stage": 1}
    atomic_save(make_checkpoint(build_model(config).eval(), config), tmp_path / "m.pt")
    test_csv = write_test_csv(tmp_path / "test.csv", n=20)
    options = {speed.REFERENCE: ["--model", str(tmp_path / "m.pt")],
               "twice": ["--model", str(tmp_path / "m.pt"), "--model", str(tmp_path / "m.pt")]}
    timings = speed.time_options(test_csv, options, 2)
    assert list(timings) == list(options)
    for seconds, digests in timings.values():
        assert len(seconds) == 2 and all(s > 0 for s in seconds)
        assert len(digests) == 1  # the same input gives the same bytes
    assert timings[speed.REFERENCE][1] == timings["twice"][1]  # one model averaged with itself predicts the same


def test_each_option_is_given_as_a_ratio_to_the_reference() -> None:
    lines = speed.report_lines({speed.REFERENCE: ([10.0, 12.0, 11.0], {"a"}), "default": ([44.0, 40.0], {"b", "c"})})
    assert "11.0 s   1.00x" in lines[0] and "byte-identical: True" in lines[0]
    assert "42.0 s   3.82x" in lines[1] and "byte-identical: False" in lines[1]


def test_every_option_is_a_released_set() -> None:
    assert speed.OPTIONS["default"] == [] and speed.OPTIONS["fast"] == ["--fast"]
    assert all(Path(flags[1]).is_file() for name, flags in speed.OPTIONS.items() if flags[:1] == ["--model"])
