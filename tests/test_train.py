import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, write_test_csv, write_train_csv

import predict
import train
from compact_int8 import save_compact
from model import build_model, count_parameters, load_checkpoint
from quantized import load_model

TINY_MODEL = ["--channels", "8,16", "--hidden", "32", "--batch-size", "32", "--bf16", "off"]
TINY = [*TINY_MODEL, "--no-augment"]  # a mirrored bar is another class's bar: flips would change the labels


def run(csv: Path, out: Path, *flags: str, model: list[str] = TINY) -> dict:
    return train.main([str(csv), "--out", str(out), *model, *flags])


def curve(result: dict) -> list[tuple]:
    return [(h["train_loss"], h["train_acc"], h["val_loss"], h["val_acc"]) for h in result["history"]]


def test_a_small_model_learns_a_separable_task(tmp_path: Path) -> None:
    csv = write_train_csv(tmp_path / "train.csv", n=700)
    result = run(csv, tmp_path / "m.pt", "--epochs", "6", "--lr", "0.05")
    assert result["best_val_acc"] >= 0.6  # chance is 1/7
    assert result["n_val"] == 70 and result["split"] == {"method": "grouped", "val_fraction": 0.1, "seed": 0}
    history = json.loads((tmp_path / "m.json").read_text())
    assert history["finished"] and len(history["history"]) == 6
    assert not (tmp_path / "m.resume.pt").exists()


def test_a_model_trained_on_crops_learns_and_predicts_on_crops(tmp_path: Path) -> None:
    csv = write_train_csv(tmp_path / "train.csv", n=700)
    result = run(csv, tmp_path / "m.pt", "--epochs", "6", "--lr", "0.05", "--crop", "40")  # (the centre crop)
    checkpoint = load_checkpoint(tmp_path / "m.pt")
    assert checkpoint["config"]["side"] == 40 and checkpoint["val_acc_crops"] == result["best_val_acc_crops"]
    assert result["best_val_acc"] >= 0.6  # chance is 1/7; (ten views mirror the bars, which here changes the class)
    assert all(h["train_faces_per_s"] > 0 for h in result["history"])
    predict.main([str(csv), str(tmp_path / "pred.csv"), "--model", str(tmp_path / "m.pt"), "--tta", "crops"])
    assert len((tmp_path / "pred.csv").read_text().splitlines()) == 701


def test_a_small_resnet_learns_and_its_int8_file_predicts_alike(tmp_path: Path) -> None:
    csv = write_train_csv(tmp_path / "train.csv", n=700)
    resnet = ["--arch", "resnet", "--channels", "8,16", "--convs-per-stage", "1", *TINY[2:]]
    result = run(csv, tmp_path / "m.pt", "--epochs", "6", "--lr", "0.05", model=resnet)
    assert result["best_val_acc"] >= 0.6  # chance is 1/7
    model, checkpoint = load_model(tmp_path / "m.pt")
    assert checkpoint["config"]["arch"] == "resnet" and checkpoint["config"]["blocks_per_stage"] == 1
    save_compact(model, checkpoint["config"], tmp_path / "m.q8")
    for name in ("m.pt", "m.q8"):
        predict.main([str(csv), str(tmp_path / f"{name}.csv"), "--model", str(tmp_path / name), "--tta", "none"])
    fp32, int8 = ((tmp_path / f"{name}.csv").read_text().splitlines() for name in ("m.pt", "m.q8"))
    assert sum(a != b for a, b in zip(fp32, int8, strict=True)) <= 7  # of 700 faces


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
def test_a_whitened_cnn_learns_keeps_its_stem_and_its_int8_file_predicts_alike(tmp_path: Path, arch: str) -> None:
    csv = write_train_csv(tmp_path / "train.csv", n=700)
    shape = ("--arch", arch, "--convs-per-stage", "1") if arch == "resnet" else ()
    result = run(csv, tmp_path / "m.pt", "--epochs", "6", "--lr", "0.05", "--stem", "whiten", *shape)
    assert result["best_val_acc"] >= 0.6  # chance is 1/7
    run(csv, tmp_path / "short.pt", "--epochs", "1", "--lr", "0.05", "--stem", "whiten", *shape)
    (model, checkpoint), (short, _) = load_model(tmp_path / "m.pt"), load_model(tmp_path / "short.pt")
    assert checkpoint["config"]["stem"] == "whiten"
    stem, short_stem = model.features[1], short.features[1]
    assert torch.equal(stem.weight, short_stem.weight)  # set from the same faces, then kept: only its bias learnt
    assert not torch.equal(stem.bias, short_stem.bias) and not torch.equal(model.features[3].weight,
                                                                           short.features[3].weight)
    save_compact(model, checkpoint["config"], tmp_path / "m.q8")
    for name in ("m.pt", "m.q8"):
        predict.main([str(csv), str(tmp_path / f"{name}.csv"), "--model", str(tmp_path / name), "--tta", "none"])
    fp32, int8 = ((tmp_path / f"{name}.csv").read_text().splitlines() for name in ("m.pt", "m.q8"))
    assert sum(a != b for a, b in zip(fp32, int8, strict=True)) <= 7  # of 700 faces


