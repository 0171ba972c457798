"""Timing one DataLoader over a data set: the measurement bench/data_loading.py and
bench/data_loading_mtlcc.py share."""

import time

from torch.utils.data import DataLoader, Dataset

from utils.datasets import pad_collate

BYTES_PER_MB = 1e6
FLOAT32_BYTES = 4
BATCH_SIZE = 4


def time_loader(dataset: Dataset, workers: int, epochs: int) -> tuple[float, float]:
    """Samples/s and MB/s over ``epochs`` timed passes after one warm-up pass."""
    loader = DataLoader(
        dataset, batch_size=BATCH_SIZE, num_workers=workers, collate_fn=pad_collate, persistent_workers=workers > 0
    )
    for _ in loader:  # warm-up: worker start, page cache
        pass
    samples = n_bytes = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            samples += len(batch["id"])
            n_bytes += batch["image"].numel() * FLOAT32_BYTES
    elapsed = time.perf_counter() - start
    return samples / elapsed, n_bytes / BYTES_PER_MB / elapsed
