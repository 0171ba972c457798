"""Crop map of a whole scene with a fine-tuned STCLN: overlapping sliding windows, bounded memory.

    python predict_STCLN.py --checkpoint checkpoints/finetune/folder/best.tar --geotiff_dir my_scene/ --output_dir maps/
    python predict_STCLN.py --checkpoint best.tar --cube ndvi.npy --dates dates.txt --output_dir maps/ --pixel_size_m 10
    python predict_STCLN.py --checkpoint best.tar --geotiff_dir scene/ --cloud_dir scene_clouds/ --output_dir maps/

The scene is normalised with the statistics of the checkpoint's training folds (read from its
--data_root, which --data_root here can replace), the same temporal subset is applied, and the
model runs on windows of the training crop size every --stride pixels; logits are averaged over
the overlaps (see utils/predict.py). The scene flags are the converter's (several acquisitions on a
date, cloud masks); a model fine-tuned with --drop_invalid ignores the cloudy cells they mark. Writes to --output_dir: class_map.tif (GeoTIFF with the
source's georeferencing; GeoTIFF input) or class_map.npy (cube input), class_map.png (legend),
areas.json and areas.md (pixels, share and hectares per class when the pixel size is known).
"""

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from models import STCLNSegmenter
from utils.args import HelpFormatter
from utils.checkpoint import load_finetuned, load_state_checked
from utils.datasets.protocols import selects_a_date
from utils.datasets.scene import add_scene_args, check_scene_source, pixel_area_m2, read_scene, write_geotiff
from utils.distributed import resolve_device
from utils.errors import CheckpointError, DataError
from utils.figures import plot_class_map
from utils.predict import BLENDS, class_areas, plan_windows, sliding_window_logits, training_context
from utils.report import format_table, write_file_atomic, write_text_atomic
from utils.runner import guarded_main

log = logging.getLogger("stcln")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="fine-tuned checkpoint (best.tar or last.tar of fine-tuning)")
    add_scene_args(parser)
    parser.add_argument("--data_root", type=Path, default=None,
                        help="the training data folder (its dataset.json and statistics); default: the checkpoint's --data_root")
    windows = parser.add_argument_group("sliding windows")
    windows.add_argument("--window", type=int, default=None, help="window side in pixels (default: the training crop size)")
    windows.add_argument("--stride", type=int, default=None, help="pixels between window starts (default: window // 2)")
    windows.add_argument("--blend", choices=BLENDS, default="uniform",
                         help="overlap weights: 'uniform' (plain mean) or 'linear' (less weight near window edges)")
    windows.add_argument("--margin", type=int, default=0,
                         help="ignore this many pixels next to window edges inside the scene (needs stride <= window - 2 margin)")
    windows.add_argument("--batch_size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--pixel_size_m", type=float, default=None,
                        help="pixel side in metres for the area table (default: from the GeoTIFF georeferencing)")
    parser.add_argument("--sta_chunk", type=int, default=0, help="STA queries per chunk (0 = all); exact, bounds memory")
    parser.add_argument("--device", default="auto", help="'auto' (cuda if available, else cpu), 'cuda' or 'cpu'")
    parser.add_argument("--trust_checkpoint", action="store_true",
                        help="allow pickled objects in --checkpoint (only files you trust)")
    parser.add_argument("--output_dir", type=Path, required=True, help="where the map, figure and area table go")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the map outputs already in --output_dir (refused otherwise: a folder describes one scene)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


MAP_OUTPUTS = ("class_map.tif", "class_map.npy", "class_map.png", "areas.json", "areas.md")


