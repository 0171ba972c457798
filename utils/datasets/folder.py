"""Your own imagery: the folder format (``--dataset folder --data_root DIR``).

A folder data set is the PASTIS layout plus a small ``dataset.json`` that declares what PASTIS
hard-codes (bands, classes, ignored classes, reflectance scale)::

    root/dataset.json                  bands, red/NIR, classes, ignore/background, scale (below)
    root/metadata.geojson              FeatureCollection: ID_PATCH, Fold (int >= 0), dates-S2
    root/DATA_S2/S2_<ID_PATCH>.npy     (T, C, H, W), any integer or float dtype, raw values
    root/ANNOTATIONS/TARGET_<ID>.npy   (H, W) or (k, H, W) integer class indices (channel 0 used);
                                       optional when the folder is only used for pre-training
    root/NORM_S2_patch.json            Fold_<k> -> {"mean": [C], "std": [C]}; computed from the
                                       data and cached on first use when absent
    root/VALID/VALID_<ID_PATCH>.npy    optional, (T, H, W) uint8/bool, 1 = clear observation (cloud
                                       masks), present when dataset.json says "valid_masks": true
    root/DATA_<SRC>/<SRC>_<ID>.npy     optional further sources (e.g. Sentinel-1 S1A, S1D: PASTIS-R
                                       layout), (T_s, C_s, H, W) numeric, finite, their dates under
                                       ``dates-<SRC>`` in metadata.geojson; NORM_<SRC>_patch.json
                                       computed and cached on first use like NORM_S2_patch.json

``dataset.json`` fields (``null`` allowed where noted)::

    band_names          list of C names, in the order of the C axis
    red_band, nir_band  names of the red and near-infrared bands, or null: the NDVI gate of the
                        masking (paper §2.3) is then off and every date may be masked
    ndvi_band           optional, the band that is NDVI itself (a one-band NDVI series): the
                        vegetation gate then reads it (red_band and nir_band null)
    valid_masks         optional, true when VALID/ holds per-cell validity (clouds); samples
                        then carry ``valid`` (T, H, W) bool
    rgb_bands           optional, three band names for figures (default: B04/B03/B02 or
                        red/green/blue when present, else the first band in grey)
    classes             list of K class names, index = label value; null = no labels
    ignore_index        label never trained on nor scored (e.g. "unlabelled"), or null
    background_index    class left out of the loss and of the paper's scores, or null
    reflectance_scale   raw value / scale = reflectance (10000 for Sentinel-2 L2A); NDVI uses it
    reflectance_offset  optional, added before scaling (-1000 for Sentinel-2 baseline >= 04.00)
    reference_date      optional ISO date; ``days`` count from it (default: 1 January of the
                        earliest acquisition year)
    colormap            optional, K RGB triplets in [0, 1] or [0, 255]
    splits              optional {"pretrain": [...], "train": [...], "val": [...], "test": [...]}
                        folds used when the scripts' --folds/--*_folds flags are not given
    georeferencing      optional, written by ``python -m utils.datasets.convert`` (source tags)
    sources             optional {"<SRC>": {"band_names": [...]}, ...}: further image sources, each
                        on its own dates (``--sources S2 <SRC> ...``); "S2" names the main series.
                        :func:`write_folder_source` adds one; the GeoTIFF converter writes
                        Sentinel-1 folders as S1A/S1D (--s1a_dir/--s1d_dir, utils/datasets/radar.py)

Normalisation statistics are those of utae-paps' ``compute_norm_vals`` (per fold, the average
over patches of per-patch band means and unbiased stds), computed once for every fold and
written atomically; scripts use the training folds' statistics for every split.
"""

import datetime
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from utils.datasets.pastis import (
    METADATA_FILE,
    PASTISDataset,
    _Patch,
    normalisable,
    open_npy,
    read_pastis_metadata,
    s2_path,
    source_path,
    target_path,
)
from utils.datasets.protocols import UNSCORED
from utils.datasets.sources import NAME_PATTERN, PRIMARY_DEFAULT, dates_key, norm_file
from utils.errors import DataError
from utils.report import write_text_atomic

DATASET_FILE = "dataset.json"
VALID_DIR = "VALID"
NO_LABEL = -1  # label of every pixel of a sample read without labels (pre-training)
NDVI_EPS = 1e-6
RGB_CANDIDATES = (("B04", "B03", "B02"), ("B4", "B3", "B2"), ("red", "green", "blue"))
SPLIT_NAMES = ("pretrain", "train", "val", "test")
REQUIRED_FIELDS = (
    "band_names",
    "red_band",
    "nir_band",
    "classes",
    "ignore_index",
    "background_index",
    "reflectance_scale",
)


