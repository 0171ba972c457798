"""Time, peak memory and disk size of writing a synthetic PASTIS-format set (default: the full v2 set).

    python -m bench.synthetic_generation                       # v2 full: 1,250 patches of 32x32 px
    python -m bench.synthetic_generation --version 1 --size smoke

CPU seconds are the process's own (one core: run with OMP_NUM_THREADS=1); wall seconds also count
waiting on a busy machine. The set is written to a temporary folder and deleted.
"""

import argparse
import resource
import tempfile
import time
from pathlib import Path

from utils.data import SYNTHETIC_PASTIS
from utils.datasets import build_pastis_synthetic

BYTES_PER_MB = 1e6
KB_PER_MB = 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", type=int, choices=tuple(SYNTHETIC_PASTIS), default=2)
    parser.add_argument("--size", choices=("full", "smoke"), default="full")
    args = parser.parse_args()
    params = SYNTHETIC_PASTIS[args.version][args.size]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "set"
        wall, cpu = time.perf_counter(), time.process_time()
        build_pastis_synthetic(root, version=args.version, **params)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        disk = sum(path.stat().st_size for path in root.rglob("*") if path.is_file())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KB_PER_MB
    print(f"synthetic v{args.version} {args.size} {params}: cpu {cpu:.1f} s, wall {wall:.1f} s, "
          f"disk {disk / BYTES_PER_MB:.0f} MB, peak memory {peak:.0f} MB")


if __name__ == "__main__":
    main()
