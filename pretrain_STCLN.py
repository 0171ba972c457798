"""Spatiotemporal masked pre-training of STCLN (docs/method.md §2).

    python pretrain_STCLN.py                                   # embedded synthetic data set (PASTIS format)
    python pretrain_STCLN.py --synthetic_format mtlcc          # the same in the MTLCC format, with the authors' tile ids
    python pretrain_STCLN.py --dataset pastis --data_root data/PASTIS --folds 5
    python pretrain_STCLN.py --dataset mtlcc --data_root data/MTLCC/480 --year 2016 --n_dates 30 --crop_size 0
    torchrun --nproc_per_node 4 pretrain_STCLN.py --dataset pastis --data_root data/PASTIS --folds 5

Writes <output_dir>/last.tar (resumable), checkpoint_<epoch>.<export_name>.tar (the backbone
that fine-tuning's --pretrain_pth takes), tensorboard logs in tb/ and reconstruction.png.
"""

import argparse
import logging
import sys

import torch

from models import STCLNPretrain
from utils.args import (HelpFormatter, add_data_args, add_model_args, add_optim_args, add_runtime_args, apply_dataset_defaults,
                        check_args, model_config_for_data)
from utils.checkpoint import (backbone_export, full_state, prepare_output_dir, resume_state, save_checkpoint, unwrap,
                              write_run_config)
from utils.data import build_pretrain_data, resolve_data_spec
from utils.distributed import setup_runtime, seed_everything, shutdown
from utils.engine import pretrain_one_epoch, reconstruct_preview
from utils.masking import MASK_MODES, MaskingConfig
from utils.runner import (compile_backend, epoch_seed, guarded_main, loop_options, make_loader, make_optimizer,
                          open_writer, setup_logging, start_epoch, wrap_model)
from utils.figures import reconstruction_figure, save_figure

log = logging.getLogger("stcln")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="STCLN masked pre-training: random (pixel, date) cells of every series are masked and "
                                     "reconstructed; writes last.tar (resumable) and the backbone exports "
                                     "checkpoint_<epoch>.<export_name>.tar that fine-tuning's --pretrain_pth takes",
                                     formatter_class=HelpFormatter)
    add_data_args(parser)
    parser.add_argument_group("data").add_argument(
        "--folds", type=int, nargs="+", default=None,
        help="folds used for pre-training (default: 5, the paper's; folder: dataset.json splits.pretrain, else every fold but the test folds)")
    add_model_args(parser)
    group = parser.add_argument_group("masking (docs/method.md §2.2-2.3)")
    group.add_argument("--mask_ratio", type=float, default=0.4, help="probability that a (pixel, date) cell is masked (paper: 0.4)")
    group.add_argument("--mask_mode", choices=MASK_MODES, default="cell",
                       help="'cell': independent (pixel, date) cells (paper); 'block': --mask_block x --mask_block pixel "
                            "blocks of a date, so same-date neighbours are hidden too and the model must use other dates; "
                            "'frame': whole dates (temporal-only ablation). Same expected masked fraction in every mode")
    group.add_argument("--mask_block", type=int, default=4, help="block side in pixels for --mask_mode block")
    group.add_argument("--ndvi_threshold", type=ndvi_threshold, default=0.2,
                       help="a pixel is vegetated if NDVI > this (paper: 0.2); 'none' switches the NDVI gate off "
                            "(every valid date may be masked)")
    group.add_argument("--veg_fraction", type=float, default=0.9,
                       help="a date may be masked only if more than this fraction of its pixels is vegetated (paper: 0.9)")
    group.add_argument("--hide_invalid", action="store_true",
                       help="folder data with cloud masks: invalid (cloudy) cells are also replaced by the mask token in "
                            "the input, never seen (they are never reconstruction targets in any case)")
    group.add_argument("--authors_ndvi", action="store_true",
                       help="compute NDVI on the normalised model input as the authors' code does (default: raw reflectance)")
    add_optim_args(parser, epochs=100, lr=1e-4, grad_clip=5.0)
    add_runtime_args(parser, output_dir="checkpoints/pretrain/synthetic")
    parser.add_argument_group("runtime, logging and checkpoints").add_argument(
        "--export_name", default="stcln", help="backbone export file name: checkpoint_<epoch>.<export_name>.tar")
    parser.set_defaults(crop_size=None, n_dates=None, batch_size=None)  # per --dataset: apply_dataset_defaults
    return parser


def ndvi_threshold(text: str) -> float | None:
    """argparse type of ``--ndvi_threshold``: a number, or 'none' (no NDVI gate)."""
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'none'") from None


def masking_from_args(args: argparse.Namespace, has_red_nir: bool = True) -> MaskingConfig:
    """The masking flags as a validated MaskingConfig (ValueError names the problem)."""
    gate = args.ndvi_threshold is not None and has_red_nir
    threshold = args.ndvi_threshold if args.ndvi_threshold is not None else MaskingConfig.ndvi_threshold
    return MaskingConfig(args.mask_ratio, args.mask_mode, threshold, args.veg_fraction, args.authors_ndvi,
                         args.mask_block, ndvi_gate=gate)


