"""The MTLCC release on disk (Rußwurm & Körner, IJGI 2018): its side files and its tile sources.

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
georeferencing that GDAL/rasterio would add is not needed for training. The writers (mtlcc_writers.py) write
band-separate files (planar, read as (C, H, W), like GDAL's INTERLEAVE=BAND and what rasterio's
``read()`` returns); this module reads both planar and pixel-interleaved (H, W, C) files, using the axes
tifffile reports.

Side files: ``classes.txt`` (``id|name`` lines), ``tileids/*.tileids`` and the authors' per-class
tile lists (``MTLCC/splits``). The data set (:mod:`utils.datasets.mtlcc`) and the ``.npy`` cache
(:mod:`utils.datasets.mtlcc_cache`) read tiles only through :func:`read_source`.
"""

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.datasets.tfrecord import read_examples
from utils.errors import DataError

MTLCC_RAW_IDS = (0, 1, 2, 3, 5, 8, 9, 12, 13, 15, 16, 17, 19, 22, 23, 24, 25, 26)
MTLCC_CLASSES = [
    "unknown",
    "sugar beet",
    "summer oat",
    "meadow",
    "rape",
    "hop",
    "winter spelt",
    "winter triticale",
    "beans",
    "peas",
    "potatoes",
    "soybeans",
    "asparagus",
    "winter wheat",
    "winter barley",
    "winter rye",
    "summer barley",
    "maize",
]
UNKNOWN_INDEX = 0
X10_BANDS = ("B04", "B03", "B02", "B08")
X20_BANDS = ("B05", "B06", "B07", "B8A", "B11", "B12")
X60_BANDS = ("B01", "B09", "B10")
MTLCC_BAND_NAMES = X10_BANDS + X20_BANDS + X60_BANDS
RESOLUTIONS = (("x10", X10_BANDS, 1), ("x20", X20_BANDS, 2), ("x60", X60_BANDS, 6))  # key, bands, px per cell
YEARS = (2016, 2017)
SPLIT_FILES = {"train": "train_fold0", "test": "test_fold0", "eval": "eval"}
TILEIDS_DIR, TILEIDS_SUFFIX, CLASSES_FILE = "tileids", ".tileids", "classes.txt"
GEOTIFF_DATA_DIR, LABEL_TIF = "data", "y.tif"
TFRECORD_SUFFIX = ".tfrecord.gz"
DATE_FORMAT = "%Y%m%d"
LAYOUTS = ("tfrecord", "geotiff")
INT16_MAX = np.iinfo(np.int16).max
UINT8_MAX = np.iinfo(np.uint8).max
LABEL_LOOKUP_SIZE = UINT8_MAX + 1
SPLITS_DIR = Path(__file__).resolve().parents[2] / "MTLCC" / "splits"
AUTHORS_TILE_FILES = {"train": "authors_train_tiles.txt", "val": "authors_val_tiles.txt"}
AUTHORS_PER_CLASS = 6  # the scripts use the first 6 of each 15-id list (docs/method.md §3.2)


def year_folder(year: int) -> str:
    """``data16`` / ``data17``: the TFRecord (and cache) folder of a year."""
    return f"data{year % 100:02d}"


# ---------------------------------------------------------------------------------------------
# side files
# ---------------------------------------------------------------------------------------------
def read_classes(path: str | Path) -> list[tuple[int, str]]:
    """(raw id, name) of every ``id|name`` line of classes.txt (other lines skipped, as MTLCC-pytorch)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: classes file not found (expected 'id|name' lines)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file (expected 'id|name' lines)") from None
    classes = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if "|" not in line:
            continue
        raw_id, name = line.split("|", 1)
        try:
            classes.append((int(raw_id), name.strip()))
        except ValueError:
            raise DataError(f"{path}:{line_number}: class id is not an integer: {raw_id!r}") from None
    if len(classes) != len(MTLCC_CLASSES):
        raise DataError(
            f"{path}: expected {len(MTLCC_CLASSES)} 'id|name' lines (17 crops + unknown), found {len(classes)}"
        )
    if not all(0 <= raw_id <= UINT8_MAX for raw_id, _ in classes):
        raise DataError(f"{path}: class ids must be in 0..{UINT8_MAX}")
    seen = {}
    for index, (raw_id, name) in enumerate(classes):
        if raw_id in seen:  # the later line would silently take the earlier class's pixels
            raise DataError(
                f"{path}: raw class id {raw_id} is listed twice ({classes[seen[raw_id]][1]!r} and {name!r})"
            )
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


def detect_layout(root: Path, year: int) -> str:
    """'tfrecord' if ``root/data<yy>/`` exists, else 'geotiff' if ``root/data/`` exists."""
    if (root / year_folder(year)).is_dir():
        return "tfrecord"
    if (root / GEOTIFF_DATA_DIR).is_dir():
        return "geotiff"
    raise DataError(
        f"{root}: neither {year_folder(year)}/ (TFRecord release) nor {GEOTIFF_DATA_DIR}/ "
        "(MTLCC-pytorch GeoTIFF layout) found; point --data_root at the folder holding tileids/"
    )


def all_listed_tiles(root: Path) -> list[int]:
    """Union of every ``tileids/*.tileids`` list, sorted."""
    files = sorted((root / TILEIDS_DIR).glob(f"*{TILEIDS_SUFFIX}"))
    if not files:
        raise DataError(f"{root / TILEIDS_DIR}: no *{TILEIDS_SUFFIX} files")
    return sorted({tile_id for path in files for tile_id in read_tileids(path)})


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
    dates = [_date_of(int(year), int(day), path) for year, day in zip(years[keep], doy[keep])]
    if any(later <= earlier for earlier, later in zip(dates, dates[1:])):
        raise DataError(f"{path}: dates/doy and dates/year are not strictly increasing ({dates[0]} .. {dates[-1]})")
    return TileArrays(bands, dates, _to_uint8_label(labels[0], path))


def _date_of(year: int, day: int, path: Path) -> datetime.date:
    """The date of a record's (year, day of year), refused when no such day exists (one line)."""
    if not datetime.MINYEAR <= year <= datetime.MAXYEAR:
        raise DataError(f"{path}: dates/year {year} is not a year")
    last = (datetime.date(year, 12, 31) - datetime.date(year, 1, 1)).days + 1
    if not 1 <= day <= last:
        raise DataError(f"{path}: dates/doy {day} is not a day of {year} (1..{last})")
    return datetime.date(year, 1, 1) + datetime.timedelta(days=day - 1)


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
    if (
        array.ndim != len(band_axes) + 2
        or array.shape[: len(band_axes)] != band_axes
        or (shape is not None and array.shape[-2:] != tuple(shape))
    ):
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
        stack = [
            _read_tif(
                folder / f"{dates[frame].strftime(DATE_FORMAT)}{suffix}",
                len(names),
                (height // factor, width // factor),
            )
            for frame in frames
        ]
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
