"""Datasets following CONTRACT.md: PASTIS (real format), the embedded synthetic sets (v1, v2), batching, protocols."""

import json
import shutil
import tempfile
from pathlib import Path

from utils.datasets import synthetic_v2
from utils.datasets.collate import pad_collate
from utils.datasets.pastis import (
    PASTIS_BAND_NAMES,
    PASTIS_CLASSES,
    PASTIS_COLORMAP,
    PASTIS_FOLD_SPLITS,
    PASTISDataset,
    read_norm_stats,
    read_pastis_metadata,
)
from utils.datasets.protocols import (
    TemporalSubset,
    authors_pastis_subset,
    label_ratio_subset,
    read_id_list,
)
from utils.datasets.synthetic import (
    BAND_NAMES_ALL,
    N_CROP_TYPES,
    generate_scene,
    synthetic_dates,
)
from utils.datasets.writers import write_pastis_like
from utils.errors import DataError

__all__ = [
    "BAND_NAMES_ALL", "N_CROP_TYPES", "PASTIS_BAND_NAMES", "PASTIS_CLASSES", "PASTIS_COLORMAP", "PASTIS_FOLD_SPLITS",
    "PASTISDataset", "TemporalSubset", "authors_pastis_subset", "build_pastis_synthetic", "generate_scene",
    "label_ratio_subset", "pad_collate", "read_id_list", "read_norm_stats", "read_pastis_metadata",
    "synthetic_dates", "synthetic_v2", "write_pastis_like",
]

COMPLETE_MARKER = "COMPLETE.json"  # written last: its presence means the cache is whole


def build_pastis_synthetic(
    root: str | Path,
    n_patches: int,
    size: int,
    n_dates: tuple[int, int],
    seed: int = 0,
    n_crop_types: int | None = None,
    version: int = 2,
) -> Path:
    """Write a synthetic data set (PASTIS format) into ``root`` once and return ``root``.

    ``version`` 2 (default) is the realistic benchmark of :mod:`utils.datasets.synthetic_v2`;
    version 1 is the original demo generator, kept unchanged for comparison. Sizes come from the
    per-version table ``SYNTHETIC_PASTIS`` in ``utils/data.py``. The set is written into a
    temporary sibling folder and renamed, so an interrupted build never looks complete; a
    ``COMPLETE.json`` marker holding the parameters (version included) is the cache key.

    Raises:
        DataError: ``root`` holds a set built with other parameters (or another version).
    """
    root = Path(root)
    params = {"n_patches": n_patches, "size": size, "n_dates": list(n_dates), "seed": seed, "n_crop_types": n_crop_types,
              "version": version}
    marker = root / COMPLETE_MARKER
    if marker.is_file():
        if json.loads(marker.read_text()) != params:
            raise DataError(f"{marker}: cached synthetic set was built with other parameters; "
                            f"delete {root} or pick another --data_root")
        return root
    if root.exists() and any(root.iterdir()):
        raise DataError(f"{root}: folder exists, is not empty and has no {COMPLETE_MARKER}; refusing to overwrite")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        write_pastis_like(staging, n_patches=n_patches, size=size, n_dates=tuple(n_dates), seed=seed,
                          n_crop_types=n_crop_types, return_arrays=False, version=version)
        (staging / COMPLETE_MARKER).write_text(json.dumps(params))
        if root.exists():
            root.rmdir()  # empty (checked above)
        staging.rename(root)
    except OSError:  # another process may have finished first
        if not (root / COMPLETE_MARKER).is_file():
            raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return root
