"""How much of the masked-reconstruction pretext do non-learned rules already solve?

    python -m experiments.pretext_baselines                                   # the synthetic benchmark
    python -m experiments.pretext_baselines --synthetic_version 1             # the original demo set
    python -m experiments.pretext_baselines --dataset pastis --data_root data/PASTIS
    python -m experiments.pretext_baselines --smoke                           # seconds (CI)
    python -m experiments.pretext_baselines --sources S2 S1                   # and the Sentinel-1 rows

Masks the pre-training data exactly as pre-training does (the same data set, folds, crops,
normalisation, NDVI gate and mask generator; ratio 0.4 by default) once per --mask_mode, and
scores three non-learned predictions of the masked cells in the units of the pre-training loss
(MSE over the masked cells and all bands of the normalised input; ``utils/pretext_baselines.py``):

    (a) neighbour mean     mean of the visible cells of the same-date 3x3 neighbourhood (a cell
                           with no visible neighbour takes the date's visible mean; its share is
                           the "no neighbour" column)
    (b) temporal interp    per-pixel linear interpolation in time (acquisition days) between the
                           nearest visible dates; nearest visible value at the ends
    (b') gated dates       the same, reading only dates that pass the NDVI gate (clear, vegetated):
                           what temporal in-filling gives once cloudy and bare dates are ignored
    (c) best constant      each band's mean over the masked cells: the best a mask token alone can do

A pre-trained model that does not end clearly below (a) and (b) has learnt little beyond them.
Prints a table (and writes results.md / results.json with --output_dir).

Several sources (``--sources S2 S1``: Sentinel-2 and the Sentinel-1 ascending and descending
orbits): one row per (source, mask mode). Every further source is masked as pre-training masks it
(``utils.masking.build_source_mask``: the same mode and ratio on the source's own dates, every
non-padded date eligible, no NDVI gate) and scored with the same baselines; (b) interpolates on the
source's own acquisition days, (b') does not apply (no NDVI gate: "n/a"), and its masked fraction
is over all its non-padded cells. Pre-training draws every source's mask from one generator, the
primary's first; here the further sources draw theirs, in the same order, from a second generator
(seeded --seed + 1), so that the primary's rows do not change when sources are added. A radar
primary (``--sources S1A ...``) has no NDVI gate either.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from experiments.label_efficiency import SPLITS
from utils.args import add_data_args, check_sources, parse_temporal
from utils.data import build_pretrain_data, resolve_data_spec
from utils.data_spec import DataSpec
from utils.datasets.collate import pad_collate
from utils.datasets.sources import PRIMARY_DEFAULT
from utils.errors import STCLNError
from utils.masking import (
    MASK_MODES,
    MaskingConfig,
    build_source_mask,
    eligible_frames,
    ndvi_from_input,
    sample_mask,
)
from utils.pretext_baselines import (
    ConstantStats,
    baseline_sse,
    masked_sse,
    neighbour_sums,
    temporal_interpolation,
    visible_cells,
)
from utils.report import format_table, write_text_atomic
from utils.runner import guarded_main

COLUMNS = (
    "mask",
    "masked fraction",
    "masked cells",
    "(a) neighbour mean",
    "(b) temporal interp",
    "(b') gated dates",
    "(c) best constant",
    "(a) no neighbour",
)
SOURCE_COLUMNS = ("source", *COLUMNS)  # the table of several sources (or of a primary other than S2)
FURTHER_SEED_OFFSET = 1  # a mode's generator of the further sources is seeded --seed + 1 (see MaskPass)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_args(parser)
    parser.set_defaults(crop_size=None, batch_size=16, num_workers=0)
    parser.add_argument(
        "--folds",
        type=int,
        nargs="+",
        default=None,
        help="pre-training folds (default: those of experiments.label_efficiency: synthetic 1 2 3 5, "
        "PASTIS 5; folder: dataset.json)",
    )
    group = parser.add_argument_group("masking (as pretrain_STCLN.py)")
    group.add_argument(
        "--mask_mode", nargs="+", choices=MASK_MODES, default=["cell", "block"], help="one row per mode (and source)"
    )
    group.add_argument("--mask_ratio", type=float, default=0.4, help="(paper: 0.4)")
    group.add_argument("--mask_block", type=int, default=4, help="block side for --mask_mode block")
    group.add_argument("--ndvi_threshold", type=float, default=0.2, help="(paper: 0.2; the optical primary only)")
    group.add_argument("--veg_fraction", type=float, default=0.9, help="(paper: 0.9)")
    group.add_argument("--authors_ndvi", action="store_true", help="NDVI on the normalised input, as the authors' code")
    run = parser.add_argument_group("runtime")
    run.add_argument(
        "--limit",
        type=int,
        default=0,
        help="measure on this many samples, evenly spaced over the pre-training set (0 = all of them)",
    )
    run.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the mask generators (the primary's: --seed; the further sources': --seed + 1) "
        "and MTLCC date sampling",
    )
    run.add_argument("--output_dir", type=Path, default=None, help="also write results.md and results.json here")
    run.add_argument("--smoke", action="store_true", help="the tiny synthetic set (CI)")
    return parser


class Tally:
    """Running sums of one (source, mask mode)."""

    def __init__(self, masking: MaskingConfig, source: str, gated: bool):
        self.masking, self.source, self.gated = masking, source, gated  # gated: (b') applies (NDVI gate)
        self.sse = {"neighbour_mean": 0.0, "temporal_interp": 0.0, "gated_interp": 0.0}
        self.constant = ConstantStats()
        self.counts = {"masked": 0, "cells": 0, "eligible_cells": 0, "no_neighbour": 0}

    def update(
        self, x: torch.Tensor, mask: torch.Tensor, days: torch.Tensor, pad: torch.Tensor, eligible: torch.Tensor
    ) -> None:
        """Add one batch of the source: (B, T, C, H, W) series, (B, T, H, W) mask, (B, T) days, pad mask
        and eligible dates (the NDVI gate's, which (b') reads; without a gate every non-padded date)."""
        for key, value in baseline_sse(x, mask, days, pad).items():
            self.sse[key] += value.item()
        if self.gated:
            gated = temporal_interpolation(x, mask, days, pad, source_dates=eligible)
            self.sse["gated_interp"] += masked_sse(gated, x, mask).item()
        self.constant.update(x, mask)
        _, neighbours = neighbour_sums(
            x[:, :, :1], visible_cells(mask, pad)
        )  # (B, T, 1, H, W) visible-neighbour counts
        pixels = x.shape[-1] * x.shape[-2]
        self.counts["masked"] += int(mask.sum())
        self.counts["no_neighbour"] += int(((neighbours[:, :, 0] == 0) & mask).sum())
        self.counts["cells"] += int((~pad).sum()) * pixels
        self.counts["eligible_cells"] += int(eligible.sum()) * pixels

    def row(self) -> dict:
        masked, mode, block = max(self.counts["masked"], 1), self.masking.mode, self.masking.block
        return {
            "source": self.source,
            "mask": f"block {block}x{block}" if mode == "block" else mode,
            "masked fraction": self.counts["masked"] / max(self.counts["cells"], 1),
            "masked of eligible": self.counts["masked"] / max(self.counts["eligible_cells"], 1),
            "masked cells": self.counts["masked"],
            "(a) neighbour mean": self.sse["neighbour_mean"] / masked,
            "(b) temporal interp": self.sse["temporal_interp"] / masked,
            "(b') gated dates": self.sse["gated_interp"] / masked if self.gated else None,  # no NDVI gate: n/a
            "(c) best constant": self.constant.mse(),
            "(a) no neighbour": self.counts["no_neighbour"] / masked,
        }


class MaskPass:
    """One mask mode over every source: masks drawn as pre-training draws them, one Tally per source.

    Mirrored from ``utils.engine.pretrain_one_epoch``: the primary source's mask is drawn first in each
    batch (``build_mask``: ``sample_mask`` on the NDVI-gated dates; without a gate on every non-padded
    date, as ``build_source_mask``), then every further source's with ``utils.masking.build_source_mask``
    (its own dates, every non-padded one eligible, the same mode, ratio and block), in ``--sources``
    order. Not mirrored: the engine draws all of them from its one generator, so there every radar draw
    shifts the primary's masks of the next batches; here the further sources draw from a second
    generator of the mode (seeded --seed + 1), so that the primary's rows are those of a run without
    the further sources (the masks follow the same distribution; an engine epoch's exact draws are not
    reproducible here anyway: its loader shuffles, and its batches and seeds differ).
    """

    def __init__(self, masking: MaskingConfig, sources: tuple[str, ...], seed: int):
        self.masking = masking
        self.generator = torch.Generator().manual_seed(seed)  # the primary's: one per mode, seeded alike
        self.further_generator = torch.Generator().manual_seed(seed + FURTHER_SEED_OFFSET)
        self.tallies = [Tally(masking, sources[0], masking.ndvi_gate)]
        self.tallies += [Tally(masking, source, False) for source in sources[1:]]  # radar: no NDVI gate

    def update(self, batch: dict, eligible: torch.Tensor) -> None:
        x, pad = batch["image"], batch["pad_mask"]
        mask = sample_mask(eligible, tuple(x.shape[-2:]), self.masking, self.generator)  # as build_mask
        self.tallies[0].update(x, mask, batch["days"], pad, eligible)
        for tally in self.tallies[1:]:  # the further sources, in --sources order (utils/datasets/collate.py keys)
            image, pad = batch[f"image_{tally.source}"], batch[f"pad_mask_{tally.source}"]
            source_mask = build_source_mask(image, pad, self.masking, self.further_generator)
            tally.update(image, source_mask, batch[f"days_{tally.source}"], pad, ~pad)


@torch.no_grad()
def measure(dataset, info, maskings: list[MaskingConfig], args) -> list[dict]:
    """One pass over ``dataset``: masked-cell MSE of the baselines for every source and masking (one row
    each, grouped by source, primary first)."""
    if args.limit and args.limit < len(dataset):
        dataset = Subset(dataset, np.linspace(0, len(dataset) - 1, args.limit).round().astype(int).tolist())
    loader = DataLoader(
        dataset, batch_size=args.batch_size, shuffle=False, num_workers=args.num_workers, collate_fn=pad_collate
    )
    passes = [MaskPass(masking, tuple(info.sources), args.seed) for masking in maskings]
    gate = maskings[0]  # every row shares the NDVI gate
    for batch in loader:
        x, pad = batch["image"], batch["pad_mask"]
        if gate.ndvi_gate:
            ndvi = ndvi_from_input(x, info.red_index, info.nir_index) if gate.authors_ndvi else batch["ndvi"]
            eligible = eligible_frames(ndvi, pad, gate)  # (B, T): the dates that may be masked
        else:  # a primary without red/NIR (radar): every non-padded date, as build_source_mask
            eligible = ~pad
        for mask_pass in passes:
            mask_pass.update(batch, eligible)
    return [mask_pass.tallies[i].row() for i in range(len(info.sources)) for mask_pass in passes]


def resolve(args) -> None:
    """Fill the defaults that depend on the data set: folds and crop of the label-efficiency study."""
    split = SPLITS.get(args.dataset)  # a folder data set keeps its own (dataset.json) defaults
    if args.folds is None and split and split["pretrain"]:
        args.folds = [int(v) for v in split["pretrain"][1:]]
    if args.crop_size is None:
        args.crop_size = split["crop"] if split else 32
    if args.dataset != "synthetic" and args.data_root is None:
        if args.dataset == "folder" or not args.smoke:
            raise STCLNError(
                f"--dataset {args.dataset} needs --data_root (only --smoke runs on the synthetic data set)"
            )
        args.synthetic_format, args.dataset = args.dataset, "synthetic"  # --smoke: the synthetic set in that format


def report(
    args, spec: DataSpec, rows: list[dict], n_samples: int, size: tuple[int, int], sources: tuple[str, ...], gated: bool
) -> str:
    """The results table with a head naming the data (``spec``, ``sources``, primary first) and the masking flags
    (``args``; ``gated``: the primary source has the NDVI gate)."""
    if not spec.synthetic:
        name = spec.dataset
    else:
        name = f"synthetic v{spec.synthetic_version}" if spec.layout == "pastis" else "synthetic MTLCC"
    where = f"{spec.year} training tiles" if spec.layout == "mtlcc" else f"folds {' '.join(map(str, spec.folds or []))}"
    if gated:
        dates = f"on dates with > {args.veg_fraction:g} of pixels at NDVI > {args.ndvi_threshold:g}"
    else:
        dates = f"on every non-padded date ({sources[0]}: no NDVI gate, (b') n/a)"
    head = (
        f"Pretext baselines on {name} ({where}, {n_samples} samples of {size[0]}x{size[1]} px"
        f"{', evenly spaced' if args.limit else ''}): "
        f"mask ratio {args.mask_ratio} {dates}, "
        f"seed {args.seed}. MSE over masked cells and bands of the normalised input (the pre-training loss's units); "
        f"masked fraction of all non-padded cells{' (and of cells on eligible dates)' if gated else ''}; "
        "'no neighbour': masked cells where (a) fell back to the date mean."
    )
    if len(sources) > 1:
        head += (
            f" Sources {' '.join(sources)} ({sources[0]} primary): {', '.join(sources[1:])} masked as pre-training "
            "masks them, on their own dates, every non-padded date eligible (no NDVI gate: (b') n/a, masked "
            "fraction of all their non-padded cells); (b) on each source's own acquisition days."
        )
    table_rows = [
        row
        | {
            "masked fraction": f"{row['masked fraction']:.3f} ({row['masked of eligible']:.3f})"
            if row["(b') gated dates"] is not None
            else f"{row['masked fraction']:.3f}",  # no gate: every non-padded cell is eligible
            "(a) no neighbour": f"{row['(a) no neighbour']:.3f}",
        }
        for row in rows
    ]
    columns = COLUMNS if tuple(sources) == (PRIMARY_DEFAULT,) else SOURCE_COLUMNS  # S2 alone: the table as before
    return head + "\n\n" + format_table(table_rows, columns)


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.mask_block < 1:
        parser.error(f"--mask_block must be >= 1 pixel, got {args.mask_block}")
    check_sources(parser, args)  # aliases expanded (S1 = S1A S1D); names the data set cannot hold: one line, exit 2
    try:  # the flags are checked up front: a ValueError later is a bug and keeps its traceback
        parse_temporal(args.temporal)
        maskings = [
            MaskingConfig(
                args.mask_ratio, mode, args.ndvi_threshold, args.veg_fraction, args.authors_ndvi, args.mask_block
            )
            for mode in args.mask_mode
        ]
    except ValueError as err:
        parser.error(f"{err} (--temporal, --mask_ratio, --ndvi_threshold, --veg_fraction, --mask_block)")
    result = {}

    def run() -> None:
        resolve(args)
        result["spec"] = resolve_data_spec(args)
        result["data"] = data = build_pretrain_data(result["spec"])
        gated = maskings
        if not data.info.ndvi_gate:  # no red/NIR in the primary source (radar): no gate, as pretrain_STCLN.py
            if args.authors_ndvi:
                raise STCLNError(
                    f"--authors_ndvi: the primary source {data.info.sources[0]} has no red/NIR bands to compute NDVI on"
                )
            gated = [dataclasses.replace(masking, ndvi_gate=False) for masking in maskings]
        result["gated"] = gated[0].ndvi_gate
        result["rows"] = measure(data.train, data.info, gated, args)

    status = guarded_main(run, None)
    if status != 0:
        return status
    data, rows, sources = result["data"], result["rows"], tuple(result["data"].info.sources)
    n_samples = min(args.limit, len(data.train)) if args.limit else len(data.train)
    size = tuple(data.train[0]["image"].shape[-2:])
    text = report(args, result["spec"], rows, n_samples, size, sources, result["gated"])
    print(text)
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.output_dir / "results.md", f"# Pretext baselines\n\n{text}")
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        results = {"settings": settings, "sources": list(sources), "rows": rows}
        write_text_atomic(args.output_dir / "results.json", json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
