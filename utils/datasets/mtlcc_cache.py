"""The one-time ``.npy`` cache of MTLCC tiles, and its command line.

Cache (``cache_dir``): each tile is converted once into ``<cache_dir>/data<yy>/<tileid>.{x10,x20,x60}.npy``
(int16, channels first, at their NATIVE resolution: 2.3x smaller than upsampled, and the upsampling
code is then the same for every source), ``.doy.npy`` (int16, padded frames removed) and
``.label.npy`` (uint8 raw ids), each written atomically, then recorded in ``manifest.json`` (dates
and shape per tile). Tiles in the manifest are read with mmap (only the selected frames) and their
source is never parsed again. Convert everything up front (progress bar) with::

    python -m utils.datasets.mtlcc --root data/MTLCC/480 --cache_dir data/MTLCC/cache --year 2016
"""

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from utils.atomic import write_atomic, write_text_atomic
from utils.datasets.mtlcc_sources import (
    RESOLUTIONS,
    YEARS,
    TileArrays,
    all_listed_tiles,
    detect_layout,
    read_source,
    source_bytes,
    source_path,
    year_folder,
)
from utils.errors import DataError

CACHE_FORMAT = 1
MANIFEST = "manifest.json"
MANIFEST_SAVE_EVERY = 100  # tiles converted between manifest saves (an interrupted conversion resumes)


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
        raise DataError(
            f"{path}: cache format {manifest.get('format') if isinstance(manifest, dict) else None} "
            f"!= {CACHE_FORMAT}; delete the cache folder and convert again"
        )
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
    return {
        "dates": [date.isoformat() for date in tile.dates],
        "shape": list(tile.label.shape),
        "source_bytes": n_source_bytes,
    }


def open_cached(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(
            f"{path}: truncated or unreadable cache file ({' '.join(str(err).split())}); "
            "delete the cache folder and convert again"
        ) from None


def convert(
    root: str | Path, cache_dir: str | Path, year: int, tile_ids: Iterable[int] | None = None, progress: bool = True
) -> dict[str, int]:
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
            converted[str(tile_id)] = write_cache_tile(
                folder, tile_id, read_source(source, layout), source_bytes(source)
            )
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
