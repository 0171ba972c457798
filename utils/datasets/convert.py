"""Convert a scene you have into the folder format (``--dataset folder``).

    python -m utils.datasets.convert --geotiff_dir my_scene/ --label labels.tif --out data/my_region \\
        --band_names B02 B03 B04 B08 --class_names unlabelled wheat maize --ignore_index 0
    python -m utils.datasets.convert --cube ndvi.npy --dates dates.txt --label labels.npy --out data/ndvi \\
        --band_names NDVI --class_names unlabelled water urban forest crop grass --ignore_index 0

    python -m utils.datasets.convert --geotiff_dir tests/data/eopatch_slovenia/geotiff_folder \
        --label tests/data/eopatch_slovenia/geotiff_folder/labels_LULC.tif \
        --cloud_dir tests/data/eopatch_slovenia/cloud_masks --out data/slovenia --patch_size 8 --fold_block 2

Inputs: (a) a folder of per-acquisition multi-band rasters (GeoTIFF, or any format GDAL reads, e.g.
JPEG 2000; date in each file name) plus an optional label raster (which may lie in the same folder: it
is skipped as a date), read through rasterio strip by strip (nothing is staged), or (b) a numpy
cube (T, C, H, W) with a dates file and an optional label array. Several acquisitions on one
date (neighbouring orbits, two satellites) are combined by ``--same_date`` (default ``mean``: per
pixel, the mean of the day's clear acquisitions). A label raster's nodata value is never a
class: its pixels become ``--ignore_index`` (its own value when that is a class index), unless
``--keep_label_nodata``.

Sentinel-1 (optional): ``--s1a_dir`` / ``--s1d_dir`` name folders of one Sentinel-1 raster per
acquisition (ascending / descending orbit; bands VV and VH; on the optical grid), written as the
further sources ``S1A`` / ``S1D`` of the folder format (``DATA_S1A/S1A_<ID>.npy`` (T_s, 3, P, P)
float32 VV, VH, VV/VH in dB on the radar's own dates, ``dates-S1A`` in metadata.geojson, ``sources``
in dataset.json), cut on the optical patch grid; ``--radar_units db|linear`` and ``--radar_nodata
error|fill`` (utils/datasets/radar.py), read with ``--sources S2 S1`` (or ``S2 S1A``).

    python -m utils.datasets.convert --geotiff_dir s2/ --s1a_dir s1_asc/ --s1d_dir s1_desc/ \
        --radar_units linear --label labels.tif --out data/my_region

Cloud information (optional): ``--cloud_dir`` holds one single-band GeoTIFF per acquisition (a
cloud mask, 1 = cloud, or a cloud probability), matched to the images by the date and time in the
names; ``--cloud_cube`` a (T, H, W) array beside ``--cube``. A cell is valid (clear) where the
value is at most ``--cloud_threshold``. The validity is written per patch as
``VALID/VALID_<ID>.npy`` (T, H, W) uint8 and declared by ``"valid_masks": true`` in dataset.json;
pre-training then never reconstructs an invalid cell, and ``--drop_invalid`` lets fine-tuning and
prediction ignore them (docs/your_region.md).

A one-band NDVI series (a band named ``NDVI``) declares ``ndvi_band``, so the masking's
vegetation gate (paper §2.3) runs on it as on red/NIR data.
The scene is tiled into non-overlapping ``--patch_size`` patches (the last ``H mod P`` rows and
``W mod P`` columns are not written; ``predict_STCLN.py`` still maps them).

Folds by spatial blocks: the patch grid is cut into blocks of ``--fold_block`` x ``--fold_block``
patches separated by one-patch-wide buffer lines (every ``fold_block + 1``-th patch row and
column). Blocks get folds 1..``--n_folds`` (shuffled with ``--seed``, balanced); buffer patches
get fold 0. So two patches of different folds 1..n are never neighbours (not even diagonally):
at least one patch (``--patch_size`` pixels) lies between them, wider than the model's 9x9
receptive field. dataset.json ``splits``: test fold 4, validation fold 5, training folds 1-3,
pre-training on every fold but the test fold (buffers included: unlabelled use only).
"""

