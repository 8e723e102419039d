"""Where one thread's inference time goes: seconds per 512 faces and the top operators (torch.profiler).

  python bench/profile_inference.py [--model PATH ...] [--faces 512]

Random uint8 faces, no TTA, predict.py's batches; run it again under ONEDNN_MAX_CPU_ISA=AVX2
ATEN_CPU_CAPABILITY=avx2 to see what a CPU without AVX-512 would spend.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from predict import RELEASED_COMPACT, RELEASED_ENSEMBLE, load_for_inference, predict_proba


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", help="default: the compact file and the first released VGG")
    p.add_argument("--faces", type=int, default=512)
    args = p.parse_args()
    torch.set_num_threads(1)
    faces = torch.randint(0, 256, (args.faces, 1, 48, 48), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    isa = {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if k in os.environ}
    print(f"torch {torch.__version__}, 1 thread{f', {isa}' if isa else ''}")
    for path in args.model or [RELEASED_COMPACT, RELEASED_ENSEMBLE[0]]:
        model = load_for_inference(path)
        predict_proba(model, faces[:64], tta=False)  # warm-up: oneDNN's first calls pick their kernels
        start = time.perf_counter()
        predict_proba(model, faces, tta=False)
        print(f"{Path(path).name}: {time.perf_counter() - start:.2f} s per {args.faces} faces")
        with torch.profiler.profile() as prof:
            predict_proba(model, faces, tta=False)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=6))


if __name__ == "__main__":
    main()
