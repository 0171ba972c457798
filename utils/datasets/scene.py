"""Whole scenes as users have them: per-date GeoTIFFs or a numpy cube, plus georeferencing.

Read by the converter (``python -m utils.datasets.convert``) and by ``predict_STCLN.py``.

* GeoTIFF folder: one multi-band GeoTIFF per acquisition, the date in the file name (``YYYYMMDD``
  or ``YYYY-MM-DD`` anywhere in it, e.g. ``S2_20190412.tif``, optionally followed by the time
  as in Sentinel-2 product names, ``..._20190412T103021_...``); bands planar (C, H, W) or
  interleaved (H, W, C); every file the same size, band count, CRS and pixel grid (checked).
  Files named by ``exclude`` (the label map when it lies in the same folder) are skipped.
  Several acquisitions on one date are combined by ``same_date`` (:data:`SAME_DATE_RULES`).
  Read with tifffile, as the MTLCC GeoTIFF reader. The scene is staged once into a ``.npy``
  file (T, C, H, W) so that it can be memory-mapped: nothing later needs the whole scene in RAM.
* Cloud information (optional): a folder of one single-band GeoTIFF per acquisition (a cloud
  mask or a cloud probability), matched to the images by acquisition date and time, or a
  (T, H, W) ``.npy`` beside a cube. A cell (date, pixel) is *valid* where the value is at most
  ``threshold``; the staged validity is a (T, H, W) uint8 ``.npy`` (1 = clear).
* numpy cube: a ``.npy`` file (T, C, H, W) plus a dates file (one ISO or YYYYMMDD date per
  line, or a JSON list), memory-mapped directly.

Georeferencing: the GeoTIFF tags of the first date (pixel scale 33550, tie point 33922, model
transformation 34264, GeoKey directory 34735 with its double 34736 and ASCII 34737 parameters,
and GDAL metadata 42112) are kept as plain JSON (:func:`read_georeferencing`) and written back
onto class maps with tifffile's ``extratags`` (:func:`write_geotiff`). GDAL_NODATA (42113) is
not copied: it describes the reflectance bands, not a class map; a label GeoTIFF's own GDAL_NODATA
is read (:func:`read_label_file`) so the converter can leave those pixels unscored.
"""

import datetime
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.errors import DataError
from utils.report import write_file_atomic

log = logging.getLogger("stcln")

GEO_TAGS = {
    33550: "ModelPixelScale",
    33922: "ModelTiepoint",
    34264: "ModelTransformation",
    34735: "GeoKeyDirectory",
    34736: "GeoDoubleParams",
    34737: "GeoAsciiParams",
    42112: "GDAL_METADATA",
}
GDAL_NODATA_TAG = 42113
GT_MODEL_TYPE_KEY = 1024
MODEL_TYPE_GEOGRAPHIC = 2  # GeoTIFF: lat/lon degrees, no metric pixel size
PROJ_LINEAR_UNITS_KEY = 3076
LINEAR_UNIT_METRE = 9001
SQUARE_METRES_PER_HECTARE = 10_000.0
DATE_PATTERN = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")
TIME_SUFFIX = re.compile(r"T(\d{6})(?!\d)")  # the acquisition time after the date in Sentinel-2 product names
PROJECTED_CRS_KEY, GEOGRAPHIC_CRS_KEY = 3072, 2048
SAME_DATE_RULES = ("error", "first", "mean", "clearest")
TIFF_SUFFIXES = (".tif", ".tiff", ".TIF", ".TIFF")
CUBE_NDIM = 4


@dataclass
class Scene:
    """A whole scene: ``cube`` (T, C, H, W) (memory-mapped), dates, optional georeferencing."""

    cube: np.ndarray
    dates: list[datetime.date]
    georeferencing: dict | None
    source: str
    valid: np.ndarray | None = None  # (T, H, W) uint8, 1 = clear observation; None = no cloud information

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.cube.shape[2:])


