"""Data sets and metadata of ``--dataset folder`` (utils/datasets/folder.py) for every script.

:mod:`utils.data` dispatches here; the folder's ``dataset.json`` supplies what the PASTIS and
MTLCC branches take from class attributes: bands, classes, ignored classes, colours, protocols.
"""

import json
import logging
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from utils.args import parse_temporal
from utils.data_bundle import SMOKE_CROP, DataBundle, DataInfo, training_subset
from utils.data_spec import DataSpec
from utils.datasets.folder import FolderDataset, FolderSpec, read_dataset_json
from utils.datasets.pastis import METADATA_FILE, open_npy, read_pastis_metadata, s2_path
from utils.errors import DataError
from utils.metrics import EvalProtocol

log = logging.getLogger("stcln")
FOLDER_DEFAULT_SPLITS = {"train": (1,), "val": (2,), "test": (4,)}  # pretrain: every fold but the test folds
SPLIT_FLAGS = {"folds": "pretrain", "train_folds": "train", "val_folds": "val", "test_folds": "test"}


def folder_root(data_spec: DataSpec) -> Path:
    """The folder's root (``--data_root``), which a folder data set cannot do without."""
    if data_spec.data_root is None:
        raise DataError("--dataset folder needs --data_root DIR (a folder with dataset.json)")
    return Path(data_spec.data_root)


def folder_protocols(spec: FolderSpec) -> dict[str, EvalProtocol]:
    """The two protocols on the declared classes.

    ``stcln``: every class but the ignored and background ones is scored (the paper's rule);
    ``utae``: background is scored too, the ignored class's row and column are zeroed.
    """
    k = spec.num_classes
    skip = {spec.ignore_index, spec.background_index}
    return {
        "stcln": EvalProtocol("stcln", "folder", k, tuple(c for c in range(k) if c not in skip),
                              description="declared classes, ignored and background classes excluded"),
        "utae": EvalProtocol("utae", "folder", k, tuple(c for c in range(k) if c != spec.ignore_index),
                             zeroed_classes=(spec.ignore_index,) if spec.ignore_index is not None else (),
                             description="declared classes, background scored, ignored class zeroed"),
    }


def default_colormap(num_classes: int, ignore_index: int | None) -> tuple:
    import matplotlib

    colours = matplotlib.colormaps["tab20"](np.arange(num_classes) % 20)[:, :3]
    if ignore_index is not None:
        colours[ignore_index] = 1.0  # unscored in white
    return tuple(tuple(c) for c in colours.tolist())


def folder_info(spec: FolderSpec, sources: tuple[str, ...] = ("S2",)) -> DataInfo:
    k = max(spec.num_classes, 1)  # pre-training only folders have no classes; the head is not built
    unknown = [source for source in sources[1:] if source not in spec.sources]
    if unknown:
        raise DataError(f"{spec.path}: --sources {' '.join(unknown)}: not in its 'sources' ({' '.join(spec.sources) or 'none'})")
    channels = {"S2": len(spec.band_names)} | {source: len(spec.sources[source]) for source in sources[1:]}
    return DataInfo(
        in_channels=len(spec.band_names), num_classes=k, classes=list(spec.classes or ["unlabelled"]),
        ignore_index=spec.ignore_index, background_index=spec.background_index, red_index=spec.red_index,
        nir_index=spec.nir_index, rgb_indices=spec.rgb_indices,
        colormap=spec.colormap or default_colormap(k, spec.ignore_index),
        protocols=folder_protocols(spec) if spec.classes else {}, ndvi_gate=spec.ndvi_gate,
        sources=tuple(sources), source_channels=channels,
    )


