"""Dropout mask costs on CPU: PyTorch's dropout against ``--fast_dropout`` (models/temporal.py).

    python -m bench.dropout            # 2 threads by default; OMP_NUM_THREADS / --threads to change

Prints, for a bf16 and an fp32 tensor of 15.7 M values and for the FFN activation of a paper-size
step (2 x 1024 pixels x 30 dates x 1024, bf16), the best of 5 timings of: ``bernoulli_`` into a
bool mask, ``F.dropout``, one int64 ``random_`` per four values, and ``fast_dropout`` forward and
backward; then a tiny-model fine-tune step (the label-efficiency study's size) with and without
the option, fp32 and bf16 autocast, alternating repeats (bench.train_step).
"""

import argparse
import time

import torch
import torch.nn.functional as F

from bench.train_step import Row, Variant, median, run_speedup
from models.temporal import fast_dropout
from utils.distributed import keep_freed_cpu_memory


def best_ms(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def masks(n: int, dtype: torch.dtype, p: float = 0.1) -> None:
    x = torch.randn(n, dtype=dtype, requires_grad=True)
    grad = torch.randn(n, dtype=dtype)
    rows = {
        "bernoulli_ (bool mask)": lambda: torch.empty(n, dtype=torch.bool).bernoulli_(1 - p),
        "F.dropout forward": lambda: F.dropout(x.detach(), p, training=True),
        "int64 random_, one per 4 values": lambda: torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None),
        "fast_dropout forward": lambda: fast_dropout(x.detach(), p),
        "fast_dropout forward + backward": lambda: fast_dropout(x, p).backward(grad),
        "F.dropout forward + backward": lambda: F.dropout(x, p, training=True).backward(grad),
    }
    for name, fn in rows.items():
        print(f"| {n / 1e6:.1f} M {str(dtype).removeprefix('torch.'):<8} | {name:<32} | {best_ms(fn):8.1f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15, help="timed tiny-model steps per path")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_cpu_memory()  # as the training scripts do on CPU
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; best of 5, ms")
    print("| tensor | operation | ms |\n|---|---|---|")
    for n, dtype in ((15_700_000, torch.bfloat16), (15_700_000, torch.float32), (2 * 1024 * 30 * 1024, torch.bfloat16)):
        masks(n, dtype)
    row = Row("tiny-study", "finetune", 8, 25, 10, 16, 16, tiny=True)
    variants = [
        Variant("fp32"),
        Variant("fp32 + fast dropout", fast_dropout=True),
        Variant("bf16", amp=True),
        Variant("bf16 + fast dropout", amp=True, fast_dropout=True),
    ]
    times = run_speedup(row, variants, args.repeats)["times"]
    base = median(times["fp32"])
    print(f"\ntiny-model fine-tune step 8 x 25 x 10 x 16 x 16, {args.repeats} alternating repeats:")
    for v in variants:
        t = times[v.name]
        print(
            f"| {v.name:<20} | min {1e3 * min(t):7.1f} ms | median {1e3 * median(t):7.1f} ms | {base / median(t):.2f}x |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
