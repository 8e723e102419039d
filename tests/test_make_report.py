"""report/make_report.py: the three reports from a results set, their headers, their claims against seed noise,
their figures at print size, and PDFs that come out the same bytes every time."""

import csv
import json
import math
import re
import shlex
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from conftest import ROOT, pixel_strings, synthetic_faces, write_csv, write_train_csv

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import train
from dataset import CLASS_NAMES, read_faces, train_val_split
from report import collect, figures, make_report
from report.typeset import markdown_to_pdf

RELEASED = [*collect.released_networks(), collect.COMPACT]
SPEED_LOG = """$ OMP_NUM_THREADS=2 .venv/bin/python -m bench.speed   # abc1234, 2 threads, some CPU
torch 2.14.1, 2 threads, python 3.11.7; Some CPU, flags: avx2 avx512f
reference: vgg_crop40_s0.q8; default: {default}; fast: {fast}; flip views; test.csv.gz, 7,178 faces, wall incl. start-up
reference    21.0 s   1.00x the reference  (min 20.5, max 21.9, n=3; byte-identical: True)
default     123.4 s   5.88x the reference  (min 120.1, max 130.0, n=3; byte-identical: True)
fast         61.5 s   2.93x the reference  (min 60.0, max 62.0, n=3; byte-identical: True)
compact       9.2 s   0.44x the reference  (min 9.0, max 9.9, n=3; byte-identical: True)
""".format(default=", ".join(collect.default_models()), fast=", ".join(collect.fast_models()))


def fake_run(params: int, epochs: int, peak: float, rng: np.random.Generator, **args) -> dict:
    history = [{"epoch": e, "train_loss": 2 - e / epochs, "train_acc": peak * e / epochs, "val_loss": 1.9 - e / epochs,
                "val_acc": peak * e / epochs - rng.uniform(0, 0.02), "lr": 0.01, "seconds": 1.0}
               for e in range(1, epochs + 1)]
    best = max(history, key=lambda h: h["val_acc"])
    return {"params": params, "device": "cpu", "bf16": True, "git_commit": "abc", "split": "stratified",
            "torch": "2.15.0", "args": {"preset": "cpu", "epochs": epochs, "lr": 0.05, "dropout": 0.4, "batch_size": 128,
                                        "momentum": 0.9, "weight_decay": 5e-4, "label_smoothing": 0.1, "warmup": 0.2,
                                        "patience": 15, "val_fraction": 0.1, "seed": 0, "stage_dropout": 0.1,
                                        "rotate": 10.0, "shift": 0.1, "scale": 0.1, "erase": 0.5, "arch": "vgg",
                                        "channels": "4,8,8,8", "distill_alpha": 0.8, "temperature": 4.0,
                                        "teacher": "weights/a_s0.pt,weights/a_s1.pt", "no_augment": False,
                                        "hidden": 16, "mlp_depth": 2, **args},
            "best_epoch": best["epoch"], "epochs_run": epochs, "val_acc": best["val_acc"],
            "val_acc_tta": best["val_acc"] + 0.005, "last_val_acc": history[-1]["val_acc"], "wall_seconds": 60.0 * epochs,
            "history": history}


def scores(rng: np.random.Generator, n: int) -> dict:
    labels = rng.integers(0, 7, n)
    return collect.per_class_scores(labels, np.where(rng.random(n) < 0.6, labels, 0))


