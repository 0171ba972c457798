"""Whole scenes as users have them: per-date rasters or a numpy cube, plus georeferencing.

Read by the converter (``python -m utils.datasets.convert``) and by ``predict_STCLN.py``, through
rasterio (GDAL): any format GDAL reads (GeoTIFF, JPEG 2000 Sentinel-2 bands, VRT), CRS and
transform kept exactly, nodata read from the files.

* Raster folder: one multi-band raster per acquisition, the date in the file name (``YYYYMMDD``
  or ``YYYY-MM-DD`` anywhere in it, e.g. ``S2_20190412.tif``, optionally followed by the time
  as in Sentinel-2 product names, ``..._20190412T103021_...``); every file the same size, band
  count, data type, CRS and pixel grid (checked when the scene is opened, before any pixel is read).
  Files named by ``exclude`` (the label map when it lies in the same folder) are skipped.
  Several acquisitions on one date are combined by ``same_date`` (:data:`SAME_DATE_RULES`).
  Nothing is staged: :class:`RasterSeries` reads full-width row strips (one windowed read per
  file) when they are asked for and keeps the last strip, so converting a scene or mapping it
  window by window holds one strip in memory, whatever the scene's size.
* Cloud information (optional): a folder of one single-band raster per acquisition (a cloud
  mask or a cloud probability), matched to the images by acquisition date and time, or a
  (T, H, W) ``.npy`` beside a cube. A cell (date, pixel) is *valid* where the value is at most
  ``threshold``. A raster that declares a nodata value (GDAL) marks its pixels where any band
  holds it as invalid cells too (outside a satellite's swath, a mosaic's gaps), cloud files or not.
* numpy cube: a ``.npy`` file (T, C, H, W) plus a dates file (one ISO or YYYYMMDD date per
  line, or a JSON list), memory-mapped directly.

Georeferencing is a plain-JSON *grid* (stored in ``dataset.json``): ``crs`` (WKT, or None),
``epsg`` (or None), ``transform`` (the affine a, b, c, d, e, f of ``x = a*col + b*row + c``,
``y = d*col + e*row + f``, pixel corners; None without georeferencing), ``height``, ``width``.
Class maps are written as Cloud-Optimised GeoTIFFs with that grid (:func:`write_class_map`).
"""

import datetime
import json
import logging
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.errors import DataError
from utils.report import write_file_atomic

log = logging.getLogger("stcln")

SQUARE_METRES_PER_HECTARE = 10_000.0
DATE_PATTERN = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")
TIME_SUFFIX = re.compile(r"T(\d{6})(?!\d)")  # the acquisition time after the date in Sentinel-2 product names
SAME_DATE_RULES = ("error", "first", "mean", "clearest")
RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img")  # compared lower-case
TIFF_SUFFIXES = (".tif", ".tiff")
CUBE_NDIM = 4
COG_BLOCK = 512  # tile side of written maps (GDAL's COG default)


