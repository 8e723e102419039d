"""Build the three homework reports (hw2, dlss, hw8: markdown, Typst, PDF and the PNG figures beside them) from
logged results.

  python -m report.make_report                  # figures + hw2/dlss/hw8 .md, .typ and .pdf from report/results/
  python -m report.make_report --collect        # first re-read runs/, the released models and the logs, and
                                                # score the released models on the test set, into results/
  python -m report.make_report --facts          # first re-read only the logs (speed, hand-in) into results/
  python -m report.make_report --rerun          # first train what runs/ lacks (report/experiments.py), then collect
  python -m report.make_report --name "Ada Lovelace" --student-id B12345678 --department "CSIE, year 3" \\
      --collaborators "none"

Each report is report/templates/<report>.md with its placeholders filled from report/results/ alone (and the layer
tables of the released model files, and which of them predict.py uses by default), so its markdown is a function
of committed files: a test renders each and compares it byte for byte. The figures also need the training CSV
(faces for the grids and maps) and the test CSV (the faces of the commonest confusions).
"""

import argparse
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dataset import CLASS_NAMES, duplicate_groups, read_faces
from model import Normalize, Residual, Separable, build_model, count_parameters
from quantized import SMALL_ROW, load_model, read_quantized
from report import experiments, figures
from report.collect import (
    COMPACT,
    DEFAULT_ROWS,
    WEIGHTS,
    collect,
    collect_facts,
    default_models,
    fast_models,
    key,
    model_sets,
    released_networks,
    top_confusions,
)
from report.typeset import markdown_to_pdf
from train import HPARAMS, PRESETS
from utils import atomic_write

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "report"
TEMPLATES = HERE / "templates"  # <report>.md: each report's prose, with placeholders
REPORTS = ("hw2", "dlss", "hw8")  # one report per homework, each built from the same results
DATA = ROOT.parent / "shared" / "fer2013"
TRAIN, TEST, TEST_LABELS = DATA / "train.csv.gz", DATA / "test.csv.gz", DATA / "public_test_labels.csv"
FIGURES = ["class_counts.png", "samples.png", "curves_best.png", "cnn_vs_mlp.png", "tricks.png", "confusion.png",
           "confusions_examples.png", "activations.png", "size_vs_accuracy.png"]
HUMAN = (0.60, 0.70)  # human labellers' accuracy on FER2013, 65 ± 5 % (Goodfellow et al. 2013)
TIME_LIMIT = 600  # seconds: HW2's limit on hw2_test.sh
# the last page on which a section may start, and the most pages in all (DLSS: 3 pages, 1.5 more for the bonus)
PAGE_LIMITS = {"dlss": {"Task": 3, "Bonus": 4, "total": 4.5}}
FIELDS = {"name": "name", "student_id": "student ID", "department": "department/year",
          "collaborators": "collaborators"}  # the header's fields and how the header names them
COMMAND_WIDTH = 72  # characters of a command's line in a report's code block
UNRECORDED = ("preset", "device", "workers", "bf16", "out", "teacher_cache", "resume", "force")  # not the recipe's
FAMILIES = {"vgg": "VGG", "resnet": "ResNet", "mobilenet": "MobileNet-style", "mlp": "MLP"}  # as the text names them
NUMBER_WORDS = dict(enumerate(["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]))  # prose
FLAGS = {"name": "--name", "student_id": "--student-id", "department": "--department",
         "collaborators": "--collaborators"}


# ---------------------------------------------------------------- formatting

def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def points(x: float) -> str:
    return f"{100 * x:+.1f}".replace("-0.0", "±0.0").replace("+0.0", "±0.0")


def share(x: float) -> str:
    return f"{100 * x:.1f} %"


def minutes(run: dict) -> str:
    return "n/a" if run.get("wall_seconds") is None else f"{run['wall_seconds'] / 60:.0f} min"


def capitalized(text: str) -> str:
    return text[0].upper() + text[1:]


def listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def stem(name: str) -> str:
    return Path(name).stem


def in_words(n: int) -> str:
    """A small count as the text writes it."""
    return NUMBER_WORDS.get(n, str(n))


# ---------------------------------------------------------------- noise

def single_seed_bar(sigma: float) -> float:
    """The difference two single-seed runs must pass to count beyond seed noise: twice the standard deviation
    of a difference of two runs, each of standard deviation sigma."""
    return 2 * math.sqrt(2) * sigma


def verdict(diff: float, bar: float) -> str:
    return "beyond seed noise" if abs(diff) > bar else "within seed noise"


def seed_spread(runs: dict) -> tuple[list[float], float]:
    """The base short run's held-out (TTA) accuracy over its seeds, and their standard deviation."""
    accs = [runs[n]["val_acc_tta"] for n in experiments.SEEDS if n in runs]
    return accs, float(np.std(accs, ddof=1))


# ---------------------------------------------------------------- the header

def identity(fields: dict[str, str | None], keys: list[str]) -> str:
    """The header line of the given fields; the missing ones named plainly, with the flags that give them."""
    given = [f"{capitalized(FIELDS[k])}: {fields[k]}" for k in keys if fields.get(k)]
    absent = [k for k in keys if not fields.get(k)]
    if absent:
        given.append(f"{capitalized(listed([FIELDS[k] for k in absent]))}: not given (this build had no "
                     f"{listed(['`' + FLAGS[k] + '`' for k in absent])})")
    return " · ".join(given)


# ---------------------------------------------------------------- the models

def described(config: dict) -> str:
    """A network in a few words: its family and what it reads."""
    family = FAMILIES[config["arch"]]
    side = config.get("side", 48)
    return f"{family}, {'whole 48-px faces' if side == 48 else f'{side}-px crops'}"


def layer_rows(model: nn.Module, side: int = 48) -> list[list[str]]:
    """What the network does to one face, a row per step: a convolution or linear layer with the BatchNorm and
    ReLU after it, a residual or separable block, a pooling with the dropout after it; each row's output shape
    and parameters."""
    steps = [m for part in model.children() for m in part.children()]
    shapes = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:]))) for m in steps]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 1, side, side))
    for h in hooks:
        h.remove()
    rows, i = [], 0
    while i < len(steps):
        m, n = steps[i], 1
        if isinstance(m, nn.Conv2d | nn.Linear) and i + 2 < len(steps) and isinstance(
                steps[i + 1], nn.BatchNorm2d | nn.BatchNorm1d) and isinstance(steps[i + 2], nn.ReLU):
            n = 3
        elif isinstance(m, nn.MaxPool2d | nn.Flatten) and i + 1 < len(steps) and isinstance(steps[i + 1], nn.Dropout):
            n = 2
        group = steps[i:i + n]
        shape = shapes[i + n - 1]
        rows.append([", ".join(step_name(s) for s in group),
                     f"{shape[0]:,}" if len(shape) == 1 else "×".join(map(str, shape)),
                     f"{sum(p.numel() for s in group for p in s.parameters()):,}"])
        i += n
    return rows


def step_name(m: nn.Module) -> str:
    if isinstance(m, Normalize):
        return "normalise"
    if isinstance(m, nn.Conv2d):
        return f"{m.kernel_size[0]}×{m.kernel_size[1]} conv {m.in_channels}→{m.out_channels}" + (
            ", depthwise" if m.groups > 1 else "")
    if isinstance(m, Residual):
        return "residual block: 2 × (3×3 conv, BN), input added"
    if isinstance(m, Separable):
        return "separable block: 3×3 depthwise, 1×1 pointwise" + (", input added" if m.residual else "")
    if isinstance(m, nn.Linear):
        return f"linear {m.in_features:,}→{m.out_features}"
    if isinstance(m, nn.Dropout):
        return f"dropout {m.p:g}"
    if isinstance(m, nn.Flatten):
        return "flatten"
    if isinstance(m, nn.MaxPool2d):
        return "2×2 max-pool"
    return {"BatchNorm2d": "BN", "BatchNorm1d": "BN"}.get(type(m).__name__, type(m).__name__)


