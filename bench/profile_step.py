"""Where a training step spends its time: torch.profiler tables of one STCLN step.

    python -m bench.profile_step                               # paper size, fine-tune, fp32
    python -m bench.profile_step --mode pretrain --bf16 --dates 12 --top 20
    python -m bench.profile_step --bf16 --compile

Builds the same step as ``bench.train_step`` (B x T x C x 32 x 32, paper widths), runs one
warm-up step, then profiles one step and prints the top operators by self CPU time and by self
CPU memory (bytes allocated by the operator itself), plus the step's total time and allocated bytes.
"""

import argparse
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from bench.train_step import Row, Variant, make_step
from utils.distributed import keep_freed_cpu_memory

MIB = 1024**2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("finetune", "pretrain"), default="finetune")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--dates", type=int, default=30)
    parser.add_argument("--size", type=int, default=32, help="H = W of the crop")
    parser.add_argument("--bands", type=int, default=10)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (profiles the compiled step)")
    parser.add_argument("--grad_checkpoint", action="store_true", help="activation checkpointing")
    parser.add_argument("--fast_dropout", action="store_true", help="dropout masks from 64-bit random words (--fast_dropout)")
    parser.add_argument("--top", type=int, default=15, help="rows of each table")
    args = parser.parse_args()
    keep_freed_cpu_memory()  # as the training scripts do
    row = Row("profile", args.mode, args.batch, args.dates, args.bands, args.size, args.size)
    variant = Variant("profile", args.bf16, args.compile, args.grad_checkpoint, args.fast_dropout)
    step = make_step(row, torch.device("cpu"), variant)
    step()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = prof.key_averages()
    total_us = sum(e.self_cpu_time_total for e in events)
    allocated = sum(max(e.self_cpu_memory_usage, 0) for e in events)
    print(f"{args.mode} {args.batch}x{args.dates}x{args.bands}x{args.size}x{args.size} "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}{' compiled' if args.compile else ''}{' grad_checkpoint' if args.grad_checkpoint else ''}"
          f"{' fast_dropout' if args.fast_dropout else ''}: "
          f"self CPU total {total_us / 1e6:.2f} s, allocated {allocated / MIB:,.0f} MiB in the step")
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=40))
    print(events.table(sort_by="self_cpu_memory_usage", row_limit=args.top, max_name_column_width=40))
    return 0


if __name__ == "__main__":
    sys.exit(main())
