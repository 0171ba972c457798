"""Convert a scene you have into the folder format (``--dataset folder``).

    python -m utils.datasets.convert --geotiff_dir my_scene/ --label labels.tif --out data/my_region \\
        --band_names B02 B03 B04 B08 --class_names unlabelled wheat maize --ignore_index 0
    python -m utils.datasets.convert --cube ndvi.npy --dates dates.txt --label labels.npy --out data/ndvi \\
        --band_names NDVI --class_names unlabelled water urban forest crop grass --ignore_index 0

Inputs: (a) a folder of per-date multi-band GeoTIFFs (date in each file name) plus an optional
label GeoTIFF, or (b) a numpy cube (T, C, H, W) with a dates file and an optional label array.
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

from utils.datasets.folder import DATASET_FILE
from utils.datasets.pastis import METADATA_FILE, S2_DIR, TARGET_DIR, s2_path, target_path
from utils.datasets.scene import check_scene_source, Scene, affine, open_cube, read_label_file, stage_geotiff_folder
from utils.errors import DataError, STCLNError

log = logging.getLogger("stcln")
BUFFER_FOLD = 0
RED_NIR_CANDIDATES = (("B04", "B08"), ("B4", "B8"), ("red", "nir"), ("RED", "NIR"))
INTEGER_SCALE = 10_000.0  # Sentinel-2 L2A digital numbers; float data are taken as reflectance
STAGING_CUBE = "scene_cube.npy"


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
        raise DataError(f"--patch_size/--fold_block: the scene holds {ids.size} blocks of patches, fewer than "
                        f"--n_folds {n_folds}; use a smaller --fold_block or --patch_size")
    fold_of = np.empty(int(block_id.max()) + 1, dtype=np.int64)
    fold_of[ids[np.random.default_rng(seed).permutation(ids.size)]] = np.arange(ids.size) % n_folds + 1
    return np.where(buffer, BUFFER_FOLD, fold_of[block_id])


def fold_splits(n_folds: int) -> dict[str, list[int]]:
    """Test fold n-1, validation fold n, training folds 1..n-2, pre-training every fold but the test one.

    With 5 folds: test 4 (the paper's PASTIS test fold), validation 5, training 1-3, pre-training 0-3, 5.
    """
    test = n_folds - 1
    return {"pretrain": [fold for fold in range(n_folds + 1) if fold != test], "train": list(range(1, test)),
            "val": [n_folds], "test": [test]}


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


def label_map(args, scene: Scene) -> np.ndarray | None:
    if args.label is None:
        return None
    label = read_label_file(args.label, scene.shape).astype(np.int64)
    if args.label_nodata is not None:
        if args.ignore_index is None:
            raise DataError("--label_nodata needs --ignore_index (the class nodata pixels become)")
        label[label == args.label_nodata] = args.ignore_index
    k = len(args.class_names) if args.class_names else int(label.max()) + 1
    if label.min() < 0 or label.max() >= k:
        raise DataError(f"{args.label}: label values {label.min()}..{label.max()} outside 0..{k - 1} "
                        f"(--class_names gives {k} classes)")
    return label


def dataset_json(args, scene: Scene, label: np.ndarray | None, splits: dict) -> dict:
    n_bands = scene.cube.shape[1]
    band_names = args.band_names or [f"band_{i + 1}" for i in range(n_bands)]
    if len(band_names) != n_bands:
        raise DataError(f"--band_names lists {len(band_names)} names for the {n_bands} bands of {scene.source}")
    red, nir = red_nir(band_names, args.red_band, args.nir_band, not args.no_ndvi_gate)
    classes = None
    if label is not None:
        classes = args.class_names or [f"class_{i}" for i in range(int(label.max()) + 1)]
    for flag in ("ignore_index", "background_index"):
        value = getattr(args, flag)
        if value is not None and (classes is None or not 0 <= value < len(classes)):
            raise DataError(f"--{flag} {value} is not a class index of the {len(classes or ())} classes")
    scale = args.reflectance_scale
    if scale is None:
        scale = INTEGER_SCALE if np.issubdtype(scene.cube.dtype, np.integer) else 1.0
    reference = args.reference_date or datetime.date(scene.dates[0].year, 1, 1).isoformat()
    return {
        "band_names": band_names, "red_band": red, "nir_band": nir, "classes": classes,
        "ignore_index": args.ignore_index, "background_index": args.background_index,
        "reflectance_scale": scale, "reflectance_offset": args.reflectance_offset, "reference_date": reference,
        "splits": splits, "patch_size": args.patch_size, "source": scene.source,
        "georeferencing": scene.georeferencing,
    }


def _footprint(scene: Scene, row: int, col: int, size: int) -> dict | None:
    transform = affine(scene.georeferencing)
    if transform is None:
        return None
    a, b, c, d, e, f = transform
    corners = [(row, col), (row, col + size), (row + size, col + size), (row + size, col), (row, col)]
    ring = [[a * x + b * y + c, d * x + e * y + f] for y, x in corners]
    return {"type": "Polygon", "coordinates": [ring]}


def _label_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.uint8) if num_classes <= np.iinfo(np.uint8).max + 1 else np.dtype(np.int32)


def write_patches(root: Path, scene: Scene, label: np.ndarray | None, folds: np.ndarray, size: int,
                  nan_value: float | None) -> list[dict]:
    """Write every patch's series (and label) in the PASTIS layout; return the GeoJSON features."""
    (root / S2_DIR).mkdir(parents=True)
    if label is not None:
        (root / TARGET_DIR).mkdir()
    dtype = np.float32 if scene.cube.dtype == np.float64 else scene.cube.dtype
    dates = {str(k): int(date.strftime("%Y%m%d")) for k, date in enumerate(scene.dates)}
    features = []
    for (grid_row, grid_col), fold in np.ndenumerate(folds):
        row, col = grid_row * size, grid_col * size
        patch_id = len(features) + 1
        series = np.asarray(scene.cube[:, :, row:row + size, col:col + size]).astype(dtype)  # (T, C, P, P)
        if np.issubdtype(dtype, np.floating) and not np.isfinite(series).all():
            if nan_value is None:
                raise DataError(f"{scene.source}: NaN or infinite values in rows {row}..{row + size - 1}, columns "
                                f"{col}..{col + size - 1} (pass --nan_value to replace them)")
            series = np.nan_to_num(series, nan=nan_value, posinf=nan_value, neginf=nan_value)
        np.save(s2_path(root, patch_id), series)
        if label is not None:
            np.save(target_path(root, patch_id), label[row:row + size, col:col + size].astype(_label_dtype(label.max() + 1)))
        features.append({"type": "Feature", "geometry": _footprint(scene, row, col, size), "properties": {
            "ID_PATCH": patch_id, "Fold": int(fold), "ROW": row, "COL": col, "dates-S2": dates}})
    return features


def convert(args: argparse.Namespace) -> Path:
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: exists and is not empty (choose a new --out)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if args.geotiff_dir is not None:
            scene = stage_geotiff_folder(args.geotiff_dir, staging / STAGING_CUBE)
        else:
            scene = open_cube(args.cube, args.dates)
        height, width = scene.shape
        n_rows, n_cols = height // args.patch_size, width // args.patch_size
        if n_rows == 0 or n_cols == 0:
            raise DataError(f"{scene.source}: a {height}x{width} scene holds no {args.patch_size}-px patch (--patch_size)")
        label = label_map(args, scene)
        folds = block_folds(n_rows, n_cols, args.fold_block, args.n_folds, args.seed)
        spec = dataset_json(args, scene, label, fold_splits(args.n_folds))
        root = staging / "dataset"
        features = write_patches(root, scene, label, folds, args.patch_size, args.nan_value)
        (root / METADATA_FILE).write_text(json.dumps({"type": "FeatureCollection", "features": features}))
        (root / DATASET_FILE).write_text(json.dumps(spec, indent=2))
        del scene
        if out.exists():
            out.rmdir()  # empty (checked above)
        root.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    counts = {int(f): int((folds == f).sum()) for f in np.unique(folds)}
    log.info("wrote %d patches of %d px to %s (patches per fold, 0 = buffer: %s)", folds.size, args.patch_size, out, counts)
    return out


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source = parser.add_argument_group("source (one of)")
    source.add_argument("--geotiff_dir", type=Path, default=None,
                        help="folder of per-date multi-band GeoTIFFs, YYYYMMDD or YYYY-MM-DD in each file name")
    source.add_argument("--cube", type=Path, default=None, help="numpy .npy array (T, C, H, W)")
    source.add_argument("--dates", type=Path, default=None, help="with --cube: one date per line (or a JSON list)")
    source.add_argument("--label", type=Path, default=None,
                        help="label map (H, W), GeoTIFF or .npy, values = class indices; omit for unlabelled data")
    meta = parser.add_argument_group("dataset.json")
    meta.add_argument("--band_names", nargs="+", default=None, help="one name per band (default band_1..band_C)")
    meta.add_argument("--red_band", default=None, help="red band name (default: B04/B4/red when present)")
    meta.add_argument("--nir_band", default=None, help="near-infrared band name (default: B08/B8/nir when present)")
    meta.add_argument("--no_ndvi_gate", action="store_true",
                      help="declare no red/NIR bands: every date may be masked in pre-training")
    meta.add_argument("--class_names", nargs="+", default=None, help="one name per label value (default class_0..)")
    meta.add_argument("--ignore_index", type=int, default=None, help="label value never trained on nor scored")
    meta.add_argument("--background_index", type=int, default=None,
                      help="class left out of the loss and the paper's scores (as PASTIS background)")
    meta.add_argument("--label_nodata", type=int, default=None, help="label value replaced by --ignore_index")
    meta.add_argument("--reflectance_scale", type=float, default=None,
                      help="raw value / scale = reflectance (default: 10000 for integer data, 1 for float data)")
    meta.add_argument("--reflectance_offset", type=float, default=0.0, help="added to raw values before scaling")
    meta.add_argument("--reference_date", default=None, help="ISO date days are counted from (default: 1 Jan of the first year)")
    meta.add_argument("--nan_value", type=float, default=None, help="replace NaN/inf in float data (default: refuse them)")
    tiling = parser.add_argument_group("tiling and folds")
    tiling.add_argument("--patch_size", type=int, default=128, help="patch side in pixels (PASTIS: 128)")
    tiling.add_argument("--fold_block", type=int, default=4,
                        help="blocks of N x N patches share a fold; one-patch buffers between blocks")
    tiling.add_argument("--n_folds", type=int, default=5, help="folds 1..N (0 = buffer patches)")
    tiling.add_argument("--seed", type=int, default=0, help="seed of the block-to-fold assignment")
    parser.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    check_scene_source(parser, args)
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