def trained_model(name: str) -> tuple[nn.Module, dict]:
    """The network of a released file as it trained (BatchNorm unfolded), and its config."""
    config = load_model(WEIGHTS / name)[1]["config"]
    return build_model(config).eval(), config


def layer_table(name: str) -> str:
    model, config = trained_model(name)
    return table(["step", "output", "parameters"], layer_rows(model, config.get("side", 48)))


SETTINGS = [("architecture", lambda r: FAMILIES[r["args"]["arch"]]),
            ("channels per stage", lambda r: r["args"]["channels"]),
            ("input", lambda r: "48-px face" if not r["args"].get("crop") else f"{r['args']['crop']}-px crops"),
            ("epochs (kept)", lambda r: f"{r['epochs_run']} ({r['best_epoch']})"),
            ("batch size", lambda r: r["args"]["batch_size"]), ("peak learning rate", lambda r: r["args"]["lr"]),
            ("momentum (Nesterov)", lambda r: r["args"]["momentum"]),
            ("weight decay", lambda r: r["args"]["weight_decay"]),
            ("label smoothing", lambda r: r["args"]["label_smoothing"]),
            ("warm-up share", lambda r: r["args"]["warmup"]), ("patience", lambda r: r["args"]["patience"]),
            ("dropout: stage, head", lambda r: f"{r['args']['stage_dropout']}, {r['args']['dropout']}"),
            ("rotate, shift, zoom, erase", lambda r: ", ".join(f"{r['args'][k]:g}"
                                                              for k in ("rotate", "shift", "scale", "erase"))),
            ("held-out split", lambda r: f"{r['split']}, {r['args']['val_fraction']:g}"),
            ("seed", lambda r: r["args"]["seed"]), ("bf16", lambda r: "on" if r["bf16"] else "off"),
            ("PyTorch", lambda r: r["torch"]), ("wall time", minutes)]


def settings_table(runs: dict, names: list[str]) -> str:
    """Every setting of the runs behind the named files, a column per file."""
    rows = [[setting, *(f"{get(runs[n])}" for n in names)] for setting, get in SETTINGS]
    return table(["setting", *map(stem, names)], rows)


def train_command(run: dict) -> str:
    """The command that trains the run again with today's train.py: its preset and every recorded setting that
    differs from what the preset now gives. Settings the run's history lacks were added to train.py later,
    with defaults that keep the behaviour runs had before (train.HPARAMS); settings train.py has dropped since
    (recorded off) are left out."""
    args = run["args"]
    preset = args.get("preset") or "cpu"
    now = {**HPARAMS, **PRESETS[preset]}
    recorded = {**{k: v for k, v in HPARAMS.items() if k not in args}, **args, "split_method": run["split"]}
    words = []
    for k, v in recorded.items():
        if k in UNRECORDED or k not in HPARAMS or v == now.get(k) or v in ("", None) or v is False:
            continue
        flag = f"--{k.replace('_', '-')}"
        words.append(flag if v is True else f"{flag} {v:g}" if isinstance(v, float) else f"{flag} {v}")
    lines, line = [], f"python train.py train.csv --preset {preset}"
    for word in words:  # a flag and its value stay on one line
        if len(f"{line} {word}") > COMMAND_WIDTH:
            lines.append(line)
            line = "   "
        line += f" {word}"
    return " \\\n".join([*lines, line])


# ---------------------------------------------------------------- the results

def read_results(results: Path) -> dict:
    """Every file of results/ that collect() writes; the default's held-out faces as arrays: rows (of the
    training file), y (labels) and clean (no copy of the face in the training part)."""
    with open(results / "heldout_default.csv") as f:
        held = list(csv.DictReader(f))
    r = {name: json.loads((results / f"{name}.json").read_text())
         for name in ("runs", "ensembles", "imbalance", "compact_sweep", "facts", "long", "released", "test")}
    sweep = r.pop("compact_sweep")
    r["runs"], r["sweep"], r["compact_ref"] = r["runs"]["runs"], sweep["models"], sweep["compact"]
    r |= {"rows": np.array([int(h["row"]) for h in held]), "y": np.array([int(h["label"]) for h in held]),
          "clean": np.array([h["copy_in_train"] == "0" for h in held])}
    return r


def speed(facts: dict, names: list[str], isa: str | None = None) -> dict | None:
    """The latest committed timing of exactly these models in a bench.speed log, on the CPU's own instruction set
    (isa None) or held to isa: the option's figures with its run's log, CPU, Python and torch; None if none."""
    found = [{**option, **{k: run[k] for k in ("log", "cpu", "python", "torch", "threads", "committed")}}
             for run in facts["speed"] if run["isa"] == isa for option in run["options"].values()
             if option["models"] and sorted(option["models"]) == sorted(names)]
    return max(found, key=lambda s: (s["committed"], s["log"])) if found else None


def seconds(facts: dict, names: list[str]) -> str:
    """The models' logged wall time for a table cell, or why there is none."""
    s = speed(facts, names)
    if s:
        return f"{s['seconds']:.1f} s"
    return "pending" if not facts["speed"] else "–"


def set_name(names: list[str]) -> str:
    if names == default_models():
        return f"the ensemble of {in_words(len(names))}"
    if names == fast_models():
        return "`--fast`"
    return " + ".join(map(stem, names))


def set_scores(r: dict, names: list[str]) -> tuple[dict, dict | None]:
    """The test scores and held-out scores (None where the members' splits differ) of a scored set."""
    k = key(names)
    if k not in r["test"]["sets"]:
        raise SystemExit(f"make_report: report/results/test.json has no scores for {set_name(names)} "
                         f"({', '.join(names)}): run `python -m report.make_report --collect`")
    return r["test"]["sets"][k], r["released"]["sets"][k]


def choices(r: dict) -> dict[str, dict]:
    """Every released choice of models for hw2_test.sh (the scored sets, then each network alone): its files, its
    held-out scores on its own split and its public-half accuracy."""
    out = {}
    for names in model_sets():
        public, held = set_scores(r, names)
        out[key(names)] = {"names": names, "held": held, "public": public["accuracy"]}
    for name in networks_in_order():
        out[name] = {"names": [name], "held": r["released"]["models"][name],
                     "public": r["test"]["models"][name]["accuracy"]}
    return out


def networks_in_order() -> list[str]:
    """The released networks, the default's first in its pick order."""
    default = default_models()
    return [*default, *(n for n in released_networks() if n not in default)]


def human_comparison(acc: float) -> str:
    low, high = HUMAN
    where = "within" if low <= acc <= high else "above" if acc > high else "below"
    return (f"Human labellers agree with FER2013's labels about 65 ± 5 % of the time (Goodfellow et al. 2013); "
            f"{pct(acc)} lies {where} that range")


# ---------------------------------------------------------------- HW2

def long_arms(runs: dict, long: dict) -> dict[str, dict]:
    """Per arm of the longer ablations: its runs, their kept models' held-out accuracy (flip TTA) with mean
    and standard deviation, per seed the kept and last epochs' accuracy (no TTA), the mean training accuracy
    of the last epoch, and the ensemble of all its seeds."""
    arms = {}
    for arm, names in long["runs"].items():
        accs = [runs[n]["val_acc_tta"] for n in names]
        arms[arm] = {"names": names, "accs": accs, "mean": float(np.mean(accs)), "std": float(np.std(accs, ddof=1)),
                     "kept": [runs[n]["val_acc"] for n in names], "last": [runs[n]["last_val_acc"] for n in names],
                     "train": float(np.mean([runs[n]["history"][-1]["train_acc"] for n in names])),
                     "last_mean": float(np.mean([runs[n]["last_val_acc"] for n in names])),
                     "best_epochs": [runs[n]["best_epoch"] for n in names], "epochs": runs[names[0]]["epochs_run"],
                     "ensemble": long["val_acc_tta"][arm].get(str(len(names)))}
    return arms