def test_a_whitening_stem_on_another_architecture_is_a_clear_error(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    csv = write_train_csv(tmp_path / "train.csv")
    with pytest.raises(SystemExit) as exit_info:
        run(csv, tmp_path / "m.pt", "--epochs", "1", "--arch", "mobilenet", "--stem", "whiten")
    assert exit_info.value.code == 2 and "--stem whiten" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_without_norm_decay_only_conv_and_linear_weights_decay(tmp_path: Path) -> None:
    model = build_model({"arch": "vgg", "channels": [8, 16], "hidden": 32, "stem": "whiten"})
    decayed, spared = train.decay_groups(model, norm_decay=False)
    assert spared["weight_decay"] == 0.0 and "weight_decay" not in decayed  # (the optimiser's default decay)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d)]
    expected = {id(p) for m in norms for p in (m.weight, m.bias)} | {id(model.classifier[-1].bias),
                                                                      id(model.features[1].bias)}
    assert {id(p) for p in spared["params"]} == expected
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)][1:]  # (the stem: fixed)
    assert {id(p) for p in decayed["params"]} == {id(m.weight) for m in layers}
    assert [p for g in train.decay_groups(model, norm_decay=True) for p in g["params"]] == list(model.parameters())
    csv = write_train_csv(tmp_path / "train.csv", n=700)
    result = run(csv, tmp_path / "m.pt", "--epochs", "6", "--lr", "0.05", "--no-norm-decay")
    assert result["best_val_acc"] >= 0.6  # chance is 1/7


def test_progressive_resizing_trains_on_fewer_pixels_first_and_ends_on_the_crop(tmp_path: Path) -> None:
    csv = write_train_csv(tmp_path / "train.csv", n=700)
    four_stages = ["--channels", "8,8,16,16", *TINY[2:]]  # a 40-px crop ends 2x2, as any side from 32 px does
    result = run(csv, tmp_path / "m.pt", "--epochs", "8", "--lr", "0.05", "--crop", "40", "--progressive", "32",
                 model=four_stages)
    assert [h["train_pixels"] for h in result["history"]] == [32, 32, 32, 32, 36, 40, 40, 40]
    assert result["best_val_acc"] >= 0.6  # chance is 1/7
    assert load_checkpoint(tmp_path / "m.pt")["config"]["side"] == 40


@pytest.mark.parametrize("flags", [["--crop", "40", "--progressive", "31"], ["--crop", "40", "--progressive", "40"],
                                   ["--crop", "0", "--progressive", "32"], ["--crop", "40", "--progressive", "32", "--arch", "mlp"]])
def test_progressive_resizing_that_cannot_run_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                               flags: list[str]) -> None:
    csv = write_train_csv(tmp_path / "train.csv")
    with pytest.raises(SystemExit) as exit_info:
        run(csv, tmp_path / "m.pt", "--epochs", "1", "--channels", "8,8,16,16", *flags, model=TINY_MODEL)
    assert exit_info.value.code == 2 and "--progressive" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_early_stopping_stops_when_validation_stalls(tmp_path: Path) -> None:
    labels = np.random.default_rng(0).integers(0, 7, 280)  # random labels: nothing to learn
    csv = write_train_csv(tmp_path / "train.csv", labels=labels)
    result = run(csv, tmp_path / "m.pt", "--epochs", "30", "--patience", "2")
    assert result["stopped_early"] and len(result["history"]) < 30
    assert result["epoch"] == result["best_epoch"] + 2
    assert load_checkpoint(tmp_path / "m.pt")["epoch"] == result["best_epoch"]


