"""MTLCC (Rußwurm & Körner, IJGI 2018) loader for both on-disk layouts, plus a one-time ``.npy`` cache.

Files on disk: :mod:`utils.datasets.mtlcc_sources` (TFRecord/GeoTIFF tiles, classes.txt, tile
lists); the one-time ``.npy`` cache: :mod:`utils.datasets.mtlcc_cache`.

Every layout yields the same CONTRACT.md sample: 13 channels x10 (B04, B03, B02, B08), x20 (B05,
B06, B07, B8A, B11, B12), x60 (B01, B09, B10), the coarse bands nearest-upsampled to the 10 m grid
with ``np.repeat`` (as MTLCC-pytorch), reflectance x 1e-4; ``days`` = day of year (reference date
Dec 31 of the previous year); ``label`` raw ids remapped to 0..17 through classes.txt (ids missing
from classes.txt become 0 = unknown, like MTLCC's lookup table with ``default_value=0``).

Cache (``cache_dir``): every tile is converted once into ``.npy`` files and then read with mmap
(only the selected frames). Convert everything up front (progress bar) with::

    python -m utils.datasets.mtlcc --root data/MTLCC/480 --cache_dir data/MTLCC/cache --year 2016
"""

import datetime
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from utils.datasets.mtlcc_cache import (
    MANIFEST_SAVE_EVERY,
    cache_path,
    main,
    open_cached,
    read_manifest,
    write_cache_tile,
    write_manifest,
)
from utils.datasets.mtlcc_sources import (  # noqa: F401 -- also re-exported: the names other modules import from here
    CLASSES_FILE,
    LAYOUTS,
    MTLCC_BAND_NAMES,
    MTLCC_CLASSES,
    MTLCC_RAW_IDS,
    RESOLUTIONS,
    SPLIT_FILES,
    TILEIDS_DIR,
    TILEIDS_SUFFIX,
    UNKNOWN_INDEX,
    YEARS,
    authors_mtlcc_subset,
    detect_layout,
    label_lookup,
    read_classes,
    read_source,
    read_tfrecord_tile,
    read_tileids,
    source_bytes,
    source_dates,
    source_path,
    year_folder,
)
from utils.datasets.protocols import selects_a_date
from utils.errors import DataError

log = logging.getLogger("stcln")

REFLECTANCE_SCALE = 1e-4
NDVI_EPS = 1e-6
DATE_SAMPLINGS = ("random", "even", "all")


def reference_date(year: int) -> datetime.date:
    """Dec 31 of the previous year, so that ``days`` equals the day of year."""
    return datetime.date(year - 1, 12, 31)


# ---------------------------------------------------------------------------------------------
# dataset
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TileInfo:
    """A kept tile: id, acquisition dates, and whether it is read from the cache."""

    tile_id: int
    dates: tuple[datetime.date, ...]
    cached: bool