def augmentation_effect(arms: dict[str, dict]) -> tuple[float, float]:
    """The arms' difference of means (with minus without augmentation) and twice its standard error."""
    aug, plain = arms["long"], arms["long_no_augment"]
    return (aug["mean"] - plain["mean"],
            2 * float(np.sqrt(aug["std"] ** 2 / len(aug["accs"]) + plain["std"] ** 2 / len(plain["accs"]))))


def ensemble_verdict(a: dict) -> str:
    """An arm's ensemble against its members: above all, or within their range (no gain claimed)."""
    if a["ensemble"] > max(a["accs"]):
        return f"above every member ({pct(min(a['accs']))} to {pct(max(a['accs']))})"
    return f"within its members' range ({pct(min(a['accs']))} to {pct(max(a['accs']))}), so no gain is claimed"


def long_sentences(arms: dict[str, dict]) -> dict[str, str]:
    """The longer ablations' verdicts: augmentation (difference of the arms' means against twice its standard
    error), early stopping (kept against last epoch, seed by seed) and ensembles (against their members)."""
    aug, plain = arms["long"], arms["long_no_augment"]
    diff, bar = augmentation_effect(arms)
    plain_gap, aug_gap = plain["train"] - plain["last_mean"], aug["train"] - aug["last_mean"]
    text = (f"Over these epochs augmentation {'raises' if diff > 0 else 'lowers'} the held-out accuracy by "
            f"{abs(100 * diff):.1f} points (mean of {len(aug['accs'])} seeds against {len(plain['accs'])}); twice the "
            f"standard error of that difference is {100 * bar:.1f} points, so it is {verdict(diff, bar)}. Without "
            f"augmentation the network fits its training faces to {pct(plain['train'])} on the last epoch, "
            f"{abs(100 * plain_gap):.1f} points {'above' if plain_gap > 0 else 'below'} its held-out accuracy then; "
            f"with it, {pct(aug['train'])} on augmented faces with dropout on, {abs(100 * aug_gap):.1f} points "
            f"{'above' if aug_gap > 0 else 'below'}.")
    if diff < -bar and aug_gap < 0.02:
        text += (" So at this size and length the augmented network underfits: it cannot fit the shifted, rotated, "
                 "zoomed and erased faces better than it generalises, while the network without augmentation, though "
                 "it overfits, has not yet overfitted enough to lose. Augmentation pays where a network can fit the "
                 "augmented faces: a wider one, or many more epochs, as the released networks are.")
    elif diff > bar:
        text += (" Augmentation trades fit for generalisation: each epoch shows every face shifted, rotated, zoomed "
                 "or partly erased anew, so the network cannot memorise the exact pixels.")
    early = [f"{ARM_LABEL[arm]}, the kept epochs were {listed([str(e) for e in a['best_epochs']])} of "
             f"{a['epochs']}, and they score "
             f"{listed([f'{100 * (k - last):.1f}' for k, last in zip(a['kept'], a['last'], strict=True)])} points "
             "above the last epoch, seed by seed" for arm, a in arms.items()]
    ensembles = [f"{ARM_LABEL[arm]}, the ensemble of {len(a['names'])} scores {pct(a['ensemble'])}, "
                 f"{ensemble_verdict(a)}" for arm, a in arms.items()]
    caption = "; without augmentation the training curve climbs away from the held-out one" if plain_gap > 0.05 else ""
    return {"long_augmentation": text, "long_caption": caption,
            "long_early": capitalized("; ".join(early)) + ".",
            "long_ensembles": capitalized("; ".join(ensembles)) + "."}


ARM_LABEL = {arm: label for arm, (_color, label) in figures.ARM_STYLE.items()}


def q2_answer(arms: dict[str, dict]) -> str:
    """HW2 question 2 in one sentence: each trick's effect in the longer ablations, with its verdict."""
    diff, bar = augmentation_effect(arms)
    early = [float(np.mean(np.subtract(a["kept"], a["last"]))) for a in arms.values()]
    ensembles = [f"{pct(a['ensemble'])} against {pct(a['mean'])}" for a in arms.values()]
    return (f"Over {arms['long']['epochs']} epochs augmentation {'raised' if diff > 0 else 'lowered'} held-out "
            f"accuracy by {abs(100 * diff):.1f} points ({verdict(diff, bar)}); early stopping kept an epoch "
            f"{listed([f'{100 * e:.1f}' for e in early])} points above the last on average, with and without "
            f"augmentation, on the faces that chose it; and averaging {len(arms['long']['names'])} seeds scored "
            f"{listed(ensembles)} for their members' mean.")


def trick_rows(runs: dict, ensembles: dict) -> list[tuple[str, float, str]]:
    """(setting, held-out accuracy, note) of the short ablations, the reference first."""
    base = runs[experiments.BASE]
    rows = [(f"{experiments.BASE}: all tricks on", base["val_acc_tta"],
             f"reference; training accuracy {pct(base['history'][-1]['train_acc'])}")]
    for name, what in ((f"{experiments.BASE}_no_normalize", "without normalisation"),
                       (f"{experiments.BASE}_no_augment", "without augmentation")):
        rows.append((what, runs[name]["val_acc_tta"],
                     f"run {name}; training accuracy {pct(runs[name]['history'][-1]['train_acc'])}"))
    rows += [(f"ensemble of {k} seeds", acc, "mean of the models' probabilities")
             for k, acc in ensembles["val_acc_tta"].items() if k != "1"]
    return rows


def trick_verdicts(rows: list[tuple[str, float, str]], bar: float) -> str:
    """One line per changed setting: its difference to the reference, against the single-seed bar."""
    return "\n".join(f"- {capitalized(name)}: {points(acc - rows[0][1])} points against the reference, "
                     f"{verdict(acc - rows[0][1], bar)}." for name, acc, _ in rows[1:])


def confusion_answer(cm: np.ndarray) -> str:
    pairs = [f"{CLASS_NAMES[t]} taken for {CLASS_NAMES[p]} ({share(f)} of {CLASS_NAMES[t]})"
             for t, p, f in top_confusions(cm)]
    return f"The commonest confusions are {listed(pairs)}."


IMBALANCE_SETS = {"grouped split": "on the default's held-out faces (the grouped split, none with a copy in "
                                   "training)",
                  "duplicate-free part": "on the row split's duplicate-free part",
                  "whole split": "on the whole held-out row split (the short runs, whose checkpoints are gone)"}


def by_faces(rows: list[dict]) -> dict[str, list[dict]]:
    """The decision rows grouped by the faces they were scored on, in IMBALANCE_SETS' order: one table each."""
    return {on: [r for r in rows if r["faces"] == on] for on in IMBALANCE_SETS if any(r["faces"] == on for r in rows)}


def imbalance_tables(rows: list[dict], first: int) -> str:
    blocks = []
    for number, (on, group) in enumerate(by_faces(rows).items(), first):
        blocks.append(f"*Table {number}. Decision rules {IMBALANCE_SETS[on]}.*\n\n" + table(
            ["model", "decision", "accuracy", "balanced accuracy", "macro-F1", "disgust recall", "disgust precision"],
            [[r["model"], r["decision"], pct(r["accuracy"]), pct(np.mean(r["recall"])), f"{r['macro_f1']:.3f}",
              f"{r['recall'][1]:.3f}", f"{r['precision'][1]:.3f}"] for r in group]))
    return "\n\n".join(blocks)


def table_refs(first: int, n: int) -> str:
    return f"Table {first}" if n == 1 else f"Tables {listed([str(k) for k in range(first, first + n)])}"


def prior_sentence(rows: list[dict]) -> str:
    """What correcting the default's decision for the class prior gains and costs."""
    plain, adjusted = (next(r for r in rows if r["model"] == DEFAULT_ROWS and r["decision"] == d)
                       for d in ("arg-max", "logit-adjusted (tau = 1)"))
    return (f"Correcting the default for the prior at decision time, which needs no retraining, moves its balanced "
            f"accuracy (the mean recall over classes) from {pct(np.mean(plain['recall']))} to "
            f"{pct(np.mean(adjusted['recall']))} and its recall of disgust from {plain['recall'][1]:.3f} to "
            f"{adjusted['recall'][1]:.3f}, while disgust's precision goes from {plain['precision'][1]:.3f} to "
            f"{adjusted['precision'][1]:.3f}, accuracy from {pct(plain['accuracy'])} to {pct(adjusted['accuracy'])} "
            f"and macro-F1 from {plain['macro_f1']:.3f} to {adjusted['macro_f1']:.3f}: the rule for a user who "
            "needs the rare expressions found and accepts more false alarms. For accuracy, the Kaggle score, the "
            "arg-max stays the better decision.")