def test_same_seed_same_history_and_resume_continues_exactly(tmp_path: Path) -> None:
    csv = write_train_csv(tmp_path / "train.csv")
    # every random part on: batch order, per-face augmentation, mixup or CutMix per batch, dropout
    flags = ("--epochs", "4", "--seed", "3", "--mixup", "0.4", "--cutmix", "1.0")
    reference = run(csv, tmp_path / "a.pt", *flags, model=TINY_MODEL)
    again = run(csv, tmp_path / "b.pt", *flags, model=TINY_MODEL)
    assert curve(again) == curve(reference)
    other_seed = run(csv, tmp_path / "o.pt", *flags[:2], "--seed", "4", *flags[4:], model=TINY_MODEL)
    assert curve(other_seed) != curve(reference)
    deterministic = run(csv, tmp_path / "d.pt", *flags, "--deterministic", model=TINY_MODEL)
    assert curve(deterministic) == curve(reference)  # on a CPU it changes nothing: every kernel already is

    kill_in_epoch_3(csv, tmp_path / "c.pt", *flags, model=TINY_MODEL)
    assert (tmp_path / "c.resume.pt").exists() and (tmp_path / "c.pt").exists()
    resumed = run(csv, tmp_path / "c.pt", *flags, "--resume", model=TINY_MODEL)
    assert curve(resumed) == curve(reference)
    assert not (tmp_path / "c.resume.pt").exists()


def test_a_resume_file_with_retired_settings_continues_its_run(tmp_path: Path) -> None:
    csv = write_train_csv(tmp_path / "train.csv")
    flags = ("--epochs", "4", "--seed", "3", "--mixup", "0.4")
    reference = run(csv, tmp_path / "a.pt", *flags)
    kill_in_epoch_3(csv, tmp_path / "c.pt", *flags)
    # the layout train.py wrote while it had --ema and --compile: an "ema" entry, and both among the settings
    resume = torch.load(tmp_path / "c.resume.pt", weights_only=True)
    resume = {**resume, "ema": None, "args": {**resume["args"], "ema": 0.0, "compile": False}}
    torch.save(resume, tmp_path / "c.resume.pt")
    resumed = run(csv, tmp_path / "c.pt", *flags, "--resume")
    assert curve(resumed) == curve(reference)
    assert "ema" not in resumed["args"] and "compile" not in resumed["args"]
    assert "ema" not in load_checkpoint(tmp_path / "c.pt")["train_args"]


def kill_in_epoch_3(csv: Path, out: Path, *flags: str, model: list[str] = TINY) -> None:
    """A run killed in epoch 3, after epoch 2's resume state was saved."""
    real_evaluate, calls = train.evaluate, []

    def evaluate_then_die_in_epoch_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "evaluate", evaluate_then_die_in_epoch_3)
        with pytest.raises(KeyboardInterrupt):
            run(csv, out, *flags, model=model)