def prepare_output_dir(args) -> None:
    """--output_dir as a folder for this scene's map: not a file, writable, and without another
    scene's map unless --overwrite (which removes the old map files first, so none is left behind)."""
    out = args.output_dir
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder (--output_dir)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{out}: cannot create the output folder ({err.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise DataError(f"{out}: the output folder is not writable")
    previous = [name for name in MAP_OUTPUTS if (out / name).exists()]
    if previous and not args.overwrite:
        raise DataError(f"{out}: holds the map of an earlier run ({', '.join(previous)}); choose another "
                        "--output_dir or pass --overwrite to replace it")
    for name in previous:
        (out / name).unlink()


def warn_outside_season(dates: list, training: tuple | None, source: str) -> None:
    """Say so when the scene's dates lie outside the training series' span (another year or season):
    the model maps them, but it never saw such a series."""
    if training is None:
        return
    first, last = training
    outside = [date for date in dates if not first <= date <= last]
    if outside:
        log.warning("%s: %d of the scene's %d dates lie outside the training series (%s to %s), e.g. %s: the map "
                    "describes a season the model was not trained on", source, len(outside), len(dates), first, last,
                    ", ".join(map(str, outside[:3])))


def check_finite(scene, model_drops_invalid: bool) -> None:
    """Refuse NaN/inf values the model would read (all of them, or those on valid cells of a
    --drop_invalid model, which never reads invalid ones), before any window runs."""
    T = scene.cube.shape[0]
    for t in range(T):
        frame = np.asarray(scene.cube[t])  # (C, H, W), one date at a time: bounded memory
        bad = ~np.isfinite(frame).all(axis=0) if np.issubdtype(frame.dtype, np.floating) else None
        if bad is None or not bad.any():
            continue
        if model_drops_invalid and scene.valid is not None:
            bad &= np.asarray(scene.valid[t]) != 0
            if not bad.any():
                continue
        raise DataError(f"{scene.source}: {int(bad.sum())} pixel(s) with NaN or infinite values on {scene.dates[t]} "
                        "(fill them, or mark them cloudy with --cloud_dir/--cloud_cube and map with a "
                        "--drop_invalid model)")


def load_model(args) -> tuple[STCLNSegmenter, dict]:
    ckpt, config = load_finetuned(args.checkpoint, args.trust_checkpoint)
    config.sta_chunk = args.sta_chunk or config.sta_chunk
    model = STCLNSegmenter(config)
    load_state_checked(model, ckpt["model"], str(args.checkpoint))
    return model, ckpt.get("args")


def save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle: np.save would append .npy to the temporary name
        np.save(handle, array, allow_pickle=False)


def write_outputs(args, class_map: np.ndarray, scene, info) -> list[dict]:
    out = args.output_dir
    if args.geotiff_dir is not None:
        write_geotiff(out / "class_map.tif", class_map, scene.georeferencing)
    else:
        write_file_atomic(out / "class_map.npy", lambda tmp: save_npy(tmp, class_map))
    area = args.pixel_size_m ** 2 if args.pixel_size_m else pixel_area_m2(scene.georeferencing)
    rows = class_areas(class_map, info.classes, area)
    plot_class_map(class_map, info.classes, info.colormap, out / "class_map.png", title=f"{scene.source}",
                   shares=[row["share"] for row in rows])
    write_text_atomic(out / "areas.json", json.dumps({"pixel_area_m2": area, "classes": rows}, indent=2))
    columns = ["index", "class", "pixels", "share"] + (["hectares"] if area else [])
    write_text_atomic(out / "areas.md", format_table(rows, columns))
    return rows


def predict(args) -> np.ndarray:
    device = resolve_device(args.device, 0)
    model, ckpt_args = load_model(args)
    context = training_context(ckpt_args, args.data_root)
    window = args.window or context.window
    if not window:
        raise DataError("the checkpoint was trained on whole patches (--crop_size 0): give --window")
    prepare_output_dir(args)
    staging = Path(tempfile.mkdtemp(prefix=".scene.", dir=args.output_dir))
    try:
        scene = read_scene(args, staging / "cube.npy")
        if model.config.use_valid_mask and scene.valid is None:
            log.warning("the model was fine-tuned with --drop_invalid but the scene has no cloud information "
                        "(--cloud_dir/--cloud_cube): every observation is taken as clear")
        T, C, H, W = scene.cube.shape
        check_finite(scene, model.config.use_valid_mask)
        if C != model.config.in_channels:
            raise DataError(f"{scene.source}: {C} bands, the model was trained on {model.config.in_channels}")
        if not selects_a_date(context.temporal, scene.dates):
            raise DataError(f"{scene.source}: no date inside the training run's temporal subset ({context.temporal!r})")
        frames = np.asarray(context.temporal(scene.dates) if context.temporal else range(T), dtype=np.int64)
        warn_outside_season(scene.dates, context.date_range, scene.source)
        days = [(scene.dates[f] - context.reference_date).days for f in frames]
        positions = torch.tensor(days if model.config.positions == "doy" else range(len(frames)), dtype=torch.int64)
        mean, std = context.mean[:, None, None], context.std[:, None, None]

        def read_window(row: int, col: int, h: int, w: int) -> np.ndarray:
            raw = np.asarray(scene.cube[:, :, row:row + h, col:col + w][frames], dtype=np.float32)  # (T', C, h, w)
            return np.nan_to_num((raw - mean) / std)  # non-finite values only on invalid cells (check_finite)

        def read_valid(row: int, col: int, h: int, w: int) -> np.ndarray:
            return np.asarray(scene.valid[:, row:row + h, col:col + w][frames]) != 0  # (T', h, w)

        plan = plan_windows(H, W, window, args.stride or max(1, window // 2), args.blend, args.margin)
        info = context.info
        if len(info.classes) != model.config.num_classes:
            raise CheckpointError(f"{args.checkpoint}: {model.config.num_classes} classes, the training data declares "
                                  f"{len(info.classes)} ({info.classes[:5]}...)")
        class_map = np.zeros((H, W), dtype=np.uint8 if info.num_classes <= 256 else np.int32)

        def keep_rows(first: int, logits: np.ndarray) -> None:
            class_map[first:first + logits.shape[1]] = logits.argmax(axis=0)

        log.info("%dx%d scene, %d dates (%d used), %d windows of %dx%d, stride %s, %s blend", H, W, T, len(frames),
                 plan.n_windows, plan.window_h, plan.window_w, args.stride or window // 2, args.blend)
        sliding_window_logits(model.to(device), read_window, positions, plan, info.num_classes, keep_rows,
                              batch_size=args.batch_size, device=device, progress=not args.no_progress,
                              read_valid=read_valid if scene.valid is not None else None)
        rows = write_outputs(args, class_map, scene, info)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote %s\n%s", args.output_dir, format_table(rows, list(rows[0])))
    return class_map


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    check_scene_source(parser, args)
    if args.batch_size < 1 or args.margin < 0 or (args.window is not None and args.window < 1):
        parser.error("--batch_size and --window must be >= 1 and --margin >= 0")
    if args.stride is not None and args.stride < 1:
        parser.error(f"--stride must be >= 1 (omit it for half a window), got {args.stride}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)
    return guarded_main(lambda: predict(args), None)  # only STCLNError is one line: a bug keeps its traceback


if __name__ == "__main__":
    sys.exit(main())
