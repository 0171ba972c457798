"""Build the data sets each script needs from its :class:`~utils.data_spec.DataSpec` (one place for
every data decision). The spec is resolved once from the flags (:func:`resolve_data_spec`).

``--dataset synthetic`` writes the embedded synthetic data set once (PASTIS format, or MTLCC
TFRecord format for the MTLCC scripts and ``--synthetic_format mtlcc``) under ``data_cache/`` (or
``--data_root``) and then reads it through the same loaders as the real data. Every other
``--dataset`` reads ``--data_root`` (``utils.args.check_args`` refuses it missing).
"""

import argparse
import dataclasses
import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset, Subset

from utils.args import SMOKE_MTLCC_DATES, parse_temporal
from utils.data_bundle import SMOKE_CROP, DataBundle, DataInfo, labelled_subset, training_subset
from utils.data_spec import FOLD_FLAGS, DataSpec
from utils.datasets import PASTIS_COLORMAP, PASTISDataset, authors_pastis_subset, build_pastis_synthetic
from utils.datasets.mtlcc import MTLCCDataset, authors_mtlcc_subset
from utils.datasets.mtlcc_writers import write_mtlcc_like
from utils.datasets.protocols import UNSCORED
from utils.datasets.sources import PRIMARY_DEFAULT, RADAR_SOURCES, SOURCE_BAND_NAMES
from utils.errors import DataError, STCLNError
from utils.metrics import PROTOCOLS

log = logging.getLogger("stcln")
CACHE_ROOT = Path("data_cache")
SYNTHETIC_PASTIS = {  # per --synthetic_version: v1 the original demo set, v2 the realistic benchmark (1,250 = 5 folds of 250)
    1: {"full": dict(n_patches=200, size=32, n_dates=(24, 40)), "smoke": dict(n_patches=30, size=16, n_dates=(6, 10))},
    2: {"full": dict(n_patches=1250, size=32, n_dates=(20, 30)), "smoke": dict(n_patches=30, size=16, n_dates=(6, 10))},
}
SYNTHETIC_RADAR_REVISIT = {"full": 12, "smoke": 36}  # days between radar dates per orbit: ~35 (full), ~12 (smoke)
SYNTHETIC_MTLCC = {"full": dict(size=24, n_dates=(30, 40)), "smoke": dict(size=12, n_dates=(SMOKE_MTLCC_DATES, 10))}
SYNTHETIC_MTLCC_EVAL_TILES = {"full": 60, "smoke": 6}
SYNTHETIC_MTLCC_FIRST_EVAL_ID = 20_000  # above every id of the authors' lists
MTLCC_RGB = (0, 1, 2)  # B04, B03, B02
PASTIS_RGB = (2, 1, 0)
COMPLETE_MARKER = "COMPLETE.json"


def info_for(spec: DataSpec, dataset: Dataset | None = None) -> DataInfo:
    """What the model and reports need; class names come from ``dataset`` (MTLCC: its classes.txt) when given."""
    if spec.dataset == "folder":
        from utils.data_folder import folder_data_info

        return folder_data_info(spec)
    if spec.layout == "pastis":
        cls, rgb, cmap, protocols = PASTISDataset, PASTIS_RGB, PASTIS_COLORMAP, PROTOCOLS["pastis"]
    else:
        cls, rgb, protocols = MTLCCDataset, MTLCC_RGB, PROTOCOLS["mtlcc"]
        cmap = tuple(tuple(c) for c in _tab20(cls.num_classes))
    dataset = unwrap_subset(dataset)[0] if dataset is not None else None
    classes = list(dataset.classes if dataset is not None else cls.classes)
    channels = {source: len(SOURCE_BAND_NAMES[source]) for source in spec.sources}
    if spec.sources[0] != PRIMARY_DEFAULT:  # radar primary: no red/NIR, no NDVI gate, no RGB
        return DataInfo(channels[spec.sources[0]], cls.num_classes, classes, cls.ignore_index, cls.background_index,
                        None, None, (0, 0, 0), cmap, protocols, ndvi_gate=False, sources=spec.sources,
                        source_channels=channels)
    return DataInfo(cls.in_channels, cls.num_classes, classes, cls.ignore_index, cls.background_index,
                    cls.red_index, cls.nir_index, rgb, cmap, protocols, sources=spec.sources, source_channels=channels)