@dataclass
class Scene:
    """A whole scene: ``cube`` (T, C, H, W) and ``valid`` (T, H, W) read lazily, dates, georeferencing grid."""

    cube: "np.ndarray | RasterSeries"
    dates: list[datetime.date]
    georeferencing: dict | None
    source: str
    valid: "np.ndarray | RasterValidity | None" = None  # 1 = clear observation; None = no cloud information
    band_names: list[str] | None = None  # the rasters' band descriptions, when every band has a distinct one
    sources: dict = field(default_factory=dict)  # further sources on the same grid (utils/datasets/radar.py)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.cube.shape[2:])

    def close(self) -> None:
        """Close the scene's raster files and those of its further sources (a numpy cube has none)."""
        close = getattr(self.cube, "close", None)
        if callable(close) and not isinstance(self.cube, np.ndarray):
            close()
        for scene in self.sources.values():
            scene.close()

    def __enter__(self) -> "Scene":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def add_scene_args(parser, many: bool = False) -> None:
    """The scene flags shared by the converter (one scene) and predict_STCLN.py (``many``: several scenes)."""
    source = parser.add_argument_group("scene (--geotiff_dir, or --cube with --dates)")
    source.add_argument(
        "--geotiff_dir",
        type=Path,
        nargs="+" if many else None,
        default=None,
        help=(
            "folder(s) of per-acquisition rasters (GeoTIFF, JPEG 2000, any GDAL format), YYYYMMDD or "
            "YYYY-MM-DD (optionally THHMMSS) in each file name; files without a date in the name are "
            "skipped with a warning"
        )
        + ("; several folders: one scene each" if many else ""),
    )
    if many:
        source.add_argument(
            "--scene_list",
            type=Path,
            default=None,
            help="text file: one scene folder per line, optionally followed by its cloud folder, then named "
            "fields clouds=FOLDER, s1a=FOLDER, s1d=FOLDER (the scene's Sentinel-1 folders) in any order; '#' "
            "comments; paths relative to the list file (predict_STCLN.py's docstring)",
        )
    source.add_argument("--cube", type=Path, default=None, help="numpy .npy array (T, C, H, W) of raw values")
    source.add_argument("--dates", type=Path, default=None, help="with --cube: one date per line (or a JSON list)")
    source.add_argument(
        "--same_date",
        choices=SAME_DATE_RULES,
        default="mean",
        help="several acquisitions on one date: per-pixel mean of the clear ones (all where none is "
        "clear), the first, the clearest (needs --cloud_dir), or refuse",
    )
    clouds = parser.add_argument_group("cloud information (optional)")
    clouds.add_argument(
        "--cloud_dir",
        type=Path,
        default=None,
        nargs="+" if many else None,
        help="with --geotiff_dir: one single-band cloud mask or probability raster per acquisition, "
        "matched by the date (and time) in the file names" + ("; one folder per --geotiff_dir" if many else ""),
    )
    clouds.add_argument(
        "--cloud_cube",
        type=Path,
        default=None,
        help="with --cube: a (T, H, W) cloud mask or probability .npy, one frame per date",
    )
    clouds.add_argument(
        "--cloud_threshold",
        type=float,
        default=0.5,
        help="a cell is clear (valid) where the cloud value is at most this: 0.5 suits 0/1 masks "
        "and 0-1 probabilities; e.g. 100 for a 0-255 probability",
    )


def check_scene_source(parser, args) -> None:
    """The scene flags of :func:`add_scene_args`: exactly one source (--geotiff_dir, --scene_list or --cube),
    --dates with --cube, the cloud source of the same kind (``parser.error`` otherwise)."""
    scene_list = getattr(args, "scene_list", None)
    if sum(source is not None for source in (args.geotiff_dir, args.cube, scene_list)) != 1:
        parser.error(
            "give exactly one of --geotiff_dir"
            + (", --scene_list" if hasattr(args, "scene_list") else "")
            + " and --cube"
        )
    if args.cube is not None and args.dates is None:
        parser.error("--cube needs --dates")
    if args.cloud_dir is not None and args.geotiff_dir is None:
        parser.error(
            "--cloud_dir goes with --geotiff_dir (with --cube, give --cloud_cube; with --scene_list, "
            "name each cloud folder after its scene folder in the list)"
        )
    if isinstance(args.cloud_dir, list) and len(args.cloud_dir) != len(args.geotiff_dir):
        parser.error(
            f"--cloud_dir gives {len(args.cloud_dir)} folders for {len(args.geotiff_dir)} --geotiff_dir "
            "folders (one each, in the same order)"
        )
    if args.cloud_cube is not None and args.cube is None:
        parser.error("--cloud_cube goes with --cube (with --geotiff_dir, give --cloud_dir)")
    if not math.isfinite(args.cloud_threshold):
        parser.error(f"--cloud_threshold must be a number, got {args.cloud_threshold}")


def read_scene(args, exclude: tuple[Path, ...] = ()) -> Scene:
    """The scene of :func:`add_scene_args` flags: a raster folder (``exclude`` skipped, --same_date applied)
    or --cube, with the validity of --cloud_dir / --cloud_cube when given; nothing is read yet but the
    files' headers (grids checked)."""
    if args.geotiff_dir is not None:
        return open_raster_folder(args.geotiff_dir, exclude, args.cloud_dir, args.cloud_threshold, args.same_date)
    scene = open_cube(args.cube, args.dates)
    if args.cloud_cube is not None:
        frames, _, height, width = scene.cube.shape
        scene.valid = open_valid_cube(args.cloud_cube, args.cloud_threshold, (frames, height, width))
    return scene


