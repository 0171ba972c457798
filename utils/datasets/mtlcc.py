"""MTLCC (Rußwurm & Körner, IJGI 2018) loader for both on-disk layouts, plus a one-time ``.npy`` cache.

Layouts (detected from the folder, docs/data_formats.md §2)::

    TFRecord release                          GeoTIFF layout of MTLCC-pytorch (what STCLN ran on)
    root/data16/<tileid>.tfrecord.gz          root/data/<tileid>/<YYYYMMDD>_10m.tif  uint16 (4, H, W)
    root/data17/<tileid>.tfrecord.gz          root/data/<tileid>/<YYYYMMDD>_20m.tif  uint16 (6, H/2, W/2)
    root/tileids/{train_fold0,test_fold0,     root/data/<tileid>/<YYYYMMDD>_60m.tif  uint16 (3, H/6, W/6)
                  eval}.tileids               root/data/<tileid>/y.tif               uint16 (H, W) raw ids
    root/classes.txt  ("id|name" lines)       root/tileids/*.tileids, root/classes.txt

TFRecords hold one ``tf.train.Example`` with int64 little-endian byte strings, channels last
(``x10`` T x H x W x 4, ``x20`` T x H/2 x W/2 x 6, ``x60`` T x H/6 x W/6 x 3, ``labels`` T x H x W,
``dates/doy``, ``dates/year``) and are padded in time with zero frames of day-of-year 0, which are
dropped here; T is read from the shape fields. A GeoTIFF tile holds one year (dates come from the
file names). GeoTIFFs are read with ``tifffile``: a light, pure reader of the uint16 stacks; the
georeferencing that GDAL/rasterio would add is not needed for training. This module writes
band-separate files (planar, read as (C, H, W), like GDAL's INTERLEAVE=BAND and what rasterio's
``read()`` returns) and reads both planar and pixel-interleaved (H, W, C) files, using the axes
tifffile reports.

Every layout yields the same CONTRACT.md sample: 13 channels x10 (B04, B03, B02, B08), x20 (B05,
B06, B07, B8A, B11, B12), x60 (B01, B09, B10), the coarse bands nearest-upsampled to the 10 m grid
with ``np.repeat`` (as MTLCC-pytorch), reflectance x 1e-4; ``days`` = day of year (reference date
Dec 31 of the previous year); ``label`` raw ids remapped to 0..17 through classes.txt (ids missing
from classes.txt become 0 = unknown, like MTLCC's lookup table with ``default_value=0``).

Cache (``cache_dir``): each tile is converted once into ``<cache_dir>/data<yy>/<tileid>.{x10,x20,x60}.npy``
(int16, channels first, at their NATIVE resolution: 2.3x smaller than upsampled, and the upsampling
code is then the same for every source), ``.doy.npy`` (int16, padded frames removed) and
``.label.npy`` (uint8 raw ids), each written atomically, then recorded in ``manifest.json`` (dates
and shape per tile). Tiles in the manifest are read with mmap (only the selected frames) and their
source is never parsed again. Convert everything up front (progress bar) with::

    python -m utils.datasets.mtlcc --root data/MTLCC/480 --cache_dir data/MTLCC/cache --year 2016
"""

import argparse
import datetime
import json
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from utils.atomic import write_atomic, write_text_atomic
from utils.datasets.protocols import selects_a_date
from utils.datasets.tfrecord import read_examples
from utils.errors import DataError

log = logging.getLogger("stcln")

