"""Throughput of the MTLCC loader: TFRecord vs GeoTIFF vs .npy cache (samples/s, MB/s of float32 input).

    python -m bench.data_loading_mtlcc
    python -m bench.data_loading_mtlcc --tiles 24 --epochs 3 --workers 0 2

Synthetic tiles are written in the real formats (48 x 48 px, 46 frames of which ``--dates`` are real,
the rest temporal padding like the 2016 release) into a temporary folder; every row draws 30 random
dates per access (the paper's training setting). ``bench_rows()`` returns (name, samples/s, MB/s)
rows for merging into ``bench/data_loading.py``.
"""

import argparse
import tempfile
import time
from pathlib import Path

from bench.loader_timing import time_loader
from utils.datasets.mtlcc import MTLCCDataset
from utils.datasets.mtlcc_writers import write_mtlcc_like

TILE_SIZE = 48
PADDED_STEPS = 46  # T of the 2016 TFRecords (docs/data_formats.md §2.2)
REAL_DATES = 40
SAMPLE_DATES = 30


def bench_rows(
    n_tiles: int = 16, epochs: int = 2, workers: tuple[int, ...] = (0,), n_dates: int = REAL_DATES
) -> list[tuple[str, float, float]]:
    """(name, samples/s, MB/s) for every source x worker count, plus the one-time cache conversion."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        split = {"train_fold0": tuple(range(1, n_tiles + 1))}
        common = dict(tile_ids=split, size=TILE_SIZE, n_dates=n_dates, return_arrays=False)
        write_mtlcc_like(base / "tfrecord", pad_to=PADDED_STEPS, **common)
        write_mtlcc_like(base / "geotiff", layout="geotiff", **common)
        start = time.perf_counter()
        MTLCCDataset(base / "tfrecord", "train", n_dates=SAMPLE_DATES, cache_dir=base / "cache")
        rows.append(("mtlcc cache conversion (tiles/s)", n_tiles / (time.perf_counter() - start), float("nan")))
        sources = {
            "tfrecord": dict(root=base / "tfrecord"),
            "geotiff": dict(root=base / "geotiff"),
            "npy cache": dict(root=base / "tfrecord", cache_dir=base / "cache"),
        }
        for name, kwargs in sources.items():
            dataset = MTLCCDataset(split="train", n_dates=SAMPLE_DATES, **kwargs)
            for worker_count in workers:
                samples_per_s, mb_per_s = time_loader(dataset, worker_count, epochs)
                rows.append((f"mtlcc {name} {TILE_SIZE}px {SAMPLE_DATES}d w{worker_count}", samples_per_s, mb_per_s))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=16, help="tiles written per layout")
    parser.add_argument("--epochs", type=int, default=2, help="timed passes after one warm-up pass")
    parser.add_argument("--workers", type=int, nargs="+", default=[0], help="DataLoader worker counts")
    args = parser.parse_args()
    for name, samples_per_s, mb_per_s in bench_rows(args.tiles, args.epochs, tuple(args.workers)):
        print(f"{name:40s} {samples_per_s:9.1f} samples/s {mb_per_s:9.1f} MB/s")


if __name__ == "__main__":
    main()
