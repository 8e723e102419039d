import csv
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, pixel_strings, synthetic_faces, write_csv, write_train_csv

sys.path.insert(0, str(ROOT / "report"))

import make_report
from md2pdf import markdown_to_pdf

from dataset import CLASS_NAMES, duplicate_groups, read_faces, train_val_split
from model import atomic_save, build_model, make_checkpoint


def fake_run(params: int, epochs: int, peak: float, rng: np.random.Generator) -> dict:
    history = [{"epoch": e, "train_loss": 2 - e / epochs, "train_acc": peak * e / epochs, "val_loss": 1.9 - e / epochs,
                "val_acc": peak * e / epochs - rng.uniform(0, 0.02), "lr": 0.01, "seconds": 1.0}
               for e in range(1, epochs + 1)]
    best = max(history, key=lambda h: h["val_acc"])
    return {"params": params, "device": "cpu", "bf16": True, "git_commit": "abc", "split": "stratified",
            "args": {"epochs": epochs, "lr": 0.05, "dropout": 0.5, "batch_size": 256, "distill_alpha": 0.8,
                     "temperature": 4.0, "no_augment": False, "hidden": 16, "mlp_depth": 2},
            "best_epoch": best["epoch"], "epochs_run": epochs, "val_acc": best["val_acc"],
            "val_acc_tta": best["val_acc"] + 0.005, "last_val_acc": history[-1]["val_acc"], "wall_seconds": 60.0 * epochs,
            "history": history}


