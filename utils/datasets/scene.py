"""Whole scenes as users have them: per-date GeoTIFFs or a numpy cube, plus georeferencing.

Read by the converter (``python -m utils.datasets.convert``) and by ``predict_STCLN.py``.

* GeoTIFF folder: one multi-band GeoTIFF per date, the date in the file name (``YYYYMMDD`` or
  ``YYYY-MM-DD`` anywhere in it, e.g. ``S2_20190412.tif``); bands planar (C, H, W) or
  interleaved (H, W, C); every file the same size and band count. Read with tifffile, as the
  MTLCC GeoTIFF reader. The scene is staged once into a ``.npy`` file (T, C, H, W) so that it
  can be memory-mapped: nothing later needs the whole scene in RAM.
* numpy cube: a ``.npy`` file (T, C, H, W) plus a dates file (one ISO or YYYYMMDD date per
  line, or a JSON list), memory-mapped directly.

Georeferencing: the GeoTIFF tags of the first date (pixel scale 33550, tie point 33922, model
transformation 34264, GeoKey directory 34735 with its double 34736 and ASCII 34737 parameters,
and GDAL metadata 42112) are kept as plain JSON (:func:`read_georeferencing`) and written back
onto class maps with tifffile's ``extratags`` (:func:`write_geotiff`). GDAL_NODATA (42113) is
not copied: it describes the reflectance bands, not a class map.
"""

import datetime
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.errors import DataError
from utils.report import write_file_atomic

GEO_TAGS = {33550: "ModelPixelScale", 33922: "ModelTiepoint", 34264: "ModelTransformation",
            34735: "GeoKeyDirectory", 34736: "GeoDoubleParams", 34737: "GeoAsciiParams", 42112: "GDAL_METADATA"}
GT_MODEL_TYPE_KEY = 1024
MODEL_TYPE_GEOGRAPHIC = 2  # GeoTIFF: lat/lon degrees, no metric pixel size
PROJ_LINEAR_UNITS_KEY = 3076
LINEAR_UNIT_METRE = 9001
SQUARE_METRES_PER_HECTARE = 10_000.0
DATE_PATTERN = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")
TIFF_SUFFIXES = (".tif", ".tiff", ".TIF", ".TIFF")
CUBE_NDIM = 4


@dataclass
class Scene:
    """A whole scene: ``cube`` (T, C, H, W) (memory-mapped), dates, optional georeferencing."""

    cube: np.ndarray
    dates: list[datetime.date]
    georeferencing: dict | None
    source: str

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.cube.shape[2:])


def check_scene_source(parser, args) -> None:
    """The scene flags shared by the converter and predict_STCLN.py: exactly one of --geotiff_dir
    and --cube, and --dates with --cube (``parser.error`` otherwise)."""
    if (args.geotiff_dir is None) == (args.cube is None):
        parser.error("give exactly one of --geotiff_dir and --cube")
    if args.cube is not None and args.dates is None:
        parser.error("--cube needs --dates")


def date_from_name(path: Path) -> datetime.date:
    """The acquisition date in a file name (``YYYYMMDD`` or ``YYYY-MM-DD``)."""
    for match in DATE_PATTERN.finditer(path.stem):
        try:
            return datetime.date(*(int(part) for part in match.groups()))
        except ValueError:
            continue
    raise DataError(f"{path}: no YYYYMMDD or YYYY-MM-DD date in the file name")


def parse_date(text: str, where: str) -> datetime.date:
    text = str(text).strip()
    match = DATE_PATTERN.fullmatch(text)
    try:
        if match is None:
            raise ValueError
        return datetime.date(*(int(part) for part in match.groups()))
    except ValueError:
        raise DataError(f"{where}: bad date {text!r} (expected YYYY-MM-DD or YYYYMMDD)") from None


def read_dates_file(path: str | Path) -> list[datetime.date]:
    """Dates of a numpy cube: one per line, or a JSON list."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: dates file not found")
    text = path.read_text(encoding="utf-8")
    try:
        values = json.loads(text) if text.lstrip().startswith("[") else [line for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not a JSON list of dates ({err.msg})") from None
    return [parse_date(value, str(path)) for value in values]


def _tiff_bands(path: Path) -> tuple[np.ndarray, dict | None]:
    """(C, H, W) array and georeferencing of one GeoTIFF (single-band files give C = 1)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, array = series.axes, series.asarray()
            georef = _georeferencing_of(tif.pages[0])
    except (OSError, ValueError, IndexError, tifffile.TiffFileError) as err:
        raise DataError(f"{path}: unreadable TIFF ({' '.join(str(err).split())})") from None
    if array.ndim == 2:
        array = array[None]  # (H, W) -> (1, H, W)
    elif array.ndim == 3 and axes.endswith("S"):
        array = np.moveaxis(array, -1, 0)  # (H, W, C) -> (C, H, W)
    if array.ndim != 3:
        raise DataError(f"{path}: expected a (bands, rows, columns) image, got shape {array.shape} ({axes})")
    return array, georef


def _georeferencing_of(page) -> dict | None:
    tags = {}
    for code in GEO_TAGS:
        tag = page.tags.get(code)
        if tag is None:
            continue
        value = tag.value
        value = value if isinstance(value, str) else [float(v) if isinstance(v, float) else int(v) for v in np.ravel(value)]
        tags[str(code)] = {"name": GEO_TAGS[code], "dtype": int(tag.dtype), "value": value}
    if not tags:
        return None
    return {"tags": tags, "height": int(page.imagelength), "width": int(page.imagewidth)}


