"""Time and peak memory of ``predict_STCLN.py`` on a synthetic scene (numbers printed, nothing asserted).

    python -m bench.predict_scene --size 512 --dates 40 --preset paper          # the issue's measurement
    python -m bench.predict_scene --size 64 --dates 40 --preset paper --stride 32

Builds, in a temporary folder, a random int16 scene (T, C, S, S), a small folder data set cut
from it (for the normalisation statistics) and a checkpoint of a randomly initialised model of
the chosen preset (inference cost does not depend on the weights), then runs predict_STCLN.py as
a child process and reports its wall time, CPU time (user + system, all threads) and peak
resident memory (``ru_maxrss`` of children). On a shared machine the CPU time is the steadier figure.
"""

import argparse
import datetime
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models import STCLNConfig, STCLNSegmenter, small_config, tiny_config
from utils.datasets.convert import main as convert_main
from utils.predict import plan_windows

PRESETS = {"paper": STCLNConfig, "small": small_config, "tiny": tiny_config}
STATS_CROP = 96  # 3 x 3 patches of 32 px: enough blocks for 3 folds
REPO = Path(__file__).resolve().parents[1]


def build_inputs(tmp: Path, args) -> dict:
    rng = np.random.default_rng(0)
    cube = rng.integers(0, 5000, size=(args.dates, args.bands, args.size, args.size), dtype=np.int16)
    dates = [datetime.date(2019, 1, 1) + datetime.timedelta(days=7 * t) for t in range(args.dates)]
    np.save(tmp / "cube.npy", cube)
    (tmp / "dates.txt").write_text("\n".join(d.isoformat() for d in dates))
    crop = min(STATS_CROP, args.size)
    np.save(tmp / "stats_cube.npy", cube[:, :, :crop, :crop])
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
    return {"cube": tmp / "cube.npy", "dates": tmp / "dates.txt", "checkpoint": tmp / "model.tar"}


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
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_inputs(Path(tmp), args)
        command = [sys.executable, str(REPO / "predict_STCLN.py"), "--checkpoint", str(paths["checkpoint"]),
                   "--cube", str(paths["cube"]), "--dates", str(paths["dates"]), "--output_dir", str(Path(tmp) / "out"),
                   "--stride", str(args.stride), "--batch_size", str(args.batch_size), "--device", args.device,
                   "--no_progress"]
        start = time.perf_counter()
        subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_mb, cpu_seconds = usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime  # ru_maxrss in kB on Linux
    windows = plan_windows(args.size, args.size, args.window, args.stride).n_windows
    print(f"predict_STCLN.py  scene {args.size}x{args.size}x{args.dates} dates x{args.bands} bands  preset {args.preset}  "
          f"window {args.window} stride {args.stride}  {windows} windows  torch threads {torch.get_num_threads()}")
    print(f"wall {seconds:.1f} s  ({seconds / windows:.2f} s per window incl. start-up)  CPU {cpu_seconds:.1f} s  "
          f"peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
