import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, pixel_strings, synthetic_faces, write_csv

import dataset
from dataset import (
    DataError,
    Faces,
    augment,
    centre_crop,
    common_split,
    duplicate_groups,
    epoch_batches,
    grouped_split,
    mix,
    read_faces,
    recorded_split,
    stratified_split,
    train_val_split,
)

IMAGES, LABELS = synthetic_faces(12, seed=3)
PIXELS = pixel_strings(IMAGES)
USAGE = ["Training"] * 6 + ["PublicTest"] * 3 + ["PrivateTest"] * 3

FORMATS = {
    "train": ("label,feature", [f"{y},{p}" for y, p in zip(LABELS, PIXELS, strict=True)]),
    "test": ("id,feature", [f"{100 + i},{p}" for i, p in enumerate(PIXELS)]),
    "fer2013": ("emotion,pixels,Usage", [f"{y},{p},{u}" for y, p, u in zip(LABELS, PIXELS, USAGE, strict=True)]),
    "icml": ("emotion, Usage, pixels", [f"{y}, {u}, {p}" for y, p, u in zip(LABELS, PIXELS, USAGE, strict=True)]),
}


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
@pytest.mark.parametrize("kind", FORMATS)
def test_reads_each_format_plain_and_gzip(tmp_path: Path, kind: str, suffix: str) -> None:
    header, rows = FORMATS[kind]
    faces = read_faces(write_csv(tmp_path / f"{kind}{suffix}", header, rows))
    assert faces.images.dtype == torch.uint8 and faces.images.shape == (12, 1, 48, 48)
    assert np.array_equal(faces.images.view(12, -1).numpy(), IMAGES)
    if kind == "test":
        assert faces.labels is None and faces.ids.tolist() == list(range(100, 112))
    else:
        assert faces.labels.tolist() == LABELS.tolist() and faces.ids.tolist() == list(range(12))
    if kind in ("fer2013", "icml"):
        assert faces.usage.tolist() == USAGE


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_chunks_read_like_one_piece_and_errors_keep_their_line(tmp_path: Path, suffix: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_csv(tmp_path / f"f{suffix}", *FORMATS["fer2013"])
    whole = read_faces(path)
    monkeypatch.setattr(dataset, "CHUNK_ROWS", 5)  # 12 rows: chunks of 5, 5 and 2
    monkeypatch.setattr(dataset, "MIN_ROW_BYTES", 10**6)  # room for one row: the array must grow
    chunked = read_faces(path)
    assert torch.equal(chunked.images, whole.images) and torch.equal(chunked.labels, whole.labels)
    assert chunked.usage.tolist() == USAGE and chunked.ids.tolist() == list(range(12))
    header, rows = FORMATS["train"]
    bad_pixel = [*rows[:7], rows[7].replace(" ", " 300 ", 1), *rows[8:]]  # row 7, in the second chunk
    with pytest.raises(DataError, match=r"b\.csv:9: pixel value '300'"):
        read_faces(write_csv(tmp_path / "b.csv", header, bad_pixel))
    bad_label = [*rows[:11], "9" + rows[11][1:]]  # row 11, in the third chunk: checked once all are read
    with pytest.raises(DataError, match=r"l\.csv:13: label '9'"):
        read_faces(write_csv(tmp_path / "l.csv", header, bad_label))


def test_header_names_are_case_and_space_insensitive(tmp_path: Path) -> None:
    faces = read_faces(write_csv(tmp_path / "t.csv", " Label , FEATURE ", FORMATS["train"][1]))
    assert faces.labels.tolist() == LABELS.tolist()


def test_gzip_is_recognised_by_content_not_name(tmp_path: Path) -> None:
    gz = write_csv(tmp_path / "t.csv.gz", *FORMATS["train"])
    misnamed = tmp_path / "t.csv"
    misnamed.write_bytes(gz.read_bytes())
    assert read_faces(misnamed).labels.tolist() == LABELS.tolist()


def test_usage_column_gives_the_challenge_split(tmp_path: Path) -> None:
    faces = read_faces(write_csv(tmp_path / "f.csv", *FORMATS["fer2013"]))
    train_idx, val_idx, split = train_val_split(faces, 0.1, seed=0)
    assert train_idx.tolist() == list(range(6)) and val_idx.tolist() == [6, 7, 8]
    assert split["method"] == "usage"


def test_stratified_split_keeps_class_proportions_and_is_seeded() -> None:
    labels = np.repeat(np.arange(7), [400, 40, 400, 700, 480, 310, 490])
    train_idx, val_idx = stratified_split(labels, 0.1, seed=5)
    assert np.bincount(labels[val_idx]).tolist() == [40, 4, 40, 70, 48, 31, 49]
    assert sorted(np.concatenate([train_idx, val_idx]).tolist()) == list(range(labels.size))
    assert np.array_equal(stratified_split(labels, 0.1, seed=5)[1], val_idx)
    assert not np.array_equal(stratified_split(labels, 0.1, seed=6)[1], val_idx)


def faces_with_copies(n: int = 700, seed: int = 0) -> Faces:
    """n synthetic faces of which some are pixel-identical copies of others, as in FER2013."""
    images, labels = synthetic_faces(n, seed)
    rng = np.random.default_rng(seed)
    copies = rng.choice(n, n // 5, replace=False)
    images[copies] = images[rng.choice(n, n // 5)]  # some faces get copied two or three times
    return Faces(torch.from_numpy(images).view(n, 1, 48, 48), torch.from_numpy(labels), np.arange(n), None)


def test_duplicate_groups_join_exactly_the_identical_faces() -> None:
    faces = faces_with_copies()
    groups = duplicate_groups(faces.images)
    flat = faces.images.view(len(groups), -1)
    assert groups.max() + 1 == len(np.unique(flat.numpy(), axis=0))
    for i, j in ((0, 1), (3, 7), *np.argwhere(groups[:, None] == groups[None, :])[:50]):
        assert (groups[i] == groups[j]) == torch.equal(flat[i], flat[j])


def test_grouped_split_keeps_every_copy_on_one_side_stratified_and_seeded() -> None:
    faces = faces_with_copies()
    groups = duplicate_groups(faces.images)
    labels = faces.labels.numpy()
    train_idx, val_idx = grouped_split(labels, groups, 0.1, seed=5)
    assert sorted(np.concatenate([train_idx, val_idx]).tolist()) == list(range(len(labels)))
    assert not set(groups[train_idx]) & set(groups[val_idx])  # no held-out face has a copy in training
    per_class = np.bincount(labels[val_idx], minlength=7) / np.bincount(labels, minlength=7)
    assert np.all(np.abs(per_class - 0.1) < 0.05)
    assert np.array_equal(grouped_split(labels, groups, 0.1, seed=5)[1], val_idx)
    assert not np.array_equal(grouped_split(labels, groups, 0.1, seed=6)[1], val_idx)
    # the row-stratified split of the first releases puts copies on both sides; it stays reproducible
    old_train, old_val, split = train_val_split(faces, 0.1, 0, method="stratified")
    assert set(groups[old_train]) & set(groups[old_val])
    assert split == {"method": "stratified", "val_fraction": 0.1, "seed": 0}
    assert np.array_equal(recorded_split(faces, split)[1], old_val)
    new_split = train_val_split(faces, 0.1, 0)[2]
    assert new_split["method"] == "grouped" and np.array_equal(recorded_split(faces, new_split)[1],
                                                                train_val_split(faces, 0.1, 0)[1])


def test_models_share_a_split_only_when_every_one_records_the_same() -> None:
    grouped = {"method": "grouped", "val_fraction": 0.1, "seed": 0}
    assert common_split([grouped, dict(reversed(grouped.items()))]) == grouped  # key order does not matter
    with pytest.raises(ValueError, match="different splits"):
        common_split([grouped, {**grouped, "seed": 1}])
    with pytest.raises(ValueError, match="records no split"):
        common_split([grouped, None])


def test_epoch_batches_are_a_seeded_permutation_in_full_batches() -> None:
    batches = epoch_batches(100, 32, torch.Generator().manual_seed(1))
    assert [len(b) for b in batches] == [32, 32, 32]
    seen = torch.cat(batches)
    assert len(set(seen.tolist())) == 96
    assert torch.equal(seen, torch.cat(epoch_batches(100, 32, torch.Generator().manual_seed(1))))
    assert not torch.equal(seen, torch.cat(epoch_batches(100, 32, torch.Generator().manual_seed(2))))


def batch_of_one_face(n: int = 16) -> torch.Tensor:
    return torch.from_numpy(np.repeat(IMAGES[:1], n, axis=0)).view(n, 1, 48, 48).float().div(255)


def test_augmentation_is_random_per_face_and_seeded() -> None:
    x = batch_of_one_face()
    out = augment(x, torch.Generator().manual_seed(0), 10, 0.1, 0.1, 0.5)
    assert out.shape == x.shape and out.dtype == x.dtype and 0 <= out.min() and out.max() <= 1
    assert len({tuple(face.flatten().tolist()) for face in out}) == 16  # one face in, 16 different faces out
    assert torch.equal(out, augment(x, torch.Generator().manual_seed(0), 10, 0.1, 0.1, 0.5))
    assert not torch.equal(out, augment(x, torch.Generator().manual_seed(1), 10, 0.1, 0.1, 0.5))


def test_without_geometry_a_face_is_kept_or_mirrored_about_half_the_time() -> None:
    x = batch_of_one_face(200)
    out = augment(x, torch.Generator().manual_seed(0), 0, 0, 0, 0)
    same = (out - x).abs().flatten(1).amax(1) < 1e-5
    mirrored = (out - x.flip(3)).abs().flatten(1).amax(1) < 1e-5
    assert torch.all(same | mirrored) and 70 < int(mirrored.sum()) < 130


def test_a_crop_is_the_middle_of_the_face_at_its_own_scale_or_its_mirror() -> None:
    x = torch.rand(64, 1, 48, 48)
    out = augment(x, torch.Generator().manual_seed(0), 0, 0, 0, 0, out_side=40)
    middle = centre_crop(x, 40)
    assert out.shape == (64, 1, 40, 40) and middle.shape == out.shape and torch.equal(middle, x[:, :, 4:44, 4:44])
    same = (out - middle).abs().flatten(1).amax(1) < 1e-5
    mirrored = (out - middle.flip(3)).abs().flatten(1).amax(1) < 1e-5
    assert torch.all(same | mirrored) and 0 < int(mirrored.sum()) < 64
    shifted = augment(x, torch.Generator().manual_seed(0), 0, 0.1, 0, 0, out_side=40)  # a crop from elsewhere
    assert shifted.shape == out.shape and (shifted - out).abs().flatten(1).amax(1).min() > 1e-3


def test_fewer_pixels_sample_the_same_view_on_a_coarser_grid() -> None:
    x = torch.nn.functional.avg_pool2d(torch.rand(64, 1, 52, 52), 5, stride=1)  # (smooth, as faces are)

    def view(seed: int, rotate: float, pixels: int | None = None) -> torch.Tensor:
        return augment(x, torch.Generator().manual_seed(seed), rotate, 0.1 * bool(rotate), 0.1 * bool(rotate), 0,
                       out_side=40, pixels=pixels)

    coarse, fine = view(0, 0, pixels=20), view(0, 0)
    assert coarse.shape == (64, 1, 20, 20)  # a coarse pixel's centre falls between four fine ones: their mean
    assert torch.allclose(coarse, torch.nn.functional.avg_pool2d(fine, 2), atol=1e-5)
    coarse, fine, other = view(0, 10, pixels=20), view(0, 10), view(1, 10)  # turned, zoomed and shifted alike
    error = (coarse - torch.nn.functional.avg_pool2d(fine, 2)).abs().mean()
    assert error < 0.25 * (coarse - torch.nn.functional.avg_pool2d(other, 2)).abs().mean()


def test_a_shift_moves_the_face_and_fills_black() -> None:
    x = torch.ones(64, 1, 48, 48)
    out = augment(x, torch.Generator().manual_seed(0), 0, 0.1, 0, 0)
    black = (out < 0.5).flatten(1).sum(1)
    assert black.max() > 0.1 * 48 * 48 and black.max() <= 48 * 48 * (1 - 0.9 * 0.9) + 48  # at most 10 % each way


def test_random_erasing_blacks_out_one_rectangle_of_2_to_15_percent() -> None:
    x = torch.ones(200, 1, 48, 48)
    out = augment(x, torch.Generator().manual_seed(0), 0, 0, 0, erase=0.5)
    erased = (out == 0).flatten(1).sum(1).float() / (48 * 48)
    hit = erased > 0
    assert 70 < int(hit.sum()) < 130
    assert erased[hit].min() >= 0.015 and erased[hit].max() <= 0.16
    for face in out[hit][:20, 0]:  # the black pixels form one rectangle
        rows, cols = torch.nonzero(face == 0, as_tuple=True)
        area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert area == len(rows)


def test_mixup_and_cutmix_mix_faces_and_report_their_share() -> None:
    x = torch.rand(8, 1, 48, 48)
    rng = np.random.default_rng(0)
    same, partner, lam = mix(x, torch.Generator().manual_seed(0), rng, 0.0, 0.0)
    assert same is x and partner is None and lam == 1.0
    mixed, partner, lam = mix(x, torch.Generator().manual_seed(0), rng, 0.4, 0.0)
    assert 0 <= lam <= 1 and torch.allclose(mixed, lam * x + (1 - lam) * x[partner])
    cut, partner, lam = mix(x, torch.Generator().manual_seed(0), rng, 0.0, 1.0)
    moved = partner != torch.arange(8)  # a face may draw itself as its partner
    pasted = (cut != x)[moved].float().mean().item()
    assert moved.any() and 0 < pasted < 1 and abs(pasted - (1 - lam)) < 1e-3
    assert torch.all((cut == x) | (cut == x[partner]))


def test_a_folder_given_as_the_csv_says_so(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"^{tmp_path}: is a folder, not a CSV file$"):
        read_faces(tmp_path)


def replace_row(rows: list[str], i: int, row: str) -> list[str]:
    return [*rows[:i], row, *rows[i + 1:]]


TRAIN_ROWS = FORMATS["train"][1]
TEST_ROWS = FORMATS["test"][1]
SHORT = " ".join(PIXELS[3].split()[:-1])
BAD_INPUTS = {
    # name: (header, rows, expected message fragment, line)
    "missing column": ("label,pixels_x", TRAIN_ROWS, "missing column 'feature' or 'pixels'", 1),
    "too few pixels": ("label,feature", replace_row(TRAIN_ROWS, 3, f"1,{SHORT}"), "expected 2304 pixel values, found 2303", 5),
    "too many pixels": ("label,feature", replace_row(TRAIN_ROWS, 0, f"1,{PIXELS[0]} 7"), "found 2305", 2),
    "empty pixels": ("label,feature", replace_row(TRAIN_ROWS, 2, "1,"), "found 0", 4),
    "non-integer pixel": ("label,feature", replace_row(TRAIN_ROWS, 4, "1," + PIXELS[4].replace(" ", " 1.5 ", 1)[:-4]),
                          "pixel value '1.5' is not an integer in 0..255", 6),
    "text pixel": ("label,feature", replace_row(TRAIN_ROWS, 1, "1,abc " + " ".join(PIXELS[1].split()[1:])),
                   "pixel value 'abc'", 3),
    "pixel 256": ("label,feature", replace_row(TRAIN_ROWS, 7, "1,256 " + " ".join(PIXELS[7].split()[1:])),
                  "pixel value '256' is not an integer in 0..255", 9),
    "negative pixel": ("label,feature", replace_row(TRAIN_ROWS, 5, "1,-3 " + " ".join(PIXELS[5].split()[1:])),
                       "pixel value '-3'", 7),
    "huge pixel": ("label,feature", replace_row(TRAIN_ROWS, 5, "1,4294967296 " + " ".join(PIXELS[5].split()[1:])),
                   "pixel value '4294967296'", 7),
    "label 7": ("label,feature", replace_row(TRAIN_ROWS, 2, f"7,{PIXELS[2]}"), "label '7' is not one of 0..6", 4),
    "label -1": ("label,feature", replace_row(TRAIN_ROWS, 2, f"-1,{PIXELS[2]}"), "label '-1' is not one of 0..6", 4),
    "missing label": ("label,feature", replace_row(TRAIN_ROWS, 9, f",{PIXELS[9]}"), "missing label", 11),
    "text label": ("label,feature", replace_row(TRAIN_ROWS, 9, f"happy,{PIXELS[9]}"), "label 'happy' is not an integer", 11),
    "duplicate id": ("id,feature", replace_row(TEST_ROWS, 6, f"102,{PIXELS[6]}"), "duplicate id 102 (first on line 4)", 8),
    "bad usage": ("emotion,pixels,Usage", replace_row(FORMATS["fer2013"][1], 0, f"0,{PIXELS[0]},Validation"),
                  "Usage 'Validation'", 2),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_names_file_line_and_problem(tmp_path: Path, case: str) -> None:
    header, rows, fragment, line = BAD_INPUTS[case]
    path = write_csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(DataError) as err:
        read_faces(path, require_labels=header.startswith("label"))
    message = str(err.value)
    assert message.startswith(f"{path}:{line}: ") and fragment in message and "\n" not in message


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.csv:1: empty file"):
        read_faces(empty)
    header_only = write_csv(tmp_path / "header.csv", "label,feature", [])
    with pytest.raises(DataError, match=r"header\.csv:2: no data rows"):
        read_faces(header_only)


def test_training_file_without_labels_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", *FORMATS["test"])
    with pytest.raises(DataError, match=r"t\.csv:1: missing column 'label' or 'emotion'"):
        read_faces(path, require_labels=True)


def test_unreadable_gzip(tmp_path: Path) -> None:
    good = gzip.compress(("label,feature\n" + "\n".join(TRAIN_ROWS)).encode())
    truncated = tmp_path / "cut.csv.gz"
    truncated.write_bytes(good[: len(good) // 2])
    garbage = tmp_path / "garbage.csv.gz"
    garbage.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    for path in (truncated, garbage):
        with pytest.raises(DataError, match=rf"{path.name}: unreadable gzip"):
            read_faces(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_faces(tmp_path / "nope.csv")


@pytest.mark.parametrize("script, outputs", [("train.py", ["m.pt", "m.json"]), ("predict.py", ["pred.csv"])])
def test_clis_exit_2_with_one_line_and_write_nothing(tmp_path: Path, script: str, outputs: list[str]) -> None:
    header, rows, _, _ = BAD_INPUTS["pixel 256"]
    bad = write_csv(tmp_path / "bad.csv", header, rows)
    args = [str(tmp_path / "m.pt"), "--out", str(tmp_path / "m.pt")] if script == "train.py" else \
        [str(tmp_path / "pred.csv"), "--model", str(tmp_path / "bad.csv")]
    argv = [str(bad), *args[1:]] if script == "train.py" else [str(bad), *args]
    result = subprocess.run([sys.executable, str(ROOT / script), *argv], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and f"{bad}:9: pixel value '256'" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]
