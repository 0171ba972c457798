"""Tiny scenes as users have them (per-date GeoTIFFs or a numpy cube) for the folder-format tests."""

import datetime
from pathlib import Path

import numpy as np

from utils.datasets.synthetic import generate_scene, synthetic_dates

BANDS = ("B02", "B03", "B04", "B08")
PIXEL_SIZE = 10.0
ORIGIN = (500_000.0, 4_000_000.0)
EPSG_UTM31N = 32631
# GeoKey directory: version 1.1.0, 3 keys: model type projected, raster type area, projected CRS EPSG:32631
GEOKEYS = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, EPSG_UTM31N)
GEO_EXTRATAGS = [
    (33550, 12, 3, (PIXEL_SIZE, PIXEL_SIZE, 0.0), True),
    (33922, 12, 6, (0.0, 0.0, 0.0, *ORIGIN, 0.0), True),
    (34735, 3, len(GEOKEYS), GEOKEYS, True),
    (34737, 2, 0, "WGS 84 / UTM zone 31N|", True),
]


def make_scene(size: int = 40, n_dates: int = 5, n_crop_types: int = 4, seed: int = 1) -> dict:
    """A synthetic scene: int16 (T, 4, H, W) reflectance x 1e4, dates, label (H, W) in 0..n_crop_types."""
    dates = synthetic_dates(seed, datetime.date(2018, 9, 1), datetime.date(2019, 10, 31), n_dates)
    scene = generate_scene(seed, size, size, dates, BANDS, n_crop_types)
    return {"cube": scene["reflectance"], "dates": list(dates), "label": scene["label"]}


def write_geotiff_scene(folder: Path, scene: dict, interleaved: bool = False) -> Path:
    """One 4-band GeoTIFF per date (``S2_<YYYYMMDD>.tif``) with UTM georeferencing; ``label.tif`` beside."""
    import tifffile

    folder.mkdir(parents=True)
    for date, image in zip(scene["dates"], scene["cube"]):
        data = np.moveaxis(image, 0, -1) if interleaved else image  # (C, H, W) -> (H, W, C)
        tifffile.imwrite(folder / f"S2_{date:%Y%m%d}.tif", data, extratags=GEO_EXTRATAGS, photometric="minisblack",
                         planarconfig="contig" if interleaved else "separate")
    label_path = folder.parent / f"{folder.name}_label.tif"
    tifffile.imwrite(label_path, scene["label"].astype(np.uint8), extratags=GEO_EXTRATAGS, photometric="minisblack")
    return label_path


def write_ndvi_cube(folder: Path, scene: dict) -> dict:
    """The scene as a one-band float NDVI cube (T, 1, H, W) + dates file + label .npy."""
    folder.mkdir(parents=True, exist_ok=True)
    red, nir = (scene["cube"][:, BANDS.index(name)].astype(np.float32) for name in ("B04", "B08"))
    ndvi = ((nir - red) / (nir + red + 1e-6))[:, None]  # (T, H, W) -> (T, 1, H, W)
    paths = {"cube": folder / "ndvi.npy", "dates": folder / "dates.txt", "label": folder / "label.npy"}
    np.save(paths["cube"], ndvi)
    paths["dates"].write_text("\n".join(date.isoformat() for date in scene["dates"]) + "\n")
    np.save(paths["label"], scene["label"])
    return paths
