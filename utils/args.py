"""Shared argparse builders. Per-dataset scripts only change defaults."""

import argparse
import json
import math
import re
from pathlib import Path

from models import STCLNConfig, tiny_config
from models.config import PRESETS
from models.config import FUSION_MODES, MASK_TOKEN_MODES, POSITION_MODES, STA_SCALES, with_sources
from utils.atomic import write_text_atomic
from utils.datasets.sources import KNOWN_SOURCES, PRIMARY_DEFAULT, RADAR_SOURCES, SOURCE_ALIASES, expand_sources

DATASETS = ("synthetic", "pastis", "mtlcc", "folder")
NEEDS_DATA_ROOT = ("pastis", "mtlcc", "folder")  # only --dataset synthetic runs without --data_root
SYNTHETIC_FORMATS = ("pastis", "mtlcc")  # the file formats the embedded synthetic data set is written in


# The one table of per-data-set defaults (the authors' settings, docs/method.md §2.1 and §3), used by
# every entry point: the per-data-set scripts, the experiments (through the same parsers) and pre-training.
# Data sets not listed (synthetic, folder) take GENERIC_DEFAULTS.
DATASET_DEFAULTS = {
    "pretrain": {"pastis": dict(crop_size=32, n_dates=0, batch_size=4),
                 "mtlcc": dict(crop_size=0, n_dates=30, batch_size=4)},
    "finetune": {"pastis": dict(crop_size=32, n_dates=0, batch_size=2),
                 "mtlcc": dict(crop_size=0, n_dates=30, batch_size=2)},
}
GENERIC_DEFAULTS = dict(crop_size=32, n_dates=0, batch_size=4)
SMOKE_MTLCC_DATES = 6  # --smoke on the synthetic MTLCC set: its smoke tiles hold 6-10 dates (utils/data.py)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` of every entry point: each flag's default is said once. argparse's formatter appends
    ``(default: ...)`` to every help text; one that already says its default (e.g. "default: the
    training crop size") is left as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if "default" in (action.help or "").lower():
            return action.help
        return super()._get_help_string(action)


def dataset_defaults(stage: str, dataset: str) -> dict:
    """Defaults of ``crop_size``, ``n_dates`` and ``batch_size`` for a stage ('pretrain'/'finetune') and data set."""
    return dict(DATASET_DEFAULTS[stage].get(dataset, GENERIC_DEFAULTS))


def data_layout(args: argparse.Namespace) -> str:
    """The file layout a run reads: 'pastis', 'mtlcc' or 'folder'.

    ``--dataset synthetic`` is the embedded data set written in ``synthetic_format``: MTLCC for the
    MTLCC scripts, ``--synthetic_format`` in pre-training, PASTIS everywhere else.
    """
    if args.dataset == "synthetic":
        return getattr(args, "synthetic_format", "pastis")
    return args.dataset


def apply_dataset_defaults(args: argparse.Namespace, stage: str) -> argparse.Namespace:
    """Fill the flags left unset (None) from :data:`DATASET_DEFAULTS` for the run's data layout
    (``--dataset synthetic`` in MTLCC format takes the MTLCC defaults)."""
    defaults = dataset_defaults(stage, data_layout(args))
    resolve_n_dates(args, defaults.pop("n_dates"))
    for name, value in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    return args


def resolve_n_dates(args: argparse.Namespace, default: int) -> None:
    """``--n_dates`` left unset (None) becomes ``default``, except in a ``--smoke`` run on the synthetic
    MTLCC set, whose tiles hold only 6-10 dates: there it is :data:`SMOKE_MTLCC_DATES`."""
    if getattr(args, "n_dates", None) is None:
        smoke_mtlcc = args.dataset == "synthetic" and getattr(args, "smoke", False) and data_layout(args) == "mtlcc"
        args.n_dates = SMOKE_MTLCC_DATES if smoke_mtlcc else default


def add_data_args(parser: argparse.ArgumentParser, synthetic_format: str | None = None,
                  datasets: tuple[str, ...] = DATASETS) -> None:
    """The data flags. ``synthetic_format``: the format of ``--dataset synthetic`` fixed by the entry
    point (the MTLCC scripts: 'mtlcc'); None adds the ``--synthetic_format`` flag instead."""
    group = parser.add_argument_group("data")
    written = f"in {synthetic_format.upper()} format" if synthetic_format else "in the --synthetic_format"
    group.add_argument("--dataset", choices=datasets, default="synthetic",
                       help=f"'synthetic': the embedded crop-phenology data set, written once {written} and used like "
                            "real data; 'pastis'/'mtlcc': the real data set under --data_root; "
                            "'folder': your own data, PASTIS layout + dataset.json (README 'Your own region'). "
                            "Every data set but 'synthetic' needs --data_root")
    if synthetic_format is None:
        group.add_argument("--synthetic_format", choices=SYNTHETIC_FORMATS, default="pastis",
                           help="--dataset synthetic: write the embedded data set in the PASTIS format or in the MTLCC "
                                "TFRecord format (then it holds the authors' MTLCC tile ids); ignored for real data")
    else:
        parser.set_defaults(synthetic_format=synthetic_format)
    group.add_argument("--data_root", type=Path, default=None,
                       help="dataset folder (PASTIS: holds metadata.geojson; MTLCC: holds tileids/ and classes.txt; folder: holds "
                            "dataset.json and metadata.geojson). "
                            "Synthetic: where the generated data set is cached (default: a folder under data_cache/)")
    group.add_argument("--synthetic_version", type=int, choices=(1, 2), default=2,
                       help="synthetic data set: 2 (default) the realistic benchmark (mixed pixels, three end-members, "
                            "within-field variation, haze/clouds/shadows, 8 tiles); 1 the old demo set, kept for comparison")
    group.add_argument("--year", type=int, default=2016, choices=(2016, 2017), help="MTLCC year")
    group.add_argument("--crop_size", type=int, default=GENERIC_DEFAULTS["crop_size"],
                       help="training crop size in pixels, 0 = no crop (per-data-set default: DATASET_DEFAULTS in "
                            "utils/args.py; paper: 32 on PASTIS, whole 48-px tiles on MTLCC)")
    group.add_argument("--n_dates", type=int, default=GENERIC_DEFAULTS["n_dates"],
                       help="dates per series (0 = all; MTLCC default 30). MTLCC: random N sorted dates per access in "
                            "training, evenly spaced in evaluation")
    group.add_argument("--temporal", default=None,
                       help="temporal subset: first:N | even:N | random:N | window:M1-M2 (calendar months, e.g. window:2-6)")
    group.add_argument("--batch_size", type=int, default=GENERIC_DEFAULTS["batch_size"],
                       help="samples per process and step (per-data-set default: DATASET_DEFAULTS in utils/args.py)")
    group.add_argument("--num_workers", type=int, default=2, help="DataLoader worker processes")
    group.add_argument("--cache_dir", type=Path, default=None, help="MTLCC: one-time .npy cache of the TFRecord/GeoTIFF tiles")
    group.add_argument("--cloud_fraction", type=float, default=None, metavar="F",
                       help="synthetic version-2 data: fraction of the optical dates under broken cloud or overcast "
                            "(default: the generator's 0.35; Europe: a third to a half, docs/data_setup.md); written "
                            "as a separate cached set, same fields, labels and radar")
    group.add_argument("--sources", nargs="+", default=[PRIMARY_DEFAULT], metavar="SOURCE",
                       help="image sources, primary first: S2 (Sentinel-2, the paper), S1A / S1D (Sentinel-1 ascending / "
                            "descending, PASTIS-R layout; 'S1' = 'S1A S1D'), e.g. '--sources S2 S1'. PASTIS-format "
                            "data (real PASTIS-R or the synthetic version-2 set) hold all three; MTLCC only S2; a "
                            "folder data set the sources its dataset.json lists")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (STCLNConfig)")
    group.add_argument("--preset", choices=tuple(PRESETS), default=None,
                       help="'paper': widths 32/256, 8 heads, 3 layers, FFN 1024, ~3.2M parameters (the authors' model); "
                            "'small': widths 16/64, 4 heads, 2 layers, FFN 128, ~131k parameters (CPU studies); 'tiny': "
                            "widths 8/32, 4 heads, 2 layers, FFN 64, ~34k parameters (CPU demos and tests). "
                            "Default: paper on real data, tiny on the synthetic data set; --smoke always uses tiny")
    group.add_argument("--positions", choices=POSITION_MODES, default="index",
                       help="positional encoding input: date index 0..T-1 (paper) or acquisition day")
    group.add_argument("--use_pad_mask", action="store_true",
                       help="padded dates never change outputs (the paper's model attends to padding)")
    group.add_argument("--drop_invalid", action="store_true",
                       help="folder data with cloud masks (valid_masks): invalid (cloudy) cells never change outputs, "
                            "left out per pixel of the temporal attention, GroupNorm, STA and max-pool (the paper "
                            "uses every observation)")
    group.add_argument("--sta_scale", choices=STA_SCALES, default="d_model",
                       help="STA softmax scale: 1/sqrt(D) (paper) or 1/sqrt(D*T)")
    group.add_argument("--sta_chunk", type=int, default=0, help="STA queries per chunk at evaluation (0 = all); exact")
    group.add_argument("--mask_token", choices=MASK_TOKEN_MODES, default="scalar",
                       help="one learnable mask value for all bands (paper) or one per band")
    group.add_argument("--dropout", type=float, default=None, help="override the preset's dropout (paper 0.1)")
    group.add_argument("--fusion", choices=FUSION_MODES, default="late",
                       help="with several --sources (docs/model.md 'Several sources'): 'late' encodes each source on its "
                            "own dates and adds the extra sources' STA outputs to the primary's; 'merged' runs one "
                            "Transformer over the frames of all sources by acquisition day (needs --positions doy)")


def add_optim_args(parser: argparse.ArgumentParser, epochs: int, lr: float, grad_clip: float | None) -> None:
    group = parser.add_argument_group("optimisation")
    group.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (paper: {epochs})")
    group.add_argument("--lr", type=float, default=lr, help=f"Adam learning rate (paper: {lr:g}), constant")
    group.add_argument("--weight_decay", type=float, default=0.0, help="Adam weight decay (paper: 0)")
    group.add_argument("--grad_clip", type=float, default=grad_clip,
                       help="max global gradient norm (paper: 5 in pre-training, none in fine-tuning)")


def add_runtime_args(parser: argparse.ArgumentParser, output_dir: str) -> None:
    group = parser.add_argument_group("runtime, logging and checkpoints")
    group.add_argument("--device", default="auto", type=device_name,
                       help="'auto' (cuda if available, else cpu), 'cuda', 'cuda:N' or 'cpu'")
    group.add_argument("--seed", type=int, default=0, help="seeds python, numpy, torch, crops, masks and date sampling")
    group.add_argument("--output_dir", type=Path, default=Path(output_dir),
                       help="run folder: config.json, last.tar, exports, tensorboard logs (tb/) and figures")
    group.add_argument("--resume", action="store_true", help="continue from <output_dir>/last.tar")
    group.add_argument("--overwrite", action="store_true",
                       help="train into an --output_dir that holds an earlier run, deleting its checkpoints first")
    group.add_argument("--save_every", type=int, default=10, help="write last.tar every N epochs (and at the end)")
    group.add_argument("--amp", action="store_true",
                       help="bf16 autocast on CUDA, and on a CPU with native bf16 (else fp32 with a warning); "
                            "BatchNorm, GroupNorm statistics, STA softmax and losses stay fp32. Default: fp32 (paper)")
    group.add_argument("--strict_fp32", action="store_true",
                       help="CUDA: no TF32 matmuls/convolutions and no fused Adam (default: both on CUDA)")
    group.add_argument("--compile", action="store_true", help="torch.compile the model (any device)")
    group.add_argument("--compile_backend", default=None,
                       help="torch.compile backend with --compile ('aot_eager' needs no C++ compiler: tests, CPU; "
                            "default: inductor)")
    group.add_argument("--grad_checkpoint", action="store_true",
                       help="activation checkpointing of the CNN and the Transformer layers: less memory for large "
                            "crops and long series, about one extra forward pass of time, same results")
    group.add_argument("--fast_dropout", action="store_true",
                       help="CPU speed: dropout masks cut from 64-bit random words instead of bernoulli_ (single-threaded "
                            "on AMD CPUs); same keep probability up to 1.5e-5, a different random stream than the default "
                            "(paper) dropout; evaluation unchanged")
    group.add_argument("--skip_nonfinite", action="store_true",
                       help="skip batches with NaN/inf inputs or loss with a warning instead of stopping")
    group.add_argument("--trust_checkpoint", action="store_true",
                       help="allow pickled objects when loading --pretrain_pth / --resume files (only files you trust)")
    group.add_argument("--no_progress", action="store_true", help="no tqdm progress bars")
    group.add_argument("--smoke", action="store_true",
                       help="tiny sizes end to end (CI): tiny model, few samples, 1-2 epochs")


def device_name(text: str) -> str:
    """argparse type of ``--device``: auto, cpu, cuda or cuda:N (whether it exists is checked at start-up)."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not one of auto, cpu, cuda, cuda:N")
    return text


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject, before any work, flag values that would fail later (after an epoch of training)."""
    if args.dataset in NEEDS_DATA_ROOT and args.data_root is None:
        parser.error(f"--dataset {args.dataset} needs --data_root DIR (the data set folder); "
                     "only --dataset synthetic runs on the embedded synthetic data set")
    positive = ("epochs", "save_every", "batch_size")
    non_negative = ("num_workers", "sta_chunk", "n_dates", "crop_size")
    for name in positive:
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    for name in non_negative:
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        parser.error(f"--lr must be a finite number > 0, got {args.lr}")
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        parser.error(f"--weight_decay must be a finite number >= 0, got {args.weight_decay}")
    if args.grad_clip is not None and not (math.isfinite(args.grad_clip) and args.grad_clip > 0):
        parser.error(f"--grad_clip must be a finite number > 0, got {args.grad_clip}")
    if args.dropout is not None and not 0.0 <= args.dropout < 1.0:
        parser.error(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.temporal:
        try:
            parse_temporal(args.temporal)
        except ValueError as err:
            parser.error(str(err))
    if args.n_dates and data_layout(args) == "pastis":
        parser.error(f"--n_dates {args.n_dates} samples dates of MTLCC tiles only; PASTIS-format data (--dataset "
                     f"{args.dataset}) take --temporal first:N, even:N or random:N")
    check_sources(parser, args)
    check_fusion(parser, args)
    check_cloud_fraction(parser, args)
    if args.compile_backend is not None and not args.compile:
        parser.error(f"--compile_backend {args.compile_backend} needs --compile (without it the model runs eagerly)")
    if args.compile_backend is None:
        args.compile_backend = "inductor"


def check_sources(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Expand ``--sources`` (aliases, order kept) in place and refuse, in one line, names the data set
    cannot hold: MTLCC has only S2, the version-1 synthetic set has no radar, PASTIS-format data hold
    S2, S1A and S1D (a folder data set's own names are checked against its dataset.json on load)."""
    try:
        sources = expand_sources(getattr(args, "sources", None) or [PRIMARY_DEFAULT])
    except ValueError as err:
        parser.error(str(err))
    layout = data_layout(args)
    if args.dataset != "folder":
        unknown = [source for source in sources if source not in KNOWN_SOURCES]
        if unknown:
            aliases = ", ".join(f"{alias} = {' '.join(names)}" for alias, names in SOURCE_ALIASES.items())
            parser.error(f"--sources {' '.join(unknown)}: unknown source(s); known: {' '.join(KNOWN_SOURCES)} ({aliases})")
        if layout == "mtlcc" and sources != (PRIMARY_DEFAULT,):
            parser.error(f"--sources {' '.join(sources)}: MTLCC data hold Sentinel-2 only (--sources S2)")
        radar = [source for source in sources if source in RADAR_SOURCES]
        if radar and args.dataset == "synthetic" and getattr(args, "synthetic_version", 2) != 2:
            parser.error(f"--sources {' '.join(radar)}: the synthetic radar series exist for --synthetic_version 2 only")
    args.sources = list(sources)


def check_cloud_fraction(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``--cloud_fraction`` shapes the synthetic version-2 PASTIS-format set only, within [0, 1]."""
    fraction = getattr(args, "cloud_fraction", None)
    if fraction is None:
        return
    if not 0.0 <= fraction <= 1.0:
        parser.error(f"--cloud_fraction must be in [0, 1], got {fraction}")
    if args.dataset != "synthetic" or getattr(args, "synthetic_version", 2) != 2 or data_layout(args) != "pastis":
        parser.error("--cloud_fraction applies to the synthetic version-2 data set in the PASTIS format only "
                     "(real data have the clouds they have)")


def check_fusion(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``--fusion merged`` needs several sources and ``--positions doy`` (one line otherwise)."""
    if getattr(args, "fusion", "late") != "merged":
        return
    if len(args.sources) < 2:
        parser.error(f"--fusion merged: one source (--sources {' '.join(args.sources)}) has nothing to fuse; "
                     "give two or more --sources, e.g. --sources S2 S1")
    if args.positions != "doy":
        parser.error("--fusion merged places the frames of every source on one time axis: it needs --positions doy "
                     f"(got --positions {args.positions}; date indices of different sources are not comparable)")


def model_config_for_data(args: argparse.Namespace, info) -> STCLNConfig:
    """The STCLNConfig of the model flags for a built data set (``utils.data_bundle.DataInfo``): its
    bands and classes, and its sources (primary first) with their bands and ``--fusion``. One source
    gives the paper's single-source model."""
    config = model_config_from_args(args, info.in_channels, info.num_classes)
    if len(info.sources) == 1:
        return config
    return with_sources(config, info.sources, info.source_channels, getattr(args, "fusion", "late"))


def model_config_from_args(args: argparse.Namespace, in_channels: int, num_classes: int) -> STCLNConfig:
    """Build the STCLNConfig from the preset and the model flags."""
    overrides = dict(
        in_channels=in_channels, num_classes=num_classes, positions=args.positions, use_pad_mask=args.use_pad_mask,
        use_valid_mask=getattr(args, "drop_invalid", False), sta_scale=args.sta_scale, sta_chunk=args.sta_chunk, mask_token=args.mask_token,
    )
    if args.dropout is not None:
        overrides["dropout"] = args.dropout
    synthetic = args.dataset == "synthetic"
    if args.smoke:
        return tiny_config(**overrides)
    preset = args.preset or ("tiny" if synthetic else "paper")
    return PRESETS[preset](**overrides)  # paper = the STCLNConfig defaults


def parse_temporal(spec: str | None):
    """``first:N`` / ``even:N`` / ``random:N`` / ``window:M1-M2`` -> TemporalSubset or None."""
    if not spec:
        return None
    from utils.datasets.protocols import TemporalSubset

    mode, _, value = spec.partition(":")
    try:
        if mode == "window":
            first, last = (int(v) for v in value.split("-"))
            return TemporalSubset("window", months=(first, last))
        return TemporalSubset(mode, n=int(value))
    except ValueError as err:
        raise ValueError(f"--temporal {spec!r}: {err}") from None


def dump_args(args: argparse.Namespace, path: Path) -> None:
    """Write the resolved arguments as JSON (plain types only)."""
    write_text_atomic(path, json.dumps(args_dict(args), indent=2, sort_keys=True))


def args_dict(args: argparse.Namespace) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