import argparse
import datetime
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from utils.args import HelpFormatter
from utils.datasets.folder import DATASET_FILE, VALID_DIR, valid_path
from utils.datasets.pastis import METADATA_FILE, S2_DIR, TARGET_DIR, s2_path, source_path, target_path
from utils.datasets.radar import add_radar_args, check_radar_args, open_radar_sources, radar_folders
from utils.datasets.scene import (
    Scene,
    add_scene_args,
    check_scene_source,
    read_label_file,
    read_scene,
    transform_of,
)
from utils.datasets.sources import data_dir, dates_key
from utils.errors import DataError, STCLNError

log = logging.getLogger("stcln")
BUFFER_FOLD = 0
RED_NIR_CANDIDATES = (("B04", "B08"), ("B4", "B8"), ("red", "nir"), ("RED", "NIR"))
NDVI_BAND_NAMES = ("NDVI", "ndvi")
INTEGER_SCALE = 10_000.0  # Sentinel-2 L2A digital numbers; float data are taken as reflectance


def block_folds(n_rows: int, n_cols: int, block: int, n_folds: int, seed: int) -> np.ndarray:
    """(n_rows, n_cols) fold of every patch: blocks of ``block`` x ``block`` patches, buffers 0.

    Raises:
        DataError: fewer blocks than folds.
    """
    period = block + 1
    rows, cols = np.arange(n_rows), np.arange(n_cols)
    buffer = (rows[:, None] % period == block) | (cols[None, :] % period == block)  # (n_rows, n_cols)
    block_id = (rows[:, None] // period) * ((n_cols + period - 1) // period) + cols[None, :] // period
    ids = np.unique(block_id[~buffer])
    if ids.size < n_folds:
        raise DataError(
            f"--patch_size/--fold_block: the scene holds {ids.size} blocks of patches, fewer than "
            f"--n_folds {n_folds}; use a smaller --fold_block or --patch_size"
        )
    fold_of = np.empty(int(block_id.max()) + 1, dtype=np.int64)
    fold_of[ids[np.random.default_rng(seed).permutation(ids.size)]] = np.arange(ids.size) % n_folds + 1
    return np.where(buffer, BUFFER_FOLD, fold_of[block_id])


def fold_splits(n_folds: int) -> dict[str, list[int]]:
    """Test fold n-1, validation fold n, training folds 1..n-2, pre-training every fold but the test one.

    With 5 folds: test 4 (the paper's PASTIS test fold), validation 5, training 1-3, pre-training 0-3, 5.
    """
    test = n_folds - 1
    return {
        "pretrain": [fold for fold in range(n_folds + 1) if fold != test],
        "train": list(range(1, test)),
        "val": [n_folds],
        "test": [test],
    }


def red_nir(band_names: list[str], red: str | None, nir: str | None, gate: bool) -> tuple[str | None, str | None]:
    """The red/NIR band names: given, else recognised Sentinel-2 names, else none (NDVI gate off)."""
    if not gate:
        return None, None
    if red or nir:
        if not (red in band_names and nir in band_names):
            raise DataError(f"--red_band {red!r} / --nir_band {nir!r} must both be in --band_names {band_names}")
        return red, nir
    for pair in RED_NIR_CANDIDATES:
        if all(name in band_names for name in pair):
            return pair
    return None, None


def label_map(args, scene: Scene) -> tuple[np.ndarray | None, int | None]:
    """The (H, W) label map and the ignore index: --ignore_index, else the label GeoTIFF's nodata value
    (remapped to a new last class when it is no class index and --class_names is not given)."""
    if args.label is None:
        return None, args.ignore_index
    grid = (Path(args.geotiff_dir or "."), scene.georeferencing) if args.geotiff_dir is not None else None
    label, declared = read_label_file(args.label, scene.shape, grid)
    label = label.astype(np.int64)
    ignore = args.ignore_index
    nodata = args.label_nodata
    if nodata is None and declared is not None and not args.keep_label_nodata:
        nodata = declared
        k = len(args.class_names) if args.class_names else None
        if ignore is None:
            if k is not None and not 0 <= declared < k:
                raise DataError(
                    f"{args.label}: GDAL nodata {declared} is no class index of the {k} --class_names; "
                    "pass --ignore_index (the class nodata pixels become) or --keep_label_nodata"
                )
            others = label[label != declared]
            ignore = (
                declared
                if k is not None or declared <= (int(others.max()) + 1 if others.size else 0)
                else int(others.max()) + 1
            )
        log.info(
            "%s: GDAL nodata %d -> class %d (ignored: never trained on nor scored; --keep_label_nodata to keep it)",
            args.label,
            declared,
            ignore,
        )
    elif nodata is not None and ignore is None:
        raise DataError("--label_nodata needs --ignore_index (the class nodata pixels become)")
    if nodata is not None:
        label[label == nodata] = ignore
    k = len(args.class_names) if args.class_names else int(label.max()) + 1
    if label.min() < 0 or label.max() >= k:
        raise DataError(
            f"{args.label}: label values {label.min()}..{label.max()} outside 0..{k - 1} "
            f"(--class_names gives {k} classes)"
        )
    return label, ignore


def ndvi_band(band_names: list[str], red: str | None, gate: bool) -> str | None:
    """The band that *is* NDVI (a one-band NDVI series) when no red/NIR pair is declared."""
    if not gate or red is not None:
        return None
    return next((name for name in band_names if name in NDVI_BAND_NAMES), None)


def dataset_json(args, scene: Scene, label: np.ndarray | None, ignore: int | None, splits: dict) -> dict:
    n_bands = scene.cube.shape[1]
    band_names = args.band_names or scene.band_names or [f"band_{i + 1}" for i in range(n_bands)]
    if len(band_names) != n_bands:
        raise DataError(f"--band_names lists {len(band_names)} names for the {n_bands} bands of {scene.source}")
    red, nir = red_nir(band_names, args.red_band, args.nir_band, not args.no_ndvi_gate)
    ndvi = ndvi_band(band_names, red, not args.no_ndvi_gate)
    if red is None and ndvi is None and not args.no_ndvi_gate:
        log.warning(
            "no red/NIR pair (B04/B08, B4/B8, red/nir) and no NDVI band among --band_names %s: the NDVI gate "
            "of the masking is off (every date may be masked); --red_band/--nir_band declare them",
            band_names,
        )
    classes = None
    if label is not None:
        classes = args.class_names or [
            "nodata" if i == ignore and args.ignore_index is None else f"class_{i}" for i in range(int(label.max()) + 1)
        ]
    for flag, value in (("ignore_index", ignore), ("background_index", args.background_index)):
        if value is not None and (classes is None or not 0 <= value < len(classes)):
            raise DataError(f"--{flag} {value} is not a class index of the {len(classes or ())} classes")
    scale = args.reflectance_scale
    if scale is None:
        scale = INTEGER_SCALE if np.issubdtype(scene.cube.dtype, np.integer) else 1.0
    first = min(other.dates[0] for other in (scene, *scene.sources.values()))
    reference = args.reference_date or datetime.date(first.year, 1, 1).isoformat()
    spec = {
        "band_names": band_names,
        "red_band": red,
        "nir_band": nir,
        "ndvi_band": ndvi,
        "classes": classes,
        "ignore_index": ignore,
        "background_index": args.background_index,
        "valid_masks": scene.valid is not None,
        "reflectance_scale": scale,
        "reflectance_offset": args.reflectance_offset,
        "reference_date": reference,
        "splits": splits,
        "patch_size": args.patch_size,
        "source": scene.source,
        "georeferencing": scene.georeferencing,
    }
    if scene.sources:
        spec["sources"] = {
            name: {
                "band_names": list(radar.band_names),
                "units": "dB",
                "source": radar.source,
                "dates": [date.isoformat() for date in radar.dates],
            }
            for name, radar in scene.sources.items()
        }
    return spec


def _footprint(scene: Scene, row: int, col: int, size: int) -> dict | None:
    transform = transform_of(scene.georeferencing)
    if transform is None:
        return None
    a, b, c, d, e, f = transform
    corners = [(row, col), (row, col + size), (row + size, col + size), (row + size, col), (row, col)]
    ring = [[a * x + b * y + c, d * x + e * y + f] for y, x in corners]
    return {"type": "Polygon", "coordinates": [ring]}


def _label_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.uint8) if num_classes <= np.iinfo(np.uint8).max + 1 else np.dtype(np.int32)