def synthetic_results(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A small results set with the layout collect() writes, a synthetic training CSV and a tiny model."""
    rng = np.random.default_rng(0)
    data = write_train_csv(tmp_path / "train.csv", n=280)
    faces = read_faces(data, require_labels=True)
    _, val_idx, _ = train_val_split(faces, 0.1, 0)
    labels = faces.labels[val_idx].numpy()
    results = tmp_path / "results"
    results.mkdir()
    names = ["vgg_cpu_s0", "vgg_cpu_s1", "vgg16", "mlp_matched", "vgg16_no_normalize", "vgg16_no_augment", "compact",
             "vgg16_seed1", "vgg16_seed2", "mlp_matched_own_recipe"]
    names += [f"{arch}{c}" for arch in ("vgg", "mobilenet") for c in (8, 16, 24) if f"{arch}{c}" not in names]  # the sweep's
    long_runs = {arm: [f"{arm}_s{s}" for s in range(3)] for arm in ("long", "long_no_augment")}
    names += [n for arm in long_runs.values() for n in arm]
    runs = {n: fake_run(1000 + i, 5, 0.5 + 0.03 * i, rng) for i, n in enumerate(names)}
    (results / "runs.json").write_text(json.dumps({"runs": runs}))
    (results / "long.json").write_text(json.dumps({"n_val": 28, "n_val_with_copy": 0, "runs": long_runs,
                                                   "val_acc_tta": {arm: {"3": 0.7} for arm in long_runs}}))
    (results / "ensembles.json").write_text(json.dumps({"base": "vgg16", "val_acc_tta": {"1": 0.6, "3": 0.62, "5": 0.63}}))
    probs = rng.dirichlet(np.ones(7), len(labels))
    probs[np.arange(len(labels)), labels] += 0.5 * (rng.random(len(labels)) < 0.7)  # right about 70 % of the time
    probs /= probs.sum(1, keepdims=True)
    with open(results / "heldout_best.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "label", "copy_in_train", *[f"p_{c}" for c in CLASS_NAMES]])
        w.writerows([r, y, int(r % 9 == 0), *p] for r, y, p in zip(val_idx.tolist(), labels.tolist(), probs, strict=True))
    accs = {"all": 0.62, "clean": 0.6}
    released = [*(p.name for p in make_report.RELEASED), Path(make_report.released("compact")[0]).name, "model.pt"]
    (results / "released.json").write_text(json.dumps({"n_val": 28, "n_val_clean": 25, "ensemble": {**accs, "copies": 0.9},
                                                       "models": {n: accs for n in released}}))
    rows = [{"model": "released ensemble", "decision": d, "faces": "duplicate-free part", **make_report.per_class_scores(labels, probs.argmax(1))}
            for d in ("arg-max", "logit-adjusted (tau = 1)")]
    (results / "imbalance.json").write_text(json.dumps({"prior": [1 / 7] * 7, "rows": rows}))
    sweep = [{"name": f"{arch}{c}", "arch": arch, "channels": [c], "params": 1000 * c, "checkpoint_bytes": 4000 * c,
              "int8_bytes": 1100 * c, "val_acc_tta": 0.5 + c / 100, "int8_val_acc_tta": 0.5 + c / 100, "schedule": "short"}
             for arch in ("vgg", "mobilenet") for c in (8, 16, 24)]
    sweep[0] |= {"val_acc_tta_clean": 0.57, "int8_val_acc_tta_clean": 0.57}  # one short run rechecked
    sweep.append({**sweep[-1], "name": "compact"})
    (results / "compact_sweep.json").write_text(json.dumps({"models": sweep}))
    facts = {"counts": np.bincount(faces.labels.numpy(), minlength=7).tolist(), "n_distinct": 270, "n_train": 252,
             "saliency_bands": {b: 0.3 for b in make_report.BANDS}, "test_rows": "50",
             "predict_seconds": {"ensemble": 2.0, "single": 1.0, "compact": 0.5},
             "mlp_trials": {"a": {"no_augment": True, "lr": 0.02, "epochs": 3, "val_acc": 0.4},
                            "b": {"no_augment": False, "lr": 0.02, "epochs": 3, "val_acc": 0.3}}}
    facts["versions"] = {"python": "3.11.7", "torch": "2.14.1"}
    (results / "facts.json").write_text(json.dumps(facts))
    test_labels = rng.integers(0, 7, 40)
    scores = make_report.per_class_scores(test_labels, np.where(rng.random(40) < 0.6, test_labels, 0))
    (results / "test.json").write_text(json.dumps({"set": "the public half of `test.csv` (40 faces)", "n": 40,
                                                   "ensemble": scores,
                                                   "models": {n: scores for n in released}}))
    config = {"arch": "vgg", "channels": [4, 8, 8, 8], "convs_per_stage": 2, "hidden": 8, "dropout": 0.4,
              "stage_dropout": 0.1}
    model = tmp_path / "model.pt"
    atomic_save(make_checkpoint(build_model(config).eval(), config), model)
    return results, data, model


HEADINGS = {"hw2": [f"## Question {q}" for q in range(1, 6)] + ["## Appendix A.", "## Appendix B.", "## Appendix C."],
            "dlss": [f"## Task {t}." for t in (1, 2, 3)] + [f"## Bonus {b}." for b in (1, 2, 3)],
            "hw8": [f"## Question {q}." for q in (1, 2, 3)]}


def test_the_builder_writes_every_figure_and_report(tmp_path: Path) -> None:
    results, data, model = synthetic_results(tmp_path)
    out = tmp_path / "report"
    fields = {"name": "Ada Lovelace", "student_id": "B12345678", "department": "CSIE, year 3",
              "collaborators": "Grace Hopper"}
    make_report.build(results, data, out, model, fields)
    for name in make_report.FIGURES:
        assert (out / name).stat().st_size > 1000, name
    used = set()
    for report in make_report.REPORTS:
        text = (out / f"{report}.md").read_text()
        assert "Student ID: B12345678" in text and "Ada Lovelace" in text, report
        lines = text.splitlines()
        assert [h for h in lines if h.startswith("## ")] == [
            next(line for line in lines if line.startswith(h)) for h in HEADINGS[report]]  # in order, none missing
        for kind in ("Figure", "Table"):  # numbered from 1 in each report, each cited in its text
            numbers = [int(line.split()[1].rstrip(".")) for line in lines if line.startswith(f"*{kind} ")]
            assert numbers == list(range(1, len(numbers) + 1)), (report, kind)
            body = "\n".join(line for line in lines if not line.startswith(("*Figure", "*Table")))
            assert all(f"{kind} {n}" in body for n in numbers), (report, kind)
        links = [line[line.index("(") + 1:-1] for line in lines if line.startswith("![")]
        used.update(links)
        assert "{" not in text and "nan" not in text, report
        assert (out / f"{report}.pdf").read_bytes().startswith(b"%PDF")
    assert used == set(make_report.FIGURES)  # every figure in some report
    hw2 = (out / "hw2.md").read_text()
    assert "Department/year: CSIE, year 3" in hw2 and "Collaborators: Grace Hopper" in hw2
    assert hw2.index("Collaborators") < hw2.index("## Question 1")


@pytest.mark.parametrize("report", make_report.REPORTS)
def test_each_committed_report_is_its_results_rendered_byte_for_byte(report: str) -> None:
    """Each report's markdown is its template filled from report/results/ and the released models: nothing
    typed in by hand."""
    text = make_report.render(report, ROOT / "report" / "results", make_report.RELEASED[0])
    assert text == (ROOT / "report" / f"{report}.md").read_text()


def test_the_dlss_report_keeps_its_page_limits(tmp_path: Path) -> None:
    """Tasks 1-3 within 3 pages, the bonus tasks within 1.5 more, as the committed markdown lays out."""
    md = tmp_path / "dlss.md"
    md.write_text((ROOT / "report" / "dlss.md").read_text())
    for figure in make_report.FIGURES:
        (tmp_path / figure).write_bytes((ROOT / "report" / figure).read_bytes())
    layout = markdown_to_pdf(md, tmp_path / "dlss.pdf")
    tasks = [p for h, p in layout["headings"].items() if h.startswith("Task")]
    bonus = [p for h, p in layout["headings"].items() if h.startswith("Bonus")]
    assert len(tasks) == 3 and len(bonus) == 3
    assert max(tasks) <= 3 and min(bonus) <= 4 and layout["pages"] <= 4.5


def test_the_same_budget_comparison_counts_only_margins_beyond_seed_noise() -> None:
    def entry(arch: str, params: int, acc: float) -> dict:
        return {"name": f"{arch}{params}", "arch": arch, "params": params, "int8_val_acc_tta": acc}
    apart = [entry("vgg", 100_000, 0.5), entry("mobilenet", 20_000, 0.4)]
    assert "no models within 1.6 times" in make_report.matched_sentence(apart, 0.02)
    overlapping = [*apart, entry("vgg", 30_000, 0.45), entry("mobilenet", 120_000, 0.51)]
    text = make_report.matched_sentence(overlapping, 0.02)
    assert "vgg100000 (100,000 parameters, 50.00 %) against mobilenet120000" in text
    assert "mobilenet120000 ahead by 1.0 points, within seed noise" in text
    assert "vgg30000 ahead by 5.0 points, beyond seed noise" in text
    answer = make_report.matched_answer(overlapping, 0.02)
    assert "the MobileNet-style network is ahead beyond seed noise in 0, the VGG in 1, and 1 is within noise" in answer


def test_the_test_set_is_the_labelled_ids_or_the_private_test_rows(tmp_path: Path) -> None:
    images, labels = synthetic_faces(12)
    pixels = pixel_strings(images)
    test = write_csv(tmp_path / "test.csv", "id,feature", [f"{i + 100},{p}" for i, p in enumerate(pixels)])
    ids = tmp_path / "labels.csv"
    ids.write_text("id,label\n" + "".join(f"{i},{y}\n" for i, y in ((105, 3), (101, 6))))
    x, y, what = make_report.test_set(test, ids)
    assert y.tolist() == [3, 6] and torch.equal(x, torch.from_numpy(images[[5, 1]]).view(-1, 1, 48, 48))
    assert "2 faces, ids 101..105" in what
    usage = ["Training", "PublicTest", "PrivateTest"] * 4
    icml = write_csv(tmp_path / "icml.csv", "emotion, Usage, pixels",
                     [f"{y}, {u}, {p}" for y, u, p in zip(labels, usage, pixels, strict=True)])
    x, y, what = make_report.test_set(icml, ids)
    assert y.tolist() == labels[2::3].tolist() and "4 PrivateTest rows" in what
    ids.write_text("id,label\n999,1\n")
    with pytest.raises(SystemExit, match="id 999 is not in"):
        make_report.test_set(test, ids)


def test_a_resumed_run_counts_the_epochs_of_every_session(tmp_path: Path) -> None:
    history = {"params": 10, "device": "cpu", "bf16": False, "git_commit": "x", "split": {"method": "grouped"},
               "args": {}, "best_epoch": 2, "epoch": 2, "best_val_acc": 0.5, "history": [{"val_acc": 0.5}] * 2}
    for wall, elapsed, expected in ((120.0, 100.0, 120.0), (60.0, 100.0, 100.0), (None, 100.0, None)):
        path = tmp_path / "run.json"
        path.write_text(json.dumps({**history, "wall_seconds": wall, "elapsed": elapsed}))
        assert make_report.summarize_history(path)["wall_seconds"] == expected


def test_per_class_scores_on_a_known_case() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 4, 5, 6])
    predicted = np.array([0, 0, 1, 1, 0, 2, 3, 4, 5, 6])
    s = make_report.per_class_scores(labels, predicted)
    assert s["accuracy"] == pytest.approx(0.8)
    assert s["precision"][0] == pytest.approx(2 / 3) and s["recall"][0] == pytest.approx(2 / 3)
    assert s["precision"][1] == pytest.approx(1 / 2) and s["recall"][1] == pytest.approx(1 / 2)
    assert s["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 5) / 7)
    assert s["support"] == [3, 2, 1, 1, 1, 1, 1]


def test_logit_adjustment_moves_close_calls_to_the_rare_class() -> None:
    probs = np.array([[0.5, 0.45, 0, 0, 0, 0, 0.05], [0.97, 0.01, 0, 0, 0, 0, 0.02]]) + 1e-3
    prior = np.array([0.5, 0.02, 0.1, 0.1, 0.1, 0.1, 0.08])
    assert probs.argmax(1).tolist() == [0, 0]
    assert make_report.logit_adjusted(probs, prior).tolist() == [1, 0]


def test_top_confusions_are_the_largest_off_diagonal_shares() -> None:
    cm = np.eye(7, dtype=int) * 10
    cm[2, 4], cm[1, 0], cm[6, 4], cm[1, 1] = 5, 3, 1, 2  # disgust is rare: 3 of its 5 faces go to angry
    top = make_report.top_confusions(cm, 2)
    assert [(t, p) for t, p, _ in top] == [(1, 0), (2, 4)]  # shares of the true class: 3/5 > 5/15, not counts
    assert top[0][2] == pytest.approx(0.6)


def test_saliency_bands_are_shares_of_the_whole_image() -> None:
    torch.manual_seed(0)
    model = build_model({"arch": "vgg", "channels": [4, 8], "hidden": 8}).eval()
    bands = make_report.saliency_bands(model, np.random.default_rng(0).integers(0, 255, (5, 48, 48), dtype=np.uint8))
    assert all(0 < v < 1 for v in bands.values()) and sum(bands.values()) < 1


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
    held = make_report.HeldOut(faces, groups, make_report.SPLIT)
    train_idx = np.setdiff1d(np.arange(280), held.rows)
    has_copy = [any((images[t] == images[v]).all() for t in train_idx) for v in held.rows]
    assert (~held.clean).tolist() == has_copy and any(has_copy)
    grouped = make_report.HeldOut(faces, groups, {"method": "grouped", "val_fraction": 0.1, "seed": 0})
    assert grouped.clean.all()
    model = tmp_path / "m.pt"
    held.scored[model] = np.eye(7)[np.where(held.clean, held.labels, (held.labels + 1) % 7)]  # right only where clean
    assert held.accuracy(model, clean=True) == 1.0
    assert held.accuracy(model) == pytest.approx(held.clean.mean())


def test_every_value_the_builder_computes_has_its_place_in_a_template() -> None:
    """No figure is computed for a report and then left out of all three, and every placeholder has a value."""
    values = make_report.report_values(ROOT / "report" / "results", make_report.RELEASED[0], make_report.HEADER)
    used = set()
    for report in make_report.REPORTS:
        used |= set(re.findall(r"{(\w+)}", (make_report.TEMPLATES / f"{report}.md").read_text()))
    assert set(values) == used