def test_refuses_to_overwrite_a_finished_model(tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    out.write_bytes(b"a finished model")
    with pytest.raises(SystemExit) as exit_info:
        run(tmp_path / "any.csv", out, "--epochs", "1")
    assert exit_info.value.code == 2 and out.read_bytes() == b"a finished model"


def test_presets_set_defaults_and_flags_override_them() -> None:
    args = train.parse_args(["x.csv", "--preset", "full", "--epochs", "3"])
    assert args.epochs == 3 and args.batch_size == train.PRESETS["full"]["batch_size"]
    assert args.channels == train.HPARAMS["channels"] and not args.preset_chosen


def test_without_a_preset_cuda_gets_full_and_a_cpu_gets_cpu(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert train.parse_args(["x.csv", "--device", "cuda"]).preset == "full"
    args = train.parse_args(["x.csv", "--device", "cpu"])
    assert args.preset == "cpu" and args.preset_chosen and args.epochs == train.PRESETS["cpu"]["epochs"]
    csv = write_train_csv(tmp_path / "train.csv")
    run(csv, tmp_path / "m.pt", "--epochs", "1", "--device", "cpu")
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line.startswith("preset: cpu (no --preset given")
    assert first_line.endswith("its --progressive 32 is off with these flags")  # the tiny net's last map differs


def test_the_cpu_presets_progressive_resizing_is_off_where_its_crop_or_net_differ() -> None:
    assert train.parse_args(["x.csv", "--preset", "cpu"]).progressive == 32
    for flags in (["--crop", "0"], ["--crop", "44"], ["--arch", "mlp"], ["--channels", "8,16"]):
        args = train.parse_args(["x.csv", "--preset", "cpu", *flags])
        assert args.progressive == 0 and args.preset_progressive_off, flags
    asked = train.parse_args(["x.csv", "--preset", "cpu", "--crop", "44", "--prog", "36"])  # (an abbreviation)
    assert asked.progressive == 36 and not asked.preset_progressive_off
    assert train.parse_args(["x.csv", "--preset", "cpu", "--progressive", "0"]).progressive == 0


def test_the_mlp_preset_is_matched_to_the_default_vgg() -> None:
    args = train.parse_args(["x.csv", "--preset", "mlp"])
    mlp, vgg = (count_parameters(build_model(train.model_config(a, 0.5, 0.2)))
                for a in (args, train.parse_args(["x.csv", "--preset", "full"])))
    assert abs(mlp - vgg) / vgg <= 0.01 and args.no_augment
    assert not train.parse_args(["x.csv", "--preset", "mlp", "--augment"]).no_augment  # flags override presets


def test_mixup_and_cutmix_still_learn(tmp_path: Path) -> None:
    csv = write_train_csv(tmp_path / "train.csv", n=700)
    result = run(csv, tmp_path / "m.pt", "--epochs", "6", "--lr", "0.2", "--mixup", "0.2", "--cutmix", "1.0")
    assert result["best_val_acc"] >= 0.5 and result["args"]["mixup"] == 0.2


@pytest.mark.parametrize("where", ["folder", "missing parent file"])
def test_an_output_that_cannot_be_written_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, where: str) -> None:
    csv = write_train_csv(tmp_path / "train.csv")
    (tmp_path / "a_file").write_text("x")
    out = tmp_path if where == "folder" else tmp_path / "a_file" / "m.pt"
    with pytest.raises(SystemExit) as exit_info:
        run(csv, out, "--epochs", "1")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and str(out) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "train.csv"]


