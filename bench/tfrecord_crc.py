"""CRC32C of a real-sized MTLCC TFRecord: the ``crc32c`` package vs a numpy CRC, and where a tile's read time goes.

    python -m bench.tfrecord_crc
    python -m bench.tfrecord_crc --repeats 5

One 48 x 48 px tile with 46 frames (the padded length of the 2016 release) is written in the real
format; its record payload is about 5.7 MB. Printed per method: milliseconds per payload CRC and MB/s.
Then the full ``read_tfrecord_tile`` (gunzip, CRC checks, protobuf, int64 decode) of the same file.
The numpy CRC is the table-driven, block-parallel implementation this repository used before it
required the ``crc32c`` package; it is kept here only to measure it.
"""

import argparse
import gzip
import tempfile
import time
from pathlib import Path

import numpy as np

from utils.datasets.mtlcc import read_tfrecord_tile
from utils.datasets.mtlcc_writers import write_mtlcc_like
from utils.datasets.tfrecord import crc32c, iter_records

POLY = 0x82F63B78  # CRC32C, reflected
BLOCK = 512  # bytes per block of the block-parallel numpy CRC


def _byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(POLY), table >> 1).astype(np.uint32)
    return table


TABLE = _byte_table()
TABLE_LIST = TABLE.tolist()


def _advance_tables(n_bytes: int) -> list[list[int]]:
    """Four byte tables of the GF(2)-linear map 'advance the register over n_bytes zero bytes'."""
    registers = np.concatenate([np.arange(256, dtype=np.uint32) << np.uint32(8 * k) for k in range(4)])
    for _ in range(n_bytes):
        registers = TABLE[registers & 0xFF] ^ (registers >> 8)
    return [registers[k * 256 : (k + 1) * 256].tolist() for k in range(4)]


def _table16() -> np.ndarray:
    registers = np.arange(1 << 16, dtype=np.uint32)
    for _ in range(2):
        registers = TABLE[registers & 0xFF] ^ (registers >> 8)
    return registers


TABLE16, ADVANCE = _table16(), _advance_tables(BLOCK)


def numpy_crc32c(data: bytes) -> int:
    """Every 512-byte block's CRC at once (two bytes per numpy step), then chained; tail byte by byte."""
    n_blocks = len(data) // BLOCK
    words = np.frombuffer(data, dtype="<u2", count=n_blocks * BLOCK // 2)
    columns = np.ascontiguousarray(words.reshape(n_blocks, -1).T)  # (N/2,) -> (words per block, blocks)
    block_crc = np.zeros(n_blocks, dtype=np.uint32)
    for column in columns:
        block_crc = (block_crc >> 16) ^ TABLE16[(block_crc ^ column) & 0xFFFF]
    register = 0xFFFFFFFF
    t0, t1, t2, t3 = ADVANCE
    for crc in block_crc.tolist():
        register = (
            t0[register & 0xFF] ^ t1[(register >> 8) & 0xFF] ^ t2[(register >> 16) & 0xFF] ^ t3[register >> 24] ^ crc
        )
    for byte in data[n_blocks * BLOCK :]:
        register = TABLE_LIST[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register ^ 0xFFFFFFFF


def best_ms(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timings per method (the best is printed)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        written = write_mtlcc_like(
            Path(folder), tile_ids={"train_fold0": (1,)}, size=48, n_dates=40, pad_to=46, return_arrays=False
        )
        path = Path(written["root"]) / "data16" / "1.tfrecord.gz"
        payload = next(iter_records(path))
        megabytes = len(payload) / 1e6
        assert numpy_crc32c(payload) == crc32c(payload)  # the two agree
        print(
            f"record payload: {megabytes:.2f} MB (48 x 48 px, 46 frames), file {path.stat().st_size / 1e6:.2f} MB gzipped"
        )
        for name, function in (
            ("crc32c package", lambda: crc32c(payload)),
            ("numpy block-parallel", lambda: numpy_crc32c(payload)),
        ):
            ms = best_ms(function, args.repeats)
            print(f"{name:24s} {ms:9.2f} ms per payload  {megabytes / ms * 1000:9.1f} MB/s")
        raw = path.read_bytes()
        print(f"{'gunzip':24s} {best_ms(lambda: gzip.decompress(raw), args.repeats):9.2f} ms")
        print(
            f"{'read_tfrecord_tile':24s} {best_ms(lambda: read_tfrecord_tile(path), args.repeats):9.2f} ms (gunzip, CRCs, parse, decode)"
        )


if __name__ == "__main__":
    main()
