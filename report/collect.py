"""Summarise runs/, the released models and the committed logs into report/results/, the small files the reports
are built from (make_report.py --collect). A file whose run checkpoints are gone (runs/**/*.pt are not
committed) is kept as it is.
"""

import csv
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from bench.test_score import read_labels
from compact_int8 import read_compact, write_compact
from dataset import CLASS_NAMES, Faces, read_faces, recorded_split
from model import build_model, count_parameters
from predict import chosen_models, parse_args, predict_proba, released
from quantized import load_model
from report import experiments
from tools.quantize import quantize
from utils import atomic_write

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights"
K = len(CLASS_NAMES)
SPLIT = {"method": "stratified", "val_fraction": 0.1, "seed": 0}  # the row split of the compact model and short runs
COMPACT = Path(released("compact")[0]).name  # the HW8 model
SWEEP = ["vgg4", "vgg6", "vgg8", "vgg12", "vgg16", "mobilenet8", "mobilenet16", "mobilenet24",
         "mobilenet32"]  # the size sweep: both families, their parameter ranges overlapping
SPEED_LOGS = ROOT / "runs" / "speed"  # python -m bench.speed's logs, each opening with its `$ command`
SPEED_COMMAND = re.compile(r"^\$ (?P<env>(?:\w+=\S+ +)*)\S*python3? -m bench\.speed\b(?P<args>[^#\n]*)", re.MULTILINE)
SPEED_HEADER = re.compile(r"^torch (?P<torch>\S+), (?P<threads>\d+) threads, python (?P<python>\S+); (?P<cpu>.+)$",
                          re.MULTILINE)
SPEED_FILES = re.compile(r"^reference: (?P<reference>[^;]+); default: (?P<default>[^;]+); fast: (?P<fast>[^;]+);",
                         re.MULTILINE)
SPEED_LINE = re.compile(r"^(?P<option>\w+) +(?P<seconds>[\d.]+) s +(?P<ratio>[\d.]+)x the reference +\(min "
                        r"(?P<min>[\d.]+), max (?P<max>[\d.]+), n=(?P<n>\d+); byte-identical: (?P<same>True|False)\)",
                        re.MULTILINE)
HANDIN_LOG = ROOT / "runs" / "handin" / "hw8.log"  # tools/handin.py hw8 and `du -sb` of the folder it writes
BITS_JSON = ROOT / "runs" / "compact" / "bits.json"  # the compact model at each bit width, the int8 file first
INT8_SOURCE = "compact_int8.q8"  # bits.json's name of the int8 file the k-bit one was written from
MLP_TRIALS = ROOT / "research" / "mlp_recipe"  # the MLP recipe's 15-epoch trials
EXAMPLES = 6  # test faces kept per common confusion, for the figure


def write_json(obj: object, path: Path) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=1)


def chosen(*flags: str) -> list[str]:
    """The file names of the models hw2_test.sh uses with these flags, as predict.py chooses them."""
    return [Path(m).name for m in chosen_models(parse_args(["test.csv", "pred.csv", *flags]))]


def default_models() -> list[str]:
    """What hw2_test.sh uses without flags."""
    return chosen()


def fast_models() -> list[str]:
    """What hw2_test.sh --fast uses."""
    return chosen("--fast")