def best_single(r: dict, names: list[str]) -> str:
    """The member of a set with the best held-out accuracy."""
    return max(names, key=lambda n: r["released"]["models"][n]["clean"])


def q1_answer(r: dict, default: list[str], bar: float) -> str:
    """Which released choice is the most accurate on the default's held-out split, whether it is the default, and
    what the public half, scored once afterwards, says; margins against the single-seed bar."""
    options = choices(r)
    mine = options[key(default)]
    same_split = {k: o for k, o in options.items() if o["held"] and o["held"]["split"] == mine["held"]["split"]}
    top = max(same_split.values(), key=lambda o: o["held"]["clean"])
    if top is not mine:
        return (f"`hw2_test.sh`'s default is {set_name(default)}, {pct(mine['held']['clean'])} held-out and "
                f"{pct(mine['public'])} on Kaggle's public half. It is not the most accurate choice on held-out: "
                f"{set_name(top['names'])} scores {pct(top['held']['clean'])} there and {pct(top['public'])} on the "
                "public half.")
    others = [o for o in same_split.values() if o is not mine]
    runner_up = max(others, key=lambda o: o["held"]["clean"])
    single = options[best_single(r, default)]
    compared = [single] + ([runner_up] if runner_up is not single else [])
    said = "; ".join(f"over {set_name(o['names'])}, {100 * (mine['held']['clean'] - o['held']['clean']):.1f} points, "
                     f"{verdict(mine['held']['clean'] - o['held']['clean'], bar)}" for o in compared)
    return (f"The best model is `hw2_test.sh`'s default, {set_name(default)}: the most accurate released choice on "
            f"the held-out faces, {pct(mine['held']['clean'])} against {pct(runner_up['held']['clean'])} for "
            f"{set_name(runner_up['names'])} and {pct(single['held']['clean'])} for its best network alone "
            f"({stem(single['names'][0])}). On Kaggle's public half, scored once afterwards, it scores "
            f"{pct(mine['public'])} against {pct(runner_up['public'])} and {pct(single['public'])}. Its held-out "
            f"margins, against the bar of two single-seed runs ({100 * bar:.1f} points, Appendix B; a rough guide "
            f"for ensembles): {said}.{ranking_caveat(mine, compared, bar)}")


def ranking_caveat(mine: dict, compared: list[dict], bar: float) -> str:
    """Where every held-out margin is within noise: that the ranking is not established, and whether the public
    half repeats it."""
    if any(abs(mine["held"]["clean"] - o["held"]["clean"]) > bar for o in compared):
        return ""
    repeated = all(mine["public"] > o["public"] for o in compared)
    return (" So the ranking is not established beyond noise" + (", though the public half, scored once, repeats it."
                                                                  if repeated else ", and the public half does not "
                                                                  "repeat it."))


SPLIT_NAME = {"stratified": "rows", "grouped": "groups"}  # how the tables name each split


def released_table(r: dict, default: list[str]) -> str:
    """The released choices of hw2_test.sh (the scored sets, each network, the compact model): parameters, bytes,
    held-out on its own split, public score and logged wall time."""
    names = [*released_networks(), COMPACT]
    params = {n: count_parameters(trained_model(n)[0]) for n in names}
    facts, rows = r["facts"], []
    for option in choices(r).values():
        files, held = option["names"], option["held"]
        order = networks_in_order()
        if len(files) > 1 and files == order[:len(files)]:
            first = "" if len(files) == len(order) else "first "
            what = ("the default" if files == default else set_name(files), f"mean of the {first}"
                    f"{in_words(len(files))} below")
        elif len(files) > 1:
            what = (set_name(files), "mean of " + ", ".join(map(stem, files)))
        else:
            what = (stem(files[0]), described(trained_model(files[0])[1]))
        size = sum((WEIGHTS / n).stat().st_size for n in files)
        rows.append([*what, f"{sum(params[n] for n in files):,}", f"{size:,}",
                     "none (two splits)" if held is None else f"{pct(held['clean'])} ({SPLIT_NAME[held['split']]})",
                     pct(option["public"]), seconds(facts, files)])
    held = r["released"]["models"][COMPACT]
    rows.append([f"{stem(COMPACT)} (HW8)", described(trained_model(COMPACT)[1]), f"{params[COMPACT]:,}",
                 f"{(WEIGHTS / COMPACT).stat().st_size:,}", f"{pct(held['clean'])} ({SPLIT_NAME[held['split']]})",
                 pct(r["test"]["models"][COMPACT]["accuracy"]), seconds(facts, [COMPACT])])
    return table(["model", "networks", "parameters", "file (bytes)", "held-out (split)", "Kaggle public",
                  "wall, test.csv"], rows)


def torch_versions(runs: dict, names: list[str]) -> str:
    versions: dict[str, list[str]] = {}
    for n in names:
        versions.setdefault(runs[n]["torch"], []).append(stem(n))
    return "; ".join(f"{v} ({', '.join(ns)})" for v, ns in versions.items())


def distinct_networks(names: list[str]) -> dict[str, list[str]]:
    """The files of each distinct network (its config but the normalisation statistics), in names' order."""
    seen: dict[str, list[str]] = {}
    for name in names:
        config = trained_model(name)[1]
        seen.setdefault(json.dumps({k: v for k, v in config.items() if k not in ("mean", "std")}, sort_keys=True),
                        []).append(name)
    return seen


def layer_sections(default: list[str], first: int) -> str:
    """One layer table per distinct network of the default, numbered from first."""
    seen = distinct_networks(default)
    blocks = [f"*Table {number}. The steps of {listed(list(map(stem, names)))} ({described(json.loads(config))}), from "
              f"one forward pass (BN: BatchNorm).*\n\n{layer_table(names[0])}"
              for number, (config, names) in enumerate(seen.items(), first)]
    lead = (f"{table_refs(first, len(seen))} {'gives' if len(seen) == 1 else 'give'} each distinct network of the "
            "default step by step, with the parameters it trained with (for inference each BatchNorm is folded into "
            "the convolution or linear layer before it).")
    return "\n\n".join([lead, *blocks])


def wall_sentence(facts: dict, default: list[str]) -> str:
    """The default's logged wall time on test.csv against HW2's 10 minutes, on the CPU's own instruction set and
    held to AVX2, each where logged; a figure not logged yet is said to be pending."""
    full, slow = speed(facts, default), speed(facts, default, "AVX2")
    if not (full or slow):
        return ("Its wall time on the 7,178 faces of `test.csv`, to set against the 10 minutes allowed, is pending: "
                "no `python -m bench.speed` log is in `runs/speed/` yet.")
    if full:
        text = (f"On the 7,178 faces of `test.csv` it took {full['seconds']:.1f} s, start-up included (median of "
                f"{full['n']} runs, {full['min']:.1f} to {full['max']:.1f} s; `{full['log']}`), "
                f"{100 * full['seconds'] / TIME_LIMIT:.0f} % of the 10 minutes allowed.")
    else:
        text = "Its wall time at the CPU's full instruction set is pending (no log in `runs/speed/` yet)."
    if slow:
        text += (f" With the CPU held to AVX2 (`ONEDNN_MAX_CPU_ISA=AVX2`), as on a CPU without AVX-512, it took "
                 f"{slow['seconds']:.1f} s (median of {slow['n']} runs; `{slow['log']}`), "
                 f"{100 * slow['seconds'] / TIME_LIMIT:.0f} % of the 10 minutes.")
    run = full or slow
    return text + f" The timings ran on {run['threads']} threads of {run['cpu']}."


