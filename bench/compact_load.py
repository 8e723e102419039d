"""Bytes and load time of each released int8 file in its raw form (format 1) and deflated (format 2, what
compact_int8.write_compact writes), with xz beside them for the choice between the two codecs.

  python bench/compact_load.py [--repeats 5] [FILE.q8 ...]   (default: the int8 files among weights/*.q8)

The encodings of one file take turns, so a busy host slows them alike; one thread, as predict.py's start-up.
"""

import argparse
import lzma
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.speed import cpu_description  # noqa: E402
from compact_int8 import is_compact, read_compact, write_compact  # noqa: E402
from quantized import load_model  # noqa: E402


def seconds(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def measure(path: Path, folder: Path, repeats: int) -> dict:
    """Sizes and median times (ms) of one compact file's encodings."""
    header, tensor_bytes = read_compact(path)
    raw, deflated = folder / f"raw_{path.name}", folder / f"deflated_{path.name}"
    sizes = {"raw": write_compact(raw, header, tensor_bytes, deflate=False),
             "deflate": write_compact(deflated, header, tensor_bytes)}
    xz = lzma.compress(tensor_bytes, preset=9 | lzma.PRESET_EXTREME)
    sizes["xz"] = sizes["raw"] - len(tensor_bytes) + len(xz)
    times = {"load raw": [], "load deflate": [], "unpack xz": []}
    for _ in range(repeats):
        times["load raw"].append(seconds(lambda: load_model(raw)))
        times["load deflate"].append(seconds(lambda: load_model(deflated)))
        times["unpack xz"].append(seconds(lambda: lzma.decompress(xz)))
    return {**sizes, **{k: 1000 * statistics.median(v) for k, v in times.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", type=Path, default=[p for p in sorted((ROOT / "weights").glob("*.q8"))
                                                           if is_compact(p)])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"# {cpu_description()}; median of {args.repeats}, the encodings taking turns")
    print(f"{'file':22s} {'raw bytes':>10s} {'deflate':>10s} {'xz':>10s} {'load raw':>9s} {'load deflate':>13s} "
          f"{'unpack xz':>10s}")
    total = {"raw": 0, "deflate": 0, "xz": 0}
    with tempfile.TemporaryDirectory() as folder:
        for path in args.files:
            r = measure(path, Path(folder), args.repeats)
            total = {k: v + r[k] for k, v in total.items()}
            print(f"{path.name:22s} {r['raw']:10,} {r['deflate']:10,} {r['xz']:10,} {r['load raw']:6.0f} ms "
                  f"{r['load deflate']:10.0f} ms {r['unpack xz']:7.0f} ms", flush=True)
    print(f"{'total':22s} {total['raw']:10,} {total['deflate']:10,} {total['xz']:10,}")


if __name__ == "__main__":
    main()