def pretrain(args: argparse.Namespace, runtime) -> dict:
    apply_dataset_defaults(args, "pretrain")
    seed_everything(args.seed)
    out = prepare_output_dir(args, runtime)
    data = build_pretrain_data(resolve_data_spec(args))
    config = model_config_for_data(args, data.info)  # the data's sources, primary first
    model = wrap_model(STCLNPretrain(config), runtime, compile_backend(args), args.grad_checkpoint, args.fast_dropout)
    optimizer = make_optimizer(model, args)
    first_epoch = resume_state(out, model, optimizer, config, args.trust_checkpoint)[0] if args.resume else 0
    write_run_config(args, out, runtime)
    loader = make_loader(data.train, args.batch_size, runtime, train=True, seed=args.seed, workers=args.num_workers)
    masking = masking_from_args(args, has_red_nir=data.info.ndvi_gate)  # gate off without red/NIR or an NDVI band
    generator = torch.Generator(device=runtime.device)
    options = loop_options(args, runtime)
    writer = open_writer(out, runtime)
    log.info("pre-training %s: %d samples, %d steps/epoch, %.2fM parameters, device %s x%d",
             args.dataset, len(data.train), len(loader), sum(p.numel() for p in model.parameters()) / 1e6,
             runtime.device, runtime.world_size)
    stats = {}
    for epoch in range(first_epoch, args.epochs):
        start_epoch(loader, args.seed, epoch)
        generator.manual_seed(epoch_seed(args.seed, epoch) + runtime.rank)
        stats = pretrain_one_epoch(model, loader, optimizer, epoch, config=config, masking=masking,
                                   red_index=data.info.red_index, nir_index=data.info.nir_index,
                                   generator=generator, options=options, hide_invalid=args.hide_invalid)
        log.info("epoch %d/%d  loss %.5f  masked %.3f  %.1f samples/s  %s", epoch + 1, args.epochs, stats["loss"],
                 stats["masked_fraction"], stats["samples_per_s"] * runtime.world_size, pretext_summary(stats))
        if not runtime.is_main:
            continue
        for key, value in stats.items():
            group, _, name = key.partition("_") if key.startswith("pretext_") else ("pretrain", "", key)
            writer.add_scalar(f"{group}/{name}", value, epoch)
        writer.add_scalar("pretrain/lr", optimizer.param_groups[0]["lr"], epoch)
        preview = reconstruct_preview(unwrap(model), data.train, config, masking, data.info, runtime.device, args.seed)
        fig = reconstruction_figure(*preview, rgb_indices=data.info.rgb_indices, title=f"epoch {epoch + 1}")
        writer.add_figure("pretrain/reconstruction", fig, epoch, close=False)
        save_figure(fig, out / "reconstruction.png")  # the latest epoch's figure
        if (epoch + 1) % args.save_every == 0 or epoch + 1 == args.epochs:
            save_checkpoint(out / "last.tar", full_state(model, optimizer, config, args, epoch, stats))
            save_checkpoint(out / f"checkpoint_{epoch}.{args.export_name}.tar", backbone_export(model, config, epoch))
    if writer is not None:
        writer.close()
    if stats and not beats_baselines(stats):
        log.warning("the model's masked-cell MSE (%.5f) does not beat both non-learned baselines (same-date 3x3 "
                    "neighbour mean %.5f, per-pixel temporal interpolation %.5f): the pretext may teach little; "
                    "train longer or try --mask_mode block", stats["pretext_model"], stats["pretext_neighbour_mean"],
                    stats["pretext_temporal_interp"])
    return stats


def beats_baselines(stats: dict) -> bool:
    return stats["pretext_model"] < min(stats["pretext_neighbour_mean"], stats["pretext_temporal_interp"])


def pretext_summary(stats: dict) -> str:
    """Masked-cell MSE of the model and of the non-learned baselines (utils.pretext_baselines), one line."""
    verdict = "" if beats_baselines(stats) else "  (model does not beat both baselines)"
    return (f"pretext MSE model {stats['pretext_model']:.5f} / neighbour mean {stats['pretext_neighbour_mean']:.5f} / "
            f"temporal interp {stats['pretext_temporal_interp']:.5f}{verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = apply_dataset_defaults(parser.parse_args(argv), "pretrain")
    if args.mask_block < 1:
        parser.error(f"--mask_block must be >= 1 pixel, got {args.mask_block}")
    check_args(parser, args)
    try:
        masking_from_args(args)
    except ValueError as err:
        parser.error(f"masking flags (--mask_ratio, --ndvi_threshold, --veg_fraction, --mask_block): {err}")
    runtime = None

    def run() -> None:
        nonlocal runtime
        runtime = setup_runtime(args.device)
        setup_logging(runtime)
        pretrain(args, runtime)

    status = guarded_main(run, args.output_dir)
    if status == 0:
        shutdown(runtime)
    return status


if __name__ == "__main__":
    sys.exit(main())