def hw2_values(r: dict) -> dict[str, str]:
    runs, facts, released = r["runs"], r["facts"], r["released"]
    default, fast = default_models(), fast_models()
    public, held = set_scores(r, default)
    log = speed(facts, default) or speed(facts, default, "AVX2")
    seed_accs, sigma = seed_spread(runs)
    bar = single_seed_bar(sigma)
    arms = long_arms(runs, r["long"])
    counts = np.array(facts["counts"])
    leak = released["models"][COMPACT]
    single = best_single(r, default)
    n_imbalance = len(by_faces(r["imbalance"]["rows"]))
    n_layer_tables = len(distinct_networks(default))
    has_resnet = any(trained_model(n)[1]["arch"] == "resnet" for n in default)
    return {
        "default_name": set_name(default), "default_files": ", ".join(f"`{n}`" for n in default),
        "fast_files": ", ".join(f"`{n}`" for n in fast), "wall_sentence": wall_sentence(facts, default),
        "torch_versions": torch_versions(runs, default),
        "timing_setup": ("the timing has yet to run" if log is None
                         else f"the timing ran Python {log['python']} with PyTorch {log['torch']}"),
        "test_set": r["test"]["set"],
        "q1_answer": q1_answer(r, default, bar), "released_table": released_table(r, default),
        "resnet_line": ("\n- **Residual block** (the ResNets): two 3×3 convolutions whose output is added to their "
                        "input, so a block learns a correction and gradients reach early layers through the sum."
                        if has_resnet else ""),
        "settings_table": settings_table(runs, default),
        "n_val": f"{held['n_val']:,}", "row_n_val": f"{leak['n_val']:,}", "row_n_clean": f"{leak['n_clean']:,}",
        "n_faces": f"{counts.sum():,}", "n_copies": f"{counts.sum() - facts['n_distinct']:,}",
        "row_with_copy": f"{leak['n_val'] - leak['n_clean']:,}",
        "leak_copies": pct(leak["copies"]), "leak_clean": pct(leak["clean"]),
        "q2_answer": q2_answer(arms), "base": experiments.BASE, "base_params": f"{runs[experiments.BASE]['params']:,}",
        "long_schedule": " ".join(experiments.LONG), "long_epochs": arms["long"]["epochs"],
        "long_n_val": f"{r['long']['n_val']:,}", "long_n_seeds": len(experiments.LONG_SEEDS),
        "long_with_copy": r["long"]["n_val_with_copy"],
        "long_table": table(["arm", "kept model per seed", "mean ± std", "ensemble"],
                            [[ARM_LABEL[arm], ", ".join(pct(x) for x in a["accs"]),
                              f"{pct(a['mean'])} ± {100 * a['std']:.2f}", pct(a["ensemble"])]
                             for arm, a in arms.items()]),
        **long_sentences(arms),
        "default_held": pct(held["clean"]), "default_public": pct(public["accuracy"]),
        "n_members": in_words(len(default)),
        "best_member": stem(single), "best_member_held": pct(released["models"][single]["clean"]),
        "best_member_public": pct(r["test"]["models"][single]["accuracy"]),
        "member_gain": f"{100 * (held['clean'] - released['models'][single]['clean']):.1f}",
        "confusion_answer": confusion_answer(np.array(public["confusion"])), "n_test": f"{r['test']['n']:,}",
        "disgust_count": f"{counts[1]:,}", "disgust_share": share(counts[1] / counts.sum()),
        "happy_share": share(counts[3] / counts.sum()),
        "imbalance_tables": imbalance_tables(r["imbalance"]["rows"], 4),
        "imbalance_refs": table_refs(4, n_imbalance),
        "prior_sentence": prior_sentence(r["imbalance"]["rows"]),
        "layer_tables": layer_sections(default, 4 + n_imbalance),
        "t_short": 4 + n_imbalance + n_layer_tables,
        "short_epochs": runs[experiments.BASE]["epochs_run"], "short_schedule": " ".join(experiments.SHORT),
        "n_seeds": len(seed_accs), "seed_accs": ", ".join(pct(a) for a in seed_accs), "seed_std": f"{100 * sigma:.2f}",
        "noise_bar": f"{100 * bar:.1f}",
        "tricks_table": table(["setting", "held-out", "note"],
                              [[n, pct(a), note] for n, a, note in trick_rows(runs, r["ensembles"])]),
        "trick_verdicts": trick_verdicts(trick_rows(runs, r["ensembles"]), bar),
        "no_augment_train": pct(runs[f"{experiments.BASE}_no_augment"]["history"][-1]["train_acc"]),
        "base_train": pct(runs[experiments.BASE]["history"][-1]["train_acc"]),
    }


# ---------------------------------------------------------------- DLSS

def classification_report(scores: dict) -> str:
    """Per class precision, recall, F1 and support, then accuracy and the macro and weighted averages."""
    support = np.array(scores["support"])
    rows = [[c, f"{scores['precision'][i]:.3f}", f"{scores['recall'][i]:.3f}", f"{scores['f1'][i]:.3f}",
             f"{support[i]:,}"] for i, c in enumerate(CLASS_NAMES)]
    rows.append(["**accuracy**", "", "", f"{scores['accuracy']:.3f}", f"{support.sum():,}"])
    for name, weights in (("macro avg", np.ones(len(support))), ("weighted avg", support)):
        rows.append([f"**{name}**", *(f"{np.average(scores[k], weights=weights):.3f}"
                                      for k in ("precision", "recall", "f1")), f"{support.sum():,}"])
    return table(["class", "precision", "recall", "F1", "support"], rows)


def stage_words(config: dict) -> str:
    """What one stage of a VGG or ResNet holds, in words."""
    if config["arch"] == "resnet":
        blocks = config.get("blocks_per_stage", 1)
        return f"a ResNet stage holds {in_words(blocks)} residual block{'s' * (blocks > 1)}"
    convs = config["convs_per_stage"]
    return f"a VGG stage holds {in_words(convs)} convolution{'s' * (convs > 1)}"


def shape_sentence(names: list[str]) -> str:
    """The networks' stages, widths and hidden layer: once where they share them, else per network."""
    configs = {n: trained_model(n)[1] for n in names}
    shapes = {(tuple(c["channels"]), c["hidden"]) for c in configs.values()}
    stages = listed(list(dict.fromkeys(stage_words(c) for c in configs.values())))
    if len(shapes) == 1:
        channels, hidden = shapes.pop()
        return (f"All {in_words(len(names))} have {in_words(len(channels))} stages of widths "
                f"{'-'.join(map(str, channels))} and a {hidden}-unit hidden layer; {stages}.")
    each = [f"{stem(n)} has widths {'-'.join(map(str, c['channels']))} and a {c['hidden']}-unit hidden layer"
            for n, c in configs.items()]
    return capitalized("; ".join(each)) + f"; {stages}."


def members_table(r: dict, names: list[str]) -> str:
    """The networks of an ensemble: family and input, shape, parameters, epochs, held-out and public scores."""
    runs, rows = r["runs"], []
    for n in names:
        model, config = trained_model(n)
        rows.append([stem(n), described(config), f"{count_parameters(model):,}",
                     f"{runs[n]['epochs_run']} ({runs[n]['best_epoch']})", pct(r["released"]["models"][n]["clean"]),
                     pct(r["test"]["models"][n]["accuracy"])])
    return table(["network", "family, input", "parameters", "epochs (kept)", "held-out", "Kaggle public"], rows)


def shared_setting(runs: dict, names: list[str], setting: str) -> float:
    """A training setting the runs share; a build whose runs differ in it stops, as the text states one value."""
    values = {runs[n]["args"][setting] for n in names}
    if len(values) != 1:
        raise SystemExit(f"make_report: the default's networks differ in {setting} ({sorted(values)}): the DLSS text "
                         "gives one value")
    return values.pop()


