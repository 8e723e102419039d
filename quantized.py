"""The k-bit model file (weights/compact.q8, the HW8 model): written, read and loaded by this module alone.

  python quantized.py <checkpoint.pt or model file> <out.q8> [--bits 5] [--small-bits 6] [--clip mse]
                      [--max-bytes 225000]

BatchNorm is folded into the convolutions, then every conv and linear weight is quantised per output channel:
symmetric k-bit integers (|q| <= 2**(k-1) - 1) times one scale per channel, k = --bits, or --small-bits for the
tensors whose channels hold at most SMALL_ROW weights (the 3x3 depthwise filters and the one-channel stem: 4 % of
the compact model's weights, and the ones whose rounding cost it accuracy at 5 bits). The codes are packed bit by bit,
so a 5-bit weight takes 5 bits; biases and scales are float16, the input normalisation float32.

Layout: MAGIC, the JSON header's length (uint32, little-endian), the JSON header, then each tensor's bytes in
the header's order. A quantised tensor ("bits": k) is its codes q + 2**(k-1) - 1 (unsigned, k bits each, least
significant bit first, row after row, padded to a whole byte), then its scales (its "scale" dtype); any other
tensor ("dtype") is its values, little-endian. The header's "sha256" is the digest of all tensor bytes, so a
damaged file is refused rather than predicting wrongly.

load_model reads this file, a checkpoint, or the int8 file of the larger released networks (compact_int8.py,
where present).
"""

import argparse
import copy
import hashlib
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model import build_model, fuse_for_inference, load_checkpoint, model_from_checkpoint
from utils import atomic_write, output_problem

try:
    import compact_int8
except ModuleNotFoundError as e:  # the HW8 hand-in ships without it: its model is a file of this module
    if e.name != "compact_int8":
        raise
    compact_int8 = None

MAGIC = b"FERQK\n"  # first bytes of a k-bit model file
FORMAT = 1  # the layout above; a reader refuses any other
BITS = range(2, 9)  # k: 2 bits is the fewest with a code on each side of zero; 8 fills a byte
DEFAULT_BITS = 5  # with SMALL_BITS, the smallest compact file that kept its int8 held-out accuracy (runs/compact/)
SMALL_BITS = 6  # the compact model's 3x3 filters at 5 bits cost it 0.7 points of held-out accuracy, at 6 none
SMALL_ROW = 9  # weights per channel of a 3x3 depthwise filter or a one-channel 3x3 conv
CLIPS = ("max", "mse")  # each channel's scale: its largest |weight| on the top code, or the least squared error
CLIP_RATIOS = torch.linspace(0.5, 1.0, 51)  # the clipping points --clip mse tries, as fractions of the largest |w|
SCALE_DTYPE = "float16"  # scales and biases: float16 keeps 3 significant digits, far finer than a 5-bit step
DTYPES = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}  # the file's floats, little-endian on any machine
HEADER_KEYS = ("class_names", "split", "val_acc", "val_acc_tta", "epoch", "git_commit")  # kept from the source


def stored(values: torch.Tensor, dtype: str) -> torch.Tensor:
    """The values as a file of dtype gives them back (float32); inf where dtype cannot hold them."""
    with np.errstate(over="ignore"):
        return torch.from_numpy(values.detach().float().numpy().astype(DTYPES[dtype]).astype(np.float32))


def channel_scales(rows: torch.Tensor, qmax: int, clip: str) -> torch.Tensor:
    """One scale per row, as stored: the row's largest |value| on code qmax ("max"), or the clipping point of
    CLIP_RATIOS whose rounding leaves the least squared error ("mse"). A zero row gets scale 1."""
    amax = rows.abs().amax(1)
    if not torch.isfinite(stored(amax / qmax, SCALE_DTYPE)).all():
        raise ValueError(f"weights too large for {SCALE_DTYPE} scales (largest |w| {amax.max().item():.3g})")
    best, best_error = torch.ones(len(rows)), torch.full((len(rows),), float("inf"))
    for ratio in CLIP_RATIOS if clip == "mse" else [1.0]:
        scale = stored(amax * ratio / qmax, SCALE_DTYPE)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        error = (rows - torch.round(rows / scale[:, None]).clamp(-qmax, qmax) * scale[:, None]).square().sum(1)
        better = error < best_error
        best, best_error = torch.where(better, scale, best), torch.where(better, error, best_error)
    return best


