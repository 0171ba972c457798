"""GPU step benchmark of the paper-size STCLN: samples/s, memory, TFLOP/s, MFU, eager and compiled, next to the loader.

    python -m bench.gpu_step                                   # CUDA, every row x precision x compile
    python -m bench.gpu_step --data_root data/PASTIS --workers 8 # loader column on the real PASTIS files
    python -m bench.gpu_step --precisions bf16 --compile off    # a subset
    python -m bench.gpu_step --device cpu --smoke               # dry run with tiny sizes (CI)

Rows (paper sizes, PASTIS): the pre-training step (batch 4, 32x32 crops), the fine-tuning step
(batch 2, 32x32 crops) -- the batch and crop defaults of pretrain_STCLN.py and
PASTIS/finetuning_STCLN.py -- both with --dates dates (default 61, the most a PASTIS patch has,
so the batch pads to it), and full-patch inference (1 x 61 x 10 x 128 x 128, STA in chunks of
--sta_chunk queries). Precisions: fp32 (strict, TF32 off), tf32 (CUDA only), bf16 (autocast, as
--amp). Each configuration is warmed up (compilation included) before it is timed.

FLOPs are counted once per row with torch.utils.flop_counter (forward + backward for the
training steps); TFLOP/s = FLOPs / step time; MFU = TFLOP/s / the device's peak for the
precision: the dense peak of the data sheet for known GPUs (PEAK_TFLOPS), else a matmul measured
here (the 'peak from' column says which). Peak memory: torch.cuda.max_memory_allocated on CUDA;
on CPU the process's peak resident set so far (monotonic, so only the first row is its own).

The loader column: samples/s of the training DataLoader (pad_collate, random 32x32 crops of
PASTIS folds 1-3, --workers worker processes) next to the step's samples/s; 'bound by' names the
slower of the two, i.e. what limits training on this machine.
"""

import argparse
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from bench.train_step import synchronize, timed_matmul_flops
from models import STCLNConfig, STCLNPretrain, STCLNSegmenter, tiny_config
from utils.args import HelpFormatter
from utils.precision import configure_matmul_precision

KIB = 1024
PRECISIONS = ("fp32", "tf32", "bf16")
# Dense (no sparsity) peak TFLOP/s from the vendors' data sheets, by a substring of the device name.
PEAK_TFLOPS = {
    "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0},
    "H100": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},  # SXM ("H100 80GB HBM3"); checked after PCIe
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0},
}


@dataclass
class Row:
    name: str
    mode: str  # pretrain | finetune | infer
    batch: int
    dates: int
    size: int
    sta_chunk: int = 0


def rows(args) -> list[Row]:
    if args.smoke:
        return [
            Row("pretrain step", "pretrain", 2, 6, 16),
            Row("finetune step", "finetune", 2, 6, 16),
            Row("infer full patch", "infer", 1, 6, 32, sta_chunk=256),
        ]
    return [
        Row("pretrain step", "pretrain", 4, args.dates, 32),
        Row("finetune step", "finetune", 2, args.dates, 32),
        Row("infer full patch", "infer", 1, args.dates, 128, sta_chunk=args.sta_chunk),
    ]


def build(row: Row, device: torch.device, smoke: bool, bands: int = 10, classes: int = 20):
    """Model, optimizer and inputs of ``row`` (fixed seed)."""
    torch.manual_seed(0)
    sizes = dict(in_channels=bands, num_classes=classes, sta_chunk=row.sta_chunk)
    config = tiny_config(**sizes) if smoke else STCLNConfig(**sizes)
    model = (STCLNPretrain(config) if row.mode == "pretrain" else STCLNSegmenter(config)).to(device)
    inputs = {
        "x": torch.randn(row.batch, row.dates, bands, row.size, row.size, device=device),
        "positions": torch.arange(row.dates, device=device).expand(row.batch, row.dates),
        "mask": torch.rand(row.batch, row.dates, row.size, row.size, device=device) < 0.4,
        "target": torch.randint(0, classes, (row.batch, row.size, row.size), device=device),
    }
    return model, inputs


def make_step(row: Row, model, inputs, optimizer, amp: bool, device: torch.device):
    """One training step (forward, loss, backward, Adam) or one inference forward."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
    x, positions = inputs["x"], inputs["positions"]

    def step():
        if row.mode == "infer":
            with torch.no_grad(), autocast:
                return model(x, positions).argmax(1)
        with autocast:
            if row.mode == "pretrain":
                loss = model(x, positions, inputs["mask"])["loss"]
            else:
                loss = F.cross_entropy(model(x, positions).float(), inputs["target"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def count_flops(row: Row, device: torch.device, smoke: bool) -> float:
    model, inputs = build(row, device, smoke)
    model.train(row.mode != "infer")
    step = make_step(row, model, inputs, torch.optim.Adam(model.parameters()), False, device)
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / KIB**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB  # Linux: KiB


def time_config(row: Row, device: torch.device, precision: str, backend: str | None, args) -> dict:
    """Steps/s of ``row`` in ``precision``, eager (backend None) or compiled with ``backend``."""
    configure_matmul_precision(device, strict_fp32=precision == "fp32")
    model, inputs = build(row, device, args.smoke)
    model.train(row.mode != "infer")
    fused = device.type == "cuda" and precision != "fp32"
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, **({"fused": True} if fused else {}))
    if backend:
        torch._dynamo.reset()
        model = torch.compile(model, backend=backend)
    step = make_step(row, model, inputs, optimizer, precision == "bf16", device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    synchronize(device)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.repeats):
        step()
    synchronize(device)
    seconds = (time.perf_counter() - start) / args.repeats
    return {
        "step_s": seconds,
        "samples_per_s": row.batch / seconds,
        "peak_mib": peak_memory_mib(device),
        "warmup_s": warmup_s,
    }


def device_peak(device: torch.device, precision: str) -> tuple[float, str]:
    """(peak FLOP/s for ``precision``, where it comes from)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in PEAK_TFLOPS.items():
            if key in name:
                return peaks[precision] * 1e12, f"data sheet ({key})"
    return measured_matmul_peak(device, precision), "measured matmul"


