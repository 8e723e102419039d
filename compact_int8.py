"""The int8 model file of the released VGG and ResNet networks (weights/*.q8 but compact.q8): BatchNorm folded
into the convolutions, every conv and linear weight as int8 with one fp32 scale per output channel, the rest fp32,
behind a JSON header. quantized.load_model reads these files through this module; the HW8 hand-in, which may
hold no general-purpose compressor, leaves it out (its model is a quantized.py file).

Layout: magic, header length (uint32), JSON header, then the tensor bytes in header order, deflated as one
zlib stream (format 2), or raw (format 1, the releases before it, still read).
"""

import copy
import json
import struct
import zlib
from pathlib import Path

import torch
from torch import nn

from model import build_model, fuse_for_inference
from utils import atomic_write

COMPACT_MAGIC = b"FERQ8\n"  # first bytes of a compact (int8) model file
COMPACT_FORMAT = 2  # 2: tensor bytes deflated; 1 (raw tensor bytes, the releases before it) is still read
DEFLATE_LEVEL = 9  # int8 weights are mostly small numbers, which deflate's Huffman codes pack near their entropy


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output channel: weight ~ q * scale[c]; a per-channel scale keeps thin depthwise
    filters from being rounded to zero by one large filter elsewhere in the tensor."""
    flat = weight.detach().float().flatten(1)
    scale = flat.abs().amax(1).clamp_min(1e-12) / 127
    q = torch.round(flat / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.view(weight.shape), scale


def save_compact(model: nn.Module, config: dict, path: str | Path, **metadata) -> int:
    """Write the model with BatchNorm folded in, conv and linear weights as int8 with one fp32 scale per
    output channel, everything else fp32 (write_compact has the layout). Returns the file size in bytes."""
    fused = fuse_for_inference(copy.deepcopy(model).cpu().eval())
    tensors, blobs = [], []
    for name, value in fused.state_dict().items():
        if value.ndim >= 2:
            q, scale = quantize_int8(value)
            tensors.append({"name": name, "shape": list(value.shape), "dtype": "int8"})
            blobs += [q.numpy().tobytes(), scale.numpy().astype("<f4").tobytes()]
        else:
            tensors.append({"name": name, "shape": list(value.shape), "dtype": "float32"})
            blobs.append(value.detach().float().numpy().astype("<f4").tobytes())
    header = {"format": COMPACT_FORMAT, "config": config, "tensors": tensors, **metadata}
    return write_compact(path, header, b"".join(blobs))


def write_compact(path: str | Path, header: dict, tensor_bytes: bytes, deflate: bool = True) -> int:
    """magic, header length (uint32), JSON header, then the tensor bytes in header order as one zlib stream
    (whose Adler-32 also catches a damaged file), or raw in format 1 (deflate=False, for comparisons).
    Written atomically; returns the file size in bytes."""
    header = json.dumps({**header, "format": COMPACT_FORMAT if deflate else 1}, separators=(",", ":")).encode()
    body = zlib.compress(tensor_bytes, DEFLATE_LEVEL) if deflate else tensor_bytes
    with atomic_write(path) as f:
        f.write(COMPACT_MAGIC + struct.pack("<I", len(header)) + header + body)
    return Path(path).stat().st_size


def is_compact(path: str | Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(COMPACT_MAGIC)) == COMPACT_MAGIC


def read_compact(path: str | Path) -> tuple[dict, bytes]:
    """The header and the raw tensor bytes of a compact file (format 1 or 2), checked against the sizes the
    header describes; a file that is not one, or is damaged, is a one-line ValueError naming it."""
    data = Path(path).read_bytes()
    start = len(COMPACT_MAGIC) + 4
    if data[:len(COMPACT_MAGIC)] != COMPACT_MAGIC or len(data) < start:
        raise ValueError(f"{path}: not a compact model file of this project")
    (size,) = struct.unpack("<I", data[len(COMPACT_MAGIC):start])
    try:
        header = json.loads(data[start:start + size])
        expected = sum(tensor_nbytes(t) for t in header["tensors"])
    except (ValueError, KeyError, TypeError, IndexError):
        raise ValueError(f"{path}: the header of this compact model file is damaged") from None
    body = data[start + size:]
    if header.get("format") == COMPACT_FORMAT:
        stream = zlib.decompressobj()
        try:  # max_length: a damaged or hostile stream cannot inflate past what the header describes
            body = stream.decompress(body, expected + 1)
        except zlib.error:
            raise ValueError(f"{path}: the tensors of this compact model file are damaged") from None
        if not stream.eof or stream.unused_data:  # cut short, longer than described, or followed by stray bytes
            body = b""
    elif header.get("format") != 1:
        raise ValueError(f"{path}: compact model format {header.get('format')!r}, not 1 or {COMPACT_FORMAT}")
    if len(body) != expected:
        raise ValueError(f"{path}: its tensors are not the {expected:,} bytes its header describes "
                         f"(truncated or damaged)")
    return header, body


def tensor_nbytes(t: dict) -> int:
    """Bytes of one tensor in a compact file: int8 weights then one fp32 scale per row, or 4 per fp32 value."""
    n = int(torch.Size(t["shape"]).numel())
    return n + 4 * t["shape"][0] if t["dtype"] == "int8" else 4 * n


def load_compact(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild a save_compact file: the fused network in eval mode, weights dequantised to fp32 (the same
    bytes give the same weights every time), and the header. Numbers are little-endian, as on x86 and ARM."""
    header, body = read_compact(path)
    model = fuse_for_inference(build_model(header["config"]).eval())
    state, offset = {}, 0
    for t in header["tensors"]:
        nbytes = tensor_nbytes(t)
        if t["dtype"] == "int8":
            rows = t["shape"][0]
            q = torch.frombuffer(bytearray(body[offset:offset + nbytes - 4 * rows]), dtype=torch.int8).float()
            scale = torch.frombuffer(bytearray(body[offset + nbytes - 4 * rows:offset + nbytes]), dtype=torch.float32)
            state[t["name"]] = (q.view(rows, -1) * scale[:, None]).view(t["shape"])
        else:
            state[t["name"]] = torch.frombuffer(bytearray(body[offset:offset + nbytes]),
                                                dtype=torch.float32).view(t["shape"])
        offset += nbytes
    model.load_state_dict(state)
    return model, header