class MTLCCDataset(Dataset):
    """MTLCC tiles (TFRecord release or GeoTIFF layout, optionally cached) as CONTRACT.md samples.

    Args:
        root: folder holding ``tileids/``, ``classes.txt`` and ``data16/``+``data17/`` or ``data/``.
        split: 'train' (train_fold0), 'test' (test_fold0), 'eval' or another ``tileids/`` file name.
        year: 2016 or 2017 (TFRecord: picks ``data16``/``data17``; GeoTIFF: the year of the tree).
        tile_ids: use these tiles instead of the split's list (order and duplicates kept, as the
            authors' subsets); tiles outside the split's list are reported, not rejected.
        n_dates: dates per sample (None = all). Tiles with fewer than ``min_dates`` (default
            ``n_dates``) dates are skipped.
        temporal: callable ``list[date] -> frame indices`` applied first (e.g. ``TemporalSubset``);
            ``n_dates`` then samples among the frames it kept.
        date_sampling: 'random' (sorted random subset, from seed, epoch and index: see
            :meth:`set_epoch`), 'even' (evenly spaced, deterministic) or 'all'. Default: 'random'
            for the train split, 'even' otherwise (evaluation stays deterministic).
        cache_dir: convert tiles once into ``.npy`` files there and read them with mmap.
        layout: 'tfrecord' / 'geotiff'; detected from the folder when None.
    """

    classes = MTLCC_CLASSES
    num_classes = len(MTLCC_CLASSES)
    ignore_index = UNKNOWN_INDEX
    background_index = None
    band_names = MTLCC_BAND_NAMES
    in_channels = len(MTLCC_BAND_NAMES)
    red_index = MTLCC_BAND_NAMES.index("B04")
    nir_index = MTLCC_BAND_NAMES.index("B08")
    sources = ("S2",)  # one source (utils/datasets/sources.py): MTLCC has no Sentinel-1
    source_channels = {"S2": len(MTLCC_BAND_NAMES)}
    source_band_names = {"S2": MTLCC_BAND_NAMES}

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        year: int = 2016,
        tile_ids: Sequence[int] | None = None,
        n_dates: int | None = None,
        temporal: Callable[[list[datetime.date]], Sequence[int]] | None = None,
        date_sampling: str | None = None,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        min_dates: int | None = None,
        layout: str | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: MTLCC root folder not found")
        if year not in YEARS:
            raise ValueError(f"year must be one of {YEARS}, got {year}")
        date_sampling = date_sampling or ("random" if split == "train" else "even")
        if date_sampling not in DATE_SAMPLINGS:
            raise ValueError(f"date_sampling must be one of {DATE_SAMPLINGS}, got {date_sampling!r}")
        if layout is not None and layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.year, self.split, self.seed, self.epoch = year, split, seed, 0
        self.n_dates, self.temporal, self.date_sampling = n_dates, temporal, date_sampling
        self.min_dates = min_dates if min_dates is not None else (n_dates or 1)
        self.layout = layout or detect_layout(self.root, year)
        self.reference_date = reference_date(year)
        class_list = read_classes(self.root / CLASSES_FILE)
        self.lookup = label_lookup(class_list)
        self.classes = [name for _, name in class_list]  # report names come from the file
        self.cache_folder = Path(cache_dir) / year_folder(year) if cache_dir is not None else None
        listed = self._listed_ids(tile_ids)
        self.tiles: list[TileInfo] = self._index(listed)

    # ---- construction helpers ----
    def _split_file(self) -> Path:
        name = SPLIT_FILES.get(self.split, self.split).removesuffix(TILEIDS_SUFFIX)
        return self.root / TILEIDS_DIR / f"{name}{TILEIDS_SUFFIX}"

    def _listed_ids(self, tile_ids: Sequence[int] | None) -> list[int]:
        if tile_ids is None:
            return read_tileids(self._split_file())
        listed = [int(tile_id) for tile_id in tile_ids]
        if not listed:
            raise DataError(f"{self.root}: empty tile_ids list")
        if self._split_file().is_file():
            outside = sorted(set(listed) - set(read_tileids(self._split_file())))
            if outside:
                log.warning("MTLCC: %d of the given tiles are not in %s (used anyway, as the authors did): %s",
                            len(outside), self._split_file().name, outside[:10])
        return listed

    def source_path(self, tile_id: int) -> Path:
        """The TFRecord file or GeoTIFF folder of a tile."""
        return source_path(self.root, self.layout, self.year, tile_id)

    def _tile_dates(self, tile_id: int, manifest: dict, converted: dict) -> tuple[tuple, bool] | None:
        """(dates, cached) of a tile from the cache manifest, a fresh conversion or its source; None if missing."""
        entry = manifest.get(str(tile_id))
        source = self.source_path(tile_id)
        if entry is not None and source.exists() and source_bytes(source) != entry["source_bytes"]:
            entry = None  # the source changed since it was cached
        if entry is None and not source.exists():
            return None
        if entry is None and self.cache_folder is not None:
            entry = write_cache_tile(self.cache_folder, tile_id, read_source(source, self.layout), source_bytes(source))
            converted[str(tile_id)] = entry
            if len(converted) % MANIFEST_SAVE_EVERY == 0:
                write_manifest(self.cache_folder, converted)
        if entry is None:
            return tuple(source_dates(source, self.layout)), False
        return tuple(datetime.date.fromisoformat(text) for text in entry["dates"]), True

    def _index(self, listed: list[int]) -> list[TileInfo]:
        """Dates of every listed tile; missing and too-short tiles are skipped and reported once."""
        manifest = read_manifest(self.cache_folder) if self.cache_folder is not None else {}
        converted: dict[str, dict] = {}
        infos: dict[int, TileInfo | None] = {}
        missing = too_short = outside = 0
        for tile_id in dict.fromkeys(listed):  # unique, first-seen order
            found = self._tile_dates(tile_id, manifest, converted)
            infos[tile_id] = None
            if found is None:
                missing += 1
            elif len(found[0]) < self.min_dates:
                too_short += 1
            elif not selects_a_date(self.temporal, found[0]):  # e.g. an early-season window before the first date
                outside += 1
            else:
                infos[tile_id] = TileInfo(tile_id, *found)
        if converted:
            write_manifest(self.cache_folder, converted)
        kept = [infos[tile_id] for tile_id in listed if infos[tile_id] is not None]
        message = (f"MTLCC {self._split_file().stem}: {self.year} listed {len(infos)}, {missing} missing, "
                   f"{too_short} too short (< {self.min_dates} dates), "
                   f"{f'{outside} without a date in {self.temporal!r}, ' if self.temporal is not None else ''}"
                   f"{len({info.tile_id for info in kept})} kept")
        if not kept:
            hint = "; --n_dates sets the dates per sample (and the minimum per tile)" if too_short else ""
            raise DataError(f"{self.root}: no usable tile ({message}){hint}")
        if missing or too_short or outside:
            log.warning(message)
        return kept

    # ---- public helpers ----
    def set_epoch(self, epoch: int) -> None:
        """Change the random date subsets (date_sampling='random') deterministically for a new epoch."""
        self.epoch = int(epoch)

    @property
    def tile_ids(self) -> list[int]:
        """Tile id of every sample, in sample order."""
        return [info.tile_id for info in self.tiles]

    def dates(self, index: int) -> list[datetime.date]:
        """All acquisition dates of sample ``index`` (before any date selection)."""
        return list(self.tiles[index].dates)

    def select_frames(self, index: int) -> np.ndarray:
        """Sorted frame indices used by sample ``index`` for the current epoch."""
        dates = self.dates(index)
        candidates = np.arange(len(dates))
        if self.temporal is not None:
            candidates = np.asarray(self.temporal(dates), dtype=np.int64)
        if self.n_dates is None or self.date_sampling == "all" or len(candidates) <= self.n_dates:
            return candidates
        if self.date_sampling == "even":
            picks = np.unique(np.round(np.linspace(0, len(candidates) - 1, self.n_dates)).astype(np.int64))
        else:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            picks = np.sort(rng.choice(len(candidates), size=self.n_dates, replace=False))
        return candidates[picks]

    # ---- sample access ----
    def __len__(self) -> int:
        return len(self.tiles)

    def _read_cached(self, tile_id: int, frames: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        bands = {key: np.asarray(open_cached(cache_path(self.cache_folder, tile_id, key))[frames])
                 for key, _, _ in RESOLUTIONS}  # mmap: only the selected frames are read
        label = np.asarray(open_cached(cache_path(self.cache_folder, tile_id, "label")))
        return bands, label

    def __getitem__(self, index: int) -> dict:
        info = self.tiles[index]
        frames = self.select_frames(index)
        if info.cached:
            bands, label = self._read_cached(info.tile_id, frames)
        else:
            tile = read_source(self.source_path(info.tile_id), self.layout, frames)
            bands, label = tile.bands, tile.label
        raw = upsample_and_stack(bands, label.shape)  # (T, 13, H, W) reflectance x 1e4
        red, nir = raw[:, self.red_index], raw[:, self.nir_index]
        days = [(info.dates[frame] - self.reference_date).days for frame in frames]
        return {
            "image": torch.from_numpy(raw * np.float32(REFLECTANCE_SCALE)),
            "ndvi": torch.from_numpy((nir - red) / (nir + red + NDVI_EPS)),
            "days": torch.tensor(days, dtype=torch.int64),
            "label": torch.from_numpy(self.lookup[label]),
            "id": str(info.tile_id),
        }


def upsample_and_stack(bands: dict[str, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Nearest-upsample x20/x60 to the 10 m grid (``np.repeat``) and stack: float32 (T, 13, H, W)."""
    stacked = []
    for key, names, factor in RESOLUTIONS:
        cube = bands[key]
        if cube.shape[1:] != (len(names), shape[0] // factor, shape[1] // factor):
            raise DataError(f"{key} bands have shape {cube.shape[1:]}, expected "
                            f"({len(names)}, {shape[0] // factor}, {shape[1] // factor}) for {shape} labels")
        cube = np.repeat(np.repeat(cube, factor, axis=2), factor, axis=3)  # (T, C, h, w) -> (T, C, H, W)
        stacked.append(cube.astype(np.float32))
    return np.concatenate(stacked, axis=1)  # 3 x (T, C_k, H, W) -> (T, 13, H, W)


if __name__ == "__main__":  # python -m utils.datasets.mtlcc: the one-time cache conversion (utils/datasets/mtlcc_cache.py)
    raise SystemExit(main())
