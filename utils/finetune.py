"""Fine-tuning and testing shared by ``PASTIS/`` and ``MTLCC/`` scripts.

The per-dataset scripts only set their defaults and call :func:`main`.
"""

import argparse
import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from models import STCLNConfig, STCLNSegmenter
from utils.args import (HelpFormatter, add_data_args, add_model_args, add_optim_args, add_runtime_args, check_args, dataset_defaults,
                        model_config_for_data, resolve_n_dates)
from utils.checkpoint import (checkpoint_sources, config_for_backbone, full_state, load_finetuned, load_pretrained_backbone,
                              load_state_checked, prepare_output_dir, read_pretrained_backbone, resume_state,
                              save_checkpoint, write_run_config)
from utils.data import build_finetune_data, resolve_data_spec, resolve_label_subset
from utils.data_spec import DataSpec
from utils.datasets.sources import PRIMARY_DEFAULT
from utils.distributed import Runtime, seed_everything, setup_runtime, shutdown
from utils.engine import evaluate, train_one_epoch
from utils.errors import CheckpointError, DataError
from utils.figures import plot_confusion_matrix, plot_prediction_maps, rgb_composite
from utils.metrics import evaluate_protocol
from utils.report import write_results
from utils.runner import (compile_backend, guarded_main, loop_options, make_loader, make_optimizer, open_writer,
                          setup_logging, start_epoch, wrap_model, write_json)

log = logging.getLogger("stcln")
SELECT_METRICS = ("mIoU", "OA")
# --dataset choices of the fine-tuning entry points by the format they read: the MTLCC scripts read
# MTLCC tiles (--dataset synthetic: the embedded set written in the MTLCC format), the PASTIS scripts the rest
ENTRY_DATASETS = {"mtlcc": ("synthetic", "mtlcc"), "pastis": ("synthetic", "pastis", "folder")}