@dataclass(frozen=True)
class Acquisition:
    """One file of a GeoTIFF folder: its date, the time in its name ('' if none) and its path."""

    date: datetime.date
    time: str
    path: Path


def acquisition_of(path: Path) -> Acquisition:
    """Date (and ``THHMMSS`` time, when the name has one right after the date) of a file name."""
    for match in DATE_PATTERN.finditer(path.stem):
        try:
            date = datetime.date(*(int(part) for part in match.groups()))
        except ValueError:
            continue
        time = TIME_SUFFIX.match(path.stem, match.end())
        return Acquisition(date, time.group(1) if time else "", path)
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
        values = (
            json.loads(text) if text.lstrip().startswith("[") else [line for line in text.splitlines() if line.strip()]
        )
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not a JSON list of dates ({err.msg})") from None
    return [parse_date(value, str(path)) for value in values]


def open_raster(path: Path):
    """A rasterio dataset of ``path``, or one line saying why it cannot be read."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a plain TIFF: the grid says so
            return rasterio.open(path)
    except RasterioIOError as err:
        raise DataError(f"{path}: unreadable raster ({' '.join(str(err).split())})") from None


def grid_of(dataset) -> dict:
    """The plain-JSON georeferencing grid of a rasterio dataset (see the module docstring)."""
    from rasterio.transform import Affine

    georeferenced = dataset.crs is not None or dataset.transform != Affine.identity()
    return {
        "crs": dataset.crs.to_wkt() if dataset.crs is not None else None,
        "epsg": dataset.crs.to_epsg() if dataset.crs is not None else None,
        "transform": list(dataset.transform)[:6] if georeferenced else None,
        "height": int(dataset.height),
        "width": int(dataset.width),
    }


def crs_name(grid: dict | None) -> str:
    """'EPSG:32633', 'a custom CRS' or 'no CRS' (for messages)."""
    if not grid or grid.get("crs") is None:
        return "no CRS"
    return f"EPSG:{grid['epsg']}" if grid.get("epsg") else "a custom CRS"


def same_crs(first: str | None, second: str | None) -> bool:
    if first is None or second is None:
        return first == second
    from rasterio.crs import CRS

    return first == second or CRS.from_wkt(first) == CRS.from_wkt(second)


def check_same_grid(path: Path, grid: dict, reference: Path, expected: dict) -> None:
    """Refuse a file whose CRS, pixel grid or size differs from the reference file's (one line)."""
    problems = []
    if (grid["height"], grid["width"]) != (expected["height"], expected["width"]):
        problems.append(f"size {grid['height']}x{grid['width']} vs {expected['height']}x{expected['width']}")
    if not same_crs(grid["crs"], expected["crs"]):
        problems.append(f"CRS {crs_name(grid)} vs {crs_name(expected)}")
    ours, theirs = grid["transform"], expected["transform"]
    if ours is not None and theirs is not None:
        size = max(abs(theirs[0]), abs(theirs[4]), 1e-12)
        if not np.allclose(ours, theirs, rtol=0.0, atol=1e-3 * size):  # a thousandth of a pixel
            problems.append(
                f"grid origin ({ours[2]:.2f}, {ours[5]:.2f}) pixel ({ours[0]:g}, {ours[4]:g}) vs "
                f"({theirs[2]:.2f}, {theirs[5]:.2f}) pixel ({theirs[0]:g}, {theirs[4]:g})"
            )
    elif (ours is None) != (theirs is None):
        problems.append(f"{'no' if ours is None else 'a'} georeferencing, unlike {reference.name}")
    if problems:
        raise DataError(
            f"{path}: not on the pixel grid of {reference.name} ({'; '.join(problems)}); every file "
            "of a scene needs the same CRS, grid and size: reproject it first (e.g. gdalwarp)"
        )


