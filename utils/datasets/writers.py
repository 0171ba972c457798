"""Writers of synthetic data sets in the exact on-disk format of the real ones.

``write_pastis_like`` emits the PASTIS layout (docs/data_formats.md §1.1): ``DATA_S2/S2_<id>.npy``
int16 (T, 10, H, W), ``ANNOTATIONS/TARGET_<id>.npy`` uint8 (3, H, W), ``ANNOTATIONS/ParcelIDs_<id>.npy``
int32 (H, W), ``metadata.geojson`` with the real property names and ``NORM_S2_patch.json`` computed
as utae-paps' ``compute_norm_vals``. The imagery comes from :mod:`utils.datasets.synthetic` (version 1,
the original demo set, 4 tiles) or :mod:`utils.datasets.synthetic_v2` (version 2, 8 tiles with their own
12-day acquisition calendars). With ``radar=True`` (version 2) it also writes PASTIS-R's Sentinel-1
series (:func:`write_radar`: ``DATA_S1A``/``DATA_S1D`` float32 (T_s, 3, H, W) in dB, ``NORM_S1A_patch.json``,
``NORM_S1D_patch.json`` and ``dates-S1A``/``dates-S1D`` in metadata.geojson; PASTIS/README.md).

The MTLCC writer lives in ``utils/datasets/mtlcc_writers.py`` (``write_mtlcc_like``).
"""

import datetime
import json
import shutil
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from utils.datasets.pastis import (
    METADATA_FILE, NORM_FILE, PASTIS_BAND_NAMES, PASTIS_FOLDS, S2_DIR, TARGET_CHANNELS, TARGET_DIR, VOID_INDEX,
    PatchMeta, read_pastis_metadata, s2_path, source_path, target_path,
)
from utils.datasets import synthetic_radar, synthetic_v2
from utils.datasets.sources import dates_key, norm_file
from utils.datasets.synthetic import generate_scene, synthetic_dates

PASTIS_TILES = ("t30uxv", "t31tfj", "t31tfm", "t32ulu")  # leading ID digit 1..4 = tile, as in the release
V2_TILES = PASTIS_TILES + ("t31udq", "t31tcj", "t30tyq", "t31ufq")  # version 2: 8 tiles, leading digit 1..8
SYNTHETIC_VERSIONS = (1, 2)
V1_N_CROP_TYPES = 8
PATCH_ID_BASE = 10_000  # ID_PATCH = tile number * 10000 + running index
SEASON_START, SEASON_END = datetime.date(2018, 9, 1), datetime.date(2019, 10, 31)
PIXEL_SIZE_M = 10.0
LAMBERT93_ORIGIN = (350_000.0, 6_850_000.0)  # footprints in EPSG:2154 like the release
EPSG_LAMBERT93 = "urn:ogc:def:crs:EPSG::2154"
SEED_STRIDE = 1_000_000  # scene seed = seed * SEED_STRIDE + ID_PATCH (ids stay below it)
VOID_EDGE_PROB = 0.3  # parcels touching the patch edge that become void ("mostly outside the patch")


def _patch_footprint(index: int, size: int) -> dict:
    """A square MultiPolygon (EPSG:2154) for patch number ``index``; patches laid out on a row."""
    side = size * PIXEL_SIZE_M
    x0, y0 = LAMBERT93_ORIGIN[0] + index * side, LAMBERT93_ORIGIN[1]
    ring = [[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side], [x0, y0]]
    return {"type": "MultiPolygon", "coordinates": [[ring]]}


