"""How much of the masked-reconstruction pretext do non-learned rules already solve?

    python -m experiments.pretext_baselines                                   # the synthetic benchmark
    python -m experiments.pretext_baselines --synthetic_version 1             # the original demo set
    python -m experiments.pretext_baselines --dataset pastis --data_root data/PASTIS
    python -m experiments.pretext_baselines --smoke                           # seconds (CI)

Masks the pre-training data exactly as pre-training does (the same data set, folds, crops,
normalisation, NDVI gate and mask generator; ratio 0.4 by default) once per --mask_mode, and
scores three non-learned predictions of the masked cells in the units of the pre-training loss
(MSE over the masked cells and all bands of the normalised input; ``utils/pretext_baselines.py``):

    (a) neighbour mean     mean of the visible cells of the same-date 3x3 neighbourhood (a cell
                           with no visible neighbour takes the date's visible mean; its share is
                           the "no neighbour" column)
    (b) temporal interp    per-pixel linear interpolation in time (acquisition days) between the
                           nearest visible dates; nearest visible value at the ends
    (c) best constant      each band's mean over the masked cells: the best a mask token alone can do

A pre-trained model that does not end clearly below (a) and (b) has learnt little beyond them.
Prints a table (and writes results.md / results.json with --output_dir).
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from experiments.label_efficiency import SPLITS
from utils.args import add_data_args
from utils.data import build_pretrain_data
from utils.datasets.collate import pad_collate
from utils.errors import STCLNError
from utils.masking import MASK_MODES, MaskingConfig, build_mask, eligible_frames, ndvi_from_input
from utils.pretext_baselines import ConstantStats, baseline_sse, neighbour_sums, visible_cells
from utils.report import format_table, write_text_atomic

COLUMNS = ("mask", "masked fraction", "masked cells", "(a) neighbour mean", "(b) temporal interp", "(c) best constant",
           "(a) no neighbour")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser)
    if not any(action.dest == "synthetic_version" for action in parser._actions):
        # until the realistic generator lands, the original synthetic set is the only version
        parser.add_argument("--synthetic_version", type=int, choices=(1,), default=1, help="synthetic generator version")
    parser.set_defaults(crop_size=None, batch_size=16, num_workers=0)
    parser.add_argument("--folds", type=int, nargs="+", default=None,
                        help="pre-training folds (default: those of experiments.label_efficiency: synthetic 1 2 3 5, PASTIS 5)")
    group = parser.add_argument_group("masking (as pretrain_STCLN.py)")
    group.add_argument("--mask_mode", nargs="+", choices=MASK_MODES, default=["cell", "block"], help="one row per mode")
    group.add_argument("--mask_ratio", type=float, default=0.4, help="(paper: 0.4)")
    group.add_argument("--mask_block", type=int, default=4, help="block side for --mask_mode block")
    group.add_argument("--ndvi_threshold", type=float, default=0.2, help="(paper: 0.2)")
    group.add_argument("--veg_fraction", type=float, default=0.9, help="(paper: 0.9)")
    group.add_argument("--authors_ndvi", action="store_true", help="NDVI on the normalised input, as the authors' code")
    run = parser.add_argument_group("runtime")
    run.add_argument("--seed", type=int, default=0, help="seeds the mask generator (and MTLCC date sampling)")
    run.add_argument("--output_dir", type=Path, default=None, help="also write results.md and results.json here")
    run.add_argument("--smoke", action="store_true", help="the tiny synthetic set (CI)")
    return parser


@torch.no_grad()
def measure(dataset, info, masking: MaskingConfig, args) -> dict:
    """Masked-cell MSE of baselines (a), (b), (c) over ``dataset`` masked with ``masking``."""
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=args.num_workers,
                        collate_fn=pad_collate)
    generator = torch.Generator().manual_seed(args.seed)
    sse = {"neighbour_mean": 0.0, "temporal_interp": 0.0}
    constant = ConstantStats()
    counts = {"masked": 0, "cells": 0, "eligible_cells": 0, "no_neighbour": 0}
    for batch in loader:
        x, pad = batch["image"], batch["pad_mask"]
        mask = build_mask(x, batch["ndvi"], pad, masking, info.red_index, info.nir_index, generator)
        for key, value in baseline_sse(x, mask, batch["days"], pad).items():
            sse[key] += value.item()
        constant.update(x, mask)
        _, neighbours = neighbour_sums(x[:, :, :1], visible_cells(mask, pad))  # (B, T, 1, H, W) visible-neighbour counts
        ndvi = ndvi_from_input(x, info.red_index, info.nir_index) if masking.authors_ndvi else batch["ndvi"]
        pixels = x.shape[-1] * x.shape[-2]
        counts["masked"] += int(mask.sum())
        counts["no_neighbour"] += int(((neighbours[:, :, 0] == 0) & mask).sum())
        counts["cells"] += int((~pad).sum()) * pixels
        counts["eligible_cells"] += int(eligible_frames(ndvi, pad, masking).sum()) * pixels
    masked = max(counts["masked"], 1)
    return {
        "mask": masking.mode if masking.mode != "block" else f"block {masking.block}x{masking.block}",
        "masked fraction": counts["masked"] / max(counts["cells"], 1),
        "masked of eligible": counts["masked"] / max(counts["eligible_cells"], 1),
        "masked cells": counts["masked"],
        "(a) neighbour mean": sse["neighbour_mean"] / masked,
        "(b) temporal interp": sse["temporal_interp"] / masked,
        "(c) best constant": constant.mse(),
        "(a) no neighbour": counts["no_neighbour"] / masked,
    }


def resolve(args) -> None:
    """Fill the defaults that depend on the data set: folds and crop of the label-efficiency study."""
    if args.dataset != "synthetic" and args.data_root is None and not args.smoke:
        raise STCLNError(f"--dataset {args.dataset} needs --data_root")
    split = SPLITS[args.dataset]
    if args.folds is None:
        args.folds = [int(v) for v in split["pretrain"][1:]] if split["pretrain"] else [5]
    if args.crop_size is None:
        args.crop_size = split["crop"]


def report(args, rows: list[dict], n_samples: int, size: tuple[int, int]) -> str:
    source = f"synthetic v{args.synthetic_version}" if args.dataset == "synthetic" or args.data_root is None else args.dataset
    where = f"folds {' '.join(map(str, args.folds))}" if args.dataset != "mtlcc" else f"{args.year} training tiles"
    head = (f"Pretext baselines on {source} ({where}, {n_samples} samples of {size[0]}x{size[1]} px): "
            f"mask ratio {args.mask_ratio} on dates with > {args.veg_fraction:g} of pixels at NDVI > {args.ndvi_threshold:g}, "
            f"seed {args.seed}. MSE over masked cells and bands of the normalised input (the pre-training loss's units); "
            f"masked fraction of all non-padded cells (and of cells on eligible dates); 'no neighbour': masked cells "
            f"where (a) fell back to the date mean.")
    table_rows = [row | {"masked fraction": f"{row['masked fraction']:.3f} ({row['masked of eligible']:.3f})",
                         "(a) no neighbour": f"{row['(a) no neighbour']:.3f}"} for row in rows]
    return head + "\n\n" + format_table(table_rows, COLUMNS)


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.mask_block < 1:
        parser.error(f"--mask_block must be >= 1 pixel, got {args.mask_block}")
    try:
        resolve(args)
        data = build_pretrain_data(args)
        rows = [measure(data.train, data.info, MaskingConfig(args.mask_ratio, mode, args.ndvi_threshold, args.veg_fraction,
                                                             args.authors_ndvi, args.mask_block), args)
                for mode in args.mask_mode]
    except (STCLNError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = report(args, rows, len(data.train), tuple(data.train[0]["image"].shape[-2:]))
    print(text)
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.output_dir / "results.md", f"# Pretext baselines\n\n{text}")
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        write_text_atomic(args.output_dir / "results.json", json.dumps({"settings": settings, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