@dataclass(frozen=True)
class FolderSpec:
    """The validated content of ``dataset.json``."""

    path: Path
    band_names: tuple[str, ...]
    red_index: int | None
    nir_index: int | None
    rgb_indices: tuple[int, int, int]
    classes: tuple[str, ...] | None
    ignore_index: int | None
    background_index: int | None
    reflectance_scale: float
    reflectance_offset: float = 0.0
    reference_date: datetime.date | None = None
    colormap: tuple | None = None
    splits: dict = field(default_factory=dict)
    georeferencing: dict | None = None
    ndvi_index: int | None = None
    valid_masks: bool = False
    sources: dict = field(default_factory=dict)  # further sources: name -> band names (tuple)

    @property
    def ndvi_gate(self) -> bool:
        """True when red and NIR, or an NDVI band, are declared (the masking's vegetation gate can be computed)."""
        return self.red_index is not None or self.ndvi_index is not None

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes else 0


def valid_path(root: Path, patch_id: int) -> Path:
    return Path(root) / VALID_DIR / f"VALID_{patch_id}.npy"


def _band_index(path: Path, raw: dict, key: str, names: tuple[str, ...]) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if value not in names:
        raise DataError(f"{path}: field '{key}': band {value!r} is not in band_names {list(names)}")
    return names.index(value)


def _optional_class_index(path: Path, raw: dict, key: str, classes: tuple[str, ...] | None) -> int | None:
    value = raw[key]
    if value is None:
        return None
    if classes is None or isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(classes):
        raise DataError(
            f"{path}: field '{key}' must be null or a class index in 0..{len(classes or ()) - 1}, got {value!r}"
        )
    return value


def _rgb_indices(path: Path, raw: dict, names: tuple[str, ...]) -> tuple[int, int, int]:
    chosen = raw.get("rgb_bands")
    if chosen is not None:
        if not isinstance(chosen, list) or len(chosen) != 3 or any(name not in names for name in chosen):
            raise DataError(f"{path}: field 'rgb_bands' must list 3 of band_names {list(names)}, got {chosen!r}")
        return tuple(names.index(name) for name in chosen)
    for candidate in RGB_CANDIDATES:
        if all(name in names for name in candidate):
            return tuple(names.index(name) for name in candidate)
    return (0, 0, 0)  # grey composite of the first band


def _splits(path: Path, raw: dict) -> dict:
    splits = raw.get("splits") or {}
    if not isinstance(splits, dict) or set(splits) - set(SPLIT_NAMES):
        raise DataError(f"{path}: field 'splits' must map some of {list(SPLIT_NAMES)} to fold lists, got {splits!r}")
    for name, folds in splits.items():
        if not isinstance(folds, list) or not folds or not all(isinstance(f, int) and f >= 0 for f in folds):
            raise DataError(f"{path}: field 'splits.{name}' must be a non-empty list of folds >= 0, got {folds!r}")
    return {name: tuple(folds) for name, folds in splits.items()}


def _colormap(path: Path, raw: dict, classes: tuple[str, ...] | None) -> tuple | None:
    colours = raw.get("colormap")
    if colours is None:
        return None
    try:
        table = np.asarray(colours, dtype=np.float64)
    except (TypeError, ValueError):
        table = np.zeros(0)
    if classes is None or table.shape != (len(classes), 3):
        raise DataError(f"{path}: field 'colormap' must hold one RGB triplet per class, got shape {table.shape}")
    if not np.isfinite(table).all() or table.min() < 0 or table.max() > 255:
        raise DataError(
            f"{path}: field 'colormap' values must lie in 0..1 or 0..255, found {table.min():g}..{table.max():g}"
        )
    return tuple(tuple(row) for row in table.tolist())