def band_descriptions(dataset) -> list[str] | None:
    """The band names of a raster (GDAL band descriptions), when every band has a distinct one, else None."""
    names = [(name or "").strip() for name in dataset.descriptions]
    return names if all(names) and len(set(names)) == len(names) else None


def read_label_file(
    path: str | Path, shape: tuple[int, int], grid: tuple[Path, dict | None] | None = None
) -> tuple[np.ndarray, float | None]:
    """A label map (H, W) from a raster or ``.npy`` and its declared nodata value (the raster's nodata,
    else None); integer values, shape checked; a raster also against ``grid`` (reference file, its
    grid) when given."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    nodata = None
    if path.suffix.lower() in RASTER_SUFFIXES:
        with open_raster(path) as dataset:
            array = dataset.read()  # (C, H, W)
            nodata, label_grid = dataset.nodata, grid_of(dataset)
        array = array[0] if array.shape[0] == 1 else array
        if grid is not None and grid[1] is not None and label_grid["transform"] is not None:
            check_same_grid(path, label_grid, *grid)
    else:
        array = np.asarray(load_npy(path, "label"))
    if array.ndim != 2 or tuple(array.shape) != tuple(shape):
        raise DataError(f"{path}: expected a label map of shape {tuple(shape)}, got {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise DataError(f"{path}: label values must be integers, got {array.dtype} with fractions or NaN")
        array = array.astype(np.int64)
    if nodata is not None and (not math.isfinite(nodata) or nodata != round(nodata)):
        raise DataError(f"{path}: nodata {nodata:g} of a label map must be an integer")
    return array, None if nodata is None else int(nodata)


def geotiff_files(folder: Path, exclude: tuple[Path, ...] = ()) -> list[Acquisition]:
    """The folder's rasters as acquisitions in time order (date, time, name); ``exclude`` skipped, and
    files without a date in the name skipped with a warning (a label map or a preview beside the images)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: raster folder not found")
    skip = {Path(path).resolve() for path in exclude}
    files, undated = [], []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in RASTER_SUFFIXES or path.resolve() in skip:
            continue
        try:
            files.append(acquisition_of(path))
        except DataError:
            undated.append(path.name)
    if undated:
        log.warning(
            "%s: skipped %d file(s) without a YYYYMMDD or YYYY-MM-DD date in the name: %s",
            folder,
            len(undated),
            ", ".join(undated[:5]) + (" ..." if len(undated) > 5 else ""),
        )
    if not files:
        raise DataError(f"{folder}: no raster files ({', '.join(RASTER_SUFFIXES)}) with a date in the name")
    return sorted(files, key=lambda a: (a.date, a.time, a.path.name))


def match_clouds(images: list[Acquisition], folder: Path) -> list[Path]:
    """The cloud file of every image: same date and time, else the only cloud file of that date."""
    by_date: dict[datetime.date, list[Acquisition]] = {}
    for acquisition in geotiff_files(folder):
        by_date.setdefault(acquisition.date, []).append(acquisition)
    matched = []
    for image in images:
        candidates = by_date.get(image.date, [])
        timed = [c for c in candidates if image.time and c.time == image.time]
        if len(timed) == 1 or len(candidates) == 1:
            matched.append((timed or candidates)[0].path)
        elif not candidates:
            raise DataError(f"{folder}: no cloud file for {image.path.name} (date {image.date})")
        else:
            raise DataError(
                f"{folder}: {len(candidates)} cloud files on {image.date} and none with the time "
                f"{image.time or '(none)'} of {image.path.name}; name each like its image's acquisition"
            )
    return matched