def quantize_weight(weight: torch.Tensor, bits: int, clip: str = "max") -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel k-bit quantisation: (q, scale), weight ~ q * scale[c] with |q| <= 2**(k-1) - 1.
    A scale per channel keeps thin depthwise filters from being rounded to zero by a large filter elsewhere."""
    if bits not in BITS:
        raise ValueError(f"{bits} bits: the file holds {BITS.start} to {BITS.stop - 1}")
    if clip not in CLIPS:
        raise ValueError(f"unknown clipping {clip!r}: one of {', '.join(CLIPS)}")
    qmax = 2 ** (bits - 1) - 1
    rows = weight.detach().float().flatten(1)
    scale = channel_scales(rows, qmax, clip)
    q = torch.round(rows / scale[:, None]).clamp_(-qmax, qmax).to(torch.int16)
    return q.view(weight.shape), scale


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Unsigned codes below 2**bits, each as `bits` bits, least significant first, padded to a whole byte."""
    planes = (codes.astype(np.uint16).reshape(-1, 1) >> np.arange(bits, dtype=np.uint16)) & 1
    return np.packbits(planes.astype(np.uint8).ravel(), bitorder="little").tobytes()


def unpack_codes(data: bytes, bits: int, count: int) -> np.ndarray:
    """The count codes that pack_codes wrote into data, as int32."""
    planes = np.unpackbits(np.frombuffer(data, np.uint8), count=count * bits, bitorder="little").reshape(count, bits)
    return (planes.astype(np.int32) << np.arange(bits, dtype=np.int32)).sum(1, dtype=np.int32)


def tensor_nbytes(t: dict) -> int:
    """Bytes of one tensor in the file, from its header entry."""
    n = int(np.prod(t["shape"], dtype=np.int64))
    if "bits" in t:
        return (n * t["bits"] + 7) // 8 + t["shape"][0] * DTYPES[t["scale"]].itemsize
    return n * DTYPES[t["dtype"]].itemsize


def tensor_entry(name: str, value: torch.Tensor, bits: int, small_bits: int, clip: str) -> tuple[dict, bytes]:
    """One tensor's header entry and bytes: weights (2 or more dims) quantised, to small_bits where a channel holds
    at most SMALL_ROW of them; vectors float16; scalars float32."""
    shape = list(value.shape)
    if not torch.isfinite(value).all():
        raise ValueError(f"{name}: a weight that is not a finite number")
    if value.ndim >= 2:
        bits = small_bits if value[0].numel() <= SMALL_ROW else bits
        q, scale = quantize_weight(value, bits, clip)
        codes = (q.flatten() + 2 ** (bits - 1) - 1).numpy()
        data = pack_codes(codes, bits) + scale.numpy().astype(DTYPES[SCALE_DTYPE]).tobytes()
        return {"name": name, "shape": shape, "bits": bits, "scale": SCALE_DTYPE}, data
    dtype = SCALE_DTYPE if value.ndim == 1 else "float32"
    values = stored(value, dtype)
    if not torch.isfinite(values).all():
        raise ValueError(f"{name}: values too large for {dtype}")
    return {"name": name, "shape": shape, "dtype": dtype}, values.numpy().astype(DTYPES[dtype]).tobytes()


def save_quantized(model: nn.Module, config: dict, path: str | Path, bits: int = DEFAULT_BITS,
                   small_bits: int = SMALL_BITS, clip: str = "max", **metadata) -> int:
    """Write the model, BatchNorm folded in, its weights in k-bit codes (the module docstring has the layout);
    returns the file size in bytes."""
    fused = fuse_for_inference(copy.deepcopy(model).cpu().eval())
    entries = [tensor_entry(name, value, bits, small_bits, clip) for name, value in fused.state_dict().items()]
    header = {"format": FORMAT, "config": config, "tensors": [t for t, _ in entries], **metadata}
    return write_quantized(path, header, b"".join(data for _, data in entries))


def write_quantized(path: str | Path, header: dict, tensor_bytes: bytes) -> int:
    """MAGIC, header length, JSON header (its sha256 set to the tensor bytes' digest), tensor bytes; written
    atomically. Returns the file size in bytes."""
    text = json.dumps({**header, "sha256": hashlib.sha256(tensor_bytes).hexdigest()}, separators=(",", ":")).encode()
    with atomic_write(path) as f:
        f.write(MAGIC + struct.pack("<I", len(text)) + text + tensor_bytes)
    return Path(path).stat().st_size