def read_dataset_json(root: str | Path) -> FolderSpec:
    """Read and validate ``root/dataset.json``; every error names the file and the field."""
    path = Path(root) / DATASET_FILE
    if not path.is_file():
        raise DataError(f"{path}: not found (--dataset folder needs a dataset.json; see utils/datasets/folder.py)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({' '.join(str(err).split())})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object")
    missing = [key for key in REQUIRED_FIELDS if key not in raw]
    if missing:
        raise DataError(f"{path}: missing field '{missing[0]}' (required: {', '.join(REQUIRED_FIELDS)})")
    names = raw["band_names"]
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(n, str) and n for n in names)
        or len(set(names)) != len(names)
    ):
        raise DataError(f"{path}: field 'band_names' must be a non-empty list of distinct strings, got {names!r}")
    names = tuple(names)
    red, nir = _band_index(path, raw, "red_band", names), _band_index(path, raw, "nir_band", names)
    if (red is None) != (nir is None):
        raise DataError(f"{path}: fields 'red_band' and 'nir_band' must both be band names or both null")
    classes = raw["classes"]
    if classes is not None and (
        not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes)
    ):
        raise DataError(f"{path}: field 'classes' must be null or a list of at least 2 names, got {classes!r}")
    if classes is not None and len(set(classes)) != len(classes):
        twice = sorted({c for c in classes if classes.count(c) > 1})
        raise DataError(f"{path}: field 'classes' names {twice} more than once (one name per class)")
    classes = tuple(classes) if classes is not None else None
    scale, offset = raw["reflectance_scale"], raw.get("reflectance_offset", 0.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise DataError(f"{path}: field 'reflectance_scale' must be a positive number, got {scale!r}")
    if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not math.isfinite(offset):
        raise DataError(f"{path}: field 'reflectance_offset' must be a number, got {offset!r}")
    ndvi = _band_index(path, raw, "ndvi_band", names)
    if ndvi is not None and red is not None:
        raise DataError(f"{path}: field 'ndvi_band' goes with null 'red_band'/'nir_band' (declare one NDVI source)")
    valid_masks = raw.get("valid_masks", False)
    if not isinstance(valid_masks, bool):
        raise DataError(f"{path}: field 'valid_masks' must be true or false, got {valid_masks!r}")
    reference = raw.get("reference_date")
    try:
        reference = datetime.date.fromisoformat(reference) if reference is not None else None
    except (TypeError, ValueError):
        raise DataError(f"{path}: field 'reference_date' must be an ISO date (YYYY-MM-DD), got {reference!r}") from None
    return FolderSpec(
        path=path,
        band_names=names,
        red_index=red,
        nir_index=nir,
        rgb_indices=_rgb_indices(path, raw, names),
        classes=classes,
        ignore_index=_optional_class_index(path, raw, "ignore_index", classes),
        background_index=_optional_class_index(path, raw, "background_index", classes),
        reflectance_scale=float(scale),
        reflectance_offset=float(offset),
        reference_date=reference,
        colormap=_colormap(path, raw, classes),
        splits=_splits(path, raw),
        georeferencing=raw.get("georeferencing"),
        ndvi_index=ndvi,
        valid_masks=valid_masks,
        sources=_sources(path, raw),
    )


def _sources(path: Path, raw: dict) -> dict[str, tuple[str, ...]]:
    """dataset.json ``sources``: further sources -> band names; absent: none."""
    sources = raw.get("sources", {})
    if not isinstance(sources, dict):
        raise DataError(
            f'{path}: field \'sources\' must be an object {{"S1A": {{"band_names": [...]}}}}, got {sources!r}'
        )
    out = {}
    for name, entry in sources.items():
        if not NAME_PATTERN.fullmatch(name) or name == PRIMARY_DEFAULT:
            raise DataError(
                f"{path}: field 'sources': {name!r} is not a further source name (letters and digits, "
                f"not {PRIMARY_DEFAULT}: the main series)"
            )
        names = entry.get("band_names") if isinstance(entry, dict) else None
        if (
            not isinstance(names, list)
            or not names
            or not all(isinstance(n, str) and n for n in names)
            or len(set(names)) != len(names)
        ):
            raise DataError(
                f"{path}: field 'sources.{name}.band_names' must be a non-empty list of distinct strings, got {names!r}"
            )
        out[name] = tuple(names)
    return out


def patch_norm_stats(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and unbiased std over (T, H, W) of one (T, C, H, W) patch, float64."""
    per_band = np.moveaxis(np.asarray(image, dtype=np.float64), 1, 0).reshape(
        image.shape[1], -1
    )  # (T,C,H,W) -> (C, T*H*W)
    return per_band.mean(axis=1), per_band.std(axis=1, ddof=1)


def compute_norm_file(root: str | Path, n_bands: int, source: str = PRIMARY_DEFAULT) -> dict:
    """utae-paps ``compute_norm_vals`` of ``source`` for every fold of ``metadata.geojson``; written atomically
    to ``NORM_<SOURCE>_patch.json``."""
    root = Path(root)
    sums: dict[int, list] = {}
    for meta in read_pastis_metadata(root / METADATA_FILE):
        path = source_path(root, source, meta.patch_id)
        image = open_npy(path)
        if image.ndim != 4 or image.shape[1] != n_bands:
            raise DataError(f"{path}: expected an array of shape (T, {n_bands}, H, W), got {image.shape}")
        mean, std = patch_norm_stats(image)
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise DataError(f"{path}: contains NaN or infinite values")
        entry = sums.setdefault(meta.fold, [np.zeros(n_bands), np.zeros(n_bands), 0])
        entry[0] += mean
        entry[1] += std
        entry[2] += 1
    stats = {
        f"Fold_{fold}": {"mean": (m / n).tolist(), "std": (s / n).tolist()} for fold, (m, s, n) in sorted(sums.items())
    }
    write_text_atomic(root / norm_file(source), json.dumps(stats, indent=2))
    return stats


def folder_norm_stats(
    root: str | Path, n_bands: int, folds: Sequence[int], source: str = PRIMARY_DEFAULT
) -> tuple[np.ndarray, np.ndarray]:
    """(C,) mean and std of ``source`` in the given folds (average of their statistics), computing the file if absent."""
    path = Path(root) / norm_file(source)
    if path.is_file():
        try:
            stats = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{path}: not valid JSON ({type(err).__name__}); delete it to recompute") from None
    else:
        stats = compute_norm_file(root, n_bands, source)
    means, stds = [], []
    for fold in folds:
        entry = stats.get(f"Fold_{fold}") if isinstance(stats, dict) else None
        if not isinstance(entry, dict) or "mean" not in entry or "std" not in entry:
            raise DataError(f"{path}: field 'Fold_{fold}' missing (no patch of fold {fold}?)")
        mean, std = np.asarray(entry["mean"], dtype=np.float64), np.asarray(entry["std"], dtype=np.float64)
        if mean.shape != (n_bands,) or std.shape != mean.shape:
            raise DataError(
                f"{path}: field 'Fold_{fold}' needs {n_bands} means and stds, got {mean.shape}, {std.shape}"
            )
        means.append(mean)
        stds.append(std)
    mean, std = np.mean(means, axis=0), np.mean(stds, axis=0)
    if not normalisable(mean, std).all():
        flat = [int(i) for i in np.flatnonzero(~normalisable(mean, std))]
        raise DataError(f"{path}: bands {flat} have (almost) zero spread in folds {list(folds)} (constant band?)")
    return mean.astype(np.float32), std.astype(np.float32)


class FolderDataset(PASTISDataset):
    """Patches of a folder data set as CONTRACT.md sample dicts (PASTIS machinery, declared metadata).

    Args are those of :class:`PASTISDataset` (keywords after ``norm_folds``) except
    ``reference_date`` (dataset.json's, else 1 January of the first acquisition's year), plus:
        labels: read ANNOTATIONS (fine-tuning, test). False for pre-training: no label file is
            needed and every label pixel is ``NO_LABEL`` (-1).

    Folds are any integers >= 0 (the converter writes 1..5 for blocks and 0 for buffer patches).
    """

    root_description = "folder data set"
    known_folds = None  # any fold >= 0 (the converter writes 0 for buffer patches)

    def __init__(
        self,
        root: str | Path,
        folds: Sequence[int],
        norm_folds: Sequence[int] | None = None,
        *,
        labels: bool = True,
        **sampling,
    ) -> None:
        self.labels = labels
        super().__init__(root, folds, norm_folds, reference_date=None, **sampling)
        self.reference_date = self.spec.reference_date or datetime.date(
            min(patch.meta.dates[0] for patch in self.patches).year, 1, 1
        )

    def _read_description(self) -> None:
        """dataset.json: bands, red/NIR, classes, ignored and background classes."""
        self.spec = spec = read_dataset_json(self.root)
        if self.labels and spec.classes is None:
            raise DataError(f"{spec.path}: field 'classes' is null: this folder has no labels (pre-training only)")
        self.classes = list(spec.classes or ())
        self.num_classes = len(self.classes)
        self.ignore_index, self.background_index = spec.ignore_index, spec.background_index
        self.band_names, self.in_channels = spec.band_names, len(spec.band_names)
        self.red_index, self.nir_index = spec.red_index, spec.nir_index

    def _checked_folds(self, folds: Sequence[int], norm_folds: Sequence[int] | None) -> tuple[tuple, tuple]:
        checked = tuple(int(fold) for fold in folds)
        norm = tuple(int(fold) for fold in norm_folds) if norm_folds else checked
        if not checked or min(checked + norm) < 0:
            raise DataError(f"{self.root}: folds must be a non-empty list of integers >= 0, got {list(folds)}")
        return checked, norm

    def _norm_stats(self) -> tuple[np.ndarray, np.ndarray]:
        return folder_norm_stats(self.root, self.in_channels, self.norm_folds)

    def _available_sources(self) -> dict[str, tuple[str, ...]]:
        """The main series (S2, dataset.json ``band_names``) and the ``sources`` dataset.json lists."""
        return {PRIMARY_DEFAULT: self.spec.band_names} | self.spec.sources

    def _set_sources(self, sources: tuple[str, ...]) -> None:
        if sources and sources[0] != PRIMARY_DEFAULT:
            raise DataError(
                f"{self.spec.path}: the first --sources entry must be {PRIMARY_DEFAULT} (the folder's main "
                f"series, DATA_S2), got {' '.join(sources)}"
            )
        unknown = [source for source in sources if source not in self._available_sources()]
        if unknown:
            raise DataError(
                f"{self.spec.path}: --sources {' '.join(unknown)}: not in field 'sources' "
                f"({' '.join(self.spec.sources) or 'none listed'})"
            )
        super()._set_sources(sources)

    def _source_norm(self, source: str) -> tuple[np.ndarray, np.ndarray]:
        return folder_norm_stats(self.root, self.source_channels[source], self.norm_folds, source)

    def _source_dtype_ok(self, source: str, dtype: np.dtype) -> bool:
        return np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)

    def _check_files(self, meta) -> _Patch:
        """Validate one patch's headers (memory-mapped: no pixel is read)."""
        if not meta.dates:
            raise DataError(f"{self.root / METADATA_FILE}: patch {meta.patch_id} has no dates-S2")
        image_path = s2_path(self.root, meta.patch_id)
        image = open_npy(image_path)
        if (
            not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating))
            or image.ndim != 4
            or image.shape[1] != self.in_channels
        ):
            raise DataError(
                f"{image_path}: expected a numeric array of shape (T, {self.in_channels}, H, W) "
                f"({self.in_channels} band_names in {DATASET_FILE}), got {image.dtype} {image.shape}"
            )
        if image.shape[0] != len(meta.dates):
            raise DataError(
                f"{image_path}: {image.shape[0]} frames but {METADATA_FILE} lists "
                f"{len(meta.dates)} dates-S2 for patch {meta.patch_id}"
            )
        height, width = image.shape[2:]
        if self.spec.valid_masks:
            path = valid_path(self.root, meta.patch_id)
            valid = open_npy(path)
            if not (np.issubdtype(valid.dtype, np.integer) or valid.dtype == bool) or valid.shape != (
                image.shape[0],
                height,
                width,
            ):
                raise DataError(
                    f"{path}: expected a uint8 or bool validity array of shape ({image.shape[0]}, {height}, "
                    f"{width}) ({DATASET_FILE} declares valid_masks), got {valid.dtype} {valid.shape}"
                )
        if self.labels:
            label_path = target_path(self.root, meta.patch_id)
            target = open_npy(label_path)
            if (
                not np.issubdtype(target.dtype, np.integer)
                or target.ndim not in (2, 3)
                or target.shape[-2:] != (height, width)
            ):
                raise DataError(
                    f"{label_path}: expected an integer array of shape ({height}, {width}) or "
                    f"(k, {height}, {width}), got {target.dtype} {target.shape}"
                )
        if self.crop_size is not None and not 0 < self.crop_size <= min(height, width):
            raise DataError(f"{image_path}: crop_size {self.crop_size} does not fit a {height}x{width} patch")
        for source in self.extra_sources:
            self._open_source(meta, source, (height, width))
        return _Patch(meta, height, width)

    def _read_label(self, patch_id: int, rows: slice, cols: slice) -> np.ndarray:
        if not self.labels:
            return np.full((rows.stop - rows.start, cols.stop - cols.start), NO_LABEL, dtype=np.int64)
        path = target_path(self.root, patch_id)
        target = open_npy(path, self.mmap)
        semantic = target if target.ndim == 2 else target[0]  # (k, H, W): channel 0 as PASTIS
        label = np.asarray(semantic[rows, cols]).astype(np.int64)
        if label.size and (label.min() < 0 or label.max() >= self.num_classes):
            raise DataError(
                f"{path}: class values must be in 0..{self.num_classes - 1} (the classes of "
                f"{DATASET_FILE}), found {label.min()}..{label.max()}"
            )
        return label

    def dominant_classes(self) -> np.ndarray:
        """Most frequent scored class of each sample's window (background/ignore excluded when declared);
        ``UNSCORED`` (-1) if none, so such a crop is never drawn into a labelled subset."""
        excluded = [i for i in (self.background_index, self.ignore_index) if i is not None]
        classes = np.empty(len(self), dtype=np.int64)
        for index in range(len(self)):
            rows, cols = self._window(index, self._generator(index))
            label = self._read_label(self.patches[self.entries[index][0]].meta.patch_id, rows, cols)
            counts = np.bincount(label.ravel(), minlength=self.num_classes)
            counts[excluded] = 0
            classes[index] = counts.argmax() if counts.any() else UNSCORED
        return classes

    def ndvi(self, raw: np.ndarray) -> np.ndarray:
        """(T, C, h, w) raw values -> (T, h, w) NDVI of reflectance (or the declared NDVI band); zeros
        when the gate is off."""
        if self.spec.ndvi_index is not None:
            band = raw[:, self.spec.ndvi_index]
            return ((band + self.spec.reflectance_offset) / self.spec.reflectance_scale).astype(np.float32)
        if self.red_index is None:
            return np.zeros((raw.shape[0], *raw.shape[2:]), dtype=np.float32)
        red, nir = (
            (raw[:, index] + self.spec.reflectance_offset) / self.spec.reflectance_scale
            for index in (self.red_index, self.nir_index)
        )
        return ((nir - red) / (nir + red + NDVI_EPS)).astype(np.float32)

    def _extra_keys(self, patch_id: int, frames: np.ndarray, rows: slice, cols: slice) -> dict:
        """``valid`` (T, h, w) bool of the sample's dates and window when the folder has validity masks."""
        if not self.spec.valid_masks:
            return {}
        valid = open_npy(valid_path(self.root, patch_id), self.mmap)
        return {"valid": torch.from_numpy(np.asarray(valid[frames, rows, cols]) != 0)}  # (T, h, w)


