"""Speed, memory and FLOP utilisation of STCLN training and inference steps.

    python -m bench.train_step                      # speed-up: paper-mode fp32 eager vs the fast path
    python -m bench.train_step --suite memory       # peak memory with and without --grad_checkpoint
    python -m bench.train_step --suite saved        # activation bytes kept for backward, with and without it
    python -m bench.train_step --suite rows         # per-workload table: FLOPs, MFU, scaling in T and H x W
    python -m bench.train_step --suite rows --device cuda --rows tiny-pretrain mtlcc-finetune --repeats 5

speed-up: for the paper-size fine-tune and pre-train steps (2 x 30 x 10 x 32 x 32), one process
builds the paper-mode fp32 eager step and the faster paths (bf16 autocast, bf16 autocast +
--fast_dropout, and bf16 autocast + torch.compile), warms them up (compilation included), then runs their timed steps in turn, so
machine noise hits every path alike; the ratio is the fp32 median over the path's median.

Peak memory is always measured in a fresh subprocess per configuration (CUDA:
max_memory_allocated; CPU: peak resident set size of a process that ran two steps). FLOPs come
from torch.utils.flop_counter for one step; MFU = achieved FLOP/s divided by a matmul peak
measured on the same machine in the same run. The saved suite counts the bytes autograd keeps for
backward during one forward (torch.autograd.graph.saved_tensors_hooks; a tensor saved by two
operators counts twice): what --grad_checkpoint changes, free of allocator caching.
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
from utils.distributed import keep_freed_cpu_memory

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
SPEEDUP_ROWS = [
    Row("paper-finetune", "finetune", 2, 30, 10, 32, 32),
    Row("paper-pretrain", "pretrain", 2, 30, 10, 32, 32),
]


@dataclass(frozen=True)
class Variant:
    """One way of running the same step: precision, compilation, activation checkpointing, dropout masks."""

    name: str
    amp: bool = False
    compile: bool = False
    grad_checkpoint: bool = False
    fast_dropout: bool = False


BASELINE = Variant("fp32 eager (paper mode)")
FAST_PATHS = [Variant("bf16 autocast", amp=True), Variant("bf16 + fast dropout", amp=True, fast_dropout=True),
              Variant("bf16 autocast + compile", amp=True, compile=True)]
MEMORY_PATHS = [BASELINE, Variant("fp32 eager + grad_checkpoint", grad_checkpoint=True), FAST_PATHS[0],
                Variant("bf16 autocast + grad_checkpoint", amp=True, grad_checkpoint=True)]
PATHS = {p.name: p for p in [BASELINE, *FAST_PATHS, *MEMORY_PATHS]}
ALL_ROWS = {r.name: r for r in ROWS + SPEEDUP_ROWS}


def make_step(row: Row, device: torch.device, variant: Variant):
    """Build the model and inputs of ``row`` run as ``variant`` (seeded: every path gets the same
    weights and data); return a closure running one step."""
    torch.manual_seed(0)
    config = tiny_config(in_channels=row.bands) if row.tiny else STCLNConfig(in_channels=row.bands, sta_chunk=row.sta_chunk)
    x = torch.randn(row.batch, row.dates, row.bands, row.height, row.width, device=device)
    positions = torch.arange(row.dates, device=device).expand(row.batch, row.dates)
    module = (STCLNPretrain(config) if row.mode == "pretrain" else STCLNSegmenter(config)).to(device)
    module.backbone.set_grad_checkpointing(variant.grad_checkpoint)
    module.backbone.set_fast_dropout(variant.fast_dropout)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-4)
    model = torch.compile(module) if variant.compile else module
    mask = torch.rand(row.batch, row.dates, row.height, row.width, device=device) < 0.4
    target = torch.randint(0, config.num_classes, (row.batch, row.height, row.width), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=variant.amp)

    def loss():
        with autocast:
            if row.mode == "pretrain":
                return model(x, positions, mask)["loss"]
            return torch.nn.functional.cross_entropy(model(x, positions).float(), target)

    def step():
        if row.mode == "infer":
            model.eval()
            with torch.no_grad(), autocast:
                return model(x, positions).argmax(1)
        out = loss()
        optimizer.zero_grad(set_to_none=True)
        out.backward()
        optimizer.step()
        return out

    step.loss = loss  # the forward alone (saved suite)
    return step


def saved_bytes_of_forward(run) -> tuple[object, int]:
    """Run ``run()`` and count the bytes autograd keeps for backward (packed saved tensors)."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = run()
    return out, total


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, amp: bool) -> float:
    """Measured dense matmul FLOP/s (bf16 with ``amp``, fp32 otherwise)."""
    dtype = torch.bfloat16 if amp else torch.float32
    return timed_matmul_flops(device, dtype, PEAK_MATMUL_SIZE, 5 if device.type == "cpu" else 50)