def loss_sentence(runs: dict, names: list[str]) -> str:
    """How the training loss (augmented faces, label-smoothed) stands to the held-out loss: above it throughout,
    or falling below it from some epoch in some runs."""
    crossed = {n: next((e["epoch"] for e in runs[n]["history"] if e["train_loss"] < e["val_loss"]), None)
               for n in names}
    crossed = {n: e for n, e in crossed.items() if e is not None}
    if not crossed:
        return ("the training loss stays above the held-out loss throughout, because the training faces are "
                "augmented and the loss is label-smoothed")
    return ("the training loss, on augmented faces and label-smoothed, starts above the held-out loss, but falls "
            f"below it in {listed([f'{stem(n)} from epoch {e}' for n, e in crossed.items()])}: "
            f"{'that network comes' if len(crossed) == 1 else 'those networks come'} to fit the training faces more "
            "closely than the held-out ones")


def imbalance_sentence(rows: list[dict]) -> str:
    """What the two answers to imbalance cost in accuracy: the prior correction on the default, the class-weighted
    loss on the base short run."""
    def row(model: str, decision: str) -> dict:
        return next(r for r in rows if r["model"] == model and r["decision"] == decision)
    plain, adjusted = row(DEFAULT_ROWS, "arg-max"), row(DEFAULT_ROWS, "logit-adjusted (tau = 1)")
    base, weighted = row(experiments.BASE, "arg-max"), row(f"{experiments.BASE}, class-weighted loss", "arg-max")
    return (f"Correcting the ensemble's decision for the class prior raises its held-out recall of disgust from "
            f"{plain['recall'][1]:.3f} to {adjusted['recall'][1]:.3f} but costs "
            f"{100 * (plain['accuracy'] - adjusted['accuracy']):.1f} points of accuracy, and a class-weighted loss "
            f"cost a short run {100 * (base['accuracy'] - weighted['accuracy']):.1f} points, so the plain arg-max was "
            "kept for the Kaggle score.")


def map_model(names: list[str]) -> str:
    """The network whose activations Bonus 2 maps: the default's first VGG on whole faces, else its first."""
    whole_vgg = [n for n in names if trained_model(n)[1]["arch"] == "vgg" and trained_model(n)[1].get("side", 48) == 48]
    return (whole_vgg or names)[0]


def dlss_values(r: dict) -> dict[str, str]:
    runs, facts = r["runs"], r["facts"]
    default = default_models()
    public, held = set_scores(r, default)
    leak = r["released"]["models"][COMPACT]
    base, mlp, mlp_own = runs[experiments.BASE], runs["mlp_matched"], runs["mlp_matched_own_recipe"]
    trials = facts["mlp_trials"]
    counts = np.array(facts["counts"])
    mapped = map_model(default)
    mapped_model = load_model(WEIGHTS / mapped)[0]
    grid = figures.last_conv_activation(mapped_model, torch.zeros(1, 1, 48, 48)).shape[-1]
    per_class = public["f1"]
    epochs = sorted({runs[n]["epochs_run"] for n in default})
    return {
        "n_val": f"{held['n_val']:,}", "n_faces": f"{counts.sum():,}",
        "n_copies": f"{counts.sum() - facts['n_distinct']:,}", "disgust_count": f"{counts[1]:,}",
        "happy_count": f"{counts[3]:,}", "test_set": r["test"]["set"], "n_test": f"{r['test']['n']:,}",
        "n_members": in_words(len(default)), "members_table": members_table(r, default),
        "settings": settings_table(runs, default),
        "commands": "\n".join(f"# {stem(n)}\n{train_command(runs[n])}" for n in default),
        "shape_sentence": shape_sentence(default),
        **{k: f"{shared_setting(runs, default, k):g}" for k in ("rotate", "erase")},
        **{k: f"{shared_setting(runs, default, k):.0%}" for k in ("shift", "scale")},
        "loss_sentence": loss_sentence(runs, default), "imbalance_sentence": imbalance_sentence(r["imbalance"]["rows"]),
        "released_best_epochs": listed([f"{runs[n]['best_epoch']} of {runs[n]['epochs_run']}" for n in default]),
        "epoch_range": f"{epochs[0]} to {epochs[-1]}" if len(epochs) > 1 else str(epochs[0]),
        "test_acc": pct(public["accuracy"]), "test_macro_f1": f"{public['macro_f1']:.3f}",
        "val_acc": pct(held["clean"]), "classification_report": classification_report(public),
        "best_f1_class": CLASS_NAMES[int(np.argmax(per_class))],
        "worst_f1_class": CLASS_NAMES[int(np.argmin(per_class))],
        "worst_f1": f"{min(per_class):.3f}", "human": human_comparison(public["accuracy"]),
        "leak_copies": pct(leak["copies"]), "leak_clean": pct(leak["clean"]),
        "mlp_depth": mlp["args"]["mlp_depth"], "mlp_hidden": mlp["args"]["hidden"], "mlp_params": f"{mlp['params']:,}",
        "base_params": f"{base['params']:,}",
        "param_gap": f"{abs(base['params'] - mlp['params']) / base['params']:.2%}",
        "short_epochs": base["epochs_run"], "row_n_val": f"{leak['n_val']:,}",
        "cnn_mlp_table": table(["model", "parameters", "held-out", "training accuracy, last epoch"],
                               [[n, f"{x['params']:,}", pct(x["val_acc_tta"]), pct(x["history"][-1]["train_acc"])]
                                for n, x in ((f"{experiments.BASE} (CNN)", base),
                                             ("2-layer MLP, the CNN's recipe", mlp),
                                             ("2-layer MLP, its own recipe", mlp_own))]),
        "cnn_mlp_gap": f"{100 * (base['val_acc_tta'] - mlp_own['val_acc_tta']):.1f}",
        "mlp_acc": pct(mlp["val_acc_tta"]), "mlp_own_dropout": mlp_own["args"]["dropout"],
        "mlp_own_lr": mlp_own["args"]["lr"], "mlp_own_batch": mlp_own["args"]["batch_size"],
        "n_mlp_trials": len(trials),
        "mlp_trial_epochs": " and ".join(sorted({str(t["epochs"]) for t in trials.values()})),
        "mlp_trial_aug": pct(max(t["val_acc"] for t in trials.values() if not t["no_augment"])),
        "mlp_trial_no_aug": pct(max(t["val_acc"] for t in trials.values() if t["no_augment"])),
        "mlp_recipe_gain": f"{100 * (mlp_own['val_acc_tta'] - mlp['val_acc_tta']):.1f}",
        "map_model": f"`{mapped}` ({described(trained_model(mapped)[1])})", "last_grid": grid,
    }


# ---------------------------------------------------------------- HW8

def matched_pairs(sweep: list[dict]) -> list[tuple[dict, dict]]:
    """(VGG, MobileNet) pairs of the short sweep within 1.6x of each other in parameters, smallest first."""
    vggs = [m for m in sweep if m["arch"] == "vgg"]
    mobiles = [m for m in sweep if m["arch"] == "mobilenet"]
    pairs = [(v, m) for v in vggs for m in mobiles
             if max(v["params"], m["params"]) / min(v["params"], m["params"]) <= 1.6]
    return sorted(pairs, key=lambda p: p[0]["params"])


def confounds(v: dict, m: dict, runs: dict) -> str:
    """What besides the architecture differs between two runs: dropout and number format."""
    rv, rm = runs[v["name"]], runs[m["name"]]
    found = []
    if rv["args"]["dropout"] != rm["args"]["dropout"]:
        found.append(f"dropout {rv['args']['dropout']:g} against {rm['args']['dropout']:g}")
    if rv["bf16"] != rm["bf16"]:
        found.append(f"{'bf16' if rv['bf16'] else 'fp32'} training against {'bf16' if rm['bf16'] else 'fp32'}")
    return "; also differs in " + listed(found) if found else ""