def released_networks() -> list[str]:
    """Every released expression network of weights/MANIFEST (the .q8 files; the .pt are the face detector's)
    but the compact model."""
    names = [line.split()[0] for line in (WEIGHTS / "MANIFEST").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    return [n for n in names if n.endswith(".q8") and n != COMPACT]


def key(names: list[str]) -> str:
    """The results files' name of a set of models (an ensemble when several)."""
    return "+".join(names)


def model_sets() -> list[list[str]]:
    """The ensembles the reports score: the default, --fast, and every released network where that differs."""
    sets = []
    for names in (default_models(), fast_models(), released_networks()):
        if sorted(names) not in map(sorted, sets):
            sets.append(names)
    return sets


# ---------------------------------------------------------------- per-run histories

def wall_seconds(h: dict) -> float | None:
    """A run's wall time: its process's, or for a run resumed across sessions (whose process saw only the last
    part) at least the sum of its epochs."""
    if h.get("wall_seconds") is None:
        return None
    return max(h["wall_seconds"], h.get("elapsed", 0.0))


def summarize_history(history_path: Path) -> dict:
    h = json.loads(history_path.read_text())
    epochs = h["history"]
    return {"params": h["params"], "device": h["device"], "bf16": h["bf16"], "git_commit": h["git_commit"],
            "torch": h.get("torch"), "split": h["split"]["method"],
            "args": {k: v for k, v in h["args"].items() if k not in ("train_csv", "out", "resume", "force")},
            "best_epoch": h["best_epoch"], "epochs_run": h["epoch"], "val_acc": h["best_val_acc"],
            "val_acc_tta": h.get("best_val_acc_tta"), "last_val_acc": epochs[-1]["val_acc"],
            "wall_seconds": wall_seconds(h), "history": epochs}


def histories() -> dict[Path, dict]:
    """Every finished training history under runs/."""
    found = {}
    for path in sorted((ROOT / "runs").rglob("*.json")):
        try:
            h = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(h, dict) and h.get("finished") and "history" in h and "best_val_acc" in h:
            found[path] = h
    return found


def history_of(model_file: Path, found: dict[Path, dict]) -> Path:
    """The history of the run a released file came from: the one whose commit, kept epoch and held-out accuracy
    the file records."""
    header = load_model(model_file)[1]
    hits = [p for p, h in found.items() if h["git_commit"] == header["git_commit"]
            and h["best_epoch"] == header["epoch"] and abs(h["best_val_acc"] - header["val_acc"]) < 1e-9]
    if len(hits) != 1:
        raise SystemExit(f"make_report: {model_file}: {len(hits)} training histories under runs/ match it, not one")
    return hits[0]


def collect_runs(results: Path) -> None:
    """results/runs.json: a summary of the runs the reports draw: the released networks' (by file name) and the
    report's experiments."""
    found = histories()
    runs = {name: summarize_history(history_of(WEIGHTS / name, found)) for name in [*released_networks(), COMPACT]}
    runs |= {name: summarize_history(experiments.RUNS / f"{name}.json") for name in experiments.EXPERIMENTS
             if experiments.finished(name)}
    write_json({"runs": runs}, results / "runs.json")


# ---------------------------------------------------------------- held-out scores

def per_class_scores(labels: np.ndarray, predicted: np.ndarray) -> dict:
    """Accuracy, macro-F1, per-class precision, recall, F1 and support (0 where undefined), and the confusion
    matrix (counts[true][predicted])."""
    cm = np.bincount(labels * K + predicted, minlength=K * K).reshape(K, K)
    tp = np.diag(cm).astype(float)
    precision = np.divide(tp, cm.sum(0), out=np.zeros_like(tp), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros_like(tp), where=cm.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=precision + recall > 0)
    return {"accuracy": float(tp.sum() / cm.sum()), "macro_f1": float(f1.mean()), "precision": precision.tolist(),
            "recall": recall.tolist(), "f1": f1.tolist(), "support": cm.sum(1).tolist(), "confusion": cm.tolist()}


def logit_adjusted(probs: np.ndarray, prior: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """Menon et al. 2021: arg-max of log p(y|x) - tau log p(y) (the balanced-error decision for tau = 1)."""
    return (np.log(np.clip(probs, 1e-12, None)) - tau * np.log(prior)).argmax(1)


class HeldOut:
    """The held-out faces of a split, which of them have a copy in its training part, and each model's
    flip-TTA probabilities on them (fp32, as predict.py computes them), scored once however many tables
    use the model."""

    def __init__(self, faces: Faces, groups: np.ndarray, split: dict = SPLIT):
        self.method = split["method"]
        train_idx, self.rows = recorded_split(faces, split)
        self.images, self.labels = faces.images[self.rows], faces.labels[self.rows].numpy()
        self.clean = ~np.isin(groups[self.rows], groups[train_idx])  # no copy of the face in the training part
        self.prior = np.bincount(faces.labels[train_idx].numpy(), minlength=K) / len(train_idx)
        self.scored: dict[Path, np.ndarray] = {}

    def probs(self, *paths: Path) -> np.ndarray:
        """Mean probabilities of the models (an ensemble when several)."""
        for p in paths:
            if p not in self.scored:
                self.scored[p] = predict_proba(load_model(p)[0], self.images).numpy()
        return np.mean([self.scored[p] for p in paths], axis=0)

    def right(self, *paths: Path) -> np.ndarray:
        """Per held-out face, whether the models' (mean) arg-max is its label."""
        return self.probs(*paths).argmax(1) == self.labels

    def accuracy(self, *paths: Path, clean: bool = False) -> float:
        """Accuracy on every held-out face, or (clean) on those without a copy in the training part."""
        right = self.right(*paths)
        return float(right[self.clean].mean() if clean else right.mean())


def split_of(name: str) -> dict:
    return load_model(WEIGHTS / name)[1]["split"]


def scored(h: HeldOut, paths: list[Path]) -> dict:
    """A model's (or an ensemble's) held-out accuracy on the whole split, on its faces without a copy in the
    training part and on those with one (None where there are none)."""
    right = h.right(*paths)
    copies = right[~h.clean]
    return {"split": h.method, "n_val": len(right), "n_clean": int(h.clean.sum()), "all": float(right.mean()),
            "clean": float(right[h.clean].mean()), "copies": float(copies.mean()) if len(copies) else None}


def collect_released(faces: Faces, groups: np.ndarray, results: Path) -> tuple[HeldOut, HeldOut]:
    """results/released.json: each released model on its own split, and each scored set of models on the split its
    members share (None where they differ); results/heldout_default.csv: the default's probabilities per held-out
    face. Returns the default's held-out faces (its probabilities kept) and those of the row split (SPLIT)."""
    splits: dict[str, HeldOut] = {}

    def held(split: dict) -> HeldOut:
        s = json.dumps(split, sort_keys=True)
        if s not in splits:
            splits[s] = HeldOut(faces, groups, split)
        return splits[s]

    models = {name: scored(held(split_of(name)), [WEIGHTS / name]) for name in [*released_networks(), COMPACT]}
    sets = {}
    for names in model_sets():
        found = {json.dumps(split_of(n), sort_keys=True) for n in names}
        sets[key(names)] = scored(held(json.loads(found.pop())), [WEIGHTS / n for n in names]) if len(found) == 1 \
            else None
    write_json({"models": models, "sets": sets}, results / "released.json")
    default = default_models()
    h = held(split_of(default[0]))
    paths = [WEIGHTS / n for n in default]
    with atomic_write(results / "heldout_default.csv", "w") as f:
        w = csv.writer(f)
        w.writerow(["row", "label", "copy_in_train", *[f"p_{c}" for c in CLASS_NAMES]])
        w.writerows([r, y, int(not c), *np.round(p, 5)] for r, y, c, p in
                    zip(h.rows.tolist(), h.labels.tolist(), h.clean, h.probs(*paths), strict=True))
    return h, held(SPLIT)


# ---------------------------------------------------------------- the test set

def test_set(path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(images, labels, ids, description) of the test set: the PrivateTest rows of a challenge file with a Usage
    column (icml_face_data.csv, fer2013.csv: DLSS's protocol, PublicTest being the validation), else the
    rows of an id,feature test file whose ids the id,label file labels (Kaggle's public half)."""
    faces = read_faces(path)
    if faces.usage is not None:
        rows = np.flatnonzero(faces.usage == "PrivateTest")
        if faces.labels is None or not len(rows):
            raise SystemExit(f"make_report: error: {path}: no labelled PrivateTest rows to test on")
        return (faces.images[rows], faces.labels[rows].numpy(), faces.ids[rows],
                f"the {len(rows):,} PrivateTest rows of `{path.name}`")
    labels = read_labels(labels_path, "label file")
    position = pd.Series(np.arange(len(faces.ids)), index=faces.ids)
    unknown = labels.index.difference(position.index)
    if len(unknown):
        raise SystemExit(f"make_report: error: {labels_path}: id {unknown[0]} is not in {path}")
    rows = position.loc[labels.index].to_numpy().copy()  # a writable array: torch indexes with it
    return (faces.images[rows], labels.to_numpy(), faces.ids[rows],
            f"the public half of `{path.name}` ({len(rows):,} faces, ids {labels.index.min()}..{labels.index.max()}, "
            f"labels from `{labels_path.name}`), the faces Kaggle's public score is computed on")


def top_confusions(cm: np.ndarray, n: int = 3) -> list[tuple[int, int, float]]:
    """The n largest off-diagonal row-normalised cells: (true, predicted, fraction of the true class)."""
    norm = cm / cm.sum(1, keepdims=True).clip(1)
    np.fill_diagonal(norm, 0)
    order = np.argsort(norm, axis=None)[::-1][:n]
    return [(int(i // K), int(i % K), float(norm.flat[i])) for i in order]


def collect_test(test_path: Path, labels_path: Path, results: Path) -> None:
    """results/test.json: scores of every released model and each scored set on the test set, with flip TTA as
    hw2_test.sh predicts, and for each set the ids of a few faces of its commonest confusions. Run once the
    models are chosen: nothing is selected on these labels."""
    images, labels, ids, description = test_set(test_path, labels_path)
    probs = {name: predict_proba(load_model(WEIGHTS / name)[0], images).numpy()
             for name in [*released_networks(), COMPACT]}
    sets = {}
    for names in model_sets():
        predicted = np.mean([probs[n] for n in names], axis=0).argmax(1)
        scores = per_class_scores(labels, predicted)
        examples = {f"{t},{p}": ids[(labels == t) & (predicted == p)][:EXAMPLES].tolist()
                    for t, p, _ in top_confusions(np.array(scores["confusion"]))}
        sets[key(names)] = {**scores, "examples": examples}
    write_json({"set": description, "n": len(labels),
                "models": {n: per_class_scores(labels, p.argmax(1)) for n, p in probs.items()}, "sets": sets},
               results / "test.json")


# ---------------------------------------------------------------- the report's experiments

def missing(paths: list[Path], what: Path) -> bool:
    """Whether a checkpoint behind results/what is gone (runs/**/*.pt are not committed): then what is kept."""
    gone = [p for p in paths if not p.exists()]
    if gone:
        print(f"kept {what}: {len(gone)} checkpoint(s) missing, e.g. {gone[0]}")
    return bool(gone)


def compact_sweep_entry(name: str, checkpoint: Path, held: HeldOut, tmp: Path) -> dict:
    """Size and held-out accuracy of one model, fp32 and as the int8 file tools/quantize.py writes."""
    model, ckpt = load_model(checkpoint)
    quantize(str(checkpoint), str(tmp), max_bytes=10**9)
    # the raw (format 1) size measures the model, as the sweep's records from before files were deflated do
    int8_bytes = write_compact(tmp, *read_compact(tmp), deflate=False)
    int8_acc, int8_clean = held.accuracy(tmp), held.accuracy(tmp, clean=True)
    held.scored.pop(tmp)  # the next model's int8 file reuses the name
    tmp.unlink()
    return {"name": name, "arch": ckpt["config"]["arch"], "channels": ckpt["config"]["channels"],
            "params": count_parameters(model), "checkpoint_bytes": checkpoint.stat().st_size,
            "int8_bytes": int8_bytes, "val_acc_tta": held.accuracy(checkpoint), "int8_val_acc_tta": int8_acc,
            "val_acc_tta_clean": held.accuracy(checkpoint, clean=True), "int8_val_acc_tta_clean": int8_clean,
            "schedule": " ".join(experiments.SHORT)}


def collect_sweep(held: HeldOut, path: Path) -> None:
    """path: the size sweep's models on the row split (each entry kept as recorded where its checkpoint is gone),
    and the shipped compact model on the same split, for reference."""
    recorded = {m["name"]: m for m in json.loads(path.read_text())["models"]} if path.exists() else {}
    sweep = []
    for name in (n for n in SWEEP if experiments.finished(n)):
        checkpoint = experiments.RUNS / f"{name}.pt"
        if checkpoint.exists():
            sweep.append(compact_sweep_entry(name, checkpoint, held, path.parent / ".sweep.q8"))
        elif name in recorded:
            print(f"kept the sweep's {name}: {checkpoint} missing")
            sweep.append(recorded[name])
    config = load_model(WEIGHTS / COMPACT)[1]["config"]
    compact = {"name": COMPACT, "arch": config["arch"], "params": count_parameters(build_model(config)),  # as trained
               "bytes": (WEIGHTS / COMPACT).stat().st_size, "val_acc_tta": held.accuracy(WEIGHTS / COMPACT)}
    write_json({"split": SPLIT, "models": sweep, "compact": compact}, path)


def decision_rows(model: str, labels: np.ndarray, probs: np.ndarray, prior: np.ndarray, faces: str) -> list[dict]:
    """Scores of the arg-max and (but for a class-weighted model) the logit-adjusted decision."""
    rows = [{"model": model, "decision": "arg-max", "faces": faces, **per_class_scores(labels, probs.argmax(1))}]
    if "class-weighted" not in model:
        rows.append({"model": model, "decision": "logit-adjusted (tau = 1)", "faces": faces,
                     **per_class_scores(labels, logit_adjusted(probs, prior))})
    return rows


DEFAULT_ROWS = "the default"  # the imbalance rows' name of the default ensemble


def collect_imbalance(default: HeldOut, rows_split: HeldOut, path: Path) -> None:
    """path: the decision rules for the default ensemble on its own split, whose held-out faces have no copy in its
    training part, and for the base short run with and without a class-weighted loss on the row split's
    duplicate-free part; a short run whose checkpoint is gone keeps its recorded rows."""
    kept = json.loads(path.read_text())["rows"] if path.exists() else []
    probs = default.probs(*[WEIGHTS / n for n in default_models()])
    rows = decision_rows(DEFAULT_ROWS, default.labels[default.clean], probs[default.clean], default.prior,
                         f"{default.method} split")
    for run, label in ((experiments.BASE, experiments.BASE),
                       (f"{experiments.BASE}_class_weighted", f"{experiments.BASE}, class-weighted loss")):
        checkpoint = experiments.RUNS / f"{run}.pt"
        if checkpoint.exists():
            probs = rows_split.probs(checkpoint)[rows_split.clean]
            rows += decision_rows(label, rows_split.labels[rows_split.clean], probs, rows_split.prior,
                                  "duplicate-free part")
        else:
            print(f"kept the decision rows of {label}: {checkpoint} missing")
            rows += [r for r in kept if r["model"] == label]
    write_json({"prior": default.prior.tolist(), "rows": rows}, path)


def collect_long(faces: Faces, groups: np.ndarray, path: Path) -> None:
    """path: the longer ablations' ensembles, per arm the first 1, 2 and 3 seeds' mean probabilities, on the
    split the runs record; kept as it is when a checkpoint is gone."""
    arms = {arm: [f"{arm}_s{s}" for s in experiments.LONG_SEEDS if experiments.finished(f"{arm}_s{s}")]
            for arm in experiments.LONG_ARMS}
    names = [n for run_names in arms.values() for n in run_names]
    if not names or missing([experiments.RUNS / f"{n}.pt" for n in names], path):
        return
    split = json.loads((experiments.RUNS / f"{names[0]}.json").read_text())["split"]
    held = HeldOut(faces, groups, split)
    ensembles = {arm: {str(k): held.accuracy(*[experiments.RUNS / f"{n}.pt" for n in names[:k]])
                       for k in range(1, len(names) + 1)} for arm, names in arms.items()}
    write_json({"split": split, "n_val": len(held.rows), "n_val_with_copy": int((~held.clean).sum()),
                "runs": arms, "val_acc_tta": ensembles}, path)


def collect_ensembles(held: HeldOut, path: Path) -> None:
    """path: ensembles of the first 1, 3 and 5 seeds of the base short run; kept when a checkpoint is gone."""
    seed_runs = [experiments.RUNS / f"{n}.pt" for n in experiments.SEEDS if experiments.finished(n)]
    if not missing(seed_runs, path):
        write_json({"base": experiments.BASE,
                    "val_acc_tta": {str(k): held.accuracy(*seed_runs[:k]) for k in (1, 3, 5) if len(seed_runs) >= k}},
                   path)


# ---------------------------------------------------------------- facts from the data file and the logs

def commit_time(path: Path) -> int:
    """When path was last committed (Unix seconds; 0 if never): the order of the logs."""
    out = subprocess.run(["git", "log", "-1", "--format=%ct", "--", str(path)], cwd=ROOT, capture_output=True,
                         text=True, check=False).stdout.strip()
    return int(out) if out else 0


def speed_runs(text: str, log: str) -> list[dict]:
    """Each `python -m bench.speed` run a log holds: its command, the ISA it was held to (ONEDNN_MAX_CPU_ISA, or
    None), torch, Python and CPU, and per option its models (file names, from the run's own header line), the
    median, min and max wall seconds (start-up included), the ratio to the reference, the number of repeats and
    whether every repeat wrote the same bytes. A run with no figures yet is skipped."""
    runs = []
    commands = list(SPEED_COMMAND.finditer(text))
    for m, after in zip(commands, [*commands[1:], None], strict=True):
        block = text[m.start():after.start() if after else len(text)]
        header, files = SPEED_HEADER.search(block), SPEED_FILES.search(block)
        lines = list(SPEED_LINE.finditer(block))
        if not (header and files and lines):
            continue
        models = {name: [n.strip() for n in files[name].split(",")] for name in ("reference", "default", "fast")}
        models["compact"] = [COMPACT]
        isa = re.search(r"ONEDNN_MAX_CPU_ISA=(\w+)", m["env"])
        runs.append({"log": log, "command": m[0].removeprefix("$ ").strip(), "isa": isa[1] if isa else None,
                     "torch": header["torch"], "python": header["python"], "threads": int(header["threads"]),
                     "cpu": header["cpu"], "options": {
                         line["option"]: {"models": models.get(line["option"]), "seconds": float(line["seconds"]),
                                          "ratio": float(line["ratio"]), "min": float(line["min"]),
                                          "max": float(line["max"]), "n": int(line["n"]),
                                          "identical": line["same"] == "True"} for line in lines}})
    return runs


def speed_logs() -> list[dict]:
    """Every bench.speed run in runs/speed/, with when its log was committed (0: not yet)."""
    return [{**run, "committed": commit_time(log)} for log in sorted(SPEED_LOGS.glob("*.log"))
            for run in speed_runs(log.read_text(), str(log.relative_to(ROOT)))]


def handin_size() -> dict:
    """The last `du -sb` of the HW8 folder in its log, and the log."""
    sizes = re.findall(r"^(\d+)\t\S+$", HANDIN_LOG.read_text(), re.MULTILINE)
    return {"bytes": int(sizes[-1]), "log": str(HANDIN_LOG.relative_to(ROOT))}


def int8_source() -> dict:
    """The held-out accuracy (flip TTA, row split) of the int8 file the k-bit compact model was written from."""
    entry = next(m for m in json.loads(BITS_JSON.read_text())["models"] if Path(m["model"]).name == INT8_SOURCE)
    return {"all": entry["val_acc_tta"], "clean": entry["val_acc_tta_clean"], "log": str(BITS_JSON.relative_to(ROOT))}


def collect_facts(faces: Faces, groups: np.ndarray, results: Path) -> None:
    """results/facts.json: what the text needs besides the runs and the scores: class counts, duplicates, the
    speed logs, the HW8 folder's size, the compact model's int8 source and the MLP trials (no model is run)."""
    trials = {}
    for history in sorted(MLP_TRIALS.glob("*.json")):
        h = json.loads(history.read_text())
        trials[history.stem] = {"no_augment": h["args"]["no_augment"], "lr": h["args"]["lr"],
                                "epochs": h["epoch"], "val_acc": h["best_val_acc"]}
    write_json({"counts": np.bincount(faces.labels.numpy(), minlength=K).tolist(),
                "n_distinct": int(groups.max() + 1), "speed": speed_logs(), "handin_hw8": handin_size(),
                "int8_source": int8_source(), "mlp_trials": trials}, results / "facts.json")


def collect(faces: Faces, groups: np.ndarray, results: Path, test: Path, test_labels: Path) -> None:
    """Every results file, from runs/, the released models, the logs, the training faces and the test set."""
    results.mkdir(parents=True, exist_ok=True)
    collect_runs(results)
    default, rows_split = collect_released(faces, groups, results)
    collect_ensembles(rows_split, results / "ensembles.json")
    collect_long(faces, groups, results / "long.json")
    collect_imbalance(default, rows_split, results / "imbalance.json")
    collect_sweep(rows_split, results / "compact_sweep.json")
    collect_facts(faces, groups, results)
    collect_test(test, test_labels, results)