def _tab20(n: int) -> np.ndarray:
    import matplotlib

    colours = matplotlib.colormaps["tab20"](np.arange(n) % 20)[:, :3]
    colours[0] = 0.0  # unknown in black
    return colours


def pastis_root(spec: DataSpec) -> Path:
    """The PASTIS-layout root; the synthetic one is written first if it is not there yet."""
    if not spec.synthetic:
        return Path(spec.data_root)
    version = spec.synthetic_version
    clouds = f"_clouds{spec.cloud_fraction:g}" if spec.cloud_fraction is not None else ""  # its own cached set
    root = spec.data_root or CACHE_ROOT / f"synthetic_pastis_v{version}_{spec.size}{clouds}"
    radar = any(source in RADAR_SOURCES for source in spec.sources)  # added to the cached optical set once
    return build_pastis_synthetic(root, version=version, radar=radar, radar_revisit=SYNTHETIC_RADAR_REVISIT[spec.size],
                                  cloud_fraction=spec.cloud_fraction, **SYNTHETIC_PASTIS[version][spec.size])


def mtlcc_root(spec: DataSpec) -> Path:
    """The MTLCC root; the synthetic one holds the authors' tile ids (train/val) and extra eval tiles."""
    if not spec.synthetic:
        return Path(spec.data_root)
    key = spec.size
    root = spec.data_root or CACHE_ROOT / f"synthetic_mtlcc_{key}"
    marker = root / COMPLETE_MARKER
    params = json.loads(json.dumps(SYNTHETIC_MTLCC[key] | {"eval_tiles": SYNTHETIC_MTLCC_EVAL_TILES[key]}))
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return root
    if root.exists() and not marker.is_file() and any(root.iterdir()):
        raise DataError(f"{root}: folder exists, is not empty and has no {COMPLETE_MARKER} of a synthetic MTLCC "
                        "set; refusing to overwrite it (--dataset synthetic writes the synthetic set there)")
    if root.exists():  # a synthetic set written with other parameters
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    eval_ids = range(SYNTHETIC_MTLCC_FIRST_EVAL_ID, SYNTHETIC_MTLCC_FIRST_EVAL_ID + params["eval_tiles"])
    tile_ids = {"train_fold0": authors_mtlcc_subset("train"), "test_fold0": list(dict.fromkeys(authors_mtlcc_subset("val"))),
                "eval": list(eval_ids)}
    log.info("writing the synthetic MTLCC data set (2016 and 2017) to %s", root)
    for year in (2016, 2017):
        write_mtlcc_like(staging, tile_ids=tile_ids, size=SYNTHETIC_MTLCC[key]["size"],
                         n_dates=SYNTHETIC_MTLCC[key]["n_dates"], year=year, seed=year, return_arrays=False)
    (staging / COMPLETE_MARKER).write_text(json.dumps(params))
    staging.rename(root)
    return root


def pastis_set(spec: DataSpec, root: Path, folds: list[int], norm_folds: list[int], crop: int | None, mode: str = "grid",
               ids: list[int] | None = None, cells: list[tuple[int, int]] | None = None) -> PASTISDataset:
    """A PASTIS-layout data set of ``folds`` normalised with ``norm_folds``; --smoke crops are SMOKE_CROP."""
    if crop and spec.smoke:
        crop = SMOKE_CROP
    return PASTISDataset(root, folds=folds, norm_folds=norm_folds, crop_size=crop or None, crop_mode=mode, cells=cells,
                         ids=ids, temporal=parse_temporal(spec.temporal), seed=spec.seed, sources=spec.sources)


def mtlcc_set(spec: DataSpec, root: Path, split: str, tile_ids: list[int] | None = None,
              sampling: str | None = None) -> MTLCCDataset:
    """The MTLCC tiles of ``split`` (optionally only ``tile_ids``) of the spec's year, dates and cache."""
    if spec.sources != (PRIMARY_DEFAULT,):
        raise DataError(f"{root}: MTLCC data hold Sentinel-2 only; --sources {' '.join(spec.sources)} cannot be read")
    return MTLCCDataset(root, split=split, year=spec.year, tile_ids=tile_ids, n_dates=spec.n_dates or None,
                        temporal=parse_temporal(spec.temporal), date_sampling=sampling, seed=spec.seed,
                        cache_dir=spec.cache_dir)


