"""Write small synthetic MTLCC data sets in exactly the real formats (docs/data_formats.md §2).

``layout='tfrecord'`` writes the release: ``data16/<tileid>.tfrecord.gz`` (or ``data17``), one gzipped
``tf.train.Example`` per tile with int64 little-endian byte strings channels last (``x10/data``
T x H x W x 4, ``x20/data`` T x H/2 x W/2 x 6, ``x60/data`` T x H/6 x W/6 x 3, ``labels/data`` T x H x W,
``dates/doy``, ``dates/year``) and int64_list shapes, optionally padded in time to ``pad_to`` frames
with zero frames of day-of-year 0. ``layout='geotiff'`` writes the MTLCC-pytorch tree
``data/<tileid>/<YYYYMMDD>_{10,20,60}m.tif`` (uint16, band-separate, read as (C, H, W)) and
``y.tif`` (uint16 raw ids). Both write ``tileids/*.tileids`` and ``classes.txt`` with the real raw ids.

Imagery comes from :func:`utils.datasets.synthetic.generate_scene` at 10 m for all 13 bands; the 20 m
and 60 m bands are then averaged over 2x2 and 6x6 blocks, so the loader's nearest upsampling is
tested on values that really differ inside a coarse cell's footprint at 10 m. Crop type k becomes
the k-th crop raw id of classes.txt (type 0, background, becomes raw id 0 = unknown).
"""

import datetime
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np

from utils.datasets.mtlcc_sources import (
    CLASSES_FILE, DATE_FORMAT, GEOTIFF_DATA_DIR, LABEL_TIF, MTLCC_BAND_NAMES, MTLCC_CLASSES, MTLCC_RAW_IDS,
    RESOLUTIONS, TFRECORD_SUFFIX, TILEIDS_DIR, TILEIDS_SUFFIX, year_folder,
)
from utils.datasets.synthetic import generate_scene, synthetic_dates
from utils.datasets.tfrecord import write_examples

DEFAULT_TILE_IDS = MappingProxyType({"train_fold0": (1, 2, 3, 4), "test_fold0": (5, 6), "eval": (7, 8)})
SIZE_MULTIPLE = 6  # the 60 m grid: H and W must be divisible by 6
N_CROPS = len(MTLCC_RAW_IDS) - 1
SEED_STRIDE = 1_000_003  # scene seed = seed * SEED_STRIDE + year * YEAR_STRIDE + tile id
YEAR_STRIDE = 100_003


def _tile_dates(tile_seed: int, year: int, n_dates: int) -> list[datetime.date]:
    return synthetic_dates(tile_seed, datetime.date(year, 1, 1), datetime.date(year, 12, 31), n_dates)