MTLCC_RAW_IDS = (0, 1, 2, 3, 5, 8, 9, 12, 13, 15, 16, 17, 19, 22, 23, 24, 25, 26)
MTLCC_CLASSES = [
    "unknown", "sugar beet", "summer oat", "meadow", "rape", "hop", "winter spelt", "winter triticale",
    "beans", "peas", "potatoes", "soybeans", "asparagus", "winter wheat", "winter barley", "winter rye",
    "summer barley", "maize",
]
UNKNOWN_INDEX = 0
X10_BANDS = ("B04", "B03", "B02", "B08")
X20_BANDS = ("B05", "B06", "B07", "B8A", "B11", "B12")
X60_BANDS = ("B01", "B09", "B10")
MTLCC_BAND_NAMES = X10_BANDS + X20_BANDS + X60_BANDS
RESOLUTIONS = (("x10", X10_BANDS, 1), ("x20", X20_BANDS, 2), ("x60", X60_BANDS, 6))  # key, bands, px per cell
REFLECTANCE_SCALE = 1e-4
NDVI_EPS = 1e-6
YEARS = (2016, 2017)
SPLIT_FILES = {"train": "train_fold0", "test": "test_fold0", "eval": "eval"}
TILEIDS_DIR, TILEIDS_SUFFIX, CLASSES_FILE = "tileids", ".tileids", "classes.txt"
GEOTIFF_DATA_DIR, LABEL_TIF = "data", "y.tif"
TFRECORD_SUFFIX = ".tfrecord.gz"
DATE_FORMAT = "%Y%m%d"
DATE_SAMPLINGS = ("random", "even", "all")
LAYOUTS = ("tfrecord", "geotiff")
CACHE_FORMAT = 1
MANIFEST = "manifest.json"
MANIFEST_SAVE_EVERY = 100  # tiles converted between manifest saves (an interrupted conversion resumes)
INT16_MAX = np.iinfo(np.int16).max
UINT8_MAX = np.iinfo(np.uint8).max
LABEL_LOOKUP_SIZE = UINT8_MAX + 1
SPLITS_DIR = Path(__file__).resolve().parents[2] / "MTLCC" / "splits"
AUTHORS_TILE_FILES = {"train": "authors_train_tiles.txt", "val": "authors_val_tiles.txt"}
AUTHORS_PER_CLASS = 6  # the scripts use the first 6 of each 15-id list (docs/method.md §3.2)


def year_folder(year: int) -> str:
    """``data16`` / ``data17``: the TFRecord (and cache) folder of a year."""
    return f"data{year % 100:02d}"


def reference_date(year: int) -> datetime.date:
    """Dec 31 of the previous year, so that ``days`` equals the day of year."""
    return datetime.date(year - 1, 12, 31)


# ---------------------------------------------------------------------------------------------
# side files
# ---------------------------------------------------------------------------------------------
def read_classes(path: str | Path) -> list[tuple[int, str]]:
    """(raw id, name) of every ``id|name`` line of classes.txt (other lines skipped, as MTLCC-pytorch)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: classes file not found (expected 'id|name' lines)")
    classes = []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        if "|" not in line:
            continue
        raw_id, name = line.split("|", 1)
        try:
            classes.append((int(raw_id), name.strip()))
        except ValueError:
            raise DataError(f"{path}:{line_number}: class id is not an integer: {raw_id!r}") from None
    if len(classes) != len(MTLCC_CLASSES):
        raise DataError(f"{path}: expected {len(MTLCC_CLASSES)} 'id|name' lines (17 crops + unknown), "
                        f"found {len(classes)}")
    if not all(0 <= raw_id <= UINT8_MAX for raw_id, _ in classes):
        raise DataError(f"{path}: class ids must be in 0..{UINT8_MAX}")
    seen = {}
    for index, (raw_id, name) in enumerate(classes):
        if raw_id in seen:  # the later line would silently take the earlier class's pixels
            raise DataError(f"{path}: raw class id {raw_id} is listed twice ({classes[seen[raw_id]][1]!r} and {name!r})")
        seen[raw_id] = index
    return classes


def label_lookup(classes: Sequence[tuple[int, str]]) -> np.ndarray:
    """int64 (256,) raw id -> class index; ids not listed map to unknown (0)."""
    lookup = np.full(LABEL_LOOKUP_SIZE, UNKNOWN_INDEX, dtype=np.int64)
    for index, (raw_id, _) in enumerate(classes):
        lookup[raw_id] = index
    return lookup


def read_tileids(path: str | Path) -> list[int]:
    """Tile ids of a ``.tileids`` file (whitespace separated), order and duplicates kept."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: tile id list not found")
    try:
        return [int(token) for token in path.read_text().split()]
    except ValueError as err:
        raise DataError(f"{path}: not a list of integer tile ids ({err})") from None