def synthetic_results(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A small results set with the layout collect() writes (for the real released files and default), a synthetic
    training CSV and a synthetic test CSV."""
    rng = np.random.default_rng(0)
    data = write_train_csv(tmp_path / "train.csv", n=280)
    faces = read_faces(data, require_labels=True)
    _, val_idx, _ = train_val_split(faces, 0.1, 0)
    labels = faces.labels[val_idx].numpy()
    results = tmp_path / "results"
    results.mkdir()
    names = ["vgg16", "mlp_matched", "vgg16_no_normalize", "vgg16_no_augment", "vgg16_seed1", "vgg16_seed2",
             "mlp_matched_own_recipe"]
    names += [f"{arch}{c}" for arch in ("vgg", "mobilenet") for c in (8, 16, 24) if f"{arch}{c}" not in names]
    long_runs = {arm: [f"{arm}_s{s}" for s in range(3)] for arm in ("long", "long_no_augment")}
    names += [n for arm in long_runs.values() for n in arm]
    runs = {n: fake_run(1000 + i, 5, 0.5 + 0.03 * i, rng, dropout=0.2 if n.startswith("mobilenet") else 0.4)
            for i, n in enumerate(names + RELEASED)}
    runs["mobilenet8"]["bf16"] = False
    (results / "runs.json").write_text(json.dumps({"runs": runs}))
    (results / "long.json").write_text(json.dumps({"n_val": 28, "n_val_with_copy": 0, "runs": long_runs,
                                                   "val_acc_tta": {arm: {"3": 0.7} for arm in long_runs}}))
    (results / "ensembles.json").write_text(json.dumps({"base": "vgg16", "val_acc_tta": {"1": 0.6, "3": 0.62, "5": 0.63}}))
    probs = rng.dirichlet(np.ones(7), len(labels))
    with open(results / "heldout_default.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "label", "copy_in_train", *[f"p_{c}" for c in CLASS_NAMES]])
        w.writerows([r, y, 0, *p] for r, y, p in zip(val_idx.tolist(), labels.tolist(), probs, strict=True))
    grouped = {"split": "grouped", "n_val": 28, "n_clean": 28, "all": 0.6, "clean": 0.6, "copies": None}
    models = {n: {**grouped, "clean": 0.55 + 0.01 * i} for i, n in enumerate(collect.released_networks())}
    models[collect.COMPACT] = {"split": "stratified", "n_val": 28, "n_clean": 25, "all": 0.62, "clean": 0.6,
                               "copies": 0.9}
    sets = collect.model_sets()
    (results / "released.json").write_text(json.dumps({
        "models": models, "sets": {collect.key(s): {**grouped, "clean": 0.6 + 0.01 * len(s)} for s in sets}}))
    rows = [{"model": collect.DEFAULT_ROWS, "decision": d, "faces": "grouped split",
             **collect.per_class_scores(labels, probs.argmax(1))} for d in ("arg-max", "logit-adjusted (tau = 1)")]
    rows += [{"model": model, "decision": "arg-max", "faces": "whole split",
              **collect.per_class_scores(labels, probs.argmin(1))} for model in ("vgg16", "vgg16, class-weighted loss")]
    (results / "imbalance.json").write_text(json.dumps({"prior": [1 / 7] * 7, "rows": rows}))
    sweep = [{"name": f"{arch}{c}", "arch": arch, "channels": [c], "params": 1000 * c, "checkpoint_bytes": 4000 * c,
              "int8_bytes": 1100 * c, "val_acc_tta": 0.5 + c / 100, "int8_val_acc_tta": 0.5 + c / 100, "schedule": "short"}
             for arch in ("vgg", "mobilenet") for c in (8, 16, 24)]
    compact = {"name": collect.COMPACT, "arch": "mobilenet", "params": 30000, "bytes": 20000, "val_acc_tta": 0.7}
    (results / "compact_sweep.json").write_text(json.dumps({"models": sweep, "compact": compact}))
    speed = collect.speed_runs(SPEED_LOG, "runs/speed/speed.log")
    facts = {"counts": np.bincount(faces.labels.numpy(), minlength=7).tolist(), "n_distinct": 270,
             "speed": [{**run, "committed": 1} for run in speed],
             "handin_hw8": {"bytes": 230000, "log": "runs/handin/hw8.log"},
             "int8_source": {"all": 0.61, "clean": 0.59, "log": "runs/compact/bits.json"},
             "mlp_trials": {"a": {"no_augment": True, "lr": 0.02, "epochs": 3, "val_acc": 0.4},
                            "b": {"no_augment": False, "lr": 0.02, "epochs": 3, "val_acc": 0.3}}}
    (results / "facts.json").write_text(json.dumps(facts))
    images, _ = synthetic_faces(12, seed=3)
    test = write_csv(tmp_path / "test.csv", "id,feature", [f"{i},{p}" for i, p in enumerate(pixel_strings(images))])
    test_sets = {collect.key(s): {**scores(rng, 40), "examples": {"1,0": [0, 1], "2,4": [2, 3, 4], "4,6": [5]}}
                 for s in sets}
    (results / "test.json").write_text(json.dumps({"set": "the public half of `test.csv` (40 faces)", "n": 40,
                                                   "models": {n: scores(rng, 40) for n in RELEASED}, "sets": test_sets}))
    return results, data, test


FIELDS = {"name": "Ada Lovelace", "student_id": "B12345678", "department": "CSIE, year 3",
          "collaborators": "Grace Hopper"}
HEADINGS = {"hw2": [f"## Question {q}" for q in range(1, 6)] + ["## Appendix A.", "## Appendix B."],
            "dlss": [f"## Task {t}." for t in (1, 2, 3)] + [f"## Bonus {b}." for b in (1, 2)],
            "hw8": [f"## Question {q}." for q in (1, 2, 3)]}


def test_the_builder_writes_every_figure_and_report_the_same_bytes_twice(tmp_path: Path) -> None:
    results, data, test = synthetic_results(tmp_path)
    first, second = tmp_path / "a", tmp_path / "b"
    make_report.build(results, data, test, first, FIELDS)
    make_report.build(results, data, test, second, FIELDS)
    for name in make_report.FIGURES:
        assert (first / name).stat().st_size > 1000, name
    used = set()
    for report in make_report.REPORTS:
        text = (first / f"{report}.md").read_text()
        assert "Student ID: B12345678" in text and "Ada Lovelace" in text and "not given (this build" not in text, report
        lines = text.splitlines()
        assert [h for h in lines if h.startswith("## ")] == [
            next(line for line in lines if line.startswith(h)) for h in HEADINGS[report]]  # in order, none missing
        for kind in ("Figure", "Table"):  # numbered from 1 in each report, each cited in its text
            numbers = [int(line.split()[1].rstrip(".")) for line in lines if line.startswith(f"*{kind} ")]
            assert numbers == list(range(1, len(numbers) + 1)), (report, kind)
            body = "\n".join(line for line in lines if not line.startswith(("*Figure", "*Table")))
            assert all(re.search(rf"{kind}s? [\d ,and]*\b{n}\b", body) for n in numbers), (report, kind)
        used.update(line[line.index("(") + 1:-1] for line in lines if line.startswith("!["))
        assert "{" not in text and "nan" not in text, report
        for suffix in (".pdf", ".typ", ".md"):
            assert (first / f"{report}{suffix}").read_bytes() == (second / f"{report}{suffix}").read_bytes(), report
    assert used == set(make_report.FIGURES)  # every figure in some report
    for name in make_report.FIGURES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    hw2 = (first / "hw2.md").read_text()
    assert "Department/year: CSIE, year 3" in hw2 and "Collaborators: Grace Hopper" in hw2
    assert hw2.index("Collaborators") < hw2.index("## Question 1")


def test_a_header_without_its_fields_says_they_were_not_given() -> None:
    line = make_report.identity({"name": "Ada"}, ["department", "student_id", "name"])
    assert line == ("Name: Ada · Department/year and student ID: not given (this build had no `--department` and "
                    "`--student-id`)")
    assert "not given" in make_report.identity({}, ["collaborators"])


@pytest.mark.parametrize("report", make_report.REPORTS)
def test_each_committed_report_is_its_results_rendered_byte_for_byte(report: str) -> None:
    """Each report's markdown is its template filled from report/results/ and the released models: nothing
    typed in by hand."""
    text = make_report.render(report, ROOT / "report" / "results")
    assert text == (ROOT / "report" / f"{report}.md").read_text()


@pytest.mark.parametrize("report", make_report.REPORTS)
def test_every_value_the_builder_computes_has_its_place_in_the_template(report: str) -> None:
    values = make_report.VALUES[report](make_report.read_results(ROOT / "report" / "results"))
    used = set(re.findall(r"{(\w+)}", (make_report.TEMPLATES / f"{report}.md").read_text()))
    assert set(values) | {"identity"} | ({"collaborators"} if report == "hw2" else set()) == used


def test_the_dlss_report_keeps_its_page_limits(tmp_path: Path) -> None:
    """Tasks 1-3 within 3 pages, the bonus tasks within 1.5 more, as the committed markdown lays out."""
    md = tmp_path / "dlss.md"
    md.write_text((ROOT / "report" / "dlss.md").read_text())
    for figure in make_report.FIGURES:
        (tmp_path / figure).write_bytes((ROOT / "report" / figure).read_bytes())
    layout = markdown_to_pdf(md, tmp_path / "dlss.pdf")
    tasks = [p for h, p in layout["headings"].items() if h.startswith("Task")]
    bonus = [p for h, p in layout["headings"].items() if h.startswith("Bonus")]
    assert len(tasks) == 3 and len(bonus) == 2
    assert max(tasks) <= 3 and min(bonus) <= 4 and layout["pages"] <= 4.5


def test_two_single_seed_runs_differ_beyond_noise_only_past_two_root_two_sigma() -> None:
    assert make_report.single_seed_bar(0.0092) == pytest.approx(2 * math.sqrt(2) * 0.0092)
    assert make_report.verdict(0.0185, make_report.single_seed_bar(0.0092)) == "within seed noise"  # twice sigma is not enough
    assert make_report.verdict(0.027, make_report.single_seed_bar(0.0092)) == "beyond seed noise"


def test_the_same_budget_comparison_counts_only_margins_beyond_noise_and_names_confounds() -> None:
    def entry(arch: str, params: int, acc: float) -> dict:
        return {"name": f"{arch}{params}", "arch": arch, "params": params, "int8_val_acc_tta": acc}
    runs = {f"{a}{p}": {"args": {"dropout": 0.2 if a == "mobilenet" else 0.4}, "bf16": p != 120_000}
            for a, p in (("vgg", 100_000), ("mobilenet", 20_000), ("vgg", 30_000), ("mobilenet", 120_000))}
    apart = [entry("vgg", 100_000, 0.5), entry("mobilenet", 20_000, 0.4)]
    assert "no models within 1.6 times" in make_report.matched_sentence(apart, runs, 0.026)
    overlapping = [*apart, entry("vgg", 30_000, 0.45), entry("mobilenet", 120_000, 0.52)]
    text = make_report.matched_sentence(overlapping, runs, 0.026)
    assert "vgg100000 (100,000 parameters, 50.00 %) against mobilenet120000" in text
    assert "mobilenet120000 ahead by 2.0 points, within seed noise; also differs in dropout 0.4 against 0.2 and " \
           "bf16 training against fp32" in text
    assert "vgg30000 ahead by 5.0 points, beyond seed noise" in text
    answer = make_report.matched_answer(overlapping, 0.026)
    assert "the MobileNet-style network is ahead beyond seed noise in 0, the plain CNN in 1, and 1 is within" in answer


def test_an_ensemble_inside_its_members_range_claims_no_gain() -> None:
    inside = {"accs": [0.60, 0.63, 0.61], "ensemble": 0.62}
    assert "no gain is claimed" in make_report.ensemble_verdict(inside)
    assert "above every member" in make_report.ensemble_verdict({**inside, "ensemble": 0.64})


def test_human_accuracy_is_a_range_and_a_figure_inside_it_is_not_above_it() -> None:
    assert "lies within that range" in make_report.human_comparison(0.6821)
    assert "lies above that range" in make_report.human_comparison(0.72)


def test_the_classification_report_ends_in_accuracy_and_the_macro_and_weighted_averages() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 4, 5, 6])
    s = collect.per_class_scores(labels, np.array([0, 0, 1, 1, 0, 2, 3, 4, 5, 6]))
    rows = make_report.classification_report(s).splitlines()
    assert rows[-3].startswith("| **accuracy** |") and "0.800" in rows[-3]
    assert rows[-2] == f"| **macro avg** | {np.mean(s['precision']):.3f} | {np.mean(s['recall']):.3f} | " \
                       f"{np.mean(s['f1']):.3f} | 10 |"
    assert f"| {np.average(s['f1'], weights=s['support']):.3f} | 10 |" in rows[-1]


@pytest.mark.parametrize("member", collect.default_models())
def test_the_training_command_gives_back_every_recorded_setting(member: str) -> None:
    run = make_report.read_results(ROOT / "report" / "results")["runs"][member]
    words = shlex.split(make_report.train_command(run).replace("\\\n", " "))
    assert words[:3] == ["python", "train.py", "train.csv"]
    args = vars(train.parse_args(words[2:]))
    for k, v in run["args"].items():
        if k in make_report.UNRECORDED:
            continue
        if k in train.HPARAMS:
            assert args[k] == v, k
        else:  # a setting train.py has dropped since: the run had it off, as train.py now always is
            assert not v, k
    assert args["split_method"] == run["split"] and args["progressive"] == 0


def test_a_figure_refuses_text_under_seven_points_or_a_width_past_the_text(tmp_path: Path) -> None:
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.set_title("small", fontsize=6)
    with pytest.raises(ValueError, match="under 7"):
        figures.save(fig, tmp_path / "a.png")
    fig, _ = plt.subplots(figsize=(figures.TEXT_WIDTH_IN + 0.5, 2))
    with pytest.raises(ValueError, match="wider than the text"):
        figures.save(fig, tmp_path / "b.png")


def test_the_answer_to_question_1_names_the_default_and_any_choice_more_accurate_on_held_out() -> None:
    """The report describes whatever hw2_test.sh uses without flags, and says so where another released choice
    scores higher on the held-out faces they share."""
    r = make_report.read_results(ROOT / "report" / "results")
    default, fast = collect.default_models(), collect.fast_models()
    held = r["released"]["sets"]
    assert held[collect.key(default)]["clean"] > max(m["clean"] for m in r["released"]["models"].values())
    text = make_report.q1_answer(r, default, 0.02)
    assert text.startswith(f"The best model is `hw2_test.sh`'s default, {make_report.set_name(default)}: the most "
                           "accurate released choice on the held-out faces")
    held[collect.key(fast)] = {**held[collect.key(fast)], "clean": held[collect.key(default)]["clean"] + 0.01}
    text = make_report.q1_answer(r, default, 0.02)
    assert text.startswith(f"`hw2_test.sh`'s default is {make_report.set_name(default)}")
    assert f"It is not the most accurate choice on held-out: {make_report.set_name(fast)} scores" in text


def test_a_speed_log_gives_each_option_its_models_and_figures() -> None:
    runs = collect.speed_runs(SPEED_LOG + SPEED_LOG.replace("$ OMP_NUM_THREADS=2 ", "$ ONEDNN_MAX_CPU_ISA=AVX2 ")
                              .replace("123.4 s", "401.0 s"), "runs/speed/x.log")
    assert [run["isa"] for run in runs] == [None, "AVX2"]
    default = runs[0]["options"]["default"]
    assert default["models"] == collect.default_models() and default["seconds"] == 123.4 and default["n"] == 3
    assert runs[0]["options"]["compact"]["models"] == [collect.COMPACT] and runs[0]["options"]["reference"]["identical"]
    facts = {"speed": [{**run, "committed": 1} for run in runs]}
    text = make_report.wall_sentence(facts, collect.default_models())
    assert "it took 123.4 s" in text and "21 % of the 10 minutes" in text and "it took 401.0 s" in text
    assert "67 % of the 10 minutes" in text
    slow_only = make_report.wall_sentence({"speed": facts["speed"][1:]}, collect.default_models())
    assert "full instruction set is pending" in slow_only and "it took 401.0 s" in slow_only


def test_without_a_speed_log_the_wall_times_are_pending_not_invented() -> None:
    facts = {"speed": collect.speed_runs("$ python -m bench.speed\ntorch 2.14.1, 2 threads, python 3.11.7; x\n", "a")}
    assert facts["speed"] == []  # a run that printed no figures yet counts as none
    default = collect.default_models()
    assert "pending" in make_report.wall_sentence(facts, default)
    assert make_report.seconds(facts, default) == "pending"
    assert "pending" in make_report.speed_comparison(facts, [collect.COMPACT], default)
    assert not re.search(r"\d s\b", make_report.wall_sentence(facts, default))
