"""PASTIS (Sainte Fare Garnot & Landrieu, 2021) semantic-segmentation loader, real on-disk format.

Folder layout (Zenodo record 5012942)::

    root/metadata.geojson              FeatureCollection, one Feature per patch
    root/NORM_S2_patch.json            Fold_1..Fold_5 -> {"mean": [10], "std": [10]}
    root/DATA_S2/S2_<ID_PATCH>.npy     int16 (T, 10, H, W), reflectance x 10000
    root/ANNOTATIONS/TARGET_<ID>.npy   (3, H, W), channel 0 = class 0..19 (dtype varies: cast)

Samples follow utils/datasets/CONTRACT.md. Unlike utae-paps, the normalisation statistics are
chosen explicitly (``norm_folds``): validation and test sets must pass the TRAINING folds, so no
statistic of the evaluated fold leaks into its inputs (docs/data_formats.md §1.3).
"""

import datetime
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from utils.datasets.protocols import UNSCORED, selects_a_date
from utils.datasets.sources import (
    KNOWN_SOURCES, PRIMARY_DEFAULT, RADAR_SOURCES, SOURCE_BAND_NAMES, data_dir, dates_key, file_name, norm_file,
)
from utils.errors import DataError

log = logging.getLogger("stcln")

PASTIS_BAND_NAMES = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
PASTIS_CLASSES = [  # documentation/label_names.json of the release, verbatim (double space included)
    "Background", "Meadow", "Soft winter wheat", "Corn", "Winter barley", "Winter rapeseed",
    "Spring barley", "Sunflower", "Grapevine", "Beet", "Winter triticale", "Winter durum wheat",
    "Fruits,  vegetables, flowers", "Potatoes", "Leguminous fodder", "Soybeans", "Orchard",
    "Mixed cereal", "Sorghum", "Void label",
]
BACKGROUND_INDEX = 0
VOID_INDEX = 19  # parcels mostly outside the patch; never trained on nor scored
PASTIS_COLORMAP = (  # colormap.txt of the release: tab20-like, black background, white void
    (0, 0, 0),
    (0.6823529411764706, 0.7803921568627451, 0.9098039215686274),
    (1.0, 0.4980392156862745, 0.054901960784313725),
    (1.0, 0.7333333333333333, 0.47058823529411764),
    (0.17254901960784313, 0.6274509803921569, 0.17254901960784313),
    (0.596078431372549, 0.8745098039215686, 0.5411764705882353),
    (0.8392156862745098, 0.15294117647058825, 0.1568627450980392),
    (1.0, 0.596078431372549, 0.5882352941176471),
    (0.5803921568627451, 0.403921568627451, 0.7411764705882353),
    (0.7725490196078432, 0.6901960784313725, 0.8352941176470589),
    (0.5490196078431373, 0.33725490196078434, 0.29411764705882354),
    (0.7686274509803922, 0.611764705882353, 0.5803921568627451),
    (0.8901960784313725, 0.4666666666666667, 0.7607843137254902),
    (0.9686274509803922, 0.7137254901960784, 0.8235294117647058),
    (0.4980392156862745, 0.4980392156862745, 0.4980392156862745),
    (0.7803921568627451, 0.7803921568627451, 0.7803921568627451),
    (0.7372549019607844, 0.7411764705882353, 0.13333333333333333),
    (0.8588235294117647, 0.8588235294117647, 0.5529411764705883),
    (0.09019607843137255, 0.7450980392156863, 0.8117647058823529),
    (1, 1, 1),
)
PASTIS_FOLDS = (1, 2, 3, 4, 5)
STD_FLOOR = 1e-6  # a normalisation std below this fraction of max(1, |mean|) blows the z-scores up (NaN BatchNorm)