def read_label_file(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """A label map (H, W) from a GeoTIFF or ``.npy``; integer values, shape checked."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    if path.suffix in TIFF_SUFFIXES:
        array = _tiff_bands(path)[0]
        array = array[0] if array.shape[0] == 1 else array
    else:
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise DataError(f"{path}: unreadable .npy ({' '.join(str(err).split())})") from None
    if array.ndim != 2 or tuple(array.shape) != tuple(shape):
        raise DataError(f"{path}: expected a label map of shape {tuple(shape)}, got {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise DataError(f"{path}: label values must be integers, got {array.dtype} with fractions or NaN")
        array = array.astype(np.int64)
    return array


def geotiff_files(folder: Path) -> list[tuple[datetime.date, Path]]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: GeoTIFF folder not found")
    files = sorted((date_from_name(path), path) for path in folder.iterdir() if path.suffix in TIFF_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no .tif files")
    for (first, a), (second, b) in zip(files, files[1:]):
        if first == second:
            raise DataError(f"{b}: same date {first} as {a.name} (one file per date)")
    return files


def stage_geotiff_folder(folder: str | Path, staging: Path) -> Scene:
    """Read every date's GeoTIFF once into ``staging`` (a .npy of shape (T, C, H, W)); memory-map it."""
    files = geotiff_files(Path(folder))
    first, georef = _tiff_bands(files[0][1])
    shape = (len(files), *first.shape)
    staging.parent.mkdir(parents=True, exist_ok=True)
    cube = np.lib.format.open_memmap(staging, mode="w+", dtype=first.dtype, shape=shape)
    for index, (_, path) in enumerate(files):
        bands = first if index == 0 else _tiff_bands(path)[0]
        if bands.shape != first.shape or bands.dtype != first.dtype:
            raise DataError(f"{path}: {bands.dtype} {bands.shape} differs from {files[0][1].name} "
                            f"({first.dtype} {first.shape}); every date needs the same bands and size")
        cube[index] = bands
    cube.flush()
    del cube
    cube = np.load(staging, mmap_mode="r")
    return Scene(cube, [date for date, _ in files], georef, str(folder))


def open_cube(path: str | Path, dates_path: str | Path) -> Scene:
    """A (T, C, H, W) ``.npy`` cube (memory-mapped) and its dates file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: cube file not found")
    try:
        cube = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{path}: unreadable .npy ({' '.join(str(err).split())})") from None
    if cube.ndim != CUBE_NDIM or not (np.issubdtype(cube.dtype, np.integer) or np.issubdtype(cube.dtype, np.floating)):
        raise DataError(f"{path}: expected a numeric array (T, C, H, W), got {cube.dtype} {cube.shape}")
    dates = read_dates_file(dates_path)
    if len(dates) != cube.shape[0]:
        raise DataError(f"{dates_path}: {len(dates)} dates for the {cube.shape[0]} frames of {path}")
    order = np.argsort(np.array(dates, dtype="datetime64[D]"), kind="stable")
    if (order != np.arange(len(dates))).any() or len(set(dates)) != len(dates):
        raise DataError(f"{dates_path}: dates must be strictly increasing (one frame per date, in order)")
    return Scene(cube, dates, None, str(path))


def affine(georef: dict | None) -> tuple[float, float, float, float, float, float] | None:
    """(a, b, c, d, e, f): x = a*col + b*row + c, y = d*col + e*row + f (pixel corner), or None."""
    if not georef:
        return None
    tags = georef["tags"]
    if "34264" in tags:
        m = tags["34264"]["value"]
        return (m[0], m[1], m[3], m[4], m[5], m[7])
    if "33550" in tags and "33922" in tags:
        sx, sy = tags["33550"]["value"][:2]
        i, j, _, x, y, _ = tags["33922"]["value"][:6]
        return (sx, 0.0, x - i * sx, 0.0, -sy, y + j * sy)
    return None


def pixel_area_m2(georef: dict | None) -> float | None:
    """Area of one pixel in square metres, or None if unknown or not in metres (geographic CRS)."""
    transform = affine(georef)
    if transform is None:
        return None
    keys = georef["tags"].get("34735", {}).get("value", [])
    entries = {keys[n]: keys[n + 3] for n in range(4, len(keys) - 3, 4)}  # key id -> value (inline SHORT values)
    if entries.get(GT_MODEL_TYPE_KEY) == MODEL_TYPE_GEOGRAPHIC:
        return None
    if entries.get(PROJ_LINEAR_UNITS_KEY, LINEAR_UNIT_METRE) != LINEAR_UNIT_METRE:
        return None
    a, b, _, d, e, _ = transform
    return abs(a * e - b * d)


def shifted(georef: dict | None, row: int, col: int, height: int, width: int) -> dict | None:
    """The georeferencing of the window starting at (row, col) of the scene."""
    if not georef:
        return None
    transform = affine(georef)
    tags = json.loads(json.dumps(georef["tags"]))
    if transform is not None:
        a, b, c, d, e, f = transform
        x, y = a * col + b * row + c, d * col + e * row + f
        if "34264" in tags:
            tags["34264"]["value"][3], tags["34264"]["value"][7] = x, y
        if "33922" in tags:
            tags["33922"]["value"][:6] = [0.0, 0.0, 0.0, x, y, 0.0]
    return {"tags": tags, "height": height, "width": width}


def write_geotiff(path: Path, array: np.ndarray, georef: dict | None) -> None:
    """A single-band GeoTIFF carrying the source's georeferencing tags (tifffile extratags)."""
    import tifffile

    extratags = []
    for code, tag in sorted((georef or {}).get("tags", {}).items(), key=lambda item: int(item[0])):
        value = tag["value"]
        count = 0 if isinstance(value, str) else len(value)
        extratags.append((int(code), int(tag["dtype"]), count, value if isinstance(value, str) else tuple(value), True))
    write_file_atomic(path, lambda tmp: tifffile.imwrite(tmp, array, photometric="minisblack", extratags=extratags))