def timed_matmul_flops(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> float:
    """FLOP/s of ``repeats`` n x n @ n x n products in ``dtype`` after two warm-up products."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn_like(a)
    for _ in range(2):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def run_row(row: Row, device: torch.device, amp: bool, repeats: int) -> dict:
    """Time one row in this process; returns the numbers of the table."""
    step = make_step(row, device, Variant("rows", amp=amp))
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
        peak_mib = peak_rss_mib()
    return {"row": row.name, "step_s": seconds, "samples_per_s": row.batch / seconds, "peak_mib": peak_mib,
            "gflop_per_step": flops / 1e9, "achieved_tflops": flops / seconds / 1e12}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB  # Linux reports KiB


def run_speedup(row: Row, variants: list[Variant], repeats: int) -> dict:
    """Warm every variant up, then time them in turn ``repeats`` times (CPU, one process)."""
    device = torch.device("cpu")
    steps, warmup = {}, {}
    for v in variants:
        steps[v.name] = make_step(row, device, v)
        start = time.perf_counter()
        steps[v.name]()  # compilation, allocator, kernel selection
        steps[v.name]()
        warmup[v.name] = time.perf_counter() - start
    times = {v.name: [] for v in variants}
    for _ in range(repeats):
        for v in variants:
            start = time.perf_counter()
            steps[v.name]()
            times[v.name].append(time.perf_counter() - start)
    return {"row": row.name, "times": times, "warmup_s": warmup}


def run_memory(row: Row, variant: Variant) -> dict:
    """Peak resident memory of a fresh process running two steps of ``variant`` (CPU)."""
    step = make_step(row, torch.device("cpu"), variant)
    step()
    start = time.perf_counter()
    step()
    return {"row": row.name, "variant": variant.name, "peak_mib": peak_rss_mib(), "step_s": time.perf_counter() - start}


def subprocess_json(args: list[str]) -> dict | None:
    """Run this module with ``args`` in a fresh process; its last stdout line is JSON."""
    proc = subprocess.run([sys.executable, "-m", "bench.train_step", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"{' '.join(args)}: failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def print_environment(device: torch.device) -> None:
    fp32 = matmul_peak(device, False)
    line = f"device: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, measured matmul peak: fp32 {fp32 / 1e12:.3f}"
    if device.type == "cpu":
        line += f", bf16 {matmul_peak(device, True) / 1e12:.3f}"
    print(line + " TFLOP/s")


def speedup_suite(rows: list[Row], repeats: int, compile_model: bool, memory: bool) -> None:
    variants = [BASELINE] + [v for v in FAST_PATHS if compile_model or not v.compile]
    print_environment(torch.device("cpu"))
    print(f"{repeats} timed steps per path, run in turn after warm-up; step s = min / median; ratio = fp32 median / median")
    header = f"| {'row':<15} | {'path':<24} | {'step s (min / med)':>18} | {'samples/s':>9} | {'peak MiB':>8} | {'ratio':>6} |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for row in rows:
        result = subprocess_json(["--one_speedup", row.name, "--repeats", str(repeats)] + ([] if compile_model else ["--no_compile"]))
        if result is None:
            continue
        base = median(result["times"][BASELINE.name])
        best = None
        for v in variants:
            times = result["times"][v.name]
            peak_run = subprocess_json(["--one_memory", row.name, v.name]) if memory else None
            peak = f"{peak_run['peak_mib']:8.0f}" if peak_run else f"{'-':>8}"
            ratio = base / median(times)
            best = max(best or (0.0, ""), (ratio, v.name))
            print(f"| {row.name:<15} | {v.name:<24} | {min(times):8.2f} / {median(times):7.2f} | "
                  f"{row.batch / median(times):9.3f} | {peak} | {ratio:5.2f}x |")
        print(f"{row.name}: fastest path {best[1]}, {best[0]:.2f}x the fp32 eager step; warm-up (2 steps, compile included): "
              + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result["warmup_s"].items()))


def memory_suite(rows: list[Row]) -> None:
    print(f"peak resident memory of a fresh process running two steps (CPU, torch {torch.__version__})")
    header = f"| {'row':<15} | {'path':<31} | {'peak MiB':>8} | {'step s':>7} |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for row in rows:
        for v in MEMORY_PATHS:
            memory = subprocess_json(["--one_memory", row.name, v.name])
            if memory:
                print(f"| {row.name:<15} | {v.name:<31} | {memory['peak_mib']:8.0f} | {memory['step_s']:7.2f} |")


def run_saved(row: Row, variant: Variant) -> dict:
    """Bytes autograd keeps for backward during one forward of ``variant`` (CPU)."""
    _, saved = saved_bytes_of_forward(make_step(row, torch.device("cpu"), variant).loss)
    return {"row": row.name, "variant": variant.name, "saved_bytes": saved}


def saved_suite(rows: list[Row]) -> None:
    """Activation bytes kept for backward by one forward of each memory path (a fresh process each)."""
    print(f"activation bytes kept for backward by one forward (saved_tensors_hooks; CPU, torch {torch.__version__})")
    header = f"| {'row':<15} | {'path':<31} | {'saved MiB':>9} | {'vs without':>10} |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for row in rows:
        without = {}
        for v in MEMORY_PATHS:
            result = subprocess_json(["--one_saved", row.name, v.name])
            if result is None:
                continue
            saved = result["saved_bytes"]
            if not v.grad_checkpoint:  # MEMORY_PATHS: each precision without checkpointing comes first
                without[v.amp] = saved
            ratio = f"{without[v.amp] / saved:9.1f}x" if v.grad_checkpoint and v.amp in without else f"{'-':>10}"
            print(f"| {row.name:<15} | {v.name:<31} | {saved / KIB**2:9.0f} | {ratio} |")


def rows_suite(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    amp = device.type == "cuda"
    peak = matmul_peak(device, amp)
    rows = [r for r in ROWS if args.rows is None or r.name in args.rows]
    results = []
    for row in rows:
        result = subprocess_json(["--device", args.device, "--repeats", str(args.repeats), "--one", row.name])
        if result is None:
            continue
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=("speedup", "memory", "saved", "rows"), default="speedup")
    parser.add_argument("--device", default="cpu", help="rows suite: cpu or cuda (cuda uses bf16 autocast)")
    parser.add_argument("--rows", nargs="+", default=None,
                        help=f"subset of row names (speedup/memory: {', '.join(r.name for r in SPEEDUP_ROWS)})")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per row and path (speedup: 3, rows: 2)")
    parser.add_argument("--no_compile", action="store_true", help="speedup: leave torch.compile out (it takes minutes on CPU)")
    parser.add_argument("--skip_memory", action="store_true",
                        help="speedup: no peak-memory column (each path's peak needs its own process, compilation included)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one row, print JSON
    parser.add_argument("--one_speedup", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--one_memory", nargs=2, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--one_saved", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    keep_freed_cpu_memory()  # as the training scripts do on CPU
    if args.one is not None:
        device = torch.device(args.device)
        print(json.dumps(run_row(ALL_ROWS[args.one], device, device.type == "cuda", args.repeats or 2)))
        return 0
    if args.one_speedup is not None:
        variants = [BASELINE] + [v for v in FAST_PATHS if not (args.no_compile and v.compile)]
        print(json.dumps(run_speedup(ALL_ROWS[args.one_speedup], variants, args.repeats or 3)))
        return 0
    if args.one_memory is not None:
        print(json.dumps(run_memory(ALL_ROWS[args.one_memory[0]], PATHS[args.one_memory[1]])))
        return 0
    if args.one_saved is not None:
        print(json.dumps(run_saved(ALL_ROWS[args.one_saved[0]], PATHS[args.one_saved[1]])))
        return 0
    if args.suite == "rows":
        args.repeats = args.repeats or 2
        rows_suite(args)
        return 0
    if args.device != "cpu":
        parser.error(f"--suite {args.suite} measures the CPU paths; use --suite rows for --device {args.device}")
    rows = [r for r in SPEEDUP_ROWS if args.rows is None or r.name in args.rows]
    if not rows:
        parser.error(f"--rows: none of {args.rows} is a {args.suite} row ({', '.join(r.name for r in SPEEDUP_ROWS)})")
    if args.suite == "speedup":
        speedup_suite(rows, args.repeats or 3, not args.no_compile, not args.skip_memory)
    elif args.suite == "saved":
        saved_suite(rows)
    else:
        memory_suite(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
