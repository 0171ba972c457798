"""Datasets following CONTRACT.md: PASTIS (real format), the embedded synthetic sets (v1, v2), batching, protocols."""

import json
import os
import shutil
import tempfile
from pathlib import Path

from utils.atomic import write_text_atomic
from utils.datasets import synthetic_radar, synthetic_v2
from utils.datasets.collate import pad_collate
from utils.datasets.pastis import (
    PASTIS_BAND_NAMES,
    PASTIS_CLASSES,
    PASTIS_COLORMAP,
    PASTIS_FOLD_SPLITS,
    METADATA_FILE,
    PASTISDataset,
    PatchMeta,
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
from utils.datasets.sources import dates_key, norm_file
from utils.datasets.writers import _date_dict, write_pastis_like, write_radar
from utils.errors import DataError

__all__ = [
    "BAND_NAMES_ALL", "N_CROP_TYPES", "PASTIS_BAND_NAMES", "PASTIS_CLASSES", "PASTIS_COLORMAP", "PASTIS_FOLD_SPLITS",
    "PASTISDataset", "TemporalSubset", "authors_pastis_subset", "build_pastis_synthetic", "generate_scene",
    "label_ratio_subset", "pad_collate", "read_id_list", "read_norm_stats", "read_pastis_metadata",
    "synthetic_dates", "synthetic_v2", "write_pastis_like", "add_synthetic_radar", "synthetic_radar", "write_radar",
]

COMPLETE_MARKER = "COMPLETE.json"  # written last: its presence means the cache is whole
RADAR_MARKER = "COMPLETE_S1.json"  # the same for the radar added to a cached set (its own key)
RADAR_GENERATOR = 1  # bump when utils/datasets/synthetic_radar.py renders differently: caches are rebuilt


def build_pastis_synthetic(
    root: str | Path,
    n_patches: int,
    size: int,
    n_dates: tuple[int, int],
    seed: int = 0,
    n_crop_types: int | None = None,
    version: int = 2,
    radar: bool = False,
    radar_revisit: int = synthetic_radar.RADAR_REVISIT_DAYS,
    cloud_fraction: float | None = None,
) -> Path:
    """Write a synthetic data set (PASTIS format) into ``root`` once and return ``root``.

    ``radar`` (version 2): also make sure the PASTIS-R Sentinel-1 series are there
    (:func:`add_synthetic_radar`); a cached optical set stays valid and is never rewritten.

    ``version`` 2 (default) is the realistic benchmark of :mod:`utils.datasets.synthetic_v2`;
    version 1 is the original demo generator, kept unchanged for comparison. Sizes come from the
    per-version table ``SYNTHETIC_PASTIS`` in ``utils/data.py``. The set is written into a
    temporary sibling folder and renamed, so an interrupted build never looks complete; a
    ``COMPLETE.json`` marker holding the parameters (version included) is the cache key.
    ``cloud_fraction`` (version 2; None: the generator's 0.35) is one of them only when given, so the
    markers of sets written before it existed still match.

    Raises:
        DataError: ``root`` holds a set built with other parameters (or another version).
    """
    root = Path(root)
    params = {"n_patches": n_patches, "size": size, "n_dates": list(n_dates), "seed": seed, "n_crop_types": n_crop_types,
              "version": version}
    if cloud_fraction is not None:
        params["cloud_fraction"] = cloud_fraction
    _build_optical(root, params)
    if radar:
        add_synthetic_radar(root, size=size, seed=seed, version=version, revisit=radar_revisit)
    return root


def _build_optical(root: Path, params: dict) -> None:
    """The optical (S2) part of :func:`build_pastis_synthetic`, keyed by ``COMPLETE.json``."""
    marker = root / COMPLETE_MARKER
    if marker.is_file():
        if json.loads(marker.read_text()) != params:
            raise DataError(f"{marker}: cached synthetic set was built with other parameters; "
                            f"delete {root} or pick another --data_root")
        return
    if root.exists() and any(root.iterdir()):
        raise DataError(f"{root}: folder exists, is not empty and has no {COMPLETE_MARKER}; refusing to overwrite")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        write_pastis_like(staging, n_patches=params["n_patches"], size=params["size"], n_dates=tuple(params["n_dates"]),
                          seed=params["seed"], n_crop_types=params["n_crop_types"], return_arrays=False,
                          version=params["version"], cloud_fraction=params.get("cloud_fraction"))
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


def add_synthetic_radar(root: str | Path, size: int, seed: int, version: int = 2,
                        revisit: int = synthetic_radar.RADAR_REVISIT_DAYS) -> Path:
    """Add the Sentinel-1 series (PASTIS-R layout) to a complete synthetic set in ``root``, once.

    The S2 files, ``NORM_S2_patch.json`` and ``COMPLETE.json`` are left as they are (caches built
    before radar existed stay valid); ``metadata.geojson`` gains ``dates-S1A``/``dates-S1D`` (rewritten
    atomically; S2-only readers ignore them). The series are written into a hidden staging folder and
    renamed; ``COMPLETE_S1.json`` (parameters and generator version) is written last and is the key.
    The result is the same as ``write_pastis_like(..., radar=True)``.

    Raises:
        DataError: a version-1 set, or radar built with other parameters.
    """
    root = Path(root)
    params = {"size": size, "seed": seed, "revisit": revisit, "generator": RADAR_GENERATOR}
    marker = root / RADAR_MARKER
    if marker.is_file():
        if json.loads(marker.read_text()) != params:
            raise DataError(f"{marker}: the cached radar series were built with other parameters; "
                            f"delete {root} or pick another --data_root")
        return root
    if version != 2:
        raise DataError(f"{root}: synthetic radar (S1A/S1D) exists for --synthetic_version 2 only")
    metadata_path = root / METADATA_FILE
    collection = json.loads(metadata_path.read_text())
    patches = [PatchMeta(int(props["ID_PATCH"]), int(props["Fold"]), str(props["TILE"]), ())
               for props in (feature["properties"] for feature in collection["features"])]
    staging = Path(tempfile.mkdtemp(prefix=".radar.", dir=root))
    try:
        written = write_radar(staging, patches, size, seed, revisit, return_arrays=False)
        for orbit in synthetic_radar.ORBITS:
            target = root / f"DATA_{orbit}"
            try:
                (staging / f"DATA_{orbit}").rename(target)
            except OSError:  # a concurrent build (another DDP rank) renamed its identical, complete folder first
                if not target.is_dir():
                    raise
            os.replace(staging / norm_file(orbit), root / norm_file(orbit))
        for feature in collection["features"]:
            patch_id = int(feature["properties"]["ID_PATCH"])
            feature["properties"].update({dates_key(orbit): _date_dict(written["dates"][orbit][patch_id])
                                          for orbit in synthetic_radar.ORBITS})
        write_text_atomic(metadata_path, json.dumps(collection, indent=4))
        write_text_atomic(marker, json.dumps(params))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
