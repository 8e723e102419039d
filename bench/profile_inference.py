"""Where one thread's inference time goes: seconds per 512 faces and the top operators (torch.profiler).

  python bench/profile_inference.py [--model PATH ...] [--faces 512] [--default-malloc]

Random uint8 faces, no TTA, predict.py's batches and memory setting (model.keep_freed_memory; --default-malloc
leaves glibc's as it is); the timed pass's system seconds and minor page faults show what the kernel spent. Run it
again under ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 to see what a CPU without AVX-512 would spend.
"""

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from model import keep_freed_memory
from predict import load_for_inference, predict_proba, released


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", help="default: the compact file and the first released VGG")
    p.add_argument("--faces", type=int, default=512)
    p.add_argument("--default-malloc", action="store_true", help="without predict.py's keep_freed_memory")
    args = p.parse_args()
    torch.set_num_threads(1)
    kept = not args.default_malloc and keep_freed_memory()
    faces = torch.randint(0, 256, (args.faces, 1, 48, 48), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    isa = {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if k in os.environ}
    print(f"torch {torch.__version__}, 1 thread{f', {isa}' if isa else ''}, "
          f"{'freed memory kept' if kept else 'glibc malloc as it is'}")
    for path in args.model or [*released("compact"), released("default")[0]]:
        model = load_for_inference(path)
        predict_proba(model, faces[:64], tta=False)  # warm-up: oneDNN's first calls pick their kernels
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        predict_proba(model, faces, tta=False)
        seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        print(f"{Path(path).name}: {seconds:.2f} s per {args.faces} faces, {after.ru_stime - before.ru_stime:.2f} s "
              f"of it system time, {after.ru_minflt - before.ru_minflt:,} minor page faults")
        with torch.profiler.profile() as prof:
            predict_proba(model, faces, tta=False)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=6))


if __name__ == "__main__":
    main()