PASTIS_DEFAULT_FOLDS = {"folds": [5], "train_folds": [1], "val_folds": [2], "test_folds": [4]}  # the paper's


def resolve_data_spec(args: argparse.Namespace) -> DataSpec:
    """The run's :class:`DataSpec`, built once from the parsed flags, with the fold flags the run has but
    left unset (None) resolved: the paper's folds, or (``--dataset folder``) the dataset.json splits.

    The resolved folds are written back to ``args``, so that config.json and the checkpoints' ``args``
    record the folds the run used (what ``utils.predict.training_context`` reads back).
    """
    spec = DataSpec.from_args(args)
    unset = tuple(flag for flag in FOLD_FLAGS if hasattr(args, flag) and getattr(args, flag) is None)
    if spec.dataset == "folder":
        from utils.data_folder import resolve_folder_splits

        resolved = resolve_folder_splits(spec, unset)  # also checks the splits of dataset.json
    else:
        resolved = {flag: tuple(PASTIS_DEFAULT_FOLDS[flag]) for flag in unset}
    spec = dataclasses.replace(spec, **resolved)
    for flag in unset:
        setattr(args, flag, spec.split_folds(flag))
    return spec


def build_pretrain_data(spec: DataSpec) -> DataBundle:
    """Unlabelled training series: PASTIS folds (every grid crop each epoch, as the authors) or MTLCC tiles."""
    if spec.dataset == "folder":
        from utils.data_folder import build_folder_pretrain

        return build_folder_pretrain(spec)
    if spec.layout == "pastis":
        folds = spec.split_folds("folds")
        train = pastis_set(spec, pastis_root(spec), folds, folds, spec.crop_size, "grid")
    else:
        train = mtlcc_set(spec, mtlcc_root(spec), "train", sampling="random")
    return DataBundle(train, None, None, info_for(spec, train))


def resolve_label_subset(spec: DataSpec) -> str:
    """The labelled subset drawn: ``label_subset``, or the data set's default when it is None."""
    if spec.label_subset is None and spec.dataset == "folder":
        return "all"  # the user's labels are the few labels
    if spec.label_subset is None:
        # synthetic MTLCC-format data holds the authors' tile ids; synthetic PASTIS-format data has no authors' ids
        return "ratio" if spec.synthetic and spec.layout == "pastis" else "authors"
    return spec.label_subset


def build_finetune_data(spec: DataSpec, splits: tuple[str, ...] = ("train", "val", "test")) -> DataBundle:
    """Labelled training subset, validation and test sets. All PASTIS splits use the training folds' statistics."""
    subset = resolve_label_subset(spec)
    if spec.dataset == "folder":
        from utils.data_folder import build_folder_finetune

        out = build_folder_finetune(spec, splits, subset)
    elif spec.layout == "pastis":
        out = pastis_finetune_splits(spec, splits, subset)
    else:
        out = mtlcc_finetune_splits(spec, splits, subset)
    for name, dataset in out.items():
        if len(dataset) == 0:
            raise DataError(f"{name} split is empty (check --*_folds / tile lists)")
    check_disjoint_samples(out)
    check_split_labels(out)
    return DataBundle(out.get("train"), out.get("val"), out.get("test"), info_for(spec, next(iter(out.values()))))


def pastis_finetune_splits(spec: DataSpec, splits: tuple[str, ...], subset: str) -> dict[str, Dataset]:
    """The PASTIS-layout splits (synthetic or real), every one normalised with the training folds' statistics."""
    root = pastis_root(spec)
    check_disjoint_folds(spec)
    norm, out = spec.split_folds("train_folds"), {}
    if "train" in splits:
        if subset == "authors":
            ids, cells = authors_pastis_subset("train")
            out["train"] = pastis_set(spec, root, spec.split_folds("train_folds"), norm, spec.crop_size, "cells", ids=ids,
                                      cells=cells)
        else:
            full = pastis_set(spec, root, spec.split_folds("train_folds"), norm, spec.crop_size, "grid")
            out["train"] = training_subset(spec, full, subset)
    if "val" in splits:
        if subset == "authors":
            ids, cells = authors_pastis_subset("val")
            out["val"] = pastis_set(spec, root, spec.split_folds("val_folds"), norm, spec.crop_size, "cells", ids=ids,
                                    cells=cells)
        else:
            out["val"] = pastis_set(spec, root, spec.split_folds("val_folds"), norm, None)
    if "test" in splits:
        out["test"] = pastis_set(spec, root, spec.split_folds("test_folds"), norm, None)
    return out