def matched_sentence(sweep: list[dict], runs: dict, bar: float) -> str:
    """Each pair of similar size compared, its margin against the single-seed bar, its confounds named."""
    pairs = matched_pairs(sweep)
    if not pairs:
        return "The two families have no models within 1.6 times of each other in size: no comparison is possible."
    lines = []
    for v, m in pairs:
        ahead = v if v["int8_val_acc_tta"] > m["int8_val_acc_tta"] else m
        margin = abs(v["int8_val_acc_tta"] - m["int8_val_acc_tta"])
        lines.append(f"- {v['name']} ({v['params']:,} parameters, {pct(v['int8_val_acc_tta'])}) against {m['name']} "
                     f"({m['params']:,}, {pct(m['int8_val_acc_tta'])}): {ahead['name']} ahead by {100 * margin:.1f} "
                     f"points, {verdict(margin, bar)}{confounds(v, m, runs)}.")
    return "\n".join(lines)


def matched_answer(sweep: list[dict], bar: float) -> str:
    """How many of the pairs of similar size each family wins beyond seed noise."""
    pairs = matched_pairs(sweep)
    if not pairs:
        return "No pair of the two families is close enough in size to compare."
    diffs = [m["int8_val_acc_tta"] - v["int8_val_acc_tta"] for v, m in pairs]
    mobile, vgg = sum(d > bar for d in diffs), sum(d < -bar for d in diffs)
    rest = len(pairs) - mobile - vgg
    return (f"Of the {len(pairs)} pairs within 1.6 times of each other in parameters "
            f"({min(v['params'] for v, _ in pairs):,} to {max(m['params'] for _, m in pairs):,}), the MobileNet-style "
            f"network is ahead beyond seed noise in {mobile}, the plain CNN in {vgg}, and {rest} "
            f"{'is' if rest == 1 else 'are'} within noise.")


def size_answer(sweep: list[dict]) -> str:
    parts = []
    for arch, name in (("mobilenet", "the MobileNet-style network"), ("vgg", "the plain CNN")):
        ms = sorted((m for m in sweep if m["arch"] == arch), key=lambda m: m["params"])
        parts.append(f"{name} goes from {pct(ms[0]['int8_val_acc_tta'])} at {ms[0]['params']:,} parameters to "
                     f"{pct(ms[-1]['int8_val_acc_tta'])} at {ms[-1]['params']:,}")
    return capitalized("; ".join(parts))


def confound_sentence(sweep: list[dict], runs: dict) -> str:
    """What the sweep's two families differ in besides the architecture: head dropout and number format."""
    dropout = {arch: sorted({runs[m["name"]]["args"]["dropout"] for m in sweep if m["arch"] == arch})
               for arch in ("mobilenet", "vgg")}
    fp32 = [m["name"] for m in sweep if not runs[m["name"]]["bf16"]]
    parts = [f"the MobileNet-style networks with dropout {'/'.join(f'{d:g}' for d in dropout['mobilenet'])} in their "
             f"head, the plain CNNs with {'/'.join(f'{d:g}' for d in dropout['vgg'])}"]
    if fp32:
        parts.append(f"{listed(fp32)} in fp32 where the others used bf16")
    return (f"The two families were not trained alike in everything: {listed(parts)} (Table 3), so even a margin "
            "past the bar is not the architecture's alone.")


def teachers(run: dict) -> list[str]:
    """The names of the models a run was distilled from (its history names their files)."""
    return [Path(t).stem for t in run["args"]["teacher"].split(",") if t]


def weight_bits(path: Path) -> tuple[str, str]:
    """The bits per weight of a k-bit file (quantized.py), from its header: of its larger tensors, and of its 3x3
    filters (depthwise and stem)."""
    tensors = read_quantized(path)[0]["tensors"]

    def bits(small: bool) -> str:
        return "/".join(map(str, sorted({t["bits"] for t in tensors
                                         if "bits" in t and (math.prod(t["shape"][1:]) <= SMALL_ROW) == small})))
    return bits(False), bits(True)


def ensemble_words(names: list[str]) -> str:
    """An ensemble's networks by input, e.g. "a ResNet and a VGG on whole 48-px faces; a VGG on 40-px crops"."""
    by_input: dict[str, list[str]] = {}
    for n in names:
        config = trained_model(n)[1]
        side = config.get("side", 48)
        by_input.setdefault("whole 48-px faces" if side == 48 else f"{side}-px crops", []).append(
            f"a {FAMILIES[config['arch']]}")
    return "; ".join(f"{listed(families)} on {where}" for where, families in by_input.items())


def speed_comparison(facts: dict, compact: list[str], original: list[str]) -> str:
    """The compact model's and the original's logged wall times and their ratio, on the CPU's own instruction set
    or else held to AVX2; or that they are pending."""
    for isa in (None, "AVX2"):
        c, o = speed(facts, compact, isa), speed(facts, original, isa)
        if c and o:
            held = f", the CPU held to {isa}" if isa else ""
            logs = listed(sorted({f"`{c['log']}`", f"`{o['log']}`"}))
            return (f"`hw8_test.sh` labels the 7,178 faces of `test.csv` in {c['seconds']:.1f} s, against "
                    f"{o['seconds']:.1f} s for the original with `hw2_test.sh`: "
                    f"{o['seconds'] / c['seconds']:.1f} times faster (start-up included, median of {c['n']} runs; "
                    f"{c['threads']} threads of {c['cpu']}{held}; {logs}).")
    return ("The wall times of `hw8_test.sh` and of the original's `hw2_test.sh` on the 7,178 faces of `test.csv` "
            "are pending: no `python -m bench.speed` log of both is in `runs/speed/` yet.")


def hw8_values(r: dict) -> dict[str, str]:
    runs, facts, sweep = r["runs"], r["facts"], r["sweep"]
    original = default_models()
    public, held = set_scores(r, original)
    compact_public, compact_held = r["test"]["models"][COMPACT], r["released"]["models"][COMPACT]
    compact_run = runs[COMPACT]
    model, config = trained_model(COMPACT)
    folded = load_model(WEIGHTS / COMPACT)[0]
    _, sigma = seed_spread(runs)
    bar = single_seed_bar(sigma)
    original_bytes = sum((WEIGHTS / n).stat().st_size for n in original)
    original_params = sum(count_parameters(trained_model(n)[0]) for n in original)
    compact_bytes = (WEIGHTS / COMPACT).stat().st_size
    bits, small_bits = weight_bits(WEIGHTS / COMPACT)
    split = SPLIT_NAME[compact_held["split"]]
    return {
        "compact_bytes": f"{compact_bytes:,}", "original_name": set_name(original),
        "original_files": ", ".join(f"`{n}`" for n in original),
        "original_what": ensemble_words(original),
        "original_bytes": f"{original_bytes:,}", "size_ratio": f"{original_bytes / compact_bytes:.0f}",
        "folder_bytes": f"{facts['handin_hw8']['bytes']:,}", "folder_log": f"`{facts['handin_hw8']['log']}`",
        "n_val_clean": f"{compact_held['n_clean']:,}", "n_val": f"{compact_held['n_val']:,}",
        "original_n_val": f"{held['n_val']:,}", "test_set": r["test"]["set"],
        "compact_val": pct(compact_held["clean"]), "compact_test": pct(compact_public["accuracy"]),
        "original_val": pct(held["clean"]), "original_test": pct(public["accuracy"]),
        "accuracy_gap": f"{100 * (public['accuracy'] - compact_public['accuracy']):.1f}",
        "speed_comparison": speed_comparison(facts, [COMPACT], original),
        "compact_table": table(["model", "parameters", "file (bytes)", "held-out (split)", "Kaggle public",
                                "wall, test.csv"],
                               [[f"{set_name(original)} (int8)", f"{original_params:,}", f"{original_bytes:,}",
                                 f"{pct(held['clean'])} ({SPLIT_NAME[held['split']]})", pct(public["accuracy"]),
                                 seconds(facts, original)],
                                [f"{COMPACT} (MobileNet-style, {bits}-bit)", f"{count_parameters(model):,}",
                                 f"{compact_bytes:,}", f"{pct(compact_held['clean'])} ({split})",
                                 pct(compact_public["accuracy"]), seconds(facts, [COMPACT])]]),
        "compact_params": f"{count_parameters(model):,}", "compact_folded_params": f"{count_parameters(folded):,}",
        "compact_bits": bits, "compact_small_bits": small_bits,
        "compact_stem": config["channels"][0], "compact_stages": len(config["channels"]),
        "compact_blocks": config.get("blocks_per_stage", 2), "compact_channels": "-".join(map(str, config["channels"])),
        "compact_dropout": config.get("dropout", 0.2), "compact_epochs": compact_run["epochs_run"],
        "compact_lr": compact_run["args"]["lr"], "compact_alpha": compact_run["args"]["distill_alpha"],
        "compact_hard": f"{1 - compact_run['args']['distill_alpha']:g}",
        "compact_temperature": f"{compact_run['args']['temperature']:g}", "compact_minutes": minutes(compact_run),
        "teachers": listed([f"`{t}`" for t in teachers(compact_run)]), "int8_clean": pct(facts["int8_source"]["clean"]),
        "compact_layer_table": layer_table(COMPACT),
        "n_sizes": " and ".join(f"{sum(m['arch'] == arch for m in sweep)} of the {name}"
                                for arch, name in (("mobilenet", "MobileNet-style network"), ("vgg", "plain CNN"))),
        "short_epochs": runs[experiments.BASE]["epochs_run"], "short_schedule": " ".join(experiments.SHORT),
        "size_answer": size_answer(sweep),
        "sweep_table": table(["model", "parameters", "int8 file, raw (bytes)", "held-out, int8", "dropout", "training"],
                             [[m["name"], f"{m['params']:,}", f"{m['int8_bytes']:,}", pct(m["int8_val_acc_tta"]),
                               f"{runs[m['name']]['args']['dropout']:g}", "bf16" if runs[m["name"]]["bf16"] else "fp32"]
                              for m in sorted(sweep, key=lambda m: (m["arch"], m["params"]))]),
        "seed_std": f"{100 * sigma:.2f}", "noise_bar": f"{100 * bar:.1f}", "n_seeds": len(seed_spread(runs)[0]),
        "confound_sentence": confound_sentence(sweep, runs),
        "matched_answer": matched_answer(sweep, bar), "matched_sentence": matched_sentence(sweep, runs, bar),
    }


