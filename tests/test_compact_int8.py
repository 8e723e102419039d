"""compact_int8.py: the int8 file of the larger released networks (format 2 deflated, format 1 raw)."""

from pathlib import Path

import pytest
import torch
from conftest import trained_mobilenet

from compact_int8 import load_compact, quantize_int8, read_compact, save_compact, write_compact
from model import count_parameters
from quantized import load_model


def test_compact_file_round_trips_within_the_int8_tolerance(tmp_path: Path) -> None:
    model, config = trained_mobilenet()
    path = tmp_path / "c.q8"
    size = save_compact(model, config, path, split={"seed": 0})
    assert size == path.stat().st_size < 0.5 * 4 * count_parameters(model)  # int8 weights, not fp32
    loaded, header = load_model(path)
    assert header["config"] == config and header["split"] == {"seed": 0}
    x = torch.rand(64, 1, 48, 48)
    with torch.no_grad():
        expected, got = model(x), loaded(x)
    # int8 per output channel: each weight is off by at most half a step (max |w| / 254)
    assert (got - expected).abs().max() <= 0.02 * expected.abs().max()
    assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.95
    assert torch.equal(load_compact(path)[0](x), got)  # the same file gives the same logits every time
    save_compact(model, config, tmp_path / "again.q8", split={"seed": 0})
    assert (tmp_path / "again.q8").read_bytes() == path.read_bytes()


def test_int8_quantisation_is_per_channel_and_symmetric() -> None:
    weight = torch.tensor([[1.0, -0.5, 0.25], [0.001, -0.002, 0.0]])
    q, scale = quantize_int8(weight)
    assert q.dtype == torch.int8 and q.abs().max(1).values.tolist() == [127, 127]
    assert torch.allclose(q.float() * scale[:, None], weight, atol=float(scale.max()) / 2)


@pytest.mark.parametrize("damage", ["truncate", "magic", "header", "tensors", "stray bytes", "format"])
def test_a_damaged_compact_file_is_refused(tmp_path: Path, damage: str) -> None:
    model, config = trained_mobilenet()
    path = tmp_path / "c.q8"
    save_compact(model, config, path)
    data = path.read_bytes()
    middle = len(data) // 2 + 50  # inside the xz stream, past the header
    damaged = {"truncate": data[:-10], "magic": b"XXXXX" + data[5:], "header": data[:10] + b"#" + data[11:],
               "tensors": data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1:], "stray bytes": data + b"\0",
               "format": data.replace(b'"format":2', b'"format":3', 1)}[damage]
    assert damaged != data
    path.write_bytes(damaged)
    with pytest.raises(ValueError, match=str(path)):
        load_compact(path)


def test_a_format_1_compact_file_still_loads(tmp_path: Path) -> None:
    model, config = trained_mobilenet()
    save_compact(model, config, tmp_path / "c.q8")
    old = tmp_path / "old.q8"
    write_compact(old, *read_compact(tmp_path / "c.q8"), deflate=False)
    assert old.stat().st_size > (tmp_path / "c.q8").stat().st_size  # format 2 compresses the tensors
    (new_net, new_header), (old_net, old_header) = load_compact(tmp_path / "c.q8"), load_compact(old)
    assert (new_header["format"], old_header["format"]) == (2, 1)
    assert all(torch.equal(a, b) for a, b in zip(new_net.state_dict().values(), old_net.state_dict().values(),
                                                  strict=True))
