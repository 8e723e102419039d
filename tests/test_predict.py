import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, pixel_strings, synthetic_faces, write_csv

import predict
from dataset import read_faces
from model import atomic_save, build_model, make_checkpoint


def save_model(path: Path, seed: int, side: int = 48) -> Path:
    config = {"arch": "vgg", "channels": [8, 16], "hidden": 16, "mean": 0.4, "std": 0.25, "side": side}
    torch.manual_seed(seed)
    atomic_save(make_checkpoint(build_model(config).eval(), config), path)
    return path


@pytest.fixture
def models(tmp_path: Path) -> list[str]:
    return [str(save_model(tmp_path / f"m{i}.pt", seed=i)) for i in range(2)]


def read_submission(path: Path) -> tuple[str, list[int], list[int]]:
    lines = path.read_text().splitlines()
    ids, labels = zip(*(map(int, line.split(",")) for line in lines[1:]), strict=True)
    return lines[0], list(ids), list(labels)


def test_submission_keeps_ids_and_input_order(tmp_path: Path, models: list[str]) -> None:
    images, _ = synthetic_faces(30, seed=4)
    ids = [17, 3, 99, *range(1000, 1027)]
    csv = write_csv(tmp_path / "test.csv", "id,feature", [f"{i},{p}" for i, p in zip(ids, pixel_strings(images), strict=True)])
    predict.main([str(csv), str(tmp_path / "pred.csv"), "--model", models[0]])
    header, got_ids, labels = read_submission(tmp_path / "pred.csv")
    assert header == "id,label" and got_ids == ids and set(labels) <= set(range(7))


def test_ensemble_averages_probabilities_with_flip_tta(test_csv: Path, models: list[str]) -> None:
    faces = read_faces(test_csv)
    singles = [predict.predict_proba(predict.load_model(m)[0], faces.images, tta=True) for m in models]
    ensemble = predict.ensemble_proba(models, faces.images, tta=True)
    assert torch.allclose(ensemble, (singles[0] + singles[1]) / 2, atol=1e-6)
    model = predict.load_model(models[0])[0]
    no_tta = predict.predict_proba(model, faces.images, tta=False)
    mirrored = predict.predict_proba(model, faces.images.flip(3), tta=False)
    assert torch.allclose(singles[0], (no_tta + mirrored) / 2, atol=1e-6)
    assert torch.allclose(ensemble.sum(1), torch.ones(len(faces.images)), atol=1e-5)


def test_the_views_are_the_flip_and_the_five_crops_a_model_has_room_for() -> None:
    assert predict.views(48, 48, "none") == predict.views(48, 48, False) == [(0, 0, False)]
    assert predict.views(48, 48, "flip") == predict.views(48, 48, True) == [(0, 0, False), (0, 0, True)]
    assert predict.views(48, 48, "crops") == [(0, 0, False), (0, 0, True)]  # a whole-face model: no room to crop
    assert predict.views(48, 40, "none") == [(4, 4, False)]
    crops = predict.views(48, 44, "crops")
    assert len(crops) == 10 and {(top, left) for top, left, _ in crops} == {(2, 2), (0, 0), (0, 4), (4, 0), (4, 4)}
    with pytest.raises(ValueError, match="unknown test-time views 'all'"):
        predict.views(48, 44, "all")


def test_a_crop_model_sees_the_centre_crop_or_averages_ten_views(test_csv: Path) -> None:
    config = {"arch": "vgg", "channels": [8, 16], "hidden": 16, "mean": 0.4, "std": 0.25, "side": 40}
    torch.manual_seed(0)
    model = build_model(config).eval()
    images = read_faces(test_csv).images
    x = images.float() / 255
    centre = model(x[:, :, 4:44, 4:44]).softmax(1)
    assert torch.allclose(predict.predict_proba(model, images, tta="none"), centre, atol=1e-6)
    ten = sum(model(v).softmax(1) for c in [x[:, :, t:t + 40, s:s + 40] for t, s in
                                             [(4, 4), (0, 0), (0, 8), (8, 0), (8, 8)]] for v in (c, c.flip(3))) / 10
    assert torch.allclose(predict.predict_proba(model, images, tta="crops"), ten, atol=1e-6)