# ---------------------------------------------------------------- building

VALUES = {"hw2": hw2_values, "dlss": dlss_values, "hw8": hw8_values}
HEADER_FIELDS = {"hw2": ["department", "student_id", "name"], "dlss": ["name", "student_id"],
                 "hw8": ["name", "student_id"]}


def render(report: str, results: Path, fields: dict[str, str | None] | None = None) -> str:
    """A report's markdown: its template filled from results/ (and the model files), nothing else."""
    fields = fields or {}
    values = {"identity": identity(fields, HEADER_FIELDS[report]), **VALUES[report](read_results(results))}
    if report == "hw2":
        values["collaborators"] = identity(fields, ["collaborators"])
    return (TEMPLATES / f"{report}.md").read_text().format_map(values)


def make_figures(results: Path, data: Path, test: Path, out: Path) -> None:
    """Every PNG of FIGURES in out, from results/, the faces of the training and test files and a network's maps."""
    r = read_results(results)
    runs, rows, clean = r["runs"], r["rows"], r["clean"]
    default = default_models()
    faces = read_faces(data, require_labels=True)
    images, labels = faces.images[:, 0].numpy(), faces.labels.numpy()
    figures.plot_class_counts(np.array(r["facts"]["counts"]), out / "class_counts.png")
    figures.plot_samples(images, labels, out / "samples.png")
    figures.plot_curves({stem(n): runs[n] for n in default}, out / "curves_best.png")
    figures.plot_curves({n: runs[n] for n in (experiments.BASE, "mlp_matched", "mlp_matched_own_recipe")},
                        out / "cnn_vs_mlp.png")
    figures.plot_long(runs, long_arms(runs, r["long"]), out / "tricks.png")
    public = r["test"]["sets"][key(default)]
    figures.plot_confusion(np.array(public["confusion"]), out / "confusion.png")
    test_faces = read_faces(test)
    wanted = {i for ids in public["examples"].values() for i in ids}
    by_id = {int(i): test_faces.images[k, 0].numpy() for k, i in enumerate(test_faces.ids) if int(i) in wanted}
    figures.plot_confusion_examples(by_id, public["examples"], out / "confusions_examples.png")
    figures.plot_activations(load_model(WEIGHTS / map_model(default))[0], images[rows[clean]], r["y"][clean],
                             out / "activations.png")
    figures.plot_size_sweep(r["sweep"], r["compact_ref"], out / "size_vs_accuracy.png")


def check_layout(report: str, layout: dict) -> None:
    """Warn where a report runs past its assignment's page limits."""
    limits = PAGE_LIMITS.get(report, {})
    for heading, page in layout["headings"].items():
        for prefix, last_page in limits.items():
            if heading.startswith(prefix) and page > last_page:
                print(f"warning: {report}.pdf: '{heading}' starts on page {page}, after page {last_page}")
    if "total" in limits and layout["pages"] > limits["total"]:
        print(f"warning: {report}.pdf: {layout['pages']} pages, over {limits['total']}")


def build(results: Path, data: Path, test: Path, out: Path, fields: dict[str, str | None] | None = None) -> dict:
    """Every figure, then each report's markdown, Typst source and PDF, in out; each report's layout."""
    out.mkdir(parents=True, exist_ok=True)
    make_figures(results, data, test, out)
    layouts = {}
    for report in REPORTS:
        md = out / f"{report}.md"
        with atomic_write(md, "w") as f:
            f.write(render(report, results, fields))
        layouts[report] = markdown_to_pdf(md, md.with_suffix(".pdf"))
        check_layout(report, layouts[report])
        print(f"{md.with_suffix('.pdf')}: {layouts[report]['pages']} pages")
    return layouts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=TRAIN, help="the training CSV the runs used")
    p.add_argument("--test", type=Path, default=TEST, help="the test file: an id,feature file (labelled by "
                   "--test-labels) or a challenge file whose PrivateTest rows are the test set")
    p.add_argument("--test-labels", type=Path, default=TEST_LABELS, help="id,label of the test file's labelled rows")
    p.add_argument("--results", type=Path, default=HERE / "results", help="the logged results to build from")
    p.add_argument("--out", type=Path, default=HERE, help="where the reports and the figures go")
    p.add_argument("--name", help="the student's name, for each header")
    p.add_argument("--student-id", help="the student ID, for each header")
    p.add_argument("--department", help="department and year, for the HW2 header")
    p.add_argument("--collaborators", help="for the HW2 header")
    p.add_argument("--collect", action="store_true", help="first summarise runs/ and the logs into --results")
    p.add_argument("--facts", action="store_true", help="first re-read only the logs (speed, hand-in) and the "
                   "training file's counts into --results/facts.json, scoring no model")
    p.add_argument("--rerun", action="store_true", help="first train the runs that runs/ lacks, then collect")
    args = p.parse_args()
    for path in (args.data, args.test):
        if not path.exists():
            raise SystemExit(f"make_report: error: {path}: not found (pass --data or --test)")
    start = time.time()
    if args.rerun:
        for name in experiments.EXPERIMENTS:
            if not experiments.finished(name):
                experiments.run(name, str(args.data))
    if args.rerun or args.collect or args.facts:
        faces = read_faces(args.data, require_labels=True)
        if args.rerun or args.collect:
            collect(faces, duplicate_groups(faces.images), args.results, args.test, args.test_labels)
        else:
            collect_facts(faces, duplicate_groups(faces.images), args.results)
    fields = {"name": args.name, "student_id": args.student_id, "department": args.department,
              "collaborators": args.collaborators}
    build(args.results, args.data, args.test, args.out, fields)
    print(f"wrote {', '.join(REPORTS)} (.md, .typ, .pdf) and {len(FIGURES)} figures in {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
