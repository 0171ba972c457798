"""Throughput of the data loaders: samples/s and MB/s (of float32 model input) per configuration.

    python -m bench.data_loading                         # PASTIS-format set written to a temp dir
    python -m bench.data_loading --patches 16 --size 128 --epochs 2

Rows are (name, dataset factory) pairs in ``rows()``; add another data set by appending its
factory (it receives the generated root folder). Each row is read through a DataLoader with
``pad_collate`` for every worker count in ``--workers``; the first epoch is a warm-up.
"""

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

from torch.utils.data import Dataset

from bench.loader_timing import BATCH_SIZE, time_loader
from utils.datasets import PASTISDataset, write_pastis_like

TRAIN_FOLDS = (1, 2, 3)
CROP = 32


def rows() -> list[tuple[str, Callable[[Path], Dataset]]]:
    """(name, factory(root) -> Dataset) for every configuration to time."""

    def pastis(**kwargs) -> Callable[[Path], Dataset]:
        return lambda root: PASTISDataset(root, folds=TRAIN_FOLDS, **kwargs)

    return [
        ("pastis full mmap", pastis(mmap=True)),
        ("pastis full read", pastis(mmap=False)),
        (f"pastis {CROP}px random mmap", pastis(crop_size=CROP, crop_mode="random", mmap=True)),
        (f"pastis {CROP}px random read", pastis(crop_size=CROP, crop_mode="random", mmap=False)),
        (f"pastis {CROP}px grid mmap", pastis(crop_size=CROP, crop_mode="grid", mmap=True)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=20, help="patches written (over 5 folds)")
    parser.add_argument("--size", type=int, default=128, help="patch side in px (128 as the release)")
    parser.add_argument("--dates", type=int, nargs=2, default=(38, 61), help="min and max T per tile")
    parser.add_argument("--epochs", type=int, default=3, help="timed passes per row")
    parser.add_argument("--workers", type=int, nargs="+", default=(0, 2), help="DataLoader worker counts")
    parser.add_argument("--skip_mtlcc", action="store_true", help="PASTIS rows only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_pastis_like(root, n_patches=args.patches, size=args.size, n_dates=tuple(args.dates), return_arrays=False)
        print(
            f"{args.patches} patches of {args.size}x{args.size} px, T in {args.dates}, batch {BATCH_SIZE}, "
            f"folds {TRAIN_FOLDS}"
        )
        print(f"{'configuration':<28} {'workers':>7} {'samples':>7} {'samples/s':>10} {'MB/s':>8}")
        for name, factory in rows():
            dataset = factory(root)
            for workers in args.workers:
                rate, megabytes = time_loader(dataset, workers, args.epochs)
                print(f"{name:<28} {workers:>7} {len(dataset):>7} {rate:>10.1f} {megabytes:>8.1f}")
    if not args.skip_mtlcc:
        from bench.data_loading_mtlcc import bench_rows

        print("\nMTLCC, 48x48 tiles, 30 random dates per access")
        print(f"{'source':<36} {'samples/s':>10} {'MB/s':>8}")
        for name, rate, megabytes in bench_rows(workers=tuple(args.workers)):
            print(f"{name:<36} {rate:>10.1f} {megabytes:>8.1f}")


if __name__ == "__main__":
    main()
