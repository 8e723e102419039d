"""bench/compact_load.py: the sizes and load times of a compact file's encodings."""

import lzma
from pathlib import Path

import torch

from bench import compact_load
from compact_int8 import load_compact, read_compact, save_compact
from model import build_model


def test_each_encoding_is_measured_and_the_raw_file_is_format_1(tmp_path: Path) -> None:
    config = {"arch": "mobilenet", "channels": [8, 16, 32, 64], "blocks_per_stage": 1}
    model = build_model(config).eval()
    # weights of a trained net: mostly small numbers beside a few large ones, which deflate and xz compress
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) ** 3)
    save_compact(model, config, tmp_path / "c.q8")
    tensor_bytes = read_compact(tmp_path / "c.q8")[1]
    work = tmp_path / "work"
    work.mkdir()
    r = compact_load.measure(tmp_path / "c.q8", work, repeats=2)
    assert r["deflate"] == (tmp_path / "c.q8").stat().st_size < r["raw"]
    assert r["raw"] - r["xz"] == len(tensor_bytes) - len(lzma.compress(tensor_bytes, preset=9 | lzma.PRESET_EXTREME))
    assert load_compact(work / "raw_c.q8")[1]["format"] == 1 and read_compact(work / "raw_c.q8")[1] == tensor_bytes
    assert all(r[k] > 0 for k in ("load raw", "load deflate", "unpack xz"))