def get_parser(dataset: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    layout = "mtlcc" if dataset == "mtlcc" else "pastis"  # the format this entry point reads (and writes synthetic data in)
    add_data_args(parser, synthetic_format=layout, datasets=ENTRY_DATASETS[layout])
    parser.set_defaults(dataset=dataset)
    group = parser.add_argument_group("labels and splits")
    group.add_argument("--label_subset", choices=("authors", "ratio", "ids", "all"), default=None,
                       help="default: 'authors' on real data, 'ratio' on synthetic PASTIS-format data. 'authors': the "
                            "hard-coded few-label lists of the paper (PASTIS ~2%% of fold-1 crops, MTLCC 6 tiles "
                            "per class); 'ratio': a seeded class-stratified --label_ratio of the training split; 'ids': "
                            "the training samples listed in --label_ids; 'all': every label")
    group.add_argument("--label_ratio", type=float, default=0.02, help="fraction of training samples labelled with --label_subset ratio")
    group.add_argument("--label_ids", type=Path, default=None,
                       help="with --label_subset ids: a JSON list of training sample ids ('<ID_PATCH>', or "
                            "'<ID_PATCH>@<top>,<left>' of a grid crop), e.g. a round of the label-efficiency study's --selection")
    group.add_argument("--train_folds", type=int, nargs="+", default=None,
                       help="training folds (default: 1, the paper's; folder: dataset.json splits.train)")
    group.add_argument("--val_folds", type=int, nargs="+", default=None,
                       help="validation folds (default: 2, the paper's; folder: dataset.json splits.val)")
    group.add_argument("--test_folds", type=int, nargs="+", default=None,
                       help="test folds (default: 4, the paper's; folder: dataset.json splits.test)")
    group.add_argument("--protocol", choices=("stcln", "utae"), default="stcln",
                       help="test metrics: 'stcln' excludes background and void (paper); 'utae' scores 19 classes, void ignored (PASTIS leaderboard)")
    add_model_args(parser)
    add_optim_args(parser, epochs=100, lr=1e-4, grad_clip=None)
    group = parser.add_argument_group("fine-tuning")
    group.add_argument("--pretrain_pth", type=Path, default=None,
                       help="pre-trained backbone: our checkpoint_<epoch>.<name>.tar or last.tar, or the authors' "
                            "checkpoint_99.utae.tar / checkpoint_99.sttrans.tar. Omit to train from scratch (STCLN vs STCLN_wp)")
    group.add_argument("--allow_encoding_change", action="store_true",
                       help="fine-tune a backbone pre-trained with another --positions or pe_period (refused by default)")
    group.add_argument("--freeze_backbone", action="store_true", help="train only the STA head and classifier (linear probing)")
    group.add_argument("--augment", action="store_true",
                       help="turn every training crop by a random rotation/reflection (8 of a square); the paper does not")
    group.add_argument("--select_metric", choices=SELECT_METRICS, default="mIoU",
                       help="validation metric that picks best.tar (the authors used OA)")
    group.add_argument("--eval_only", action="store_true", help="only test --checkpoint (default <output_dir>/best.tar)")
    group.add_argument("--checkpoint", type=Path, default=None, help="fine-tuned checkpoint to test with --eval_only")
    group.add_argument("--n_maps", type=int, default=4, help="prediction-map panels written with the test results")
    group.add_argument("--val_every", type=int, default=1,
                       help="validate (and possibly update best.tar) every N epochs and after the last one")
    group.add_argument("--val_limit", type=int, default=0,
                       help="validate on N evenly spaced validation samples (0 = all); cheaper model selection")
    group.add_argument("--test_limit", type=int, default=0,
                       help="test on N evenly spaced test samples (0 = all); for quick studies, never for reported benchmarks")
    group.add_argument("--eval_batch_size", type=int, default=1,
                       help="samples per validation/test batch. Series of different lengths are padded in a batch: "
                            ">1 gives the same predictions as 1 only with --use_pad_mask")
    add_runtime_args(parser, output_dir=f"checkpoints/finetune/{dataset}")
    parser.set_defaults(**{**dataset_defaults("finetune", dataset), "n_dates": None})  # None: resolve_n_dates in main
    return parser


def parse_args(dataset: str, description: str, argv: list[str] | None = None, **defaults) -> argparse.Namespace:
    """The fine-tuning/test flags, resolved (``--n_dates`` per data set and --smoke) and checked."""
    parser = get_parser(dataset, description)
    parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    if (args.label_subset == "ids") != (args.label_ids is not None):
        parser.error("--label_subset ids and --label_ids FILE go together")
    resolve_n_dates(args, dataset_defaults("finetune", dataset)["n_dates"])
    check_args(parser, args)
    return args


def class_weights(info, num_classes: int) -> torch.Tensor:
    """1 for every class, 0 for the ignored class and (PASTIS) background, as the reference trains."""
    weight = torch.ones(num_classes)
    for index in (info.ignore_index, info.background_index):
        if index is not None:
            weight[index] = 0.0
    return weight


def build_model(args, info, runtime: Runtime) -> tuple[STCLNSegmenter, STCLNConfig]:
    config = model_config_for_data(args, info)  # the data's sources, primary first
    if args.pretrain_pth is not None:
        backbone = read_pretrained_backbone(args.pretrain_pth, trusted=args.trust_checkpoint)
        config = config_for_backbone(config, backbone, args.allow_encoding_change)
        model = STCLNSegmenter(config)
        n = load_pretrained_backbone(model, backbone)
        log.info("loaded %d backbone tensors from %s (widths %s, %d layers, feed-forward %d)", n, args.pretrain_pth,
                 list(config.widths), config.n_layers, config.d_ffn)
    else:
        model = STCLNSegmenter(config)
        log.info("no --pretrain_pth: training from scratch (STCLN without pre-training)")
    if args.freeze_backbone:
        model.freeze_backbone()
    return model, config


def evenly_spaced(dataset, limit: int):
    """``limit`` evenly spaced samples of ``dataset`` (all if 0 or more than it has), so every tile stays represented."""
    if not 0 < limit < len(dataset):
        return dataset
    return Subset(dataset, np.linspace(0, len(dataset) - 1, limit).round().astype(int).tolist())


def validation_score(model, loader, config, info, options) -> dict:
    """Validation metrics under the paper's protocol (model selection)."""
    matrix = evaluate(model, loader, config=config, num_classes=info.num_classes, ignore_index=info.ignore_index, options=options)
    cm = matrix.matrix.cpu().numpy()
    require_scored_pixels(cm, info.protocols["stcln"], "validation")
    return evaluate_protocol(cm, info.protocols["stcln"], info.classes)


def require_scored_pixels(cm, protocol, split: str) -> None:
    """Metrics of a split without any pixel of a scored class are undefined: an error, not NaN."""
    if cm[list(protocol.eval_classes)].sum() == 0:
        raise DataError(f"{split} split: no labelled pixel of a scored class (all background/ignored); "
                        "its metrics would be undefined")


def train(args, runtime: Runtime) -> tuple[Path, DataSpec]:
    """Fine-tune, keep best.tar by validation ``--select_metric``; return the best checkpoint path and the
    run's data spec (resolved once here, after the output folder is ready; the test reuses it)."""
    out = prepare_output_dir(args, runtime)
    spec = resolve_data_spec(args)
    data = build_finetune_data(spec)
    info = data.info
    model, config = build_model(args, info, runtime)
    model = wrap_model(model, runtime, compile_backend(args), args.grad_checkpoint, args.fast_dropout)
    optimizer = make_optimizer(model, args)
    first_epoch, extra = resume_state(out, model, optimizer, config, args.trust_checkpoint) if args.resume else (0, {})
    write_run_config(args, out, runtime)
    best = extra.get("best", float("-inf"))
    train_loader = make_loader(data.train, args.batch_size, runtime, train=True, seed=args.seed, workers=args.num_workers)
    val_set = evenly_spaced(data.val, args.val_limit)
    val_loader = make_loader(val_set, args.eval_batch_size, runtime, train=False, seed=args.seed, workers=args.num_workers)
    options = loop_options(args, runtime)
    weight = class_weights(info, info.num_classes)
    writer = open_writer(out, runtime)
    log.info("fine-tuning on %d labelled samples (%s), validating on %d, %d epochs", len(data.train),
             resolve_label_subset(spec), len(val_set), args.epochs)
    history = extra.get("history", [])
    steps = history[-1]["steps"] if history else 0
    for epoch in range(first_epoch, args.epochs):
        start_epoch(train_loader, args.seed, epoch)
        stats = train_one_epoch(model, train_loader, optimizer, epoch, config=config, class_weight=weight, options=options,
                                augment=args.augment)
        steps += len(train_loader) - int(stats["skipped_batches"])
        record = {"epoch": epoch + 1, "steps": steps, "train_loss": stats["loss"]}
        validate = (epoch + 1) % args.val_every == 0 or epoch + 1 == args.epochs
        if validate:
            val = validation_score(model, val_loader, config, info, options)
            record |= {f"val_{k}": val[k] for k in ("OA", "mIoU", "mF1")}
            log.info("epoch %d/%d  loss %.4f  val OA %.4f  mIoU %.4f  mF1 %.4f  %.1f samples/s", epoch + 1, args.epochs,
                     stats["loss"], val["OA"], val["mIoU"], val["mF1"], stats["samples_per_s"] * runtime.world_size)
        history.append(record)
        if not runtime.is_main:
            continue
        for key, value in stats.items():
            writer.add_scalar(f"train/{key}", value, epoch)
        improved = False
        if validate:
            for key in ("OA", "mIoU", "mF1", "kappa"):
                writer.add_scalar(f"val/{key}", val[key], epoch)
            score = val[args.select_metric]
            improved = score > best or not (out / "best.tar").exists()  # NaN scores still leave a best.tar
            best = max(best, score) if score == score else best
        write_json(out / "history.json", {"select_metric": args.select_metric, "history": history})
        metrics = {"train": stats} | ({"val": _scalars(val)} if validate else {})
        state = full_state(model, optimizer, config, args, epoch, metrics, {"best": best, "history": history})
        if improved:
            save_checkpoint(out / "best.tar", state)
        if (epoch + 1) % args.save_every == 0 or epoch + 1 == args.epochs:
            save_checkpoint(out / "last.tar", state)
    if writer is not None:
        writer.close()
    runtime.barrier()  # rank 0 has written the final best.tar before any rank tests it
    return out / "best.tar", spec


def test(args, runtime: Runtime, checkpoint: Path, spec: DataSpec | None = None) -> dict:
    """Evaluate ``checkpoint`` on the test split; write metrics.json/.md, confusion matrix and maps.

    ``spec``: the data spec of the training just run; None (``--eval_only``) resolves it from ``args``.
    """
    ckpt, config = load_finetuned(checkpoint, args.trust_checkpoint)
    if spec is None:
        spec = test_spec(args, checkpoint_sources(ckpt, config, str(checkpoint)), checkpoint)
    data = build_finetune_data(spec, splits=("test",))
    info = data.info
    if args.sta_chunk:
        config.sta_chunk = args.sta_chunk
    if (config.in_channels, config.num_classes) != (info.in_channels, info.num_classes):
        raise CheckpointError(f"{checkpoint}: model has {config.in_channels} bands/{config.num_classes} classes, "
                              f"data has {info.in_channels}/{info.num_classes}")
    if (config.extra_sources, config.extra_channels) != (info.extra_sources, info.extra_channels):
        raise CheckpointError(f"{checkpoint}: model takes the extra sources {list(config.extra_sources)} with bands "
                              f"{list(config.extra_channels)}, the data brings {list(info.extra_sources)} with "
                              f"{list(info.extra_channels)}")
    model = STCLNSegmenter(config)
    load_state_checked(model, ckpt["model"], str(checkpoint))
    model = wrap_model(model, runtime)
    test_set = evenly_spaced(data.test, args.test_limit)
    loader = make_loader(test_set, args.eval_batch_size, runtime, train=False, seed=args.seed, workers=args.num_workers)
    options = loop_options(args, runtime, train=False)
    maps = []

    def keep_maps(batch, pred):
        for i in range(pred.shape[0]):
            if len(maps) < args.n_maps:
                valid = ~batch["pad_mask"][i]
                image = batch["image"][i][valid].cpu().numpy()
                maps.append((rgb_composite(image, info.rgb_indices), batch["label"][i].cpu().numpy(), pred[i].cpu().numpy()))

    matrix = evaluate(model, loader, config=config, num_classes=info.num_classes, ignore_index=info.ignore_index,
                      options=options, on_batch=keep_maps)
    cm = matrix.matrix.cpu().numpy()
    require_scored_pixels(cm, info.protocols[args.protocol], "test")
    metrics = evaluate_protocol(cm, info.protocols[args.protocol], info.classes)
    if runtime.is_main:
        out = Path(args.output_dir) / f"test_{args.protocol}"
        run_info = {"checkpoint": str(checkpoint), "dataset": spec.dataset, "test_samples": len(test_set),
                    "test_folds": spec.split_folds("test_folds"), "year": spec.year,
                    "sources": list(spec.sources)}
        write_results(out, metrics, cm, info.classes, args.protocol, run_info)
        plot_confusion_matrix(cm, info.classes, out / "confusion_matrix.png")
        if maps:
            images, labels, preds = (list(x) for x in zip(*maps))
            plot_prediction_maps(images, labels, preds, out / "prediction_maps.png", info.colormap, info.ignore_index)
        log.info("test (%s protocol): OA %.4f  mIoU %.4f  mF1 %.4f  kappa %.4f  -> %s", args.protocol,
                 metrics["OA"], metrics["mIoU"], metrics["mF1"], metrics["kappa"], out)
    return metrics


def test_spec(args, sources: tuple[str, ...], checkpoint: Path) -> DataSpec:
    """The data spec of ``--eval_only``: the flags' data, with the image sources of the checkpoint's model
    (an older checkpoint: S2 only). ``--sources`` left at its default takes them; another value must match."""
    spec = resolve_data_spec(args)
    if spec.sources == sources:
        return spec
    if tuple(args.sources) != (PRIMARY_DEFAULT,):
        raise CheckpointError(f"{checkpoint}: the model was trained on --sources {' '.join(sources)}, "
                              f"not --sources {' '.join(spec.sources)}")
    log.info("testing on the checkpoint's sources %s", " ".join(sources))
    args.sources = list(sources)
    return dataclasses.replace(spec, sources=sources)


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def main(dataset: str, description: str, argv: list[str] | None = None, **defaults) -> int:
    """Entry point of the per-dataset fine-tuning/test scripts; returns the exit status."""
    args = parse_args(dataset, description, argv, **defaults)
    runtime = None

    def run() -> None:
        nonlocal runtime
        runtime = setup_runtime(args.device)
        setup_logging(runtime)
        seed_everything(args.seed)
        best, spec = args.checkpoint or Path(args.output_dir) / "best.tar", None
        if not args.eval_only:
            best, spec = train(args, runtime)
        metrics = test(args, runtime, best, spec)
        if runtime.is_main:
            write_json(Path(args.output_dir) / "summary.json", {"checkpoint": str(best), "protocol": args.protocol,
                                                                "test": _scalars(metrics)})

    status = guarded_main(run, args.output_dir)
    if status == 0:
        shutdown(runtime)
    return status