def resolve_folder_splits(data_spec: DataSpec, unset: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """The folds of the ``unset`` fold flags (of :data:`SPLIT_FLAGS`) from dataset.json ``splits``, which
    are checked against the folds of metadata.geojson.

    Without ``splits``: train 1, val 2, test 4, and pre-training on every fold but the test folds.
    """
    root = folder_root(data_spec)
    spec = read_dataset_json(root)
    test = spec.splits.get("test", FOLDER_DEFAULT_SPLITS["test"])
    present = {meta.fold for meta in read_pastis_metadata(root / METADATA_FILE)}  # read once, for both uses below
    for split, folds in spec.splits.items():
        missing = sorted(set(folds) - present)
        if missing:
            raise DataError(f"{spec.path}: field 'splits.{split}' names fold(s) {missing} that no patch of "
                            f"{METADATA_FILE} has (folds present: {sorted(present)})")
    leaked = sorted(set(spec.splits.get("pretrain", ())) & set(test))
    if leaked and "folds" in unset:
        log.warning("%s: 'splits.pretrain' includes the test fold(s) %s: pre-training reads the test patches' imagery "
                    "(never their labels)", spec.path, leaked)
    resolved = {}
    for flag in unset:
        split = SPLIT_FLAGS[flag]
        if split in spec.splits:
            folds = spec.splits[split]
        elif split == "pretrain":
            folds = sorted(present - set(test))
        else:
            folds = FOLDER_DEFAULT_SPLITS[split]
        resolved[flag] = tuple(folds)
    return resolved


def folder_patch_size(root: Path) -> int:
    """The side of the folder's patches: dataset.json ``patch_size`` (written by ``utils.datasets.convert``),
    else the smallest side among the patches listed in metadata.geojson (npy headers, memory-mapped)."""
    spec = read_dataset_json(root)  # validated: the file exists and is a JSON object
    size = json.loads(spec.path.read_text(encoding="utf-8")).get("patch_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise DataError(f"{spec.path}: field 'patch_size' must be a positive integer, got {size!r}")
        return size
    metas = read_pastis_metadata(Path(root) / METADATA_FILE)
    if not metas:
        raise DataError(f"{Path(root) / METADATA_FILE}: lists no patch")
    return min(min(open_npy(s2_path(root, meta.patch_id)).shape[-2:]) for meta in metas)  # (T, C, H, W): min(H, W)


def folder_set(data_spec: DataSpec, root: Path, folds: list[int], norm_folds: list[int], crop: int | None,
               mode: str = "grid", labels: bool = True) -> FolderDataset:
    """A folder data set of ``folds`` normalised with ``norm_folds``; --smoke crops are SMOKE_CROP."""
    if crop and data_spec.smoke:
        crop = SMOKE_CROP
    return FolderDataset(root, folds=folds, norm_folds=norm_folds, crop_size=crop or None, crop_mode=mode,
                         temporal=parse_temporal(data_spec.temporal), seed=data_spec.seed, labels=labels,
                         sources=data_spec.sources)


def build_folder_pretrain(data_spec: DataSpec) -> DataBundle:
    """Unlabelled series of the pre-training folds (every grid crop each epoch); no label file needed."""
    root = folder_root(data_spec)
    spec = read_dataset_json(root)
    if data_spec.authors_ndvi and spec.red_index is None:
        raise DataError(f"{spec.path}: --authors_ndvi needs red_band and nir_band (they are null)")
    folds = data_spec.split_folds("folds")
    train = folder_set(data_spec, root, folds, folds, data_spec.crop_size, "grid", labels=False)
    return DataBundle(train, None, None, folder_info(spec, data_spec.sources))


def build_folder_finetune(data_spec: DataSpec, splits: tuple[str, ...], subset: str) -> dict[str, Dataset]:
    """Labelled training subset ('ratio' or 'all'), validation and test sets, all with train-fold statistics."""
    root = folder_root(data_spec)
    if subset == "authors":
        raise DataError("--label_subset authors exists only for PASTIS and MTLCC; use 'all' or 'ratio' with --dataset folder")
    train, val, test = (data_spec.split_folds(flag) for flag in ("train_folds", "val_folds", "test_folds"))
    overlap = set(test) & (set(train) | set(val))
    if overlap:
        raise DataError(f"--test_folds {test} overlap the training/validation folds (fold {sorted(overlap)})")
    out = {}
    if "train" in splits:
        full = folder_set(data_spec, root, train, train, data_spec.crop_size, "grid")
        out["train"] = training_subset(data_spec, full, subset)
    if "val" in splits:
        out["val"] = folder_set(data_spec, root, val, train, None)
    if "test" in splits:
        out["test"] = folder_set(data_spec, root, test, train, None)
    return out


def folder_data_info(data_spec: DataSpec) -> DataInfo:
    """The folder's bands, classes and protocols (its dataset.json)."""
    return folder_info(read_dataset_json(folder_root(data_spec)), data_spec.sources)
