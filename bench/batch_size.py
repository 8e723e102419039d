"""Inference time against batch size, per model, on the real test faces (model loading not included).

  python bench/batch_size.py [--data ../shared/fer2013] [--faces 1024] [--sizes 8,16,32,64,128] [--model PATH ...]

Prints, per model and batch size, the median of 3 timed passes over the first --faces test faces
(flip TTA, as predict.py runs), scaled to the whole test set.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dataset import read_faces  # noqa: E402
from predict import BATCH_SIZE, load_for_inference, predict_proba, released  # noqa: E402


def seconds_per_test_set(model, images, n_test: int, batch_size: int, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict_proba(model, images, batch_size)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * n_test / len(images)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "fer2013")
    p.add_argument("--faces", type=int, default=1024)
    p.add_argument("--sizes", default="8,16,32,64,128")
    p.add_argument("--model", action="append", default=[], help="default: compact.q8, a released VGG")
    args = p.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, python {sys.version.split()[0]}")
    test = read_faces(args.data / "test.csv.gz").images
    images = test[:args.faces]
    for path in args.model or [*released("compact"), released("default")[0]]:
        model = load_for_inference(path)
        predict_proba(model, images[:256], BATCH_SIZE)  # warm-up: the first pass pays for oneDNN's kernel selection
        for size in map(int, args.sizes.split(",")):
            print(f"{Path(path).name} batch {size:4d}: {seconds_per_test_set(model, images, len(test), size):6.2f} s "
                  f"per test set (flip TTA)", flush=True)


if __name__ == "__main__":
    main()