def _synthetic_metadata(n_patches: int, n_dates: tuple[int, int], seed: int, folds: Sequence[int],
                        version: int = 1) -> list[PatchMeta]:
    """Patch ids grouped by tile, one date series per tile (T is a tile property in PASTIS), folds balanced.

    Version 1: 4 tiles, dates drawn uniformly; version 2: :data:`V2_TILES`, each with
    :func:`synthetic_v2.tile_calendar` (12-day slots, some missing).
    """
    rng = np.random.default_rng(seed)
    tiles = PASTIS_TILES if version == 1 else V2_TILES
    tile_dates = []
    for tile_number in range(len(tiles)):
        if version == 1:
            length = int(rng.integers(n_dates[0], n_dates[1] + 1))
            tile_dates.append(tuple(synthetic_dates(seed * len(PASTIS_TILES) + tile_number, SEASON_START, SEASON_END, length)))
        else:
            tile_dates.append(synthetic_v2.tile_calendar([seed, tile_number], n_dates, SEASON_START, SEASON_END))
    fold_of = np.asarray(folds)[rng.permutation(n_patches) % len(folds)]
    patches = []
    for index in range(n_patches):
        tile_number = index % len(tiles)
        patch_id = (tile_number + 1) * PATCH_ID_BASE + index // len(tiles)
        patches.append(PatchMeta(patch_id, int(fold_of[index]), tiles[tile_number], tile_dates[tile_number]))
    return patches


def _scene(meta: PatchMeta, size: int, seed: int, version: int, n_crop_types: int | None,
           cloud_fraction: float | None = None) -> dict:
    """The imagery of one patch: version 1 by patch seed, version 2 with the tile as its region."""
    if version == 1:
        n_types = V1_N_CROP_TYPES if n_crop_types is None else n_crop_types
        return generate_scene(seed * SEED_STRIDE + meta.patch_id, size, size, meta.dates, PASTIS_BAND_NAMES, n_types)
    region = [seed, zlib.crc32(meta.tile.encode())]  # every patch of a tile shares its weather and crop mix
    return synthetic_v2.generate_scene([seed, meta.patch_id], size, size, meta.dates, PASTIS_BAND_NAMES, region_seed=region,
                                       cloud_fraction=cloud_fraction)


def _semantic_target(label: np.ndarray, parcel_ids: np.ndarray, rng: np.random.Generator,
                     void_ids: np.ndarray | None = None) -> np.ndarray:
    """TARGET (3, H, W) uint8: crop type k -> PASTIS class k, parcels mostly outside the patch void (19).

    ``void_ids`` come from the scene (version 2 knows each parcel's full area); without them
    (version 1) a random ``VOID_EDGE_PROB`` of the parcels touching the patch edge become void.
    The release documents channel 0 only; channels 1 and 2 are copies here.
    """
    semantic = label.astype(np.uint8)
    if void_ids is None:
        edge_ids = np.unique(np.concatenate([parcel_ids[0], parcel_ids[-1], parcel_ids[:, 0], parcel_ids[:, -1]]))
        edge_ids = edge_ids[edge_ids > 0]
        void_ids = edge_ids[rng.random(edge_ids.size) < VOID_EDGE_PROB]
    semantic[np.isin(parcel_ids, void_ids)] = VOID_INDEX
    return np.repeat(semantic[None], TARGET_CHANNELS, axis=0)  # (H, W) -> (3, H, W)