def mtlcc_finetune_splits(spec: DataSpec, splits: tuple[str, ...], subset: str) -> dict[str, Dataset]:
    """The MTLCC splits: training tiles, the authors' validation tiles ('test' split) and the eval tiles."""
    root, out = mtlcc_root(spec), {}
    if "train" in splits:
        if subset == "authors":
            out["train"] = mtlcc_set(spec, root, "train", authors_mtlcc_subset("train"), "random")
        else:
            full = mtlcc_set(spec, root, "train", sampling="random")
            if subset == "ids":
                raise DataError("--label_subset ids exists for PASTIS-layout and folder data (samples with ids), not MTLCC")
            out["train"] = full if subset == "all" else labelled_subset(spec, full, dominant_tile_classes(full))
    if "val" in splits:
        out["val"] = mtlcc_set(spec, root, "test", authors_mtlcc_subset("val") if subset == "authors" else None, "even")
    if "test" in splits:
        out["test"] = mtlcc_set(spec, root, "eval", sampling="even")
    return out


def unwrap_subset(dataset: Dataset) -> tuple[Dataset, list[int] | None]:
    """(the data set under any Subset wrappers, the indices into it that they select, or None for all)."""
    indices = None
    while isinstance(dataset, Subset):
        indices = [dataset.indices[i] for i in indices] if indices is not None else list(dataset.indices)
        dataset = dataset.dataset
    return dataset, indices


def check_split_labels(splits: dict[str, Dataset]) -> None:
    """Read every split's labels before training (PASTIS-layout sets; MTLCC tiles are checked as they
    are decoded): a bad test label fails now, not after all training, and a validation or test
    split without a scored pixel is an error."""
    for name, dataset in splits.items():
        dataset, indices = unwrap_subset(dataset)
        if not hasattr(dataset, "check_labels") or not getattr(dataset, "labels", True):
            continue
        if dataset.check_labels(indices) == 0 and name in ("val", "test"):
            raise DataError(f"{name} split: no labelled pixel of a scored class (only background/ignored); "
                            "its metrics would be undefined")


def check_disjoint_folds(spec: DataSpec) -> None:
    """Training, validation and test folds must not share a fold."""
    folds = {f"--{flag}": spec.split_folds(flag) for flag in ("train_folds", "val_folds", "test_folds")}
    names = list(folds)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            shared = sorted(set(folds[first]) & set(folds[second]))
            if shared:
                raise STCLNError(f"{first} {folds[first]} and {second} {folds[second]} share fold(s) {shared}")


def sample_ids(dataset: Dataset) -> set[int] | None:
    """The PASTIS patch / MTLCC tile ids a (possibly Subset-wrapped) data set reads; None if it has no ids."""
    dataset, indices = unwrap_subset(dataset)
    ids = getattr(dataset, "patch_ids", None)
    ids = getattr(dataset, "tile_ids", None) if ids is None else ids
    if ids is None:
        return None
    return set(ids) if indices is None else {ids[i] for i in indices}


def check_disjoint_samples(splits: dict[str, Dataset]) -> None:
    """No patch or tile may be in two of the training, validation and test splits."""
    ids = {name: found for name, dataset in splits.items() if (found := sample_ids(dataset)) is not None}
    names = list(ids)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            shared = sorted(ids[first] & ids[second])
            if shared:
                raise DataError(f"the {first} and {second} splits share {len(shared)} patch/tile id(s) "
                                f"{shared[:10]}{' ...' if len(shared) > 10 else ''}: each sample must be in one split only")


def dominant_tile_classes(dataset: MTLCCDataset) -> np.ndarray:
    """Most frequent crop class of every tile (unknown excluded), for stratified label subsets.

    A tile without any known pixel gets ``UNSCORED`` (-1) and is never drawn.
    """
    classes = np.zeros(len(dataset), dtype=np.int64)
    for index in range(len(dataset)):
        counts = np.bincount(dataset[index]["label"].numpy().ravel(), minlength=dataset.num_classes)
        counts[dataset.ignore_index] = 0
        classes[index] = counts.argmax() if counts.any() else UNSCORED
    return classes