def test_help_documents_every_flag(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    text = capsys.readouterr().out
    for name in train.HPARAMS:
        assert "--" + name.replace("_", "-") in text


def test_every_setting_has_one_flag_with_its_reason_and_type() -> None:
    actions = {a.dest: a for a in train.build_parser()._actions}
    for group in train.SETTINGS.values():
        for name, (default, reason, *choices) in group.items():
            action = actions[name]
            assert "--" + name.replace("_", "-") in action.option_strings and action.help.startswith(reason[:30])
            if isinstance(default, bool):  # a pair of flags, --x and --no-x
                assert len(action.option_strings) == 2 and any(f.startswith("--no-") for f in action.option_strings)
            else:
                assert action.type is type(default) and list(action.choices or []) == list(*choices)
    assert {a.dest for a in actions.values()} == {*train.HPARAMS, "help", "train_csv", "preset", "resume", "force"}


def test_switches_set_their_setting_either_way() -> None:
    on, off = train.parse_args(["x.csv", "--deterministic", "--no-norm-decay", "--no-augment", "--class-weighted"]), \
        train.parse_args(["x.csv", "--no-deterministic", "--norm-decay", "--augment", "--no-class-weighted"])
    assert (on.deterministic, on.norm_decay, on.no_augment, on.class_weighted) == (True, False, True, True)
    assert (off.deterministic, off.norm_decay, off.no_augment, off.class_weighted) == (False, True, False, False)


def test_a_preset_fills_only_what_the_command_line_leaves_out() -> None:
    cpu = train.PRESETS["cpu"]
    args = train.parse_args(["x.csv", "--preset", "cpu", "--epochs", "60", "--lr", "0.1", "--no-augment"])
    assert args.epochs == 60 == train.HPARAMS["epochs"]  # given, though it is the default: it beats the preset
    assert (args.lr, args.no_augment) == (0.1, True)  # given, where the preset says nothing
    assert (args.channels, args.patience, args.crop) == (cpu["channels"], cpu["patience"], cpu["crop"])  # the preset's
    assert args.batch_size == train.HPARAMS["batch_size"] and args.preset == "cpu"  # neither: the default
    assert train.parse_args(["x.csv", "--preset", "mlp", "--augment"]).no_augment is False  # a switch beats it too


def test_distillation_loss_mixes_the_teacher_and_the_labels() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(16, 7), torch.randint(0, 7, (16,))
    criterion = torch.nn.CrossEntropyLoss()
    assert torch.equal(train.make_loss(criterion, 0.8, 4.0)(logits, labels), criterion(logits, labels))
    assert train.make_loss(criterion, 1.0, 4.0)(logits, labels, logits.clone()).abs() < 1e-6  # student = teacher
    other = torch.randn(16, 7)
    mixed = train.make_loss(criterion, 0.5, 2.0)(logits, labels, other)
    soft = train.make_loss(criterion, 1.0, 2.0)(logits, labels, other)
    assert torch.allclose(mixed, 0.5 * soft + 0.5 * criterion(logits, labels))


def test_a_student_learns_from_cached_teacher_logits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    csv = write_train_csv(tmp_path / "train.csv", n=700)
    run(csv, tmp_path / "teacher.pt", "--epochs", "6", "--lr", "0.05")
    student = ["--arch", "mobilenet", "--epochs", "6", "--lr", "0.05", "--teacher", str(tmp_path / "teacher.pt")]
    reads = []
    for module in (train, predict):
        monkeypatch.setattr(module, "load_model", lambda path, *a, **k: reads.append(str(path)) or load_model(path, *a, **k))
    result = run(csv, tmp_path / "student.pt", *student)
    assert reads == [str(tmp_path / "teacher.pt")]  # read once, for its split and its targets
    assert result["best_val_acc"] >= 0.6
    cache = tmp_path / "student.teacher.pt"
    assert torch.load(cache, weights_only=True)["logits"].shape == (700, 7)
    stamp = cache.stat().st_mtime_ns
    run(csv, tmp_path / "student.pt", *student, "--epochs", "1", "--force")
    assert cache.stat().st_mtime_ns == stamp  # the same teacher and data: computed once, then reused


def test_a_student_learns_from_teachers_watching_every_step(tmp_path: Path) -> None:
    csv = write_train_csv(tmp_path / "train.csv", n=700)
    run(csv, tmp_path / "teacher.pt", "--epochs", "6", "--lr", "0.05", "--crop", "0")
    student = ["--arch", "mobilenet", "--epochs", "6", "--lr", "0.05", "--crop", "40", "--mixup", "0.4",
               "--teacher", str(tmp_path / "teacher.pt"), "--distill", "consistent", "--distill-alpha", "1", "--temperature", "1"]
    result = run(csv, tmp_path / "student.pt", *student)
    # the teacher alone taught it: the 48-px teacher saw whole mixed faces, the student their middle
    assert result["best_val_acc"] >= 0.6
    assert not (tmp_path / "student.teacher.pt").exists()  # nothing computed in advance


def test_watching_teachers_give_each_its_own_middle_of_the_view(tmp_path: Path) -> None:
    csv = write_train_csv(tmp_path / "train.csv", n=140)
    run(csv, tmp_path / "whole.pt", "--epochs", "1", "--crop", "0")
    run(csv, tmp_path / "crop.pt", "--epochs", "1", "--crop", "40")
    teachers = [predict.load_for_inference(str(tmp_path / f"{name}.pt")).eval() for name in ("whole", "crop")]
    faces = train.read_faces(csv).images[:20]
    targets = train.consistent_targets(teachers, faces.float().div(255), bf16=False).exp()
    expected = sum(predict.predict_proba(t, faces, tta="none") for t in teachers) / 2  # centre crop for the 40-px one
    torch.testing.assert_close(targets, expected, rtol=1e-4, atol=1e-5)


def test_class_weights_give_every_class_the_same_total_weight(tmp_path: Path) -> None:
    labels = torch.tensor([0] * 60 + [1] * 6 + [2, 3, 4, 5, 6] * 10)
    weights = train.class_weights(labels)
    counts = torch.bincount(labels, minlength=7).float()
    assert torch.allclose(weights * counts, torch.full((7,), len(labels) / 7))
    assert weights[1] == weights.max() and weights[0] == weights.min()
    csv = write_train_csv(tmp_path / "train.csv")
    result = run(csv, tmp_path / "m.pt", "--epochs", "1", "--class-weighted")
    assert result["args"]["class_weighted"] is True


def test_a_missing_teacher_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv = write_train_csv(tmp_path / "train.csv")
    with pytest.raises(SystemExit) as exit_info:
        run(csv, tmp_path / "m.pt", "--epochs", "1", "--teacher", str(tmp_path / "nope.pt"))
    assert exit_info.value.code == 2 and "nope.pt" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_a_teacher_trained_on_another_split_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv = write_train_csv(tmp_path / "train.csv")
    run(csv, tmp_path / "teacher.pt", "--epochs", "1", "--split-seed", "1")
    with pytest.raises(SystemExit) as exit_info:
        run(csv, tmp_path / "m.pt", "--epochs", "1", "--teacher", str(tmp_path / "teacher.pt"))
    assert exit_info.value.code == 2 and "another split" in capsys.readouterr().err


# Two CPU processes under torchrun, gloo: a rank-0 hook kills the run the way a lost machine would.
KILL_RANK0_IN_EPOCH_3 = """
import os, signal, sys
import train
real, calls = train.evaluate, []
def evaluate_then_die_in_epoch_3(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
train.evaluate = evaluate_then_die_in_epoch_3
train.main(sys.argv[1:])
"""


def torchrun(csv: Path, out: Path, *flags: str, code: str | None = None) -> subprocess.CompletedProcess:
    script = ["--no-python", sys.executable, "-c", code] if code else [str(ROOT / "train.py")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *script, str(csv),
           "--out", str(out), *TINY, "--batch-size", "16", "--epochs", "4", "--seed", "2", *flags]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_two_processes_train_one_model_and_a_killed_run_resumes(tmp_path: Path) -> None:
    csv, test_csv = write_train_csv(tmp_path / "train.csv"), write_test_csv(tmp_path / "test.csv")
    done = torchrun(csv, tmp_path / "m.pt")
    assert done.returncode == 0, done.stderr  # all of it: a rank's own last words come before the launcher's summary
    history = json.loads((tmp_path / "m.json").read_text())
    assert history["finished"] and history["world_size"] == 2 and history["peak_lr"] == 0.05 * 32 / train.LR_BATCH
    # the ranks saw disjoint halves of each epoch: every face of the epoch's 7 global batches exactly once
    assert [(h["faces_seen"], h["faces_seen_twice"]) for h in history["history"]] == [(7 * 32, 0)] * 4
    assert history["best_val_acc"] >= 0.6  # chance is 1/7
    # the checkpoint predicts
    predict.main([str(test_csv), str(tmp_path / "pred.csv"), "--model", str(tmp_path / "m.pt")])
    assert len((tmp_path / "pred.csv").read_text().splitlines()) == 51
    # killed in epoch 3, after epoch 2's resume state: --resume repeats the uninterrupted run's epochs
    killed = torchrun(csv, tmp_path / "k.pt", code=KILL_RANK0_IN_EPOCH_3)
    assert killed.returncode != 0 and (tmp_path / "k.resume.pt").exists()
    assert len(json.loads((tmp_path / "k.json").read_text())["history"]) == 2
    with pytest.raises(SystemExit) as exit_info:  # one process cannot continue a two-process schedule
        run(csv, tmp_path / "k.pt", "--resume")
    assert exit_info.value.code == 2
    resumed = torchrun(csv, tmp_path / "k.pt", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and not (tmp_path / "k.resume.pt").exists()
    assert curve(json.loads((tmp_path / "k.json").read_text())) == curve(history)
