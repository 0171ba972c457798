"""Mapping throughput of ``predict_STCLN.py``: windows/s and km^2/hour, fp32 and bf16 side by side.

    python -m bench.predict_scene                                   # 512 x 512 px, 40 dates, paper model, CPU
    python -m bench.predict_scene --device cuda --size 2048         # a GPU (the same benchmark)
    python -m bench.predict_scene --device cpu --smoke              # seconds: the plumbing only (CI)

Builds, in a temporary folder, a random int16 scene as a user has it (one 10-band GeoTIFF per date,
10 m pixels in UTM), a small folder data set cut from it (normalisation statistics) and a
checkpoint of a randomly initialised model of the chosen preset (inference cost does not depend on
the weights). Then runs predict_STCLN.py as a child process once per precision (fp32, then --amp),
in the same run, and prints for each: windows/s and km^2/hour while mapping (the rate
predict_STCLN.py logs, raster reading included, start-up not), the wall time with start-up, CPU time
and peak memory of the child; then the bf16/fp32 speed ratio
and the estimate for one Sentinel-2 tile (10,980 x 10,980 px = 12,056 km^2) at the measured rate,
stated as an estimate. Nothing is asserted.
"""

import argparse
import datetime
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch

from models import STCLNConfig, STCLNSegmenter, small_config, tiny_config
from utils.datasets.convert import main as convert_main
from utils.predict import plan_windows

PRESETS = {"paper": STCLNConfig, "small": small_config, "tiny": tiny_config}
STATS_CROP = 96  # 3 x 3 patches of 32 px: enough blocks for 3 folds
PIXEL_M = 10.0
S2_TILE_PX = 10_980
REPO = Path(__file__).resolve().parents[1]


def build_inputs(tmp: Path, args) -> dict:
    """The scene as a GeoTIFF folder, the statistics data set and the checkpoint."""
    rng = np.random.default_rng(0)
    dates = [datetime.date(2019, 1, 1) + datetime.timedelta(days=7 * t) for t in range(args.dates)]
    scene = tmp / "scene"
    scene.mkdir()
    profile = {"driver": "GTiff", "height": args.size, "width": args.size, "count": args.bands, "dtype": "int16",
               "crs": "EPSG:32633", "transform": rasterio.Affine(PIXEL_M, 0, 500_000, 0, -PIXEL_M, 5_000_000),
               "tiled": True, "blockxsize": 256, "blockysize": 256}
    crop = min(STATS_CROP, args.size)
    stats = np.empty((args.dates, args.bands, crop, crop), dtype=np.int16)
    for t, date in enumerate(dates):
        image = rng.integers(0, 5000, size=(args.bands, args.size, args.size), dtype=np.int16)  # (C, H, W)
        with rasterio.open(scene / f"S2_{date:%Y%m%d}.tif", "w", **profile) as dataset:
            dataset.write(image)
        stats[t] = image[:, :crop, :crop]
    np.save(tmp / "stats_cube.npy", stats)
    (tmp / "dates.txt").write_text("\n".join(d.isoformat() for d in dates))
    np.save(tmp / "stats_label.npy", rng.integers(0, args.classes, size=(crop, crop)))
    status = convert_main(["--cube", str(tmp / "stats_cube.npy"), "--dates", str(tmp / "dates.txt"), "--out",
                           str(tmp / "ds"), "--label", str(tmp / "stats_label.npy"),
                           "--class_names", *[f"c{k}" for k in range(args.classes)], "--patch_size", str(crop // 3),
                           "--fold_block", "1", "--n_folds", "3"])
    if status:
        sys.exit(status)
    config = PRESETS[args.preset](in_channels=args.bands, num_classes=args.classes)
    torch.save({"model": STCLNSegmenter(config).state_dict(), "model_config": config.to_dict(),
                "args": {"dataset": "folder", "data_root": str(tmp / "ds"), "train_folds": [1], "crop_size": args.window,
                         "temporal": None, "smoke": False}}, tmp / "model.tar")
    return {"scene": scene, "checkpoint": tmp / "model.tar"}


def run_once(paths: dict, out: Path, args, amp: bool) -> dict:
    """One predict_STCLN.py child: wall seconds, its CPU seconds and peak resident memory."""
    command = [sys.executable, str(REPO / "predict_STCLN.py"), "--checkpoint", str(paths["checkpoint"]),
               "--geotiff_dir", str(paths["scene"]), "--output_dir", str(out), "--stride", str(args.stride),
               "--batch_size", str(args.batch_size), "--device", args.device, "--no_progress"] + (["--amp"] if amp else [])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"predict_STCLN.py failed ({result.returncode}):\n{result.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rate = re.search(r"([0-9.]+) windows/s, reading included", result.stdout)
    precision = "fp32"
    if amp:
        precision = "bf16" if "bf16 autocast" in result.stdout + result.stderr else "fp32 (no native bf16)"
    return {"precision": precision, "seconds": seconds, "rate": float(rate.group(1)), "cpu": cpu,
            "peak_mb": after.ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="scene side in pixels")
    parser.add_argument("--dates", type=int, default=40, help="dates T")
    parser.add_argument("--bands", type=int, default=10, help="bands C")
    parser.add_argument("--classes", type=int, default=20, help="classes K")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper", help="model size")
    parser.add_argument("--window", type=int, default=32, help="window = training crop size")
    parser.add_argument("--stride", type=int, default=16, help="window stride (predict_STCLN.py default: window // 2)")
    parser.add_argument("--batch_size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--device", default="cpu", help="device of predict_STCLN.py")
    parser.add_argument("--smoke", action="store_true", help="a 64 px scene, 6 dates, tiny model: seconds (CI)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.dates, args.preset, args.classes = 64, 6, "tiny", 5
    windows = plan_windows(args.size, args.size, args.window, args.stride).n_windows
    km2 = (args.size * PIXEL_M / 1000) ** 2
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_inputs(Path(tmp), args)
        runs = [run_once(paths, Path(tmp) / f"out_{amp}", args, amp) for amp in (False, True)]
    print(f"predict_STCLN.py on {args.device}: scene {args.size}x{args.size} px ({km2:.2f} km^2 at {PIXEL_M:g} m), "
          f"{args.dates} dates x {args.bands} bands, preset {args.preset}, window {args.window} stride {args.stride}, "
          f"{windows} windows, batch {args.batch_size}, torch threads {torch.get_num_threads()}")
    for run in runs:
        print(f"  {run['precision']:<22} {run['rate']:7.2f} windows/s = {km2 * run['rate'] / windows * 3600:9.2f} km^2/h "
              f"while mapping;  wall {run['seconds']:7.1f} s with start-up;  CPU {run['cpu']:7.1f} s;  "
              f"peak RSS {run['peak_mb']:.0f} MB")
    fp32, bf16 = runs
    tile_windows = plan_windows(S2_TILE_PX, S2_TILE_PX, args.window, args.stride).n_windows
    print(f"  speed-up of --amp while mapping: {bf16['rate'] / fp32['rate']:.2f}x")
    for run in runs:
        hours = tile_windows / run["rate"] / 3600
        print(f"  estimate, one Sentinel-2 tile ({S2_TILE_PX} x {S2_TILE_PX} px, {tile_windows} windows) at the "
              f"{run['precision']} rate: {hours:.1f} h on this device (extrapolated, not measured)")


if __name__ == "__main__":
    main()