def write_folder_source(
    root: str | Path,
    source: str,
    band_names: Sequence[str],
    images: dict[int, np.ndarray],
    dates: dict[int, Sequence[datetime.date]],
) -> None:
    """Add a further image source to a folder data set (e.g. Sentinel-1 next to its Sentinel-2 series).

    Writes ``DATA_<SOURCE>/<SOURCE>_<ID>.npy`` (each ``images[id]``, (T_s, C, H, W), as given), the
    ``dates-<SOURCE>`` of every patch into metadata.geojson and the source into dataset.json's
    ``sources`` (both rewritten atomically). Every patch of metadata.geojson needs its images and dates;
    a stale ``NORM_<SOURCE>_patch.json`` is removed (recomputed on first use).
    """
    root = Path(root)
    if not NAME_PATTERN.fullmatch(source) or source == PRIMARY_DEFAULT:
        raise ValueError(f"{source!r} is not a further source name (letters and digits, not {PRIMARY_DEFAULT})")
    metadata_path = root / METADATA_FILE
    collection = json.loads(metadata_path.read_text())
    ids = [int(feature["properties"]["ID_PATCH"]) for feature in collection["features"]]
    missing = sorted(set(ids) - set(images) | set(ids) - set(dates))
    if missing:
        raise ValueError(f"write_folder_source: no {source} images or dates for patches {missing[:10]}")
    (root / f"DATA_{source}").mkdir(parents=True, exist_ok=True)
    for patch_id in ids:
        if len(images[patch_id]) != len(dates[patch_id]):
            raise ValueError(
                f"write_folder_source: patch {patch_id}: {len(images[patch_id])} {source} frames "
                f"but {len(dates[patch_id])} dates"
            )
        np.save(source_path(root, source, patch_id), images[patch_id])
    for feature, patch_id in zip(collection["features"], ids):
        feature["properties"][dates_key(source)] = {
            str(k): int(date.strftime("%Y%m%d")) for k, date in enumerate(dates[patch_id])
        }
    write_text_atomic(metadata_path, json.dumps(collection, indent=2))
    spec_path = root / DATASET_FILE
    raw = json.loads(spec_path.read_text(encoding="utf-8"))
    raw.setdefault("sources", {})[source] = {"band_names": list(band_names)}
    write_text_atomic(spec_path, json.dumps(raw, indent=2))
    (root / norm_file(source)).unlink(missing_ok=True)