def _block_mean(cube: np.ndarray, factor: int) -> np.ndarray:
    """Mean over factor x factor pixel blocks, rounded: (T, C, H, W) -> (T, C, H/f, W/f) int64."""
    steps, channels, height, width = cube.shape
    blocks = cube.reshape(steps, channels, height // factor, factor, width // factor, factor)  # (T, C, h, f, w, f)
    return np.rint(blocks.astype(np.float64).mean(axis=(3, 5))).astype(np.int64)


def _count_for(n_dates, tile_id: int, rng: np.random.Generator) -> int:
    if isinstance(n_dates, Mapping):
        return int(n_dates[tile_id])
    if isinstance(n_dates, tuple):
        return int(rng.integers(n_dates[0], n_dates[1] + 1))
    return int(n_dates)


def make_tile(tile_id: int, size: int, n_dates: int, year: int, seed: int) -> dict:
    """One synthetic tile at native MTLCC resolutions (channels first, int64) and its raw labels."""
    tile_seed = seed * SEED_STRIDE + year * YEAR_STRIDE + tile_id
    dates = _tile_dates(tile_seed, year, n_dates)
    scene = generate_scene(tile_seed, size, size, dates, MTLCC_BAND_NAMES, n_crop_types=N_CROPS)
    reflectance = scene["reflectance"].astype(np.int64)  # (T, 13, H, W) in MTLCC_BAND_NAMES order
    bands, start = {}, 0
    for key, names, factor in RESOLUTIONS:
        cube = reflectance[:, start:start + len(names)]
        bands[key] = cube if factor == 1 else _block_mean(cube, factor)
        start += len(names)
    raw_labels = np.asarray(MTLCC_RAW_IDS, dtype=np.int64)[scene["label"]]  # crop type k -> k-th raw id
    return {"bands": bands, "dates": dates, "raw_label": raw_labels, "label": scene["label"]}


def _write_tfrecord(path: Path, tile: dict, pad_to: int | None) -> None:
    dates, n_steps = tile["dates"], len(tile["dates"])
    total = pad_to if pad_to is not None else n_steps
    if total < n_steps:
        raise ValueError(f"pad_to={pad_to} is smaller than the {n_steps} dates of {path.name}")
    doy = np.zeros(total, dtype="<i8")
    years = np.zeros(total, dtype="<i8")
    doy[:n_steps] = [date.timetuple().tm_yday for date in dates]
    years[:n_steps] = [date.year for date in dates]
    features = {}
    for key, _, _ in RESOLUTIONS:
        cube = tile["bands"][key].transpose(0, 2, 3, 1)  # (T, C, h, w) -> (T, h, w, C)
        padded = np.zeros((total, *cube.shape[1:]), dtype="<i8")
        padded[:n_steps] = cube
        features[f"{key}/data"] = padded.tobytes()
        features[f"{key}/shape"] = np.asarray(padded.shape, dtype=np.int64)
    labels = np.broadcast_to(tile["raw_label"], (total, *tile["raw_label"].shape)).astype("<i8")  # (T, H, W)
    features.update({
        "dates/doy": doy.tobytes(), "dates/year": years.tobytes(), "dates/shape": np.asarray([total], np.int64),
        "labels/data": labels.tobytes(), "labels/shape": np.asarray(labels.shape, dtype=np.int64),
    })
    write_examples(path, [features])


def _write_geotiff(folder: Path, tile: dict) -> None:
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    for frame, date in enumerate(tile["dates"]):
        for key, _, _ in RESOLUTIONS:
            path = folder / f"{date.strftime(DATE_FORMAT)}_{key[1:]}m.tif"  # x20 -> _20m.tif
            tifffile.imwrite(path, tile["bands"][key][frame].astype(np.uint16), photometric="minisblack",
                             planarconfig="separate")
    tifffile.imwrite(folder / LABEL_TIF, tile["raw_label"].astype(np.uint16), photometric="minisblack")


def write_side_files(root: Path, tile_ids: Mapping[str, Sequence[int]]) -> None:
    """``classes.txt`` (the real raw ids and names) and ``tileids/<name>.tileids``."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [f"{raw_id}|{name}" for raw_id, name in zip(MTLCC_RAW_IDS, MTLCC_CLASSES)]
    (root / CLASSES_FILE).write_text("\n".join(lines) + "\n")
    (root / TILEIDS_DIR).mkdir(exist_ok=True)
    for name, ids in tile_ids.items():
        (root / TILEIDS_DIR / f"{name}{TILEIDS_SUFFIX}").write_text("".join(f"{tile_id}\n" for tile_id in ids))


def write_mtlcc_like(
    root: str | Path,
    tile_ids: Mapping[str, Sequence[int]] = DEFAULT_TILE_IDS,
    size: int = 48,
    n_dates: int | tuple[int, int] | Mapping[int, int] = 12,
    year: int = 2016,
    seed: int = 0,
    layout: str = "tfrecord",
    pad_to: int | None = None,
    return_arrays: bool = True,
) -> dict:
    """Write a synthetic MTLCC data set into ``root`` in the real layout.

    Args:
        tile_ids: tileids file stem (``train_fold0``, ``test_fold0``, ``eval``, ...) -> tile ids.
            Every listed id is written (delete files afterwards to simulate missing tiles).
        size: tile side in 10 m pixels (48 or 24 like the release); a multiple of 6.
        n_dates: dates per tile: a number, an inclusive (low, high) range, or {tile id: count}.
        pad_to: TFRecord only: pad every record in time to this many frames (doy 0 frames).
        return_arrays: include the written arrays (for tests) in the result.

    Returns:
        ``{"root", "layout", "year", "tiles": {tile id: {"bands": {x10, x20, x60: int64 (T, C, h, w)},
        "dates", "raw_label" (H, W) raw ids, "label" (H, W) class index}}}`` (tiles empty unless
        ``return_arrays``). Calling it again with another ``year`` adds that year's TFRecords.
    """
    if size % SIZE_MULTIPLE:
        raise ValueError(f"size must be a multiple of {SIZE_MULTIPLE} (the 60 m grid), got {size}")
    if layout not in ("tfrecord", "geotiff"):
        raise ValueError(f"layout must be 'tfrecord' or 'geotiff', got {layout!r}")
    if layout == "geotiff" and pad_to is not None:
        raise ValueError("pad_to applies to TFRecords only (GeoTIFF tiles hold one file per real date)")
    root = Path(root)
    write_side_files(root, tile_ids)
    rng = np.random.default_rng([seed, year])
    tiles = {}
    for tile_id in dict.fromkeys(tile_id for ids in tile_ids.values() for tile_id in ids):
        tile = make_tile(tile_id, size, _count_for(n_dates, tile_id, rng), year, seed)
        if layout == "tfrecord":
            _write_tfrecord(root / year_folder(year) / f"{tile_id}{TFRECORD_SUFFIX}", tile, pad_to)
        else:
            folder = root / GEOTIFF_DATA_DIR / str(tile_id)
            if folder.exists():
                shutil.rmtree(folder)
            _write_geotiff(folder, tile)
        if return_arrays:
            tiles[tile_id] = tile
    return {"root": root, "layout": layout, "year": year, "tiles": tiles}