def authors_mtlcc_subset(split: str, per_class: int = AUTHORS_PER_CLASS) -> list[int]:
    """The authors' per-class MTLCC tiles (docs/method.md §3.2): first ``per_class`` of every list.

    Train gives 78 unique tiles (to replace a train_fold0 dataset's tiles), val 78 entries / 73
    unique (to replace test_fold0's); order and duplicates are kept, as in the authors' scripts.
    """
    if split not in AUTHORS_TILE_FILES:
        raise ValueError(f"split must be one of {sorted(AUTHORS_TILE_FILES)}, got {split!r}")
    path = SPLITS_DIR / AUTHORS_TILE_FILES[split]
    if not path.is_file():
        raise DataError(f"{path}: authors' tile list not found")
    tiles = []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            _, ids = text.split(":", 1)
            tiles.extend(int(token) for token in ids.split()[:per_class])
        except ValueError:
            raise DataError(f"{path}:{line_number}: expected 'class_id: id id ...', got {text!r}") from None
    return tiles


# ---------------------------------------------------------------------------------------------
# one tile, from any source
# ---------------------------------------------------------------------------------------------
@dataclass
class TileArrays:
    """One tile at native resolution, channels first, padded frames removed.

    ``bands`` maps x10/x20/x60 to int16 (T, C, H/f, W/f); ``dates`` are the acquisition dates and
    ``label`` the raw class ids uint8 (H, W).
    """

    bands: dict[str, np.ndarray]
    dates: list[datetime.date]
    label: np.ndarray


def _to_int16(values: np.ndarray) -> np.ndarray:
    """Reflectance x 1e4 as int16; values above 3.2767 (saturated) are clipped, as in every source."""
    return np.clip(values, 0, INT16_MAX).astype(np.int16)


def _to_uint8_label(values: np.ndarray, path: Path) -> np.ndarray:
    if values.size and (values.min() < 0 or values.max() > UINT8_MAX):
        raise DataError(f"{path}: label ids must be in 0..{UINT8_MAX}, found {values.min()}..{values.max()}")
    return values.astype(np.uint8)


def _feature_bytes(example: dict, key: str, path: Path) -> bytes:
    value = example.get(key)
    if not isinstance(value, list) or len(value) != 1:
        raise DataError(f"{path}: feature {key!r} missing or not a single bytes value")
    return value[0]


def _feature_shape(example: dict, key: str, path: Path, ndim: int) -> tuple[int, ...]:
    """A ``*/shape`` feature: int64_list (as MTLCC writes it) or int64 bytes."""
    value = example.get(key)
    if isinstance(value, list) and len(value) == 1:
        value = np.frombuffer(value[0], dtype="<i8")
    if not isinstance(value, np.ndarray) or value.shape != (ndim,) or (value < 0).any():
        raise DataError(f"{path}: feature {key!r} must hold {ndim} non-negative int64, got {value!r}")
    return tuple(int(size) for size in value)


def _int64_array(example: dict, key: str, shape: tuple[int, ...], path: Path) -> np.ndarray:
    raw = _feature_bytes(example, key, path)
    expected = int(np.prod(shape)) * np.dtype("<i8").itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: {key!r} holds {len(raw)} bytes, shape {shape} of int64 needs {expected}")
    return np.frombuffer(raw, dtype="<i8").reshape(shape)  # (prod(shape),) -> shape, e.g. (T, H, W, C)