def add_scene_args(parser) -> None:
    """The scene flags shared by the converter and predict_STCLN.py."""
    source = parser.add_argument_group("scene (--geotiff_dir, or --cube with --dates)")
    source.add_argument(
        "--geotiff_dir",
        type=Path,
        default=None,
        help="folder of per-acquisition GeoTIFFs, YYYYMMDD or YYYY-MM-DD (optionally THHMMSS) in each "
        "file name; files without a date in the name are skipped with a warning",
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
        help="with --geotiff_dir: one single-band cloud mask or probability GeoTIFF per acquisition, "
        "matched by the date (and time) in the file names",
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
    """The scene flags of :func:`add_scene_args`: exactly one of --geotiff_dir and --cube, --dates with
    --cube, the cloud source of the same kind (``parser.error`` otherwise)."""
    if (args.geotiff_dir is None) == (args.cube is None):
        parser.error("give exactly one of --geotiff_dir and --cube")
    if args.cube is not None and args.dates is None:
        parser.error("--cube needs --dates")
    if args.cloud_dir is not None and args.geotiff_dir is None:
        parser.error("--cloud_dir goes with --geotiff_dir (with --cube, give --cloud_cube)")
    if args.cloud_cube is not None and args.cube is None:
        parser.error("--cloud_cube goes with --cube (with --geotiff_dir, give --cloud_dir)")
    if not math.isfinite(args.cloud_threshold):
        parser.error(f"--cloud_threshold must be a number, got {args.cloud_threshold}")


def read_scene(args, staging: Path, exclude: tuple[Path, ...] = ()) -> Scene:
    """The scene of :func:`add_scene_args` flags: --geotiff_dir (``exclude`` skipped, --same_date applied,
    staged at ``staging``) or --cube, with the validity of --cloud_dir / --cloud_cube when given."""
    if args.geotiff_dir is not None:
        clouds = CloudSource(args.cloud_dir, args.cloud_threshold) if args.cloud_dir is not None else None
        scene = stage_geotiff_folder(args.geotiff_dir, staging, exclude, clouds, args.same_date)
    else:
        scene = open_cube(args.cube, args.dates)
        if args.cloud_cube is not None:
            frames, _, height, width = scene.cube.shape
            scene.valid = open_valid_cube(args.cloud_cube, args.cloud_threshold, (frames, height, width))
    if scene.valid is not None:
        clear = np.asarray(scene.valid, dtype=np.float64).mean(axis=(1, 2))  # (T,) clear share per date
        log.info(
            "cloud information: %.1f %% of the cells clear; %d of %d dates under half clear",
            100 * clear.mean(),
            int((clear < 0.5).sum()),
            len(clear),
        )
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


def _tiff_bands(path: Path) -> tuple[np.ndarray, dict | None]:
    """(C, H, W) array and georeferencing of one GeoTIFF (single-band files give C = 1)."""
    array, georef, _ = _read_tiff(path)
    return array, georef


def _read_tiff(path: Path) -> tuple[np.ndarray, dict | None, float | None]:
    """(C, H, W) array, georeferencing and GDAL nodata value (tag 42113, or None) of one GeoTIFF."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, array = series.axes, series.asarray()
            georef = _georeferencing_of(tif.pages[0])
            nodata_tag = tif.pages[0].tags.get(GDAL_NODATA_TAG)
    except (OSError, ValueError, IndexError, tifffile.TiffFileError) as err:
        raise DataError(f"{path}: unreadable TIFF ({' '.join(str(err).split())})") from None
    if array.ndim == 2:
        array = array[None]  # (H, W) -> (1, H, W)
    elif array.ndim == 3 and axes.endswith("S"):
        array = np.moveaxis(array, -1, 0)  # (H, W, C) -> (C, H, W)
    if array.ndim != 3:
        raise DataError(f"{path}: expected a (bands, rows, columns) image, got shape {array.shape} ({axes})")
    nodata = None
    if nodata_tag is not None:
        text = str(nodata_tag.value).strip().strip("\x00")
        try:
            nodata = float(text)
        except ValueError:
            raise DataError(f"{path}: GDAL_NODATA tag {text!r} is not a number") from None
    return array, georef, nodata


def _georeferencing_of(page) -> dict | None:
    tags = {}
    for code in GEO_TAGS:
        tag = page.tags.get(code)
        if tag is None:
            continue
        value = tag.value
        value = (
            value if isinstance(value, str) else [float(v) if isinstance(v, float) else int(v) for v in np.ravel(value)]
        )
        tags[str(code)] = {"name": GEO_TAGS[code], "dtype": int(tag.dtype), "value": value}
    if not tags:
        return None
    return {"tags": tags, "height": int(page.imagelength), "width": int(page.imagewidth)}


def band_descriptions(georef: dict | None, n_bands: int) -> list[str] | None:
    """The band names GDAL wrote into GDAL_METADATA (``<Item name="DESCRIPTION" sample="i"
    role="description">NAME</Item>``), when every one of the ``n_bands`` bands has one, else None."""
    text = (georef or {}).get("tags", {}).get("42112", {}).get("value")
    if not isinstance(text, str):
        return None
    import xml.etree.ElementTree as ElementTree

    try:
        items = ElementTree.fromstring(text).iter("Item")
    except ElementTree.ParseError:
        return None
    names = {}
    for item in items:
        if item.get("role") == "description" and item.get("sample", "").isdigit() and (item.text or "").strip():
            names[int(item.get("sample"))] = item.text.strip()
    described = [names.get(index) for index in range(n_bands)]
    return described if all(described) and len(set(described)) == n_bands else None


def crs_code(georef: dict | None) -> int | None:
    """EPSG code of the projected (or else geographic) CRS in the GeoKey directory, or None."""
    entries = _geokeys(georef)
    return entries.get(PROJECTED_CRS_KEY, entries.get(GEOGRAPHIC_CRS_KEY))


def _geokeys(georef: dict | None) -> dict[int, int]:
    """GeoKey id -> value of the inline (SHORT) keys of the GeoKey directory (34735)."""
    keys = (georef or {}).get("tags", {}).get("34735", {}).get("value", [])
    return {keys[n]: keys[n + 3] for n in range(4, len(keys) - 3, 4) if keys[n + 1] == 0}


def check_same_grid(path: Path, georef: dict | None, reference: Path, expected: dict | None) -> None:
    """Refuse a file whose CRS, pixel grid or size differs from the reference file's (one line)."""
    if georef is None and expected is None:
        return
    if (georef is None) != (expected is None):
        raise DataError(
            f"{path}: {'no' if georef is None else 'has'} georeferencing, unlike {reference.name}; "
            "every file of a scene needs the same CRS and pixel grid"
        )
    problems = []
    if (georef["height"], georef["width"]) != (expected["height"], expected["width"]):
        problems.append(f"size {georef['height']}x{georef['width']} vs {expected['height']}x{expected['width']}")
    if crs_code(georef) != crs_code(expected) or _geokeys(georef) != _geokeys(expected):
        problems.append(f"CRS EPSG:{crs_code(georef)} vs EPSG:{crs_code(expected)}")
    ours, theirs = affine(georef), affine(expected)
    if ours is not None and theirs is not None:
        size = max(abs(theirs[0]), abs(theirs[4]), 1e-12)
        if not np.allclose(ours, theirs, rtol=0.0, atol=1e-3 * size):  # a thousandth of a pixel
            problems.append(
                f"grid origin ({ours[2]:.2f}, {ours[5]:.2f}) pixel ({ours[0]:g}, {ours[4]:g}) vs "
                f"({theirs[2]:.2f}, {theirs[5]:.2f}) pixel ({theirs[0]:g}, {theirs[4]:g})"
            )
    elif (ours is None) != (theirs is None):
        problems.append("one file has a pixel grid (transform), the other none")
    if problems:
        raise DataError(
            f"{path}: not on the pixel grid of {reference.name} ({'; '.join(problems)}); every file "
            "of a scene needs the same CRS, grid and size: reproject it first (e.g. gdalwarp)"
        )


def read_label_file(
    path: str | Path, shape: tuple[int, int], grid: tuple[Path, dict | None] | None = None
) -> tuple[np.ndarray, float | None]:
    """A label map (H, W) from a GeoTIFF or ``.npy`` and its declared nodata value (GeoTIFF GDAL_NODATA,
    else None); integer values, shape checked; a GeoTIFF also against ``grid`` (reference file, its
    georeferencing) when given."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    nodata = None
    if path.suffix in TIFF_SUFFIXES:
        array, georef, nodata = _read_tiff(path)
        array = array[0] if array.shape[0] == 1 else array
        if grid is not None and georef is not None:
            check_same_grid(path, georef, *grid)
    else:
        array = np.asarray(load_npy(path, "label"))
    if array.ndim != 2 or tuple(array.shape) != tuple(shape):
        raise DataError(f"{path}: expected a label map of shape {tuple(shape)}, got {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise DataError(f"{path}: label values must be integers, got {array.dtype} with fractions or NaN")
        array = array.astype(np.int64)
    if nodata is not None and nodata != round(nodata):
        raise DataError(f"{path}: GDAL_NODATA {nodata:g} of a label map must be an integer")
    return array, None if nodata is None else int(nodata)


def geotiff_files(folder: Path, exclude: tuple[Path, ...] = ()) -> list[Acquisition]:
    """The folder's GeoTIFFs as acquisitions in time order (date, time, name); ``exclude`` skipped, and
    files without a date in the name skipped with a warning (a label map or a preview beside the images)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: GeoTIFF folder not found")
    skip = {Path(path).resolve() for path in exclude}
    files, undated = [], []
    for path in sorted(folder.iterdir()):
        if path.suffix not in TIFF_SUFFIXES or path.resolve() in skip:
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
        raise DataError(f"{folder}: no .tif files with a date in the name")
    return sorted(files, key=lambda a: (a.date, a.time, a.path.name))


@dataclass(frozen=True)
class CloudSource:
    """Where the per-acquisition cloud information comes from and how it becomes validity."""

    folder: Path
    threshold: float = 0.5  # a cell is clear (valid) where the cloud value is at most this


def match_clouds(images: list[Acquisition], clouds: CloudSource) -> list[Path]:
    """The cloud file of every image: same date and time, else the only cloud file of that date."""
    by_date: dict[datetime.date, list[Acquisition]] = {}
    for acquisition in geotiff_files(clouds.folder):
        by_date.setdefault(acquisition.date, []).append(acquisition)
    matched = []
    for image in images:
        candidates = by_date.get(image.date, [])
        timed = [c for c in candidates if image.time and c.time == image.time]
        if len(timed) == 1 or len(candidates) == 1:
            matched.append((timed or candidates)[0].path)
        elif not candidates:
            raise DataError(f"{clouds.folder}: no cloud file for {image.path.name} (date {image.date})")
        else:
            raise DataError(
                f"{clouds.folder}: {len(candidates)} cloud files on {image.date} and none with the time "
                f"{image.time or '(none)'} of {image.path.name}; name each like its image's acquisition"
            )
    return matched


def _clear(path: Path, clouds: CloudSource, reference: Path, georef: dict | None, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool validity of one acquisition from its cloud file."""
    values, cloud_georef, _ = _read_tiff(path)
    if values.shape[0] != 1 or values.shape[1:] != size:
        raise DataError(
            f"{path}: a cloud file needs one band (mask or probability) of {size[0]}x{size[1]} pixels "
            f"as {reference.name}, got shape {values.shape}"
        )
    check_same_grid(path, cloud_georef, reference, georef)
    return values[0] <= clouds.threshold


def combine_same_date(
    bands: list[np.ndarray], clear: list[np.ndarray] | None, rule: str, paths: list[Path]
) -> tuple[np.ndarray, np.ndarray | None]:
    """One (C, H, W) image (and (H, W) validity) from several acquisitions of one date.

    ``first``: the earliest; ``mean``: per pixel, the mean of the clear acquisitions (of all where
    none is clear, or without cloud information), clear where any is; ``clearest``: the acquisition
    with the most clear pixels (ties: the earliest); ``error``: refuse.
    """
    if rule == "error":
        raise DataError(
            f"{paths[1]}: same date as {paths[0].name} (pass --same_date first, mean or clearest "
            "to combine acquisitions of one day)"
        )
    if rule == "clearest" and clear is None:
        raise DataError(
            f"{paths[1]}: --same_date clearest needs cloud information (--cloud_dir) for the acquisitions of that date"
        )
    if rule == "first":
        return bands[0], None if clear is None else clear[0]
    if rule == "clearest":
        best = int(np.argmax([mask.sum() for mask in clear]))
        return bands[best], clear[best]
    stack = np.stack(bands).astype(np.float64)  # (n, C, H, W)
    if clear is None:
        mean = stack.mean(axis=0)
        any_clear = None
    else:
        weight = np.stack(clear).astype(np.float64)  # (n, H, W)
        any_clear = weight.any(axis=0)
        weight[:, ~any_clear] = 1.0  # no clear acquisition at that pixel: the plain mean
        mean = (stack * weight[:, None]).sum(axis=0) / weight.sum(axis=0)[None]  # (n, 1, H, W) -> (C, H, W)
    if np.issubdtype(bands[0].dtype, np.integer):
        mean = np.rint(mean)
    return mean.astype(bands[0].dtype), any_clear


def stage_geotiff_folder(
    folder: str | Path,
    staging: Path,
    exclude: tuple[Path, ...] = (),
    clouds: CloudSource | None = None,
    same_date: str = "error",
) -> Scene:
    """Read every date's GeoTIFF once into ``staging`` (a .npy of shape (T, C, H, W)); memory-map it.

    With ``clouds``, the validity (T, H, W) is staged next to it (``<staging>.valid.npy``).
    """
    files = geotiff_files(Path(folder), exclude)
    cloud_files = match_clouds(files, clouds) if clouds is not None else None
    groups: dict[datetime.date, list[int]] = {}
    for index, acquisition in enumerate(files):
        groups.setdefault(acquisition.date, []).append(index)
    first, georef, _ = _read_tiff(files[0].path)
    reference = files[0].path
    shape = (len(groups), *first.shape)
    staging.parent.mkdir(parents=True, exist_ok=True)
    cube = np.lib.format.open_memmap(staging, mode="w+", dtype=first.dtype, shape=shape)
    valid_path = staging.with_suffix(".valid.npy")
    valid = (
        None
        if clouds is None
        else np.lib.format.open_memmap(valid_path, mode="w+", dtype=np.uint8, shape=(shape[0], *shape[2:]))
    )
    for t, members in enumerate(groups.values()):
        bands, clear = [], [] if clouds is not None else None
        for index in members:
            path = files[index].path
            image, image_georef, _ = (first, georef, None) if index == 0 else _read_tiff(path)
            if image.shape != first.shape or image.dtype != first.dtype:
                raise DataError(
                    f"{path}: {image.dtype} {image.shape} differs from {reference.name} "
                    f"({first.dtype} {first.shape}); every date needs the same bands and size"
                )
            check_same_grid(path, image_georef, reference, georef)
            bands.append(image)
            if clouds is not None:
                clear.append(_clear(cloud_files[index], clouds, reference, georef, first.shape[1:]))
        if len(members) == 1:
            cube[t], day_clear = bands[0], None if clear is None else clear[0]
        else:
            cube[t], day_clear = combine_same_date(bands, clear, same_date, [files[i].path for i in members])
        if valid is not None:
            valid[t] = day_clear
    cube.flush()
    del cube
    if valid is not None:
        valid.flush()
        del valid
        valid = np.load(valid_path, mmap_mode="r")
    cube = np.load(staging, mmap_mode="r")
    return Scene(cube, list(groups), georef, str(folder), valid)


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
    entries = _geokeys(georef)
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
