"""Training step time of single- vs multi-source STCLN, side by side in one run (issue 38).

    python -m bench.multisource_step                       # tiny and small presets, fine-tune and pre-train steps
    python -m bench.multisource_step --presets small --repeats 5 --size 32 --dates 20 --radar_dates 30

Three models per preset and mode, built in one process from the same seed: the single-source model
(S2, 10 bands), and S2 + S1A + S1D (3 bands each, on their own ``--radar_dates`` dates) with
``fusion=late`` and with ``fusion=merged``. Each path is warmed up once, then their timed steps run in
turn (path 1, 2, 3, 1, 2, 3, ...) so machine noise hits every path alike; a step is forward, backward
and an Adam update (the fine-tune step with a cross-entropy over all pixels, the pre-train step with
the masked reconstruction loss of utils.masking's cell masks, all sources). Printed: median step
seconds, samples/s and the slowdown against the single-source step.
"""

import argparse
import statistics
import time

import torch

from models import STCLNPretrain, STCLNSegmenter
from models.config import PRESETS
from utils.masking import MaskingConfig, build_source_mask

RADAR = {"S1A": 3, "S1D": 3}
VARIANTS = ("S2", "S2+S1 late", "S2+S1 merged")


def build_step(preset: str, mode: str, variant: str, args: argparse.Namespace):
    """A closure running one training step of ``variant`` (seeded: same data for every path)."""
    torch.manual_seed(0)
    extra_config = {} if variant == "S2" else dict(extra_sources=tuple(RADAR), extra_channels=tuple(RADAR.values()))
    fusion = "merged" if variant.endswith("merged") else "late"
    config = PRESETS[preset](in_channels=10, num_classes=20, positions="doy", fusion=fusion, **extra_config)
    B, S = args.batch, args.size
    x = torch.randn(B, args.dates, 10, S, S)
    days = torch.sort(torch.randint(0, 365, (B, args.dates)), dim=1).values
    extra = None
    if config.extra_sources:
        extra = {}
        for name, bands in RADAR.items():
            radar_days = torch.sort(torch.randint(0, 365, (B, args.radar_dates)), dim=1).values
            extra[name] = (torch.randn(B, args.radar_dates, bands, S, S), radar_days, None)
    generator = torch.Generator().manual_seed(0)
    masking = MaskingConfig()
    mask = build_source_mask(x, None, masking, generator)
    extra_masks = {name: build_source_mask(value[0], None, masking, generator) for name, value in (extra or {}).items()}
    kwargs = {} if extra is None else {"extra": extra}
    model = STCLNPretrain(config) if mode == "pretrain" else STCLNSegmenter(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    target = torch.randint(0, config.num_classes, (B, S, S))

    def step() -> None:
        if mode == "pretrain":
            loss = model(x, days, mask, None, **kwargs, **({"extra_masks": extra_masks} if extra else {}))["loss"]
        else:
            loss = torch.nn.functional.cross_entropy(model(x, days, None, None, **kwargs), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, sum(p.numel() for p in model.parameters())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"], choices=sorted(PRESETS))
    parser.add_argument("--modes", nargs="+", default=["finetune", "pretrain"], choices=["finetune", "pretrain"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=16, help="crop side in pixels")
    parser.add_argument("--dates", type=int, default=12, help="S2 dates per sample")
    parser.add_argument("--radar_dates", type=int, default=16, help="dates of each S1 orbit per sample")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per path")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: less exposed to other load)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 CPU; batch {args.batch}, "
        f"{args.size}x{args.size} px, S2 {args.dates} dates, S1A and S1D {args.radar_dates} dates each"
    )
    print("| preset | step | model | parameters | step s (median) | samples/s | x single |")
    print("|---|---|---|---|---|---|---|")
    for preset in args.presets:
        for mode in args.modes:
            steps = {variant: build_step(preset, mode, variant, args) for variant in VARIANTS}
            for step, _ in steps.values():
                step()  # warm-up
            times = {variant: [] for variant in VARIANTS}
            for _ in range(args.repeats):
                for variant, (step, _) in steps.items():
                    start = time.perf_counter()
                    step()
                    times[variant].append(time.perf_counter() - start)
            base = statistics.median(times["S2"])
            for variant in VARIANTS:
                median = statistics.median(times[variant])
                print(
                    f"| {preset} | {mode} | {variant} | {steps[variant][1]:,} | {median:.3f} | "
                    f"{args.batch / median:.1f} | {median / base:.2f} |"
                )


if __name__ == "__main__":
    main()
