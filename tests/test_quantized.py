"""quantized.py: the k-bit model file (the compact model's, and the HW8 hand-in's)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, trained_mobilenet

import quantized
from compact_int8 import save_compact
from dataset import CLASS_NAMES
from model import atomic_save, make_checkpoint


@pytest.mark.parametrize("bits", quantized.BITS)
def test_codes_pack_into_bits_each_and_unpack_the_same(bits: int) -> None:
    codes = np.random.default_rng(bits).integers(0, 2 ** bits, 1001)  # 1001: the last byte is part padding
    data = quantized.pack_codes(codes, bits)
    assert len(data) == (1001 * bits + 7) // 8
    assert np.array_equal(quantized.unpack_codes(data, bits, 1001), codes)


def test_pack_codes_puts_the_least_significant_bit_first() -> None:
    assert quantized.pack_codes(np.array([1, 2, 3]), 3) == bytes([0b11010001, 0b0])  # 001, 010, 011 from bit 0 up


@pytest.mark.parametrize("clip", quantized.CLIPS)
def test_quantisation_is_per_channel_and_symmetric(clip: str) -> None:
    weight = torch.tensor([[1.0, -0.5, 0.25, 0.0], [0.001, -0.002, 0.0, 0.0015], [0.0, 0.0, 0.0, 0.0]])
    q, scale = quantized.quantize_weight(weight, 5, clip)
    assert q.abs().max() <= 15 and scale.tolist()[2] == 1.0  # a zero row gets scale 1 (and codes 0)
    if clip == "max":
        assert q.abs().amax(1).tolist() == [15, 15, 0]  # each row's largest |w| on the top code
    assert (q.float() * scale[:, None] - weight).abs().amax(1).le(scale * 0.5 + 1e-7).all()  # half a step or less
    assert np.array_equal(scale.numpy(), scale.numpy().astype(np.float16).astype(np.float32))  # as stored


def test_mse_clipping_never_errs_more_than_the_largest_weight_scale() -> None:
    weight = torch.randn(16, 64) ** 3  # heavy tails: a few large weights, where clipping pays
    errors = {}
    for clip in quantized.CLIPS:
        q, scale = quantized.quantize_weight(weight, 4, clip)
        errors[clip] = (q.float() * scale[:, None] - weight).square().sum(1)
    assert (errors["mse"] <= errors["max"] + 1e-6).all() and errors["mse"].sum() < errors["max"].sum()


def test_weights_too_large_for_float16_scales_are_refused() -> None:
    with pytest.raises(ValueError, match="too large for float16 scales"):
        quantized.quantize_weight(torch.tensor([[1e6, 1.0], [0.5, 0.25]]), 5)


def test_bits_outside_the_file_are_refused() -> None:
    for bits in (1, 9):
        with pytest.raises(ValueError, match=f"{bits} bits"):
            quantized.quantize_weight(torch.ones(2, 3), bits)


def test_a_file_round_trips_with_small_filters_at_their_own_bits(tmp_path: Path) -> None:
    model, config = trained_mobilenet()
    path = tmp_path / "c.q8"
    size = quantized.save_quantized(model, config, path, bits=5, small_bits=8, split={"seed": 0})
    loaded, header = quantized.load_model(path)
    assert size == path.stat().st_size and header["config"] == config and header["split"] == {"seed": 0}
    bits = {t["name"]: (t.get("bits"), int(np.prod(t["shape"][1:]))) for t in header["tensors"]}
    assert bits["features.1.weight"] == (8, 9) and bits["features.7.body.0.weight"] == (8, 9)  # stem, depthwise
    assert bits["features.7.body.2.weight"] == (5, 16) and bits["classifier.2.weight"] == (5, 64 * 9)
    assert all(b == (8 if row <= quantized.SMALL_ROW else 5) for b, row in bits.values() if b)
    assert bits["features.1.bias"][0] is None
    x = torch.rand(64, 1, 48, 48)
    with torch.no_grad():
        expected, got = model(x), loaded(x)
    assert (got - expected).abs().max() <= 0.1 * expected.abs().max()
    assert torch.equal(quantized.load_quantized(path)[0](x), got)  # the same file gives the same logits every time
    quantized.save_quantized(model, config, tmp_path / "again.q8", bits=5, small_bits=8, split={"seed": 0})
    assert (tmp_path / "again.q8").read_bytes() == path.read_bytes()


def test_each_bit_a_weight_loses_shrinks_the_file_by_an_eighth_of_the_weights(tmp_path: Path) -> None:
    model, config = trained_mobilenet()
    sizes = {b: quantized.save_quantized(model, config, tmp_path / f"{b}.q8", bits=b, small_bits=b) for b in (4, 8)}
    weights = sum(v.numel() for v in model.state_dict().values() if v.ndim >= 2)
    tensors = [t for t in quantized.read_quantized(tmp_path / "4.q8")[0]["tensors"] if "bits" in t]
    assert abs(sizes[8] - sizes[4] - weights * 4 / 8) <= len(tensors) + 8  # a byte of padding per tensor, the header


@pytest.mark.parametrize("damage", ["truncate", "magic", "header", "tensors", "stray bytes", "format"])
def test_a_damaged_file_is_refused_in_one_line(tmp_path: Path, damage: str) -> None:
    model, config = trained_mobilenet()
    path = tmp_path / "c.q8"
    quantized.save_quantized(model, config, path)
    data = path.read_bytes()
    middle = len(data) // 2 + 50  # inside the tensors, past the header
    damaged = {"truncate": data[:-10], "magic": b"XXXXX" + data[5:], "header": data[:10] + b"#" + data[11:],
               "tensors": data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1:], "stray bytes": data + b"\0",
               "format": data.replace(b'"format":1', b'"format":3', 1)}[damage]
    assert damaged != data
    path.write_bytes(damaged)
    with pytest.raises(ValueError, match=str(path)) as error:
        quantized.load_quantized(path)
    assert "\n" not in str(error.value)


def test_a_weight_that_is_not_finite_is_refused(tmp_path: Path) -> None:
    model, config = trained_mobilenet()
    with torch.no_grad():
        model.classifier[2].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="not a finite number"):
        quantized.save_quantized(model, config, tmp_path / "c.q8")
    assert not (tmp_path / "c.q8").exists()
    with torch.no_grad():
        model.classifier[2].weight[0, 0] = 0.0
        model.classifier[2].bias[0] = 1e6  # beyond float16
    with pytest.raises(ValueError, match=r"classifier\.2\.bias: values too large for float16"):
        quantized.save_quantized(model, config, tmp_path / "c.q8")


def test_load_model_tells_the_three_files_apart(tmp_path: Path) -> None:
    model, config = trained_mobilenet()
    atomic_save(make_checkpoint(model, config, split={"seed": 1}), tmp_path / "m.pt")
    save_compact(model, config, tmp_path / "int8.q8", split={"seed": 1})
    quantized.save_quantized(model, config, tmp_path / "k.q8", split={"seed": 1})
    x = torch.rand(8, 1, 48, 48)
    with torch.no_grad():
        outputs = {name: quantized.load_model(tmp_path / name)[0](x) for name in ("m.pt", "int8.q8", "k.q8")}
    assert torch.equal(outputs["m.pt"], model(x))
    assert (outputs["int8.q8"] - outputs["m.pt"]).abs().max() < (outputs["k.q8"] - outputs["m.pt"]).abs().max()
    assert all(quantized.load_model(tmp_path / name)[1]["split"] == {"seed": 1} for name in outputs)
    (tmp_path / "notes.q8").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a model file of this project"):
        quantized.load_model(tmp_path / "notes.q8")


def test_quantize_file_writes_a_k_bit_file_from_a_checkpoint_or_refuses_an_oversized_one(tmp_path: Path) -> None:
    model, config = trained_mobilenet()
    atomic_save(make_checkpoint(model, config, split={"seed": 2}, class_names=list("abcdefg"), epoch=3),
                tmp_path / "m.pt")
    size = quantized.quantize_file(str(tmp_path / "m.pt"), str(tmp_path / "c.q8"), bits=6)
    header = quantized.read_quantized(tmp_path / "c.q8")[0]
    assert size == (tmp_path / "c.q8").stat().st_size and header["source"] == "m.pt" and header["epoch"] == 3
    assert header["split"] == {"seed": 2} and header["class_names"] == list("abcdefg")
    (tmp_path / "old.q8").write_bytes(b"the previous release")
    with pytest.raises(ValueError, match="over the 1,000-byte limit"):
        quantized.quantize_file(str(tmp_path / "m.pt"), str(tmp_path / "old.q8"), max_bytes=1000)
    assert (tmp_path / "old.q8").read_bytes() == b"the previous release"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.q8", "m.pt", "old.q8"]


def test_the_command_line_writes_the_file_or_says_what_is_wrong(tmp_path: Path) -> None:
    model, config = trained_mobilenet()
    atomic_save(make_checkpoint(model, config), tmp_path / "m.pt")
    run = [sys.executable, str(ROOT / "quantized.py"), str(tmp_path / "m.pt")]
    done = subprocess.run([*run, str(tmp_path / "c.q8"), "--bits", "4"], capture_output=True, text=True)
    size = (tmp_path / "c.q8").stat().st_size
    assert done.returncode == 0 and done.stdout == f"wrote {tmp_path / 'c.q8'}: {size:,} bytes, 4-bit weights " \
                                                   f"({quantized.SMALL_BITS}-bit small filters)\n"
    refused = subprocess.run([*run, str(tmp_path / "none" / "c.q8")], capture_output=True, text=True)
    assert refused.returncode == 1 and refused.stderr.startswith("quantized.py: error: ")
    assert refused.stderr.count("\n") == 1


def test_the_shipped_compact_model_is_a_k_bit_file_within_the_limit() -> None:
    path = ROOT / "weights" / "compact.q8"
    assert path.stat().st_size <= 225_000  # HW8's model limit, with no compressor
    model, header = quantized.load_model(path)
    assert header["config"]["arch"] == "mobilenet" and header["class_names"] == list(CLASS_NAMES)
    assert header["split"] == {"method": "stratified", "val_fraction": 0.1, "seed": 0}
    assert {t.get("bits") for t in header["tensors"]} == {None, quantized.DEFAULT_BITS, quantized.SMALL_BITS}
    with torch.no_grad():
        assert model(torch.rand(2, 1, 48, 48)).shape == (2, 7)