def write_patches(
    root: Path, scene: Scene, label: np.ndarray | None, folds: np.ndarray, size: int, nan_value: float | None
) -> list[dict]:
    """Write every patch's series (and label) in the PASTIS layout; return the GeoJSON features."""
    (root / S2_DIR).mkdir(parents=True)
    if scene.valid is not None:
        (root / VALID_DIR).mkdir()
    if label is not None:
        (root / TARGET_DIR).mkdir()
    dtype = np.float32 if scene.cube.dtype == np.float64 else scene.cube.dtype
    dates = {str(k): int(date.strftime("%Y%m%d")) for k, date in enumerate(scene.dates)}
    further = {  # further sources (Sentinel-1): their own dates, the same patch grid
        name: {str(k): int(date.strftime("%Y%m%d")) for k, date in enumerate(radar.dates)}
        for name, radar in scene.sources.items()
    }
    for name in further:
        (root / data_dir(name)).mkdir()
    lowest = dict.fromkeys(further, np.inf)
    features = []
    clear = np.zeros(scene.cube.shape[0], dtype=np.int64)  # (T,) clear cells written per date
    for (grid_row, grid_col), fold in np.ndenumerate(folds):
        row, col = grid_row * size, grid_col * size
        patch_id = len(features) + 1
        series = np.asarray(scene.cube[:, :, row : row + size, col : col + size]).astype(dtype)  # (T, C, P, P)
        if np.issubdtype(dtype, np.floating) and not np.isfinite(series).all():
            if nan_value is None:
                raise DataError(
                    f"{scene.source}: NaN or infinite values in rows {row}..{row + size - 1}, columns "
                    f"{col}..{col + size - 1} (pass --nan_value to replace them)"
                )
            series = np.nan_to_num(series, nan=nan_value, posinf=nan_value, neginf=nan_value)
        np.save(s2_path(root, patch_id), series)
        for name, radar in scene.sources.items():
            values = np.asarray(radar.cube[:, :, row : row + size, col : col + size])  # (T_s, 3, P, P) float32 dB
            np.save(source_path(root, name, patch_id), values)
            lowest[name] = min(lowest[name], float(values[:, :2].min()))
        if scene.valid is not None:
            valid = np.asarray(scene.valid[:, row : row + size, col : col + size], dtype=np.uint8)  # (T, P, P)
            np.save(valid_path(root, patch_id), valid)
            clear += valid.sum(axis=(1, 2), dtype=np.int64)
        if label is not None:
            np.save(
                target_path(root, patch_id),
                label[row : row + size, col : col + size].astype(_label_dtype(label.max() + 1)),
            )
        features.append(
            {
                "type": "Feature",
                "geometry": _footprint(scene, row, col, size),
                "properties": {"ID_PATCH": patch_id, "Fold": int(fold), "ROW": row, "COL": col, "dates-S2": dates}
                | {dates_key(name): own for name, own in further.items()},
            }
        )
    for name, value in lowest.items():
        if value >= 0:
            log.warning(
                "%s: no negative VV or VH value in the written patches: backscatter in dB is mostly negative; "
                "are the files linear power (--radar_units linear)?",
                name,
            )
    if scene.valid is not None:
        share = clear / (folds.size * size * size)  # (T,) clear share per date over the written patches
        log.info(
            "cloud information: %.1f %% of the written cells clear; %d of %d dates under half clear",
            100 * share.mean(),
            int((share < 0.5).sum()),
            len(share),
        )
    return features


