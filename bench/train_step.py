"""Speed, memory and FLOP utilisation of STCLN training and inference steps.

    python -m bench.train_step                      # CPU, every row (a few minutes on 2 cores)
    python -m bench.train_step --device cuda        # bf16 autocast, same columns
    python -m bench.train_step --rows tiny-pretrain mtlcc-finetune --repeats 5

Each row runs in a fresh subprocess so its peak memory is its own (CUDA: max_memory_allocated;
CPU: peak resident set size of the process). FLOPs come from torch.utils.flop_counter for one
step; MFU = achieved FLOP/s divided by a matmul peak measured on the same machine in the same run.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from models import STCLNPretrain, STCLNSegmenter, STCLNConfig, tiny_config

PEAK_MATMUL_SIZE = 2048
KIB = 1024


@dataclass
class Row:
    name: str
    mode: str  # pretrain | finetune | infer
    batch: int
    dates: int
    bands: int
    height: int
    width: int
    tiny: bool = False
    sta_chunk: int = 0


ROWS = [
    Row("tiny-pretrain", "pretrain", 4, 8, 10, 16, 16, tiny=True),
    Row("tiny-finetune", "finetune", 4, 8, 10, 16, 16, tiny=True),
    Row("mtlcc-pretrain", "pretrain", 2, 30, 13, 48, 48),
    Row("mtlcc-finetune", "finetune", 2, 30, 13, 48, 48),
    Row("pastis-crop-pretrain", "pretrain", 2, 43, 10, 32, 32),
    Row("pastis-crop-finetune", "finetune", 2, 61, 10, 32, 32),
    Row("scale-base T30 32x32", "finetune", 2, 30, 10, 32, 32),
    Row("scale-T60 32x32", "finetune", 2, 60, 10, 32, 32),
    Row("scale-T30 32x64", "finetune", 2, 30, 10, 32, 64),
    Row("pastis-full-infer", "infer", 1, 61, 10, 128, 128, sta_chunk=4096),
]


def make_step(row: Row, device: torch.device, amp: bool):
    """Build the model and inputs of ``row``; return a closure running one step."""
    config = tiny_config(in_channels=row.bands) if row.tiny else STCLNConfig(in_channels=row.bands, sta_chunk=row.sta_chunk)
    x = torch.randn(row.batch, row.dates, row.bands, row.height, row.width, device=device)
    positions = torch.arange(row.dates, device=device).expand(row.batch, row.dates)
    model = (STCLNPretrain(config) if row.mode == "pretrain" else STCLNSegmenter(config)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    mask = torch.rand(row.batch, row.dates, row.height, row.width, device=device) < 0.4
    target = torch.randint(0, config.num_classes, (row.batch, row.height, row.width), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)

    def step():
        if row.mode == "infer":
            model.eval()
            with torch.no_grad(), autocast:
                return model(x, positions).argmax(1)
        with autocast:
            out = model(x, positions, mask)["loss"] if row.mode == "pretrain" else torch.nn.functional.cross_entropy(model(x, positions).float(), target)
        optimizer.zero_grad(set_to_none=True)
        out.backward()
        optimizer.step()
        return out

    return step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, amp: bool) -> float:
    """Measured dense matmul FLOP/s (fp32 on CPU, bf16 on CUDA with AMP)."""
    dtype = torch.bfloat16 if amp and device.type == "cuda" else torch.float32
    a = torch.randn(PEAK_MATMUL_SIZE, PEAK_MATMUL_SIZE, device=device, dtype=dtype)
    b = torch.randn_like(a)
    for _ in range(2):
        a @ b
    synchronize(device)
    repeats = 5 if device.type == "cpu" else 50
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * PEAK_MATMUL_SIZE**3 * repeats / (time.perf_counter() - start)


def run_row(row: Row, device: torch.device, amp: bool, repeats: int) -> dict:
    """Time one row in this process; returns the numbers of the table."""
    step = make_step(row, device, amp)
    step()  # warm-up (allocator, kernels)
    synchronize(device)
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    synchronize(device)
    seconds = (time.perf_counter() - start) / repeats
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated(device) / KIB**2
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB  # Linux reports KiB
    return {"row": row.name, "step_s": seconds, "samples_per_s": row.batch / seconds, "peak_mib": peak_mib,
            "gflop_per_step": flops / 1e9, "achieved_tflops": flops / seconds / 1e12}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda uses bf16 autocast)")
    parser.add_argument("--rows", nargs="+", default=None, help="subset of row names")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per row")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one row, print JSON
    args = parser.parse_args()
    device = torch.device(args.device)
    amp = device.type == "cuda"
    if args.one is not None:
        row = next(r for r in ROWS if r.name == args.one)
        print(json.dumps(run_row(row, device, amp, args.repeats)))
        return 0
    peak = matmul_peak(device, amp)
    rows = [r for r in ROWS if args.rows is None or r.name in args.rows]
    results = []
    for row in rows:
        cmd = [sys.executable, "-m", "bench.train_step", "--device", args.device, "--repeats", str(args.repeats), "--one", row.name]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{row.name}: failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["mfu"] = result["achieved_tflops"] * 1e12 / peak
        results.append(result)
    print(f"device: {device} ({torch.get_num_threads()} threads), amp: {amp}, torch {torch.__version__}, "
          f"measured matmul peak: {peak / 1e12:.3f} TFLOP/s")
    header = f"| {'row':<22} | {'step s':>8} | {'samples/s':>9} | {'peak MiB':>9} | {'GFLOP/step':>10} | {'TFLOP/s':>8} | {'MFU':>6} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in results:
        print(f"| {r['row']:<22} | {r['step_s']:8.3f} | {r['samples_per_s']:9.2f} | {r['peak_mib']:9.0f} | "
              f"{r['gflop_per_step']:10.1f} | {r['achieved_tflops']:8.3f} | {r['mfu']:6.1%} |")
    by_name = {r["row"]: r for r in results}
    base = by_name.get("scale-base T30 32x32")
    for name, label in (("scale-T60 32x32", "T x2"), ("scale-T30 32x64", "HxW x2")):
        if base and name in by_name:
            print(f"scaling {label}: time x{by_name[name]['step_s'] / base['step_s']:.2f}, peak memory x{by_name[name]['peak_mib'] / base['peak_mib']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