def combine_same_date(
    bands: list[np.ndarray], clear: list[np.ndarray] | None, rule: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """One (C, h, w) image (and (h, w) validity) from several acquisitions of one date.

    ``first``: the earliest; ``mean``: per pixel, the mean of the clear acquisitions (of all where
    none is clear, or without cloud information), clear where any is. The other rules never reach
    here: ``clearest`` keeps one acquisition per date (chosen when the scene is opened, over the whole
    scene) and ``error`` is refused then (:func:`open_raster_folder`).
    """
    if rule == "first":
        return bands[0], None if clear is None else clear[0]
    stack = np.stack(bands).astype(np.float64)  # (n, C, h, w)
    if clear is None:
        mean = stack.mean(axis=0)
        any_clear = None
    else:
        weight = np.stack(clear).astype(np.float64)  # (n, h, w)
        any_clear = weight.any(axis=0)
        weight[:, ~any_clear] = 1.0  # no clear acquisition at that pixel: the plain mean
        kept = np.where(weight[:, None] > 0, stack, 0.0)  # a NaN nodata of a cell left out never spoils the mean
        mean = (kept * weight[:, None]).sum(axis=0) / weight.sum(axis=0)[None]  # (n, 1, h, w) -> (C, h, w)
    if np.issubdtype(bands[0].dtype, np.integer):
        mean = np.rint(mean)
    return mean.astype(bands[0].dtype), any_clear


@dataclass
class RasterSeries:
    """(T, C, H, W) array-like over the acquisitions of a raster folder, read in full-width row strips.

    ``series[:, :, rows, cols]`` (and any indexing of the result) reads rows ``rows`` of every file
    with one windowed read each, combines acquisitions of one date, and keeps that strip: windows
    of the same rows are then cut from memory. ``validity`` is the matching (T, H, W) array-like.
    """

    groups: list[list[Path]]  # per date, its acquisitions' files
    clouds: list[list[Path]] | None  # per date, the matching cloud files
    threshold: float
    same_date: str
    shape: tuple[int, int, int, int]
    dtype: np.dtype
    chosen: list[int] = field(default_factory=list)  # --same_date clearest: the member kept per date
    nodata: dict = field(default_factory=dict)  # file -> its declared nodata value (files that declare one)
    bands: tuple[int, ...] | None = None  # the 1-based bands read from every file (None: all)
    invalid: Callable[[np.ndarray], np.ndarray] | None = None  # (C, h, w) image -> (h, w) cells without data
    _handles: dict = field(default_factory=dict, repr=False)
    _strip: tuple | None = field(default=None, repr=False)  # (first row, end row, cube, valid)

    @property
    def ndim(self) -> int:
        return CUBE_NDIM

    @property
    def has_validity(self) -> bool:
        """Cloud files, rasters that declare a nodata value, or an ``invalid`` rule: per-cell validity."""
        return self.clouds is not None or bool(self.nodata) or self.invalid is not None

    def _dataset(self, path: Path):
        if path not in self._handles:
            self._handles[path] = open_raster(path)
        return self._handles[path]

    def _read(self, path: Path, first: int, end: int):
        from rasterio.windows import Window

        indexes = None if self.bands is None else list(self.bands)
        return self._dataset(path).read(indexes, window=Window(0, first, self.shape[3], end - first))  # (C, rows, W)

    def has_data(self, image: np.ndarray, path: Path) -> np.ndarray:
        """(h, w) bool: cells of one file's (C, h, w) image that hold data (its nodata, ``invalid`` rule)."""
        data = has_data(image, self.nodata.get(path))
        return data if self.invalid is None else data & ~self.invalid(image)

    def read_rows(self, first: int, end: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(T, C, end - first, W) images and (T, end - first, W) uint8 validity (or None) of rows first..end-1."""
        if self._strip is not None and self._strip[0] <= first and end <= self._strip[1]:
            top = self._strip[0]
            valid = None if self._strip[3] is None else self._strip[3][:, first - top : end - top]
            return self._strip[2][:, :, first - top : end - top], valid
        n_dates, n_bands, _, width = self.shape
        cube = np.empty((n_dates, n_bands, end - first, width), dtype=self.dtype)
        valid = None if not self.has_validity else np.ones((n_dates, end - first, width), dtype=np.uint8)
        for t, members in enumerate(self.groups):
            if self.same_date == "clearest" and len(members) > 1:
                members = [members[self.chosen[t]]]
                clouds = None if self.clouds is None else [self.clouds[t][self.chosen[t]]]
            else:
                clouds = None if self.clouds is None else self.clouds[t]
            bands = [self._read(path, first, end) for path in members]
            clear = None if clouds is None else [self._read(path, first, end)[0] <= self.threshold for path in clouds]
            if self.invalid is not None or any(path in self.nodata for path in members):
                data = [self.has_data(image, path) for image, path in zip(bands, members)]
                clear = data if clear is None else [c & d for c, d in zip(clear, data)]
            if len(bands) == 1:
                cube[t], day_clear = bands[0], None if clear is None else clear[0]
            else:
                cube[t], day_clear = combine_same_date(bands, clear, self.same_date)
            if valid is not None and day_clear is not None:
                valid[t] = day_clear
        self._strip = (first, end, cube, valid)
        return cube, valid

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (CUBE_NDIM - len(key))
        first, end = _row_range(key[2], self.shape[2])
        cube, _ = self.read_rows(first, end)
        return cube[key[0], key[1], :, key[3]] if isinstance(key[0], slice) else cube[key[0]][key[1], :, key[3]]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        cube = self[:, :, :, :]
        return cube if dtype is None else cube.astype(dtype)

    def close(self) -> None:
        for dataset in self._handles.values():
            dataset.close()
        self._handles.clear()
        self._strip = None


@dataclass
class RasterValidity:
    """(T, H, W) uint8 array-like validity of a :class:`RasterSeries` (its strips carry both)."""

    series: RasterSeries

    @property
    def shape(self) -> tuple[int, int, int]:
        n_dates, _, height, width = self.series.shape
        return (n_dates, height, width)

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        first, end = _row_range(key[1], self.shape[1])
        _, valid = self.series.read_rows(first, end)
        return valid[key[0], :, key[2]] if isinstance(key[0], slice) else valid[key[0]][:, key[2]]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        valid = self[:, :, :]
        return valid if dtype is None else valid.astype(dtype)


def has_data(image: np.ndarray, nodata: float | None) -> np.ndarray:
    """(h, w) bool: pixels of a (C, h, w) image where no band holds the raster's declared nodata value."""
    if nodata is None:
        return np.ones(image.shape[1:], dtype=bool)
    missing = np.isnan(image) if math.isnan(nodata) else image == nodata  # (C, h, w)
    return ~missing.any(axis=0)


def _row_range(rows, height: int) -> tuple[int, int]:
    """(first, end) of a row index (a slice of step 1, or an int)."""
    if isinstance(rows, (int, np.integer)):
        row = int(rows) + (height if rows < 0 else 0)
        return row, row + 1
    if not isinstance(rows, slice) or rows.step not in (None, 1):
        raise TypeError(f"raster series take a row slice of step 1 or a row index, got {rows!r}")
    first, end, _ = rows.indices(height)
    return first, max(first, end)


def _check_header(path: Path, dataset, reference: Path, expected: tuple) -> None:
    """Same bands, data type and grid as the reference file (``expected``: its band count, data type and
    grid; one line otherwise)."""
    if (dataset.count, dataset.dtypes[0]) != (expected[0], expected[1]):
        raise DataError(
            f"{path}: {dataset.count} band(s) of {dataset.dtypes[0]} differ from {reference.name} "
            f"({expected[0]} of {expected[1]}); every date needs the same bands and data type"
        )
    check_same_grid(path, grid_of(dataset), reference, expected[2])


def open_raster_folder(
    folder: str | Path,
    exclude: tuple[Path, ...] = (),
    cloud_dir: Path | None = None,
    threshold: float = 0.5,
    same_date: str = "error",
    *,
    bands: tuple[int, ...] | None = None,
    invalid: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Scene:
    """A raster folder as a lazy :class:`Scene`: every file's header read and checked against the first
    (bands, data type, CRS, grid, size), cloud files matched; no pixel is read here except for
    ``same_date='clearest'``, which counts each candidate's clear cells.

    ``bands`` (1-based) reads only those bands of every file; ``invalid`` marks further cells without data
    (:attr:`RasterSeries.invalid`), and then ``clearest`` without cloud files keeps the acquisition with
    the most cells holding data (the radar sources, utils/datasets/radar.py)."""
    files = geotiff_files(Path(folder), exclude)
    cloud_files = match_clouds(files, Path(cloud_dir)) if cloud_dir is not None else None
    groups: dict[datetime.date, list[int]] = {}
    for index, acquisition in enumerate(files):
        groups.setdefault(acquisition.date, []).append(index)
    reference = files[0].path
    with open_raster(reference) as first:
        grid, names = grid_of(first), band_descriptions(first)
        expected = (first.count, first.dtypes[0], grid)
    nodata = {}
    for acquisition in files:
        with open_raster(acquisition.path) as dataset:
            if acquisition.path != reference:
                _check_header(acquisition.path, dataset, reference, expected)
            if dataset.nodata is not None:
                nodata[acquisition.path] = float(dataset.nodata)
    for path in cloud_files or ():
        with open_raster(path) as dataset:
            if dataset.count != 1:
                raise DataError(f"{path}: a cloud file needs one band (mask or probability), got {dataset.count}")
            check_same_grid(path, grid_of(dataset), reference, grid)
    multiple = [members for members in groups.values() if len(members) > 1]
    if multiple and same_date == "error":
        raise DataError(
            f"{files[multiple[0][1]].path}: same date as {files[multiple[0][0]].path.name} (pass --same_date "
            "first, mean or clearest to combine acquisitions of one day)"
        )
    if multiple and same_date == "clearest" and cloud_files is None and invalid is None:
        raise DataError(
            f"{files[multiple[0][1]].path}: --same_date clearest needs cloud information (--cloud_dir) for the "
            "acquisitions of that date"
        )
    series = RasterSeries(
        groups=[[files[i].path for i in members] for members in groups.values()],
        clouds=None if cloud_files is None else [[cloud_files[i] for i in members] for members in groups.values()],
        threshold=threshold,
        same_date=same_date,
        shape=(len(groups), expected[0] if bands is None else len(bands), grid["height"], grid["width"]),
        dtype=np.dtype(expected[1]),
        nodata=nodata,
        bands=bands,
        invalid=invalid,
    )
    if same_date == "clearest" and cloud_files is not None:
        series.chosen = [_clearest(series.clouds[t], threshold) for t in range(len(series.groups))]
    elif same_date == "clearest":
        series.chosen = [_most_data(series, members) for members in series.groups]
    if names is not None and bands is not None:
        names = [names[band - 1] for band in bands]
    scene = Scene(series, list(groups), grid, str(folder), None, names)
    if series.has_validity:
        scene.valid = RasterValidity(series)
        if nodata:
            log.info(
                "%s: %d of %d files declare a nodata value: those pixels are invalid cells, as clouds are",
                folder,
                len(nodata),
                len(files),
            )
    return scene


def _clearest(clouds: list[Path], threshold: float) -> int:
    """Index of the cloud file with the most clear cells (ties: the first)."""
    if len(clouds) == 1:
        return 0
    counts = []
    for path in clouds:
        with open_raster(path) as dataset:
            counts.append(int((dataset.read(1) <= threshold).sum()))
    return int(np.argmax(counts))


def _most_data(series: RasterSeries, members: list[Path]) -> int:
    """Index of the acquisition whose file has the most cells holding data (ties: the first)."""
    if len(members) == 1:
        return 0
    counts = []
    for path in members:
        with open_raster(path) as dataset:
            image = dataset.read(None if series.bands is None else list(series.bands))  # (C, H, W)
        counts.append(int(series.has_data(image, path).sum()))
    return int(np.argmax(counts))


def load_npy(path: str | Path, what: str) -> np.ndarray:
    """A memory-mapped ``.npy`` of the user's (``what``: 'cube', 'label', 'cloud'), or one line saying why not."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{path}: unreadable .npy ({' '.join(str(err).split())})") from None


def open_valid_cube(path: str | Path, threshold: float, shape: tuple[int, int, int]) -> np.ndarray:
    """(T, H, W) uint8 validity from a (T, H, W) or (T, 1, H, W) cloud ``.npy`` (value <= threshold = clear)."""
    clouds = load_npy(path, "cloud")
    if clouds.ndim == CUBE_NDIM and clouds.shape[1] == 1:
        clouds = clouds[:, 0]  # (T, 1, H, W) -> (T, H, W)
    if tuple(clouds.shape) != tuple(shape) or not (np.issubdtype(clouds.dtype, np.number) or clouds.dtype == bool):
        raise DataError(
            f"{path}: expected a numeric cloud array of shape {tuple(shape)} (T, H, W) matching the "
            f"cube, got {clouds.dtype} {clouds.shape}"
        )
    return (np.asarray(clouds) <= threshold).astype(np.uint8)


def open_cube(path: str | Path, dates_path: str | Path) -> Scene:
    """A (T, C, H, W) ``.npy`` cube (memory-mapped) and its dates file."""
    path = Path(path)
    cube = load_npy(path, "cube")
    if cube.ndim != CUBE_NDIM or not (np.issubdtype(cube.dtype, np.integer) or np.issubdtype(cube.dtype, np.floating)):
        raise DataError(f"{path}: expected a numeric array (T, C, H, W), got {cube.dtype} {cube.shape}")
    dates = read_dates_file(dates_path)
    if len(dates) != cube.shape[0]:
        raise DataError(f"{dates_path}: {len(dates)} dates for the {cube.shape[0]} frames of {path}")
    order = np.argsort(np.array(dates, dtype="datetime64[D]"), kind="stable")
    if (order != np.arange(len(dates))).any() or len(set(dates)) != len(dates):
        raise DataError(f"{dates_path}: dates must be strictly increasing (one frame per date, in order)")
    return Scene(cube, dates, None, str(path))


def transform_of(grid: dict | None) -> tuple[float, float, float, float, float, float] | None:
    """(a, b, c, d, e, f): x = a*col + b*row + c, y = d*col + e*row + f (pixel corner), or None."""
    return tuple(grid["transform"]) if grid and grid.get("transform") else None


def pixel_area_m2(grid: dict | None) -> float | None:
    """Area of one pixel in square metres, or None if unknown or not in metres (geographic CRS, no CRS)."""
    transform = transform_of(grid)
    if transform is None or grid.get("crs") is None:
        return None
    from rasterio.crs import CRS

    crs = CRS.from_wkt(grid["crs"])
    unit, factor = crs.linear_units_factor if crs.is_projected else (None, None)
    if unit is None:
        return None
    a, b, _, d, e, _ = transform
    return abs(a * e - b * d) * factor**2


def write_class_map(
    path: Path,
    class_map: np.ndarray,
    grid: dict | None,
    classes: list[str],
    colormap: np.ndarray | None = None,
    block: int = COG_BLOCK,
) -> None:
    """A class map (H, W) as a Cloud-Optimised GeoTIFF: tiled ``block`` px, deflate, overviews (mode of the
    classes), the source's CRS and transform, the class names in its metadata (``CLASS_NAMES``, JSON)
    and, with ``colormap`` ((K, 3) in 0..1 or 0..255) and one byte per pixel, a colour table."""
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as copy_raster
    from rasterio.transform import Affine

    height, width = class_map.shape
    profile = {"driver": "GTiff", "height": height, "width": width, "count": 1, "dtype": class_map.dtype.name}
    if grid and grid.get("transform"):
        profile["transform"] = Affine(*grid["transform"])
    if grid and grid.get("crs"):
        profile["crs"] = rasterio.crs.CRS.from_wkt(grid["crs"])
    with MemoryFile() as memory, memory.open(**profile) as dataset:
        dataset.write(class_map, 1)
        dataset.set_band_description(1, "class")
        dataset.update_tags(CLASS_NAMES=json.dumps(list(classes)))
        dataset.update_tags(1, **{f"CLASS_{index}": name for index, name in enumerate(classes)})
        if colormap is not None and class_map.dtype == np.uint8:
            table = np.asarray(colormap, dtype=np.float64)  # (K, 3) in 0..1, or in 0..255
            colours = np.clip(np.rint(table * (255 if table.max() <= 1 else 1)), 0, 255).astype(int)
            dataset.write_colormap(1, {index: (*map(int, rgb), 255) for index, rgb in enumerate(colours)})
        options = {"compress": "deflate", "blocksize": block, "overview_resampling": "mode", "overviews": "auto"}
        write_file_atomic(path, lambda tmp: copy_raster(dataset, str(tmp), driver="COG", **options))