def test_the_default_is_the_released_ensemble_and_fast_its_pair(tmp_path: Path, test_csv: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    members = [str(save_model(tmp_path / f"m{i}.pt", seed=i, side=side)) for i, side in enumerate((40, 48, 48))]
    monkeypatch.setattr(predict, "released", {"default": members, "fast": members[:2]}.get)
    predict.main([str(test_csv), str(tmp_path / "default.csv")])
    predict.main([str(test_csv), str(tmp_path / "fast.csv"), "--fast"])
    predict.main([str(test_csv), str(tmp_path / "three.csv"), *[f for m in members for f in ("--model", m)]])
    predict.main([str(test_csv), str(tmp_path / "two.csv"), "--model", members[0], "--model", members[1]])
    default, fast = (tmp_path / "default.csv").read_bytes(), (tmp_path / "fast.csv").read_bytes()
    assert default == (tmp_path / "three.csv").read_bytes() and fast == (tmp_path / "two.csv").read_bytes()
    assert default != fast


def test_every_released_network_is_in_the_manifest_and_each_use_has_its_own() -> None:
    manifest = (ROOT / "weights" / "MANIFEST").read_text().splitlines()
    listed = {line.split()[0] for line in manifest if line.strip() and not line.startswith("#")}
    used = {name for names in predict.RELEASED.values() for name in names}
    assert used == {name for name in listed if name.endswith(".q8")}  # the rest are the face detector's
    assert set(predict.RELEASED["fast"]) < set(predict.RELEASED["default"])
    assert not set(predict.RELEASED["compact"]) & set(predict.RELEASED["default"])


def test_fast_and_model_together_is_a_usage_error(tmp_path: Path, test_csv: Path, models: list[str],
                                                 capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        predict.main([str(test_csv), str(tmp_path / "pred.csv"), "--fast", "--model", models[0]])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "pred.csv").exists()


def test_output_is_byte_identical_across_runs(tmp_path: Path, test_csv: Path, models: list[str]) -> None:
    outputs = []
    for name in ("a.csv", "b.csv"):
        subprocess.run([sys.executable, str(ROOT / "predict.py"), str(test_csv), str(tmp_path / name),
                        "--model", models[0], "--model", models[1]], check=True)
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1] and outputs[0].count(b"\n") == 51


def test_missing_model_is_a_clear_error(tmp_path: Path, test_csv: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        predict.main([str(test_csv), str(tmp_path / "pred.csv"), "--model", str(tmp_path / "none.pt")])
    assert exit_info.value.code == 2 and "none.pt: model file not found" in capsys.readouterr().err
    assert not (tmp_path / "pred.csv").exists()


def test_rows_without_ids_are_numbered(tmp_path: Path, models: list[str]) -> None:
    images, labels = synthetic_faces(9, seed=2)
    csv = write_csv(tmp_path / "f.csv", "emotion,pixels,Usage", [f"{y},{p},PrivateTest" for y, p in zip(labels, pixel_strings(images), strict=True)])
    predict.main([str(csv), str(tmp_path / "pred.csv"), "--model", models[0], "--no-tta"])
    assert read_submission(tmp_path / "pred.csv")[1] == list(range(9))
    assert np.isin(read_submission(tmp_path / "pred.csv")[2], range(7)).all()


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b""])
def test_corrupt_model_is_a_clear_error(tmp_path: Path, test_csv: Path, capsys: pytest.CaptureFixture, content: bytes) -> None:
    (tmp_path / "bad.pt").write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        predict.main([str(test_csv), str(tmp_path / "pred.csv"), "--model", str(tmp_path / "bad.pt")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "bad.pt: not a model file of this project" in err and err.count("\n") == 1
    assert not (tmp_path / "pred.csv").exists()


@pytest.mark.parametrize("where", ["existing folder", "missing folder", "a file as folder"])
def test_an_output_that_cannot_be_written_is_one_line(tmp_path: Path, test_csv: Path, models: list[str], where: str) -> None:
    (tmp_path / "a_file").write_text("x")
    out = {"existing folder": tmp_path, "missing folder": tmp_path / "no" / "pred.csv",
           "a file as folder": tmp_path / "a_file" / "pred.csv"}[where]
    before = sorted(tmp_path.iterdir())
    result = subprocess.run([sys.executable, str(ROOT / "predict.py"), str(test_csv), str(out), "--model", models[0]],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and str(out) in result.stderr
    assert "Traceback" not in result.stderr and sorted(tmp_path.iterdir()) == before


def test_a_folder_given_as_input_or_model_says_so(tmp_path: Path, test_csv: Path, models: list[str], capsys: pytest.CaptureFixture) -> None:
    for argv in ([str(tmp_path), str(tmp_path / "p.csv"), "--model", models[0]],
                 [str(test_csv), str(tmp_path / "p.csv"), "--model", str(tmp_path)]):
        with pytest.raises(SystemExit) as exit_info:
            predict.main(argv)
        assert exit_info.value.code == 2 and f"{tmp_path}: is a folder" in capsys.readouterr().err