def normalisable(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(C,) bool: bands whose std can divide the data (> STD_FLOOR * max(1, |mean|))."""
    return std > STD_FLOOR * np.maximum(1.0, np.abs(mean))
PASTIS_FOLD_SPLITS = (  # utae-paps / TSViT 5-fold cross-validation (docs/data_formats.md §1.3)
    {"train": (1, 2, 3), "val": (4,), "test": (5,)},
    {"train": (2, 3, 4), "val": (5,), "test": (1,)},
    {"train": (3, 4, 5), "val": (1,), "test": (2,)},
    {"train": (4, 5, 1), "val": (2,), "test": (3,)},
    {"train": (5, 1, 2), "val": (3,), "test": (4,)},
)
PASTIS_REFERENCE_DATE = "2018-09-01"
METADATA_FILE = "metadata.geojson"
NORM_FILE = "NORM_S2_patch.json"
S2_DIR, TARGET_DIR = "DATA_S2", "ANNOTATIONS"
TARGET_CHANNELS = 3
SEMANTIC_CHANNEL = 0
NDVI_EPS = 1e-6
CROP_MODES = ("random", "grid", "cells")


def s2_path(root: Path, patch_id: int) -> Path:
    return Path(root) / S2_DIR / f"S2_{patch_id}.npy"


def source_path(root: Path, source: str, patch_id: int) -> Path:
    """``root/DATA_<SOURCE>/<SOURCE>_<ID>.npy`` (PASTIS-R layout; 'S2' gives :func:`s2_path`)."""
    return Path(root) / data_dir(source) / file_name(source, patch_id)


def target_path(root: Path, patch_id: int) -> Path:
    return Path(root) / TARGET_DIR / f"TARGET_{patch_id}.npy"


@dataclass(frozen=True)
class PatchMeta:
    """One Feature of metadata.geojson."""

    patch_id: int
    fold: int
    tile: str
    dates: tuple[datetime.date, ...]  # dates-S2
    source_dates: tuple[tuple[str, tuple[datetime.date, ...]], ...] = ()  # (source, dates) of further sources

    def dates_of(self, source: str) -> tuple[datetime.date, ...]:
        """The dates of ``source`` ('S2': ``dates``); empty when metadata.geojson lists none."""
        if source == PRIMARY_DEFAULT:
            return self.dates
        return dict(self.source_dates).get(source, ())


def _parse_yyyymmdd(value, path: Path, patch_id, key: str = "dates-S2") -> datetime.date:
    try:
        text = str(int(value))
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except (TypeError, ValueError):
        raise DataError(f"{path}: patch {patch_id}: bad date {value!r} in {key} (expected YYYYMMDD)") from None


def _parse_dates(raw, path: Path, patch_id, key: str = "dates-S2") -> tuple[datetime.date, ...]:
    """``dates-<SOURCE>`` (dict or JSON string of a dict "0".."T-1" -> YYYYMMDD) -> dates ordered by int(key)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise DataError(f"{path}: patch {patch_id}: {key} is a string that is not JSON") from None
    if isinstance(raw, list):
        raise DataError(f"{path}: patch {patch_id}: {key} is a list; expected an object "
                        '{"0": YYYYMMDD, "1": YYYYMMDD, ...} (as the PASTIS release)')
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{path}: patch {patch_id}: {key} missing or empty")
    try:
        keys = sorted(raw, key=int)  # "10" after "9", never lexicographic
    except ValueError:
        raise DataError(f"{path}: patch {patch_id}: {key} keys must be integers, got {list(raw)[:3]}") from None
    dates = tuple(_parse_yyyymmdd(raw[k], path, patch_id, key) for k in keys)
    if any(later < earlier for earlier, later in zip(dates, dates[1:])):
        raise DataError(f"{path}: patch {patch_id}: {key} are not in chronological order of their index")
    return dates


def read_pastis_metadata(path: str | Path, sources: Sequence[str] = (PRIMARY_DEFAULT,)) -> list[PatchMeta]:
    """Parse metadata.geojson into :class:`PatchMeta` records sorted by ``ID_PATCH``.

    Patches without ``dates-S2`` are kept with empty dates (an error only if they are selected).
    An ``ID_PATCH`` listed twice is an error. ``sources`` other than S2 (e.g. PASTIS-R's S1A, S1D)
    also read their ``dates-<SOURCE>`` (same rules as ``dates-S2``; absent: empty).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: metadata file not found (expected the PASTIS metadata.geojson)")
    try:
        features = json.loads(path.read_text())["features"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a GeoJSON FeatureCollection ({type(err).__name__})") from None
    if not isinstance(features, list) or not all(isinstance(feature, dict) for feature in features):
        raise DataError(f"{path}: 'features' must be a list of GeoJSON Features, got {type(features).__name__}")
    patches, folds = [], {}
    for feature in features:
        props = feature.get("properties") or {}
        if not isinstance(props, dict):
            raise DataError(f"{path}: a feature's 'properties' is a {type(props).__name__}, not an object")
        try:
            patch_id, fold = int(props["ID_PATCH"]), int(props["Fold"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: a feature lacks an integer ID_PATCH or Fold: {sorted(props)[:6]}") from None
        if patch_id in folds:  # would be trained and tested on if its copies sit in different folds
            raise DataError(f"{path}: ID_PATCH {patch_id} is listed twice (folds {folds[patch_id]} and {fold})")
        folds[patch_id] = fold
        raw_dates = props.get("dates-S2")
        dates = _parse_dates(raw_dates, path, patch_id) if raw_dates else ()
        tile = str(props.get("TILE", "")).upper().removeprefix("T")  # 't30uxv' / '30UXV' -> '30UXV'
        source_dates = []
        for source in sources:
            raw = props.get(dates_key(source)) if source != PRIMARY_DEFAULT else None
            if raw:
                source_dates.append((source, _parse_dates(raw, path, patch_id, dates_key(source))))
        patches.append(PatchMeta(patch_id, fold, tile, dates, tuple(source_dates)))
    return sorted(patches, key=lambda patch: patch.patch_id)


def read_norm_stats(path: str | Path, folds: Sequence[int], n_bands: int = len(PASTIS_BAND_NAMES)
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Band mean and std (n_bands,) float32: the average of the given folds' statistics (as utae-paps).

    ``n_bands``: 10 for ``NORM_S2_patch.json``, 3 for PASTIS-R's ``NORM_S1A_patch.json`` / ``NORM_S1D_patch.json``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: normalisation file not found")
    try:
        stats = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({type(err).__name__})") from None
    means, stds = [], []
    for fold in folds:
        entry = stats.get(f"Fold_{fold}") if isinstance(stats, dict) else None
        if not isinstance(entry, dict) or "mean" not in entry or "std" not in entry:
            raise DataError(f"{path}: no mean/std for Fold_{fold}")
        try:
            mean, std = np.asarray(entry["mean"], dtype=np.float64), np.asarray(entry["std"], dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{path}: Fold_{fold} mean/std must be lists of numbers") from None
        if mean.shape != (n_bands,) or std.shape != mean.shape:
            raise DataError(f"{path}: Fold_{fold} needs {n_bands} means and {n_bands} stds, got {mean.shape}, {std.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise DataError(f"{path}: Fold_{fold} has non-finite (NaN/inf) means or stds")
        if not (std > 0).all():
            raise DataError(f"{path}: Fold_{fold} has stds <= 0 (bands {np.flatnonzero(std <= 0).tolist()}): "
                            "no band can be normalised by them")
        if not normalisable(mean, std).all():
            bad = np.flatnonzero(~normalisable(mean, std)).tolist()
            raise DataError(f"{path}: Fold_{fold} has stds of (almost) zero (bands {bad}: {std[bad].tolist()}): "
                            "no band can be normalised by them")
        means.append(mean)
        stds.append(std)
    return np.mean(means, axis=0).astype(np.float32), np.mean(stds, axis=0).astype(np.float32)


def open_npy(path: Path, mmap: bool = True) -> np.ndarray:
    """``np.load`` with one-line DataErrors for missing, truncated or unreadable files."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        reason = " ".join(str(err).split())  # one line
        raise DataError(f"{path}: truncated or unreadable .npy ({reason})") from None


@dataclass(frozen=True)
class _Patch:
    meta: PatchMeta
    height: int
    width: int


class PASTISDataset(Dataset):
    """PASTIS patches (or crops of them) as CONTRACT.md sample dicts.

    Args:
        root: folder holding metadata.geojson, NORM_S2_patch.json, DATA_S2/ and ANNOTATIONS/.
        folds: folds (1..5) whose patches are loaded.
        norm_folds: folds whose NORM_S2_patch.json statistics are averaged for the z-score.
            Defaults to ``folds``; validation and test sets must pass the training folds.
        crop_size: crop side in pixels, or None for full patches.
        crop_mode: 'random' (one random crop per patch and access, reproducible from seed, epoch
            and index; see :meth:`set_epoch`), 'grid' (every non-overlapping crop; index = patch x
            cell) or 'cells' (only the grid ``cells``, e.g. [(0, 0), (1, 1)] as the authors).
        ids: restrict to these ID_PATCH values, in order, duplicates kept. Every id must belong to
            ``folds`` (a DataError otherwise: the authors' lists are never checked upstream).
        temporal: callable mapping the patch's list of dates to sorted frame indices.
        reference_date: ``days`` are counted from this date (ISO string or date).
        mmap: memory-map the .npy files and slice the crop before reading (else read whole files).
        sources: image sources, primary first (utils/datasets/sources.py): ('S2',) the paper's
            single-source data; PASTIS-R adds 'S1A' and 'S1D' (radar, dB), each on its own dates,
            as ``image_<s>``/``days_<s>`` (a radar primary fills ``image``/``days`` and has no ``ndvi``).
            ``temporal`` applies to every source's own dates.
    """

    classes = PASTIS_CLASSES
    num_classes = len(PASTIS_CLASSES)
    ignore_index = VOID_INDEX
    background_index = BACKGROUND_INDEX
    band_names = PASTIS_BAND_NAMES
    in_channels = len(PASTIS_BAND_NAMES)
    red_index = PASTIS_BAND_NAMES.index("B04")
    nir_index = PASTIS_BAND_NAMES.index("B08")

    def __init__(
        self,
        root: str | Path,
        folds: Sequence[int],
        norm_folds: Sequence[int] | None = None,
        crop_size: int | None = None,
        crop_mode: str = "random",
        cells: Sequence[tuple[int, int]] | None = None,
        ids: Sequence[int] | None = None,
        temporal: Callable[[list[datetime.date]], Sequence[int]] | None = None,
        reference_date: str | datetime.date = PASTIS_REFERENCE_DATE,
        seed: int = 0,
        mmap: bool = True,
        sources: Sequence[str] = (PRIMARY_DEFAULT,),
    ) -> None:
        super().__init__()
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: {self.root_description} not found")
        self._read_description()
        self._set_sources(tuple(sources))
        self.folds, self.norm_folds = self._checked_folds(folds, norm_folds)
        if crop_mode not in CROP_MODES:
            raise ValueError(f"crop_mode must be one of {CROP_MODES}, got {crop_mode!r}")
        self.crop_size, self.crop_mode = crop_size, crop_mode
        self.cells = [tuple(cell) for cell in cells] if cells is not None else None
        if crop_size is not None and crop_mode == "cells" and not self.cells:
            raise ValueError("crop_mode='cells' needs a non-empty cells list, e.g. [(0, 0), (1, 1)]")
        self.temporal, self.seed, self.mmap, self.epoch = temporal, seed, mmap, 0
        self.reference_date = None if reference_date is None else (  # None: set by a subclass (FolderDataset)
            reference_date if isinstance(reference_date, datetime.date) else datetime.date.fromisoformat(reference_date)
        )
        self.mean, self.std = self._norm_stats() if self.primary == PRIMARY_DEFAULT else self._source_norm(self.primary)
        self.source_norm = {source: self._source_norm(source) for source in self.extra_sources}
        self.patches = self._select_patches(ids)
        self.entries = self._build_entries()

    # ---- construction hooks (FolderDataset overrides them) ----
    root_description = "PASTIS root folder"

    def _read_description(self) -> None:
        """Read what the root declares about the data set (PASTIS: fixed, nothing to read)."""

    def _available_sources(self) -> dict[str, tuple[str, ...]]:
        """Band names of every source the data set may hold (PASTIS-R: S2, S1A, S1D)."""
        return {source: SOURCE_BAND_NAMES[source] for source in KNOWN_SOURCES}

    def _set_sources(self, sources: tuple[str, ...]) -> None:
        """``sources``, ``source_channels``, ``source_band_names``; a radar primary replaces the band attributes."""
        available = self._available_sources()
        unknown = [source for source in sources if source not in available]
        if not sources or unknown or len(set(sources)) != len(sources):
            raise DataError(f"{self.root}: sources {list(sources)} are not distinct sources of this data set "
                            f"(it has {list(available)})")
        self.sources, self.primary, self.extra_sources = sources, sources[0], sources[1:]
        self.source_band_names = {source: tuple(available[source]) for source in sources}
        self.source_channels = {source: len(available[source]) for source in sources}
        if self.primary != PRIMARY_DEFAULT:  # radar primary: no red/NIR, no NDVI
            self.band_names, self.in_channels = self.source_band_names[self.primary], self.source_channels[self.primary]
            self.red_index = self.nir_index = None

    def _source_norm(self, source: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-band (mean, std) of a further source: ``NORM_<SOURCE>_patch.json`` of the normalisation folds."""
        return read_norm_stats(self.root / norm_file(source), self.norm_folds, self.source_channels[source])

    def _source_dtype_ok(self, source: str, dtype: np.dtype) -> bool:
        """PASTIS-R radar: any float type (the loaders cast to float32); S2 is checked by :meth:`_check_files`."""
        return np.issubdtype(dtype, np.floating) if source in RADAR_SOURCES else dtype == np.int16

    def _checked_folds(self, folds: Sequence[int], norm_folds: Sequence[int] | None) -> tuple[tuple, tuple]:
        """(folds, normalisation folds), validated: PASTIS folds are 1..5."""
        checked = tuple(int(fold) for fold in folds)
        bad_folds = [fold for fold in checked + tuple(norm_folds or ()) if fold not in PASTIS_FOLDS]
        if not checked or bad_folds:
            raise DataError(f"{self.root}: folds must be a non-empty subset of {PASTIS_FOLDS}, got {list(folds)}")
        return checked, tuple(norm_folds) if norm_folds else checked

    def _norm_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-band (mean, std) of the normalisation folds."""
        return read_norm_stats(self.root / NORM_FILE, self.norm_folds)

    # ---- construction helpers ----
    known_folds: tuple[int, ...] | None = PASTIS_FOLDS  # folds metadata.geojson may hold (None: any, folder data)

    def _select_patches(self, ids: Sequence[int] | None) -> list[_Patch]:
        metadata_path = self.root / METADATA_FILE
        metas = read_pastis_metadata(metadata_path, self.sources)
        if self.known_folds is not None:
            odd = [meta for meta in metas if meta.fold not in self.known_folds]
            if odd:  # such a patch would silently belong to no split
                raise DataError(f"{metadata_path}: patch {odd[0].patch_id} has Fold {odd[0].fold} ({len(odd)} patch(es) "
                                f"outside the PASTIS folds {list(self.known_folds)})")
        in_folds = {meta.patch_id: meta for meta in metas if meta.fold in self.folds}
        if not in_folds:
            raise DataError(f"{metadata_path}: no patches in folds {list(self.folds)}")
        if ids is None:
            selected = list(in_folds.values())
        else:
            outside = sorted({int(patch_id) for patch_id in ids} - set(in_folds))
            if outside:
                raise DataError(f"{metadata_path}: ids not in folds {list(self.folds)}: {outside[:10]}"
                                f"{' ...' if len(outside) > 10 else ''}")
            selected = [in_folds[int(patch_id)] for patch_id in ids]
            if not selected:
                raise DataError(f"{metadata_path}: empty id list")
        if self.temporal is not None:  # e.g. an early-season window before a patch's first date
            kept = [meta for meta in selected
                    if not meta.dates_of(self.primary) or selects_a_date(self.temporal, meta.dates_of(self.primary))]
            if not kept:
                raise DataError(f"{metadata_path}: no patch of folds {list(self.folds)} has a date in {self.temporal!r}")
            if len(kept) < len(selected):
                log.warning("PASTIS folds %s: %d of %d patches without a date in %r skipped", list(self.folds),
                            len({m.patch_id for m in selected}) - len({m.patch_id for m in kept}),
                            len({m.patch_id for m in selected}), self.temporal)
            selected = kept
        shapes: dict[int, _Patch] = {}
        for meta in selected:  # duplicates validated once
            if meta.patch_id not in shapes:
                shapes[meta.patch_id] = self._check_files(meta)
        return [shapes[meta.patch_id] for meta in selected]

    def _check_files(self, meta: PatchMeta) -> _Patch:
        """Validate the headers of one patch's files (memory-mapped: no pixel is read)."""
        label_path = target_path(self.root, meta.patch_id)
        if self.primary == PRIMARY_DEFAULT:
            if not meta.dates:
                raise DataError(f"{self.root / METADATA_FILE}: patch {meta.patch_id} has no dates-S2")
            image_path = s2_path(self.root, meta.patch_id)
            image = open_npy(image_path)
            if image.dtype != np.int16 or image.ndim != 4 or image.shape[1] != self.in_channels:
                raise DataError(f"{image_path}: expected int16 array of shape (T, {self.in_channels}, H, W), "
                                f"got {image.dtype} {image.shape}")
            if image.shape[0] == 0:
                raise DataError(f"{image_path}: empty time series (T = 0)")
            if image.shape[0] != len(meta.dates):
                raise DataError(f"{image_path}: {image.shape[0]} frames but metadata.geojson lists "
                                f"{len(meta.dates)} dates-S2 for patch {meta.patch_id}")
        else:
            image_path = source_path(self.root, self.primary, meta.patch_id)
            image = self._open_source(meta, self.primary)
        target = open_npy(label_path)
        if not np.issubdtype(target.dtype, np.integer) or target.ndim != 3 or target.shape[1:] != image.shape[2:]:
            raise DataError(f"{label_path}: expected integer array of shape ({TARGET_CHANNELS}, "
                            f"{image.shape[2]}, {image.shape[3]}), got {target.dtype} {target.shape}")
        height, width = image.shape[2:]
        if self.crop_size is not None and not 0 < self.crop_size <= min(height, width):
            raise DataError(f"{image_path}: crop_size {self.crop_size} does not fit a {height}x{width} patch")
        for source in self.extra_sources:
            self._open_source(meta, source, (height, width))
        return _Patch(meta, height, width)

    def _open_source(self, meta: PatchMeta, source: str, size: tuple[int, int] | None = None) -> np.ndarray:
        """Memory-map one source's series of a patch and check its header against its dates (and the
        primary's (H, W) ``size``); every error names the file."""
        dates = meta.dates_of(source)
        if not dates:
            raise DataError(f"{self.root / METADATA_FILE}: patch {meta.patch_id} has no {dates_key(source)}")
        path = source_path(self.root, source, meta.patch_id)
        array = open_npy(path)
        channels = self.source_channels[source]
        kind = "numeric" if self._source_dtype_ok(source, np.dtype(np.int16)) else "float"
        if not self._source_dtype_ok(source, array.dtype) or array.ndim != 4 or array.shape[1] != channels:
            raise DataError(f"{path}: expected a {kind} array of shape (T, {channels}, H, W) "
                            f"({', '.join(self.source_band_names[source])}), got {array.dtype} {array.shape}")
        if size is not None and array.shape[2:] != size:
            raise DataError(f"{path}: {array.shape[2]}x{array.shape[3]} pixels but the patch's "
                            f"{self.primary} series has {size[0]}x{size[1]}")
        if array.shape[0] == 0:
            raise DataError(f"{path}: empty time series (T = 0)")
        if array.shape[0] != len(dates):
            raise DataError(f"{path}: {array.shape[0]} frames but metadata.geojson lists "
                            f"{len(dates)} {dates_key(source)} for patch {meta.patch_id}")
        return array

    def _build_entries(self) -> list[tuple[int, tuple[int, int] | None]]:
        """(patch position, grid cell or None) per sample."""
        if self.crop_size is None or self.crop_mode == "random":
            return [(position, None) for position in range(len(self.patches))]
        entries = []
        for position, patch in enumerate(self.patches):
            grid_rows, grid_cols = patch.height // self.crop_size, patch.width // self.crop_size
            if self.crop_mode == "grid":
                cells = [(row, col) for row in range(grid_rows) for col in range(grid_cols)]
            else:
                cells = self.cells
                outside = [cell for cell in cells if not (0 <= cell[0] < grid_rows and 0 <= cell[1] < grid_cols)]
                if outside:
                    raise DataError(f"{s2_path(self.root, patch.meta.patch_id)}: cells {outside} outside the "
                                    f"{grid_rows}x{grid_cols} grid of {self.crop_size}-px crops")
            entries.extend((position, cell) for cell in cells)
        return entries

    # ---- public helpers ----
    def set_epoch(self, epoch: int) -> None:
        """Change the random crops (crop_mode='random') deterministically for a new epoch."""
        self.epoch = int(epoch)

    @property
    def patch_ids(self) -> list[int]:
        """ID_PATCH of every sample, in sample order."""
        return [self.patches[position].meta.patch_id for position, _ in self.entries]

    @property
    def sample_ids(self) -> list[str]:
        """The ``id`` of every sample, in sample order, without reading a pixel: '<ID_PATCH>' of a whole patch,
        '<ID_PATCH>@<top>,<left>' of a grid crop (what ``__getitem__`` returns). Random crops have none."""
        if self.crop_size is not None and self.crop_mode == "random":
            raise ValueError("random crops have no fixed sample id (crop_mode 'grid' or 'cells' have)")
        size = self.crop_size
        return [
            str(self.patches[position].meta.patch_id) + (f"@{cell[0] * size},{cell[1] * size}" if size else "")
            for position, cell in self.entries
        ]

    def dates(self, index: int) -> list[datetime.date]:
        """All acquisition dates of the primary source of the patch behind sample ``index`` (before any temporal subset)."""
        return list(self.patches[self.entries[index][0]].meta.dates_of(self.primary))

    def dominant_classes(self) -> np.ndarray:
        """Most frequent crop class (not background or void) of each sample's window; ``UNSCORED`` (-1) if none.

        Random crops use the full patch. Reads only TARGET files (small).
        """
        classes = np.empty(len(self), dtype=np.int64)
        for index in range(len(self)):
            rows, cols = self._window(index, self._generator(index))
            label = self._read_label(self.patches[self.entries[index][0]].meta.patch_id, rows, cols)
            counts = np.bincount(label.ravel(), minlength=self.num_classes)
            counts[[self.background_index, self.ignore_index]] = 0
            classes[index] = counts.argmax() if counts.any() else UNSCORED  # never drawn as a labelled crop
        return classes

    def check_labels(self, indices: Sequence[int] | None = None) -> int:
        """Read the labels of the samples (all, or ``indices``) once: out-of-range values raise a
        DataError now rather than mid-run. Returns how many of their pixels are scored (not
        background or ignored)."""
        excluded = [i for i in (self.background_index, self.ignore_index) if i is not None]
        scored = 0
        for index in range(len(self)) if indices is None else indices:
            rows, cols = self._window(index, self._generator(index))
            label = self._read_label(self.patches[self.entries[index][0]].meta.patch_id, rows, cols)
            scored += int(label.size - np.isin(label, excluded).sum())
        return scored

    # ---- sample access ----
    def __len__(self) -> int:
        return len(self.entries)

    def _generator(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def _window(self, index: int, rng: np.random.Generator) -> tuple[slice, slice]:
        position, cell = self.entries[index]
        patch, size = self.patches[position], self.crop_size
        if size is None:
            return slice(0, patch.height), slice(0, patch.width)
        if cell is None:  # random crop
            top = int(rng.integers(0, patch.height - size + 1))
            left = int(rng.integers(0, patch.width - size + 1))
        else:
            top, left = cell[0] * size, cell[1] * size
        return slice(top, top + size), slice(left, left + size)

    def _read_label(self, patch_id: int, rows: slice, cols: slice) -> np.ndarray:
        path = target_path(self.root, patch_id)
        label = np.asarray(open_npy(path, self.mmap)[SEMANTIC_CHANNEL, rows, cols]).astype(np.int64)
        if label.size and (label.min() < 0 or label.max() >= self.num_classes):
            raise DataError(f"{path}: class values must be in 0..{self.num_classes - 1}, "
                            f"found {label.min()}..{label.max()}")
        return label

    def ndvi(self, raw: np.ndarray) -> np.ndarray:
        """(T, C, h, w) raw values -> (T, h, w) NDVI (PASTIS stores reflectance x 10,000: the ratio is scale-free)."""
        red, nir = raw[:, self.red_index], raw[:, self.nir_index]
        return (nir - red) / (nir + red + NDVI_EPS)

    def __getitem__(self, index: int) -> dict:
        position, _ = self.entries[index]
        meta = self.patches[position].meta
        rng = self._generator(index)
        rows, cols = self._window(index, rng)
        sample_id = str(meta.patch_id)
        if self.crop_size is not None:
            sample_id += f"@{rows.start},{cols.start}"
        if self.primary != PRIMARY_DEFAULT:  # radar primary: no NDVI (masking treats every frame as eligible)
            image, days, frames = self._read_source(meta, self.primary, rows, cols, *self.mean_std(self.primary))
            return {
                "image": image,
                "days": days,
                "label": torch.from_numpy(self._read_label(meta.patch_id, rows, cols)),
                "id": sample_id,
            } | self._further_sources(meta, rows, cols)
        frames = np.arange(len(meta.dates))
        series = open_npy(s2_path(self.root, meta.patch_id), self.mmap)
        if self.temporal is None:
            raw = np.asarray(series[:, :, rows, cols], dtype=np.float32)  # (T, C, h, w), only this crop is read
        else:
            frames = np.asarray(self.temporal(list(meta.dates)), dtype=np.int64)
            raw = np.asarray(series[frames, :, rows, cols], dtype=np.float32)  # (T', C, h, w)
        image = (raw - self.mean[:, None, None]) / self.std[:, None, None]
        days = [(meta.dates[frame] - self.reference_date).days for frame in frames]
        return {
            "image": torch.from_numpy(image),
            "ndvi": torch.from_numpy(self.ndvi(raw)),
            "days": torch.tensor(days, dtype=torch.int64),
            "label": torch.from_numpy(self._read_label(meta.patch_id, rows, cols)),
            "id": sample_id,
        } | self._extra_keys(meta.patch_id, frames, rows, cols) | self._further_sources(meta, rows, cols)

    def mean_std(self, source: str) -> tuple[np.ndarray, np.ndarray]:
        """The (C_s,) normalisation mean and std applied to ``source``."""
        return (self.mean, self.std) if source == self.primary else self.source_norm[source]

    def _read_source(self, meta: PatchMeta, source: str, rows: slice, cols: slice, mean: np.ndarray, std: np.ndarray
                     ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """(image (T_s, C_s, h, w) float32 z-scored, days (T_s,) int64, frame indices) of one source of a patch.

        ``temporal`` selects among the source's own dates. Radar values must be finite: a NaN/inf in the
        window read is a DataError naming the file (PASTIS/README.md: no fill rule is guessed).
        """
        dates = meta.dates_of(source)
        path = source_path(self.root, source, meta.patch_id)
        frames = np.arange(len(dates))
        if self.temporal is not None:
            try:
                frames = np.asarray(self.temporal(list(dates)), dtype=np.int64)
            except ValueError as err:
                raise DataError(f"{path}: {' '.join(str(err).split())}") from None
        series = open_npy(path, self.mmap)
        raw = np.asarray(series[frames, :, rows, cols], dtype=np.float32)  # (T_s, C_s, h, w), only this window
        bad = ~np.isfinite(raw)
        if bad.any():
            raise DataError(f"{path}: {int(bad.sum())} NaN/inf values in rows {rows.start}:{rows.stop}, cols "
                            f"{cols.start}:{cols.stop} (expected finite backscatter in dB)")
        image = (raw - mean[:, None, None]) / std[:, None, None]
        days = torch.tensor([(dates[frame] - self.reference_date).days for frame in frames], dtype=torch.int64)
        return torch.from_numpy(image), days, frames

    def _further_sources(self, meta: PatchMeta, rows: slice, cols: slice) -> dict:
        """``image_<s>`` (T_s, C_s, h, w) and ``days_<s>`` (T_s,) of every further source, same window."""
        out = {}
        for source in self.extra_sources:
            image, days, _ = self._read_source(meta, source, rows, cols, *self.source_norm[source])
            out[f"image_{source}"], out[f"days_{source}"] = image, days
        return out

    def _extra_keys(self, patch_id: int, frames: np.ndarray, rows: slice, cols: slice) -> dict:
        """More entries of the sample dict for the same dates and window (FolderDataset: ``valid``)."""
        return {}