def _patch_stats(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std (torch's default: unbiased, ddof=1) over T, H, W of one int16 (T, C, H, W) patch."""
    per_band = image.transpose(1, 0, 2, 3).reshape(image.shape[1], -1).astype(np.float64)  # (T,C,H,W) -> (C, T*H*W)
    return per_band.mean(axis=1), per_band.std(axis=1, ddof=1)


def _norm_stats(patch_stats: dict[int, tuple[np.ndarray, np.ndarray]], folds: dict[int, int]) -> dict:
    """utae-paps ``compute_norm_vals``: per fold, average over patches of per-patch band mean/std.

    ``patch_stats`` maps a patch id to :func:`_patch_stats` of its image. Folds without patches are
    left out.
    """
    stats = {}
    for fold in sorted(set(folds.values())):
        means, stds = [], []
        for patch_id, (mean, std) in patch_stats.items():
            if folds[patch_id] != fold:
                continue
            means.append(mean)
            stds.append(std)
        stats[f"Fold_{fold}"] = {"mean": np.mean(means, axis=0).tolist(), "std": np.mean(stds, axis=0).tolist()}
    return stats


def _date_dict(dates) -> dict:
    """A PASTIS ``dates-<SOURCE>`` object: "0".."T-1" -> YYYYMMDD."""
    return {str(k): int(date.strftime("%Y%m%d")) for k, date in enumerate(dates)}


def write_radar(root: str | Path, patches: Sequence[PatchMeta], size: int, seed: int,
                revisit: int = synthetic_radar.RADAR_REVISIT_DAYS, return_arrays: bool = True) -> dict:
    """Write the synthetic Sentinel-1 series of version-2 ``patches`` in the PASTIS-R layout.

    Per orbit ``S1A``/``S1D``: ``DATA_<ORBIT>/<ORBIT>_<ID>.npy`` float32 (T_s, 3, size, size) (VV, VH,
    VV/VH in dB) rendered from the same scene as :func:`write_pastis_like` (seed ``[seed, ID]``, region
    ``[seed, crc32(tile)]``) and ``NORM_<ORBIT>_patch.json`` (utae-paps statistics per fold). A patch's
    radar dates are its ``source_dates`` when the metadata lists them, else the tile's calendar
    (:func:`synthetic_radar.tile_radar_calendars`). metadata.geojson is NOT written here.

    Returns ``dates`` {orbit: {id: dates}}, ``norm`` {orbit: JSON written} and, with ``return_arrays``,
    ``images`` {orbit: {id: array}}.
    """
    root = Path(root)
    out = {"dates": {}, "norm": {}, "images": {}}
    fold_of = {meta.patch_id: meta.fold for meta in patches}
    for orbit in synthetic_radar.ORBITS:
        (root / f"DATA_{orbit}").mkdir(parents=True, exist_ok=True)
        stats, dates_of, images = {}, {}, {}
        for meta in patches:
            dates = meta.dates_of(orbit) or synthetic_radar.tile_radar_calendars(seed, meta.tile, revisit)[orbit]
            region = [seed, zlib.crc32(meta.tile.encode())]  # as _scene: the tile's weather and crop mix
            radar = synthetic_radar.generate_radar([seed, meta.patch_id], size, dates, region, orbit)["backscatter"]
            np.save(source_path(root, orbit, meta.patch_id), radar)
            stats[meta.patch_id], dates_of[meta.patch_id] = _patch_stats(radar), list(dates)
            if return_arrays:
                images[meta.patch_id] = radar
        out["norm"][orbit] = _norm_stats(stats, fold_of)
        (root / norm_file(orbit)).write_text(json.dumps(out["norm"][orbit], indent=4))
        out["dates"][orbit] = dates_of
        if return_arrays:
            out["images"][orbit] = images
    return out


def _feature(meta: PatchMeta, index: int, size: int, parcel_ids: np.ndarray) -> dict:
    return {
        "id": str(index),
        "type": "Feature",
        "properties": {
            "Fold": meta.fold,
            "ID_PATCH": meta.patch_id,
            "N_Parcel": int(np.unique(parcel_ids[parcel_ids > 0]).size),
            "Parcel_Cover": float((parcel_ids > 0).mean()),
            "TILE": meta.tile,
            "dates-S2": {str(k): int(date.strftime("%Y%m%d")) for k, date in enumerate(meta.dates)},
        } | {dates_key(source): _date_dict(dates) for source, dates in meta.source_dates},
        "geometry": _patch_footprint(index, size),
    }


def write_pastis_like(
    root: str | Path,
    n_patches: int = 60,
    size: int = 128,
    n_dates: tuple[int, int] = (38, 61),
    seed: int = 0,
    metadata: str | Path | None = None,
    folds: Sequence[int] = PASTIS_FOLDS,
    n_crop_types: int | None = None,
    return_arrays: bool = True,
    version: int = 1,
    radar: bool = False,
    radar_revisit: int = synthetic_radar.RADAR_REVISIT_DAYS,
    cloud_fraction: float | None = None,
) -> dict:
    """Write a synthetic data set in the exact PASTIS layout.

    Args:
        n_patches, n_dates, folds: layout of a fully synthetic set (ignored with ``metadata``):
            patch ids grouped in 4 tiles, T drawn per tile in ``n_dates`` (inclusive), folds balanced.
        metadata: path of a real metadata.geojson; imagery and targets are then written for exactly
            its ids, folds and dates, and the file is copied unchanged.
        size: patch side in pixels (128 in the release).
        n_crop_types: version 1 only: crop types 1..n (default 8). Version 2 has its fixed 12 classes.
        return_arrays: include the written arrays in the result (for tests).
        version: 1 (the original demo generator, kept for comparison) or 2 (:mod:`utils.datasets.synthetic_v2`).
        radar: version 2 only: also write PASTIS-R's Sentinel-1 ascending and descending series of the
            same scenes (:func:`write_radar`; with ``metadata``, its dates-S1A/dates-S1D when listed).
            The S2 files and statistics are the same with or without radar.
        radar_revisit: days between two radar acquisitions of one orbit.
        cloud_fraction: version 2 only: the fraction of optical dates under broken cloud or overcast
            (None: the generator's 0.35, ``synthetic_v2.CLOUD_FRACTION``); the layout, labels and radar
            are the same whatever it is.

    Returns:
        ``root``, ``ids``, ``folds`` {id: fold}, ``dates`` {id: list[date]}, ``norm`` (the JSON
        written) and, with ``return_arrays``, ``images`` {id: int16 (T, 10, H, W)} and
        ``targets`` {id: uint8 (3, H, W)}; with ``radar``, ``radar`` (the result of :func:`write_radar`).
    """
    if version not in SYNTHETIC_VERSIONS:
        raise ValueError(f"synthetic version must be one of {SYNTHETIC_VERSIONS}, got {version}")
    if version != 1 and n_crop_types is not None:
        raise ValueError("n_crop_types applies to version 1 only (version 2 has a fixed class list)")
    if radar and version != 2:
        raise ValueError("radar is rendered from version-2 scenes only")
    if cloud_fraction is not None and version != 2:
        raise ValueError("cloud_fraction applies to version-2 scenes only")
    root = Path(root)
    if metadata is not None:
        patches = [meta for meta in read_pastis_metadata(metadata, ("S2",) + synthetic_radar.ORBITS) if meta.dates]
    else:
        patches = _synthetic_metadata(n_patches, n_dates, seed, folds, version)
    (root / S2_DIR).mkdir(parents=True, exist_ok=True)
    (root / TARGET_DIR).mkdir(parents=True, exist_ok=True)
    images, targets, features, patch_stats = {}, {}, [], {}
    for index, meta in enumerate(patches):
        scene = _scene(meta, size, seed, version, n_crop_types, cloud_fraction)
        target = _semantic_target(scene["label"], scene["parcel_ids"], np.random.default_rng([seed, meta.patch_id]),
                                  scene.get("void_ids"))
        np.save(s2_path(root, meta.patch_id), scene["reflectance"])
        np.save(target_path(root, meta.patch_id), target)
        np.save(root / TARGET_DIR / f"ParcelIDs_{meta.patch_id}.npy", scene["parcel_ids"])
        patch_stats[meta.patch_id] = _patch_stats(scene["reflectance"])
        if return_arrays:
            images[meta.patch_id], targets[meta.patch_id] = scene["reflectance"], target
        features.append(_feature(meta, index, size, scene["parcel_ids"]))
    fold_of = {meta.patch_id: meta.fold for meta in patches}
    norm = _norm_stats(patch_stats, fold_of)
    (root / NORM_FILE).write_text(json.dumps(norm, indent=4))
    radar_out = write_radar(root, patches, size, seed, radar_revisit, return_arrays) if radar else None
    if radar and metadata is None:
        for feature in features:
            patch_id = feature["properties"]["ID_PATCH"]
            feature["properties"].update({dates_key(orbit): _date_dict(radar_out["dates"][orbit][patch_id])
                                          for orbit in synthetic_radar.ORBITS})
    if metadata is not None:
        shutil.copyfile(metadata, root / METADATA_FILE)
    else:
        collection = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": EPSG_LAMBERT93}},
                      "features": features}
        (root / METADATA_FILE).write_text(json.dumps(collection, indent=4))
    result = {
        "root": root,
        "ids": [meta.patch_id for meta in patches],
        "folds": fold_of,
        "dates": {meta.patch_id: list(meta.dates) for meta in patches},
        "norm": norm,
    }
    if return_arrays:
        result.update(images=images, targets=targets)
    if radar:
        result["radar"] = radar_out
    return result