def check_args(args) -> None:
    """What dataset.json would carry wrongly, refused before any file is read (one line each)."""
    if args.band_names and len(set(args.band_names)) != len(args.band_names):
        raise DataError(f"--band_names {args.band_names}: names must be distinct")
    if args.reflectance_scale is not None and not (np.isfinite(args.reflectance_scale) and args.reflectance_scale > 0):
        raise DataError(f"--reflectance_scale {args.reflectance_scale:g} must be a positive number")
    if args.reference_date is not None:
        try:
            datetime.date.fromisoformat(args.reference_date)
        except ValueError:
            raise DataError(f"--reference_date {args.reference_date!r} is not a valid ISO date (YYYY-MM-DD)") from None
    if args.class_names and len(set(args.class_names)) != len(args.class_names):
        raise DataError(f"--class_names {args.class_names}: names must be distinct")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder (--out names the new data set folder)")


def convert(args: argparse.Namespace) -> Path:
    check_args(args)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: exists and is not empty (choose a new --out)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        scene = read_scene(args, exclude=(args.label,) if args.label is not None else ())
        scene.sources = open_radar_sources(
            radar_folders(args), scene, args.radar_units, args.radar_nodata, args.same_date
        )
        height, width = scene.shape
        n_rows, n_cols = height // args.patch_size, width // args.patch_size
        if n_rows == 0 or n_cols == 0:
            raise DataError(
                f"{scene.source}: a {height}x{width} scene holds no {args.patch_size}-px patch (--patch_size)"
            )
        label, ignore = label_map(args, scene)
        folds = block_folds(n_rows, n_cols, args.fold_block, args.n_folds, args.seed)
        spec = dataset_json(args, scene, label, ignore, fold_splits(args.n_folds))
        root = staging / "dataset"
        features = write_patches(root, scene, label, folds, args.patch_size, args.nan_value)
        (root / METADATA_FILE).write_text(json.dumps({"type": "FeatureCollection", "features": features}))
        (root / DATASET_FILE).write_text(json.dumps(spec, indent=2))
        scene.close()
        if out.exists():
            out.rmdir()  # empty (checked above)
        root.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    counts = {int(f): int((folds == f).sum()) for f in np.unique(folds)}
    log.info(
        "wrote %d patches of %d px to %s (patches per fold, 0 = buffer: %s)", folds.size, args.patch_size, out, counts
    )
    return out


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    add_scene_args(parser)
    add_radar_args(parser)
    parser.add_argument_group("scene").add_argument(
        "--label",
        type=Path,
        default=None,
        help="label map (H, W), GeoTIFF or .npy, values = class indices; omit for unlabelled data (may lie inside "
        "--geotiff_dir: it is then not read as a date)",
    )
    meta = parser.add_argument_group("dataset.json")
    meta.add_argument(
        "--band_names",
        nargs="+",
        default=None,
        help="one name per band (default: the GeoTIFF's band descriptions, else band_1..band_C)",
    )
    meta.add_argument("--red_band", default=None, help="red band name (default: B04/B4/red when present)")
    meta.add_argument("--nir_band", default=None, help="near-infrared band name (default: B08/B8/nir when present)")
    meta.add_argument(
        "--no_ndvi_gate", action="store_true", help="declare no red/NIR bands: every date may be masked in pre-training"
    )
    meta.add_argument("--class_names", nargs="+", default=None, help="one name per label value (default class_0..)")
    meta.add_argument(
        "--ignore_index",
        type=int,
        default=None,
        help="label value never trained on nor scored (default: the label GeoTIFF's GDAL nodata)",
    )
    meta.add_argument(
        "--background_index",
        type=int,
        default=None,
        help="class left out of the loss and the paper's scores (as PASTIS background)",
    )
    meta.add_argument(
        "--label_nodata",
        type=int,
        default=None,
        help="label value replaced by --ignore_index (default: the label GeoTIFF's GDAL nodata)",
    )
    meta.add_argument(
        "--keep_label_nodata",
        action="store_true",
        help="keep the label GeoTIFF's GDAL nodata value as an ordinary class",
    )
    meta.add_argument(
        "--reflectance_scale",
        type=float,
        default=None,
        help="raw value / scale = reflectance (default: 10000 for integer data, 1 for float data)",
    )
    meta.add_argument("--reflectance_offset", type=float, default=0.0, help="added to raw values before scaling")
    meta.add_argument(
        "--reference_date", default=None, help="ISO date days are counted from (default: 1 Jan of the first year)"
    )
    meta.add_argument(
        "--nan_value", type=float, default=None, help="replace NaN/inf in float data (default: refuse them)"
    )
    tiling = parser.add_argument_group("tiling and folds")
    tiling.add_argument("--patch_size", type=int, default=128, help="patch side in pixels (PASTIS: 128)")
    tiling.add_argument(
        "--fold_block",
        type=int,
        default=4,
        help="blocks of N x N patches share a fold; one-patch buffers between blocks",
    )
    tiling.add_argument("--n_folds", type=int, default=5, help="folds 1..N (0 = buffer patches)")
    tiling.add_argument("--seed", type=int, default=0, help="seed of the block-to-fold assignment")
    parser.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    check_scene_source(parser, args)
    check_radar_args(parser, args)
    if args.patch_size < 1 or args.fold_block < 1 or args.n_folds < 3:
        parser.error("--patch_size and --fold_block must be >= 1 and --n_folds >= 3")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)
    try:
        convert(args)
    except STCLNError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