def read_tfrecord_tile(path: str | Path) -> TileArrays:
    """Decode one MTLCC ``<tileid>.tfrecord.gz`` (CRCs verified, padded frames dropped)."""
    path = Path(path)
    examples = read_examples(path)
    if len(examples) != 1:
        raise DataError(f"{path}: expected one tf.train.Example per MTLCC tile, found {len(examples)}")
    example = examples[0]
    (n_steps,) = _feature_shape(example, "dates/shape", path, ndim=1)
    doy = _int64_array(example, "dates/doy", (n_steps,), path)
    years = _int64_array(example, "dates/year", (n_steps,), path)
    keep = np.flatnonzero(doy > 0)  # zero frames of doy 0 pad every record to a fixed T
    label_shape = _feature_shape(example, "labels/shape", path, ndim=3)
    labels = _int64_array(example, "labels/data", label_shape, path)  # (T, H, W), same map per date
    height, width = label_shape[1:]
    bands = {}
    for key, names, factor in RESOLUTIONS:
        shape = _feature_shape(example, f"{key}/shape", path, ndim=4)
        expected = (n_steps, height // factor, width // factor, len(names))
        if shape != expected:
            raise DataError(f"{path}: {key}/shape is {shape}, expected {expected} for {height}x{width} labels")
        cube = _int64_array(example, f"{key}/data", shape, path)[keep]  # (T, h, w, C)
        bands[key] = _to_int16(cube.transpose(0, 3, 1, 2))  # (T, h, w, C) -> (T, C, h, w)
    dates = [datetime.date(int(year), 1, 1) + datetime.timedelta(days=int(day) - 1)
             for year, day in zip(years[keep], doy[keep])]
    return TileArrays(bands, dates, _to_uint8_label(labels[0], path))


def geotiff_dates(folder: Path) -> list[datetime.date]:
    """Acquisition dates of a GeoTIFF tile folder, from its ``<YYYYMMDD>_10m.tif`` names, sorted."""
    dates = []
    for path in folder.glob("*_10m.tif"):
        try:
            dates.append(datetime.datetime.strptime(path.name.split("_", 1)[0], DATE_FORMAT).date())
        except ValueError:
            raise DataError(f"{path}: file name does not start with a YYYYMMDD date") from None
    return sorted(dates)


def _read_tif(path: Path, n_bands: int, shape: tuple[int, int] | None) -> np.ndarray:
    """A band stack as (C, H, W) from planar (SYX) or pixel-interleaved (YXS) files; n_bands=1: (H, W).

    ``shape`` (H, W) is checked when given.
    """
    import tifffile  # imported here so the TFRecord path does not need it

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with tifffile.TiffFile(path) as tif:
            axes = tif.series[0].axes
            array = tif.asarray()
    except (OSError, ValueError, IndexError, tifffile.TiffFileError) as err:
        raise DataError(f"{path}: unreadable TIFF ({' '.join(str(err).split())})") from None
    if n_bands > 1 and axes.endswith("S"):
        array = np.moveaxis(array, -1, 0)  # (H, W, C) -> (C, H, W)
    band_axes = (n_bands,) if n_bands > 1 else ()
    if array.ndim != len(band_axes) + 2 or array.shape[:len(band_axes)] != band_axes or (
            shape is not None and array.shape[-2:] != tuple(shape)):
        expected = (*band_axes, *(shape or ("H", "W")))
        raise DataError(f"{path}: expected a band stack of shape {expected}, got {array.shape} ({axes})")
    return array


def read_geotiff_tile(folder: str | Path, frames: Sequence[int] | None = None) -> TileArrays:
    """Read a GeoTIFF tile folder (only the ``frames`` given, by index into the sorted dates)."""
    folder = Path(folder)
    dates = geotiff_dates(folder)
    label_path = folder / LABEL_TIF
    label = _read_tif(label_path, 1, None)
    height, width = label.shape
    frames = range(len(dates)) if frames is None else frames
    bands = {}
    for key, names, factor in RESOLUTIONS:
        suffix = f"_{key[1:]}m.tif"  # x20 -> _20m.tif
        stack = [_read_tif(folder / f"{dates[frame].strftime(DATE_FORMAT)}{suffix}", len(names),
                           (height // factor, width // factor)) for frame in frames]
        bands[key] = _to_int16(np.stack(stack).astype(np.int64))  # T x (C, h, w) -> (T, C, h, w)
    return TileArrays(bands, [dates[frame] for frame in frames], _to_uint8_label(label, label_path))


def source_path(root: Path, layout: str, year: int, tile_id: int) -> Path:
    """The TFRecord file (``data<yy>/<id>.tfrecord.gz``) or GeoTIFF folder (``data/<id>``) of a tile."""
    if layout == "tfrecord":
        return root / year_folder(year) / f"{tile_id}{TFRECORD_SUFFIX}"
    return root / GEOTIFF_DATA_DIR / str(tile_id)


def source_bytes(path: Path) -> int:
    """Size of a tile's source (file, or sum over a folder): the cache's staleness check."""
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.iterdir())


def read_source(path: Path, layout: str, frames: Sequence[int] | None = None) -> TileArrays:
    """One tile from its TFRecord file or GeoTIFF folder (only ``frames`` if given)."""
    if layout == "geotiff":
        return read_geotiff_tile(path, frames)
    tile = read_tfrecord_tile(path)  # the whole record is always decoded
    if frames is not None:
        tile.bands = {key: cube[frames] for key, cube in tile.bands.items()}
        tile.dates = [tile.dates[frame] for frame in frames]
    return tile


def source_dates(path: Path, layout: str) -> list[datetime.date]:
    """Acquisition dates of a tile (GeoTIFF: from file names; TFRecord: the record is parsed)."""
    return geotiff_dates(path) if layout == "geotiff" else read_tfrecord_tile(path).dates


# ---------------------------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------------------------
def _atomic_save(path: Path, array: np.ndarray) -> None:
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.save would append ".npy" to a path
            np.save(handle, array, allow_pickle=False)

    write_atomic(path, save)


def cache_path(folder: Path, tile_id: int, part: str) -> Path:
    """``<folder>/<tileid>.<part>.npy`` (part: x10, x20, x60, doy, label)."""
    return folder / f"{tile_id}.{part}.npy"


def read_manifest(folder: Path) -> dict[str, dict]:
    """Tile entries of ``<folder>/manifest.json`` (empty if absent)."""
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable cache manifest ({type(err).__name__}); delete the cache folder") from None
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise DataError(f"{path}: cache format {manifest.get('format') if isinstance(manifest, dict) else None} "
                        f"!= {CACHE_FORMAT}; delete the cache folder and convert again")
    return manifest["tiles"]


def write_manifest(folder: Path, tiles: dict[str, dict]) -> None:
    """Merge ``tiles`` into the manifest (re-read first, so concurrent converters lose nothing)."""
    merged = {**read_manifest(folder), **tiles}
    write_text_atomic(folder / MANIFEST, json.dumps({"format": CACHE_FORMAT, "tiles": merged}, sort_keys=True))


def write_cache_tile(folder: Path, tile_id: int, tile: TileArrays, n_source_bytes: int) -> dict:
    """Write one tile's ``.npy`` files atomically; returns its manifest entry."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, _, _ in RESOLUTIONS:
        _atomic_save(cache_path(folder, tile_id, key), tile.bands[key])
    doy = np.array([date.timetuple().tm_yday for date in tile.dates], dtype=np.int16)
    _atomic_save(cache_path(folder, tile_id, "doy"), doy)
    _atomic_save(cache_path(folder, tile_id, "label"), tile.label)
    return {"dates": [date.isoformat() for date in tile.dates], "shape": list(tile.label.shape),
            "source_bytes": n_source_bytes}


def _open_cached(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{path}: truncated or unreadable cache file ({' '.join(str(err).split())}); "
                        "delete the cache folder and convert again") from None


# ---------------------------------------------------------------------------------------------
# dataset
# ---------------------------------------------------------------------------------------------
def detect_layout(root: Path, year: int) -> str:
    """'tfrecord' if ``root/data<yy>/`` exists, else 'geotiff' if ``root/data/`` exists."""
    if (root / year_folder(year)).is_dir():
        return "tfrecord"
    if (root / GEOTIFF_DATA_DIR).is_dir():
        return "geotiff"
    raise DataError(f"{root}: neither {year_folder(year)}/ (TFRecord release) nor {GEOTIFF_DATA_DIR}/ "
                    "(MTLCC-pytorch GeoTIFF layout) found; point --data_root at the folder holding tileids/")


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
            raise DataError(f"{self.root}: no usable tile ({message})")
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
        bands = {key: np.asarray(_open_cached(cache_path(self.cache_folder, tile_id, key))[frames])
                 for key, _, _ in RESOLUTIONS}  # mmap: only the selected frames are read
        label = np.asarray(_open_cached(cache_path(self.cache_folder, tile_id, "label")))
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


# ---------------------------------------------------------------------------------------------
# CLI: one-time conversion
# ---------------------------------------------------------------------------------------------
def all_listed_tiles(root: Path) -> list[int]:
    """Union of every ``tileids/*.tileids`` list, sorted."""
    files = sorted((root / TILEIDS_DIR).glob(f"*{TILEIDS_SUFFIX}"))
    if not files:
        raise DataError(f"{root / TILEIDS_DIR}: no *{TILEIDS_SUFFIX} files")
    return sorted({tile_id for path in files for tile_id in read_tileids(path)})


def convert(root: str | Path, cache_dir: str | Path, year: int, tile_ids: Iterable[int] | None = None,
            progress: bool = True) -> dict[str, int]:
    """Convert every listed tile of ``year`` into the cache once; returns counts."""
    from tqdm import tqdm

    root, cache_dir = Path(root), Path(cache_dir)
    layout = detect_layout(root, year)
    folder = cache_dir / year_folder(year)
    manifest = read_manifest(folder)
    counts = {"listed": 0, "missing": 0, "cached": 0, "converted": 0}
    converted: dict[str, dict] = {}
    ids = list(tile_ids) if tile_ids is not None else all_listed_tiles(root)
    for tile_id in tqdm(ids, desc=f"MTLCC {year} -> cache", disable=not progress, dynamic_ncols=True):
        counts["listed"] += 1
        source = source_path(root, layout, year, tile_id)
        if not source.exists():
            counts["missing"] += 1
        elif str(tile_id) in manifest and source_bytes(source) == manifest[str(tile_id)]["source_bytes"]:
            counts["cached"] += 1
        else:
            converted[str(tile_id)] = write_cache_tile(folder, tile_id, read_source(source, layout),
                                                       source_bytes(source))
            counts["converted"] += 1
            if len(converted) % MANIFEST_SAVE_EVERY == 0:
                write_manifest(folder, converted)
    if converted:
        write_manifest(folder, converted)
    return counts


def main(argv: list[str] | None = None) -> int:
    """``python -m utils.datasets.mtlcc --root R --cache_dir C --year 2016``."""
    parser = argparse.ArgumentParser(description="Convert MTLCC tiles (TFRecord or GeoTIFF) into the .npy cache once.")
    parser.add_argument("--root", type=Path, required=True, help="folder holding tileids/ and classes.txt")
    parser.add_argument("--cache_dir", type=Path, required=True, help="cache folder (data16/ or data17/ is created)")
    parser.add_argument("--year", type=int, default=2016, choices=YEARS)
    args = parser.parse_args(argv)
    try:
        counts = convert(args.root, args.cache_dir, args.year)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"MTLCC {args.year}: " + ", ".join(f"{count} {name}" for name, count in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