def measured_matmul_peak(device: torch.device, precision: str) -> float:
    """Dense matmul FLOP/s measured here in ``precision``."""
    n = 512 if device.type == "cpu" else 8192
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    configure_matmul_precision(device, strict_fp32=precision == "fp32")
    return timed_matmul_flops(device, dtype, n, 3 if device.type == "cpu" else 20)


def loader_samples_per_s(args, batch: int, dates: int) -> float:
    """Samples/s of the training DataLoader: random 32x32 crops of PASTIS folds 1-3, ``--workers`` workers."""
    from utils.datasets import PASTISDataset, pad_collate, write_pastis_like

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_root
        if root is None:
            root = Path(tmp) / "pastis_like"
            size, patches = (32, 10) if args.smoke else (128, 10)  # 6 patches in folds 1-3
            write_pastis_like(
                root, n_patches=patches, size=size, n_dates=(max(dates - 2, 2), dates), return_arrays=False
            )
        crop = 8 if args.smoke else 32
        dataset = PASTISDataset(root, folds=(1, 2, 3), crop_size=crop, crop_mode="random")
        loader = DataLoader(
            dataset,
            batch_size=batch,
            shuffle=True,
            num_workers=args.workers,
            collate_fn=pad_collate,
            persistent_workers=args.workers > 0,
        )
        for _ in loader:  # warm-up: worker start, page cache
            pass
        samples, start = 0, time.perf_counter()
        for _ in range(args.loader_epochs):
            for item in loader:
                samples += item["image"].shape[0]
        return samples / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda or cpu")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="dry run (CI): tiny model and sizes, 1 warm-up and 1 timed step, only the fine-tune row compiled",
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISIONS,
        default=list(PRECISIONS),
        help="fp32 = strict fp32; tf32 = fp32 with TF32 matmuls (CUDA only); bf16 = autocast (--amp)",
    )
    parser.add_argument(
        "--compile", nargs="+", choices=("off", "on"), default=["off", "on"], help="eager and/or torch.compile"
    )
    parser.add_argument(
        "--compile_backend", default=None, help="torch.compile backend (default: inductor on CUDA, aot_eager on CPU)"
    )
    parser.add_argument(
        "--dates", type=int, default=61, help="dates per series (PASTIS: 38-61; batches pad to the longest)"
    )
    parser.add_argument("--sta_chunk", type=int, default=4096, help="STA queries per chunk for full-patch inference")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3, smoke 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps (default 10, smoke 1)")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of the loader column")
    parser.add_argument(
        "--loader_epochs", type=int, default=5, help="timed passes over the loader's data set (smoke: 1)"
    )
    parser.add_argument(
        "--data_root",
        type=Path,
        default=None,
        help="PASTIS folder for the loader column (default: PASTIS-format synthetic patches in a temp dir)",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available (use --device cpu for a dry run)")
    args.warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 3)
    args.repeats = args.repeats if args.repeats is not None else (1 if args.smoke else 10)
    args.loader_epochs = 1 if args.smoke else args.loader_epochs
    backend = args.compile_backend or ("inductor" if device.type == "cuda" else "aot_eager")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}, torch {torch.__version__}{', SMOKE (tiny sizes)' if args.smoke else ''}")

    loader_rate = {}
    table = []
    for row in rows(args):
        flops = count_flops(row, device, args.smoke)
        if row.mode != "infer":
            loader_rate[row.name] = loader_samples_per_s(args, row.batch, row.dates)
        for precision in args.precisions:
            if precision == "tf32" and device.type != "cuda":
                continue  # TF32 is a CUDA tensor-core format
            peak, source = device_peak(device, precision)
            for compiled in args.compile:
                if args.smoke and compiled == "on" and row.mode != "finetune":
                    continue  # the dry run compiles one row only (compilation dominates its time)
                result = time_config(row, device, precision, backend if compiled == "on" else None, args)
                tflops = flops / result["step_s"] / 1e12
                table.append((row, precision, compiled, result, tflops, tflops * 1e12 / peak, source))
    configure_matmul_precision(device, strict_fp32=True)

    header = (
        "| row | B x T x HxW | precision | compile | step ms | samples/s | peak MiB | TFLOP/s | MFU | peak from "
        "| loader samples/s | bound by |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for row, precision, compiled, r, tflops, mfu, source in table:
        rate = loader_rate.get(row.name)
        bound = "-" if rate is None else ("data" if rate < r["samples_per_s"] else "step")
        print(
            f"| {row.name} | {row.batch} x {row.dates} x {row.size}x{row.size} | {precision} | "
            f"{compiled + (f' ({backend})' if compiled == 'on' else '')} | {r['step_s'] * 1e3:.1f} | {r['samples_per_s']:.2f} | "
            f"{r['peak_mib']:.0f} | {tflops:.3g} | {mfu:.1%} | {source} | "
            f"{'-' if rate is None else f'{rate:.1f} ({args.workers} workers)'} | {bound} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