def is_quantized(path: str | Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def read_quantized(path: str | Path) -> tuple[dict, bytes]:
    """The header and the tensor bytes of a k-bit file, checked against the sizes and the digest its header
    gives; a file that is not one, or is damaged, is a one-line ValueError naming it."""
    data = Path(path).read_bytes()
    start = len(MAGIC) + 4
    if data[:len(MAGIC)] != MAGIC or len(data) < start:
        raise ValueError(f"{path}: not a k-bit model file of this project")
    (size,) = struct.unpack("<I", data[len(MAGIC):start])
    try:
        header = json.loads(data[start:start + size])
        expected = sum(tensor_nbytes(t) for t in header["tensors"])
    except (ValueError, KeyError, TypeError, IndexError):
        raise ValueError(f"{path}: the header of this k-bit model file is damaged") from None
    if header.get("format") != FORMAT:
        raise ValueError(f"{path}: k-bit model format {header.get('format')!r}, not {FORMAT}")
    body = data[start + size:]
    if len(body) != expected:
        raise ValueError(f"{path}: its tensors are not the {expected:,} bytes its header describes (truncated or "
                         f"damaged)")
    if hashlib.sha256(body).hexdigest() != header.get("sha256"):
        raise ValueError(f"{path}: its tensors do not match their sha256 (damaged)")
    return header, body


def tensor_value(t: dict, data: bytes) -> torch.Tensor:
    """One tensor, float32, from its header entry and its bytes."""
    n, rows = int(np.prod(t["shape"], dtype=np.int64)), t["shape"][0] if t["shape"] else 1
    if "bits" not in t:
        return torch.from_numpy(np.frombuffer(data, DTYPES[t["dtype"]]).astype(np.float32)).view(t["shape"])
    code_bytes = len(data) - rows * DTYPES[t["scale"]].itemsize
    q = unpack_codes(data[:code_bytes], t["bits"], n) - (2 ** (t["bits"] - 1) - 1)
    scale = torch.from_numpy(np.frombuffer(data[code_bytes:], DTYPES[t["scale"]]).astype(np.float32))
    return (torch.from_numpy(q.astype(np.float32)).view(rows, -1) * scale[:, None]).view(t["shape"])


def load_quantized(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild a save_quantized file: the fused network in eval mode with its weights dequantised to float32
    (the same bytes give the same weights every time), and the header."""
    header, body = read_quantized(path)
    model = fuse_for_inference(build_model(header["config"]).eval())
    state, offset = {}, 0
    for t in header["tensors"]:
        nbytes = tensor_nbytes(t)
        state[t["name"]] = tensor_value(t, body[offset:offset + nbytes])
        offset += nbytes
    model.load_state_dict(state)
    return model, header


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the network from its file alone, in eval mode, with the file's header or checkpoint: a k-bit file,
    an int8 file (compact_int8.py) or a checkpoint, told apart by content; quantised weights come back float32."""
    if is_quantized(path):
        model, header = load_quantized(path)
        return model.to(device), header
    if compact_int8 is not None and compact_int8.is_compact(path):
        model, header = compact_int8.load_compact(path)
        return model.to(device), header
    checkpoint = load_checkpoint(path)
    return model_from_checkpoint(checkpoint).to(device), checkpoint


def quantize_file(source: str, out: str, bits: int = DEFAULT_BITS, small_bits: int = SMALL_BITS, clip: str = "max",
                  max_bytes: int = 225_000) -> int:
    """Write a checkpoint or model file as a k-bit file, atomically; returns its size. An oversized file is
    removed and raises ValueError, the old out kept."""
    model, header = load_model(source)
    tmp = Path(out).with_name(f".{Path(out).name}.candidate")
    size = save_quantized(model, header["config"], tmp, bits, small_bits, clip, source=Path(source).name,
                          **{k: header[k] for k in HEADER_KEYS if k in header})
    if size > max_bytes:
        tmp.unlink()
        raise ValueError(f"{out}: {size:,} bytes, over the {max_bytes:,}-byte limit")
    os.replace(tmp, out)
    return size


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write a checkpoint (or model file) as a k-bit model file.")
    p.add_argument("source", help="a train.py checkpoint, or a model file to quantise further")
    p.add_argument("out", help="the k-bit file to write")
    p.add_argument("--bits", type=int, choices=BITS, default=DEFAULT_BITS, help="bits per conv or linear weight")
    p.add_argument("--small-bits", type=int, choices=BITS, default=SMALL_BITS, help=f"bits per weight of the tensors "
                   f"whose channels hold at most {SMALL_ROW} weights (3x3 depthwise filters, a one-channel stem)")
    p.add_argument("--clip", choices=CLIPS, default="max", help="each channel's scale: its largest |weight| on the "
                   "top code, or the clipping point with the least squared error")
    p.add_argument("--max-bytes", type=int, default=225_000, help="refuse a larger file (HW8's model limit)")
    args = p.parse_args(argv)
    problem = output_problem(args.out)
    if problem:
        sys.exit(f"quantized.py: error: {problem}")
    try:
        size = quantize_file(args.source, args.out, args.bits, args.small_bits, args.clip, args.max_bytes)
    except (ValueError, OSError) as e:
        sys.exit(f"quantized.py: error: {e}")
    print(f"wrote {args.out}: {size:,} bytes, {args.bits}-bit weights ({args.small_bits}-bit small filters)")


if __name__ == "__main__":
    main()
