"""Embedded synthetic crop-mapping scenes with crop-like phenology (the default demo data set).

A scene is a Voronoi mosaic of parcels on the pixel grid. Every crop parcel carries one crop type,
and every crop type has its own seasonal vegetation curve (a double logistic with an optional
autumn establishment phase for winter crops, mowing cuts for grassland and a flowering signal for
rapeseed). The curve gives a vegetation fraction per date, which mixes a soil and a vegetation
spectrum into surface reflectance for every Sentinel-2 band. Non-crop land (label 0) is forest,
grassland, built-up or water, plus hedges/tracks along parcel borders. Parcel-level timing and
amplitude jitter, per-pixel noise, clouds (bright in all bands) and cloud shadows (dark) make the
task learnable but not trivial: winter wheat, triticale and durum wheat differ by about a week,
winter barley by about two weeks, and background grassland looks like meadow.

Everything is vectorised numpy and deterministic by ``seed``.
"""

import datetime
from collections.abc import Sequence

import numpy as np

BAND_NAMES_ALL = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
N_CROP_TYPES = 18  # crop types 1..18 (0 = background / non-crop)

REFLECTANCE_SCALE = 10_000  # stored value = surface reflectance x 10000 (Sentinel-2 L2A convention)
SEASON_START_MONTH = 9  # crop season day 0 = Sept 1 (PASTIS reference date 2018-09-01)
DAYS_PER_YEAR = 365

# ---- spectra (surface reflectance per band, BAND_NAMES_ALL order) ----------------------------
# Bare soil: flat-ish, rising from blue to SWIR1. Green vegetation: low visible with a green
# bump, red absorption, steep red edge (B05-B07), NIR plateau, water absorption in SWIR.
SOIL_SPECTRUM = np.array([0.10, 0.11, 0.14, 0.18, 0.21, 0.23, 0.25, 0.27, 0.28, 0.10, 0.005, 0.35, 0.28])
VEGETATION_SPECTRUM = np.array([0.04, 0.04, 0.08, 0.035, 0.12, 0.32, 0.40, 0.45, 0.46, 0.15, 0.004, 0.20, 0.10])
WATER_SPECTRUM = np.array([0.07, 0.06, 0.05, 0.03, 0.02, 0.012, 0.01, 0.01, 0.008, 0.004, 0.002, 0.005, 0.003])
BUILT_SPECTRUM = np.array([0.14, 0.15, 0.17, 0.19, 0.21, 0.22, 0.23, 0.24, 0.25, 0.09, 0.006, 0.27, 0.24])
CLOUD_SPECTRUM = np.array([0.55, 0.56, 0.55, 0.56, 0.57, 0.58, 0.58, 0.58, 0.58, 0.30, 0.08, 0.45, 0.35])
# Yellow rapeseed flowers raise green, red and the first red-edge band.
FLOWER_SPECTRUM_BOOST = np.array([0.0, 0.01, 0.07, 0.08, 0.07, 0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])

# ---- crop phenology, one row per crop type 1..18 (season days since Sept 1) ------------------
# Columns: sow (autumn establishment day), winter_level (fraction of the peak reached before
# winter; 0 = spring/summer crop), green_up, senescence, amplitude, base (vegetation fraction
# outside the season), flowering day (nan = none), cut 1, cut 2 (mowing days, nan = none).
# Names follow the PASTIS classes of the same index.
_NAN = np.nan
PHENOLOGY = np.array([
    # sow  wl    up   down  amp   base  flower cut1  cut2
    [_NAN, 0.0, 190, 340, 0.40, 0.45, _NAN, 265, 320],   # 1 meadow
    [50, 0.25, 200, 290, 0.80, 0.05, _NAN, _NAN, _NAN],  # 2 soft winter wheat
    [_NAN, 0.0, 275, 385, 0.85, 0.03, _NAN, _NAN, _NAN],  # 3 corn
    [40, 0.30, 186, 276, 0.75, 0.05, _NAN, _NAN, _NAN],  # 4 winter barley (~2 weeks before wheat)
    [15, 0.50, 175, 265, 0.85, 0.05, 228, _NAN, _NAN],   # 5 winter rapeseed
    [_NAN, 0.0, 225, 300, 0.75, 0.05, _NAN, _NAN, _NAN],  # 6 spring barley
    [_NAN, 0.0, 265, 350, 0.65, 0.03, _NAN, _NAN, _NAN],  # 7 sunflower
    [_NAN, 0.0, 240, 375, 0.35, 0.25, _NAN, _NAN, _NAN],  # 8 grapevine
    [_NAN, 0.0, 245, 395, 0.85, 0.03, _NAN, _NAN, _NAN],  # 9 beet
    [48, 0.25, 196, 287, 0.80, 0.05, _NAN, _NAN, _NAN],  # 10 winter triticale (~1 week from wheat)
    [55, 0.20, 206, 284, 0.75, 0.05, _NAN, _NAN, _NAN],  # 11 winter durum wheat
    [_NAN, 0.0, 230, 330, 0.55, 0.15, _NAN, _NAN, _NAN],  # 12 fruits, vegetables, flowers
    [_NAN, 0.0, 255, 330, 0.80, 0.03, _NAN, _NAN, _NAN],  # 13 potatoes
    [_NAN, 0.0, 170, 360, 0.50, 0.35, _NAN, 255, 310],   # 14 leguminous fodder
    [_NAN, 0.0, 280, 370, 0.75, 0.03, _NAN, _NAN, _NAN],  # 15 soybeans
    [_NAN, 0.0, 215, 400, 0.45, 0.30, _NAN, _NAN, _NAN],  # 16 orchard
    [50, 0.20, 202, 295, 0.70, 0.05, _NAN, _NAN, _NAN],  # 17 mixed cereal
    [_NAN, 0.0, 285, 390, 0.70, 0.03, _NAN, _NAN, _NAN],  # 18 sorghum
])
SOW, WINTER_LEVEL, GREEN_UP, SENESCENCE, AMPLITUDE, BASE, FLOWER, CUT1, CUT2 = range(PHENOLOGY.shape[1])
RISE_DAYS = 12.0  # logistic time scale of green-up (days)
FALL_DAYS = 9.0  # logistic time scale of senescence/harvest (days)
CUT_DEPTH, CUT_WIDTH_DAYS = 0.45, 10.0  # mowing removes this fraction of cover, Gaussian in time
FLOWER_WIDTH_DAYS = 12.0

# ---- background (label 0) land covers ----------------------------------------------------------
FOREST, GRASS, BUILT, WATER = range(4)
BACKGROUND_COVER_PROBS = (0.4, 0.3, 0.2, 0.1)
FOREST_COVER, FOREST_SEASONAL = 0.75, 0.15  # deciduous: cover dips in winter
GRASS_COVER, GRASS_SEASONAL = 0.55, 0.2

# ---- layout and noise ----------------------------------------------------------------------------
PIXELS_PER_PARCEL = 140  # mean Voronoi cell area (128x128 patch -> ~117 cells; PASTIS has ~119 parcels)
BACKGROUND_CELL_FRACTION = 0.2  # share of Voronoi cells that are non-crop land
BORDER_WIDTH_PX = 0.6  # cell boundary half-width that becomes hedge/track (background)
VORONOI_CHUNK_PX = 16_384  # pixels per distance block
SEASON_SHIFT_STD = 5.0  # scene-level (weather year / region) timing shift, days
PARCEL_SHIFT_STD = 6.0  # parcel-level sowing/management timing jitter, days
PARCEL_AMPLITUDE_STD = 0.10
SOIL_BRIGHTNESS_RANGE = (0.8, 1.25)
PIXEL_COVER_STD = 0.06  # static per-pixel heterogeneity of vegetation cover
DATE_COVER_STD = 0.04  # per-pixel, per-date cover noise
BAND_NOISE_STD = 0.008  # per-pixel, per-date, per-band reflectance noise
CLOUDY_DATE_PROB = 0.3
CLOUD_GRID_PX = 12  # spatial scale of cloud blobs
CLOUD_THRESHOLD = 0.35  # of a smooth [0, 1] field; higher = fewer clouds
CLOUD_MASK_OPACITY = 0.3  # opacity above which a pixel is reported as cloud
SHADOW_OFFSET_PX = (4, 6)  # shadow displacement (rows, cols), scaled by a random factor
SHADOW_DARKENING = 0.55


def synthetic_dates(seed: int, start: datetime.date, end: datetime.date, n_dates: int) -> list[datetime.date]:
    """Irregular acquisition dates: ``n_dates`` unique days drawn uniformly in [start, end], sorted.

    Raises:
        ValueError: if the interval holds fewer than ``n_dates`` days or ``n_dates < 1``.
    """
    span = (end - start).days + 1
    if n_dates < 1 or n_dates > span:
        raise ValueError(f"cannot draw {n_dates} unique dates between {start} and {end} ({span} days)")
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.choice(span, size=n_dates, replace=False))
    return [start + datetime.timedelta(days=int(offset)) for offset in offsets]


def season_days(dates: Sequence[datetime.date]) -> np.ndarray:
    """Days since the most recent Sept 1 (0..365) for every date, float64 (T,)."""
    days = []
    for date in dates:
        year = date.year if date.month >= SEASON_START_MONTH else date.year - 1
        days.append((date - datetime.date(year, SEASON_START_MONTH, 1)).days)
    return np.asarray(days, dtype=np.float64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def _season_curve(days: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Vegetation fraction of one crop season, for parcels (P, 9) params and days (T,) -> (P, T)."""
    p = params[:, :, None]  # (P, 9, 1)
    spring = _sigmoid((days - p[:, GREEN_UP]) / RISE_DAYS)  # (P, T)
    autumn = np.where(np.isnan(p[:, SOW]), 0.0, _sigmoid((days - np.nan_to_num(p[:, SOW])) / RISE_DAYS))
    level = p[:, WINTER_LEVEL]
    growth = np.maximum(level * autumn, spring)
    harvest = _sigmoid((days - p[:, SENESCENCE]) / FALL_DAYS)
    curve = np.clip(growth - harvest, 0.0, None)
    for cut in (CUT1, CUT2):
        cut_day = p[:, cut]
        dip = CUT_DEPTH * np.exp(-0.5 * ((days - np.nan_to_num(cut_day)) / CUT_WIDTH_DAYS) ** 2)
        curve = curve * (1.0 - np.where(np.isnan(cut_day), 0.0, dip))
    return curve


def crop_cover(days: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Vegetation fraction (P, T) in [0, 1] for parcels with phenology ``params`` (P, 9).

    The crop sown in the current season and the one of the previous season (still standing after
    Sept 1, e.g. late maize) are both evaluated; the cover is their maximum.
    """
    current = _season_curve(days, params)
    previous = _season_curve(days + DAYS_PER_YEAR, params)
    cover = params[:, BASE, None] + params[:, AMPLITUDE, None] * np.maximum(current, previous)
    return np.clip(cover, 0.0, 1.0)


def _flowering(days: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Flowering intensity (P, T) in [0, 1] (rapeseed yellow), zero for other crops."""
    flower_day = params[:, FLOWER, None]
    intensity = np.exp(-0.5 * ((days - np.nan_to_num(flower_day)) / FLOWER_WIDTH_DAYS) ** 2)
    return np.where(np.isnan(flower_day), 0.0, intensity)


def _voronoi(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-seed cell index (H, W) and a border mask (H, W) of cells on the pixel grid."""
    n_cells = max(2, round(height * width / PIXELS_PER_PARCEL))
    seeds = rng.uniform((0, 0), (height, width), size=(n_cells, 2))  # (N, 2) row, col
    rows, cols = np.mgrid[0:height, 0:width]
    pixels = np.stack([rows.ravel(), cols.ravel()], axis=1).astype(np.float64)  # (H*W, 2)
    cell = np.empty(len(pixels), dtype=np.int64)
    gap = np.empty(len(pixels))
    for start in range(0, len(pixels), VORONOI_CHUNK_PX):  # bounded memory for large scenes
        chunk = slice(start, start + VORONOI_CHUNK_PX)
        dist = np.linalg.norm(pixels[chunk, None, :] - seeds[None, :, :], axis=2)  # (chunk, N)
        two_nearest = np.partition(dist, 1, axis=1)[:, :2]  # (chunk, 2) the two smallest, sorted
        cell[chunk] = dist.argmin(axis=1)
        gap[chunk] = two_nearest[:, 1] - two_nearest[:, 0]
    # (H*W,) -> (H, W) for both
    return cell.reshape(height, width), gap.reshape(height, width) < 2 * BORDER_WIDTH_PX  # (H*W,) -> (H, W)


def _smooth_field(rng: np.random.Generator, n: int, height: int, width: int, scale: int) -> np.ndarray:
    """``n`` smooth random fields (n, H, W) in [0, 1] by bilinear upsampling of coarse noise."""
    coarse_h, coarse_w = height // scale + 2, width // scale + 2
    coarse = rng.random((n, coarse_h, coarse_w))
    y = np.arange(height) / scale
    x = np.arange(width) / scale
    y0, x0 = y.astype(int), x.astype(int)
    wy, wx = (y - y0)[:, None], (x - x0)[None, :]
    top = coarse[:, y0][:, :, x0] * (1 - wx) + coarse[:, y0][:, :, x0 + 1] * wx  # (n, H, W)
    bottom = coarse[:, y0 + 1][:, :, x0] * (1 - wx) + coarse[:, y0 + 1][:, :, x0 + 1] * wx
    return top * (1 - wy) + bottom * wy


def _background_cover(days: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """Vegetation fraction (P, T) of background cells; water/built get 0 (their own spectra)."""
    winter = 0.5 * (1 + np.cos(2 * np.pi * (days - 150) / DAYS_PER_YEAR))  # 1 in late Jan, 0 in late Jul
    forest = FOREST_COVER - FOREST_SEASONAL * winter
    grass = GRASS_COVER - GRASS_SEASONAL * winter
    cover = np.zeros((len(kinds), len(days)))
    cover[kinds == FOREST] = forest
    cover[kinds == GRASS] = grass
    return cover


def _clouds(rng: np.random.Generator, n_dates: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Cloud opacity and shadow darkening, each (T, H, W) float32 in [0, 1]."""
    opacity = np.zeros((n_dates, height, width), dtype=np.float32)
    shadow = np.zeros((n_dates, height, width), dtype=np.float32)
    cloudy = np.flatnonzero(rng.random(n_dates) < CLOUDY_DATE_PROB)
    if cloudy.size == 0:
        return opacity, shadow
    field = _smooth_field(rng, cloudy.size, height, width, CLOUD_GRID_PX)  # (n, H, W)
    cover_level = rng.uniform(-0.3, 0.3, size=(cloudy.size, 1, 1))  # some dates mostly clear, some overcast
    alpha = np.clip((field + cover_level - CLOUD_THRESHOLD) / (1 - CLOUD_THRESHOLD), 0, 1)
    opacity[cloudy] = alpha
    shift = (np.array(SHADOW_OFFSET_PX) * rng.uniform(0.5, 1.5)).astype(int)
    moved = np.roll(alpha, shift=tuple(shift), axis=(1, 2))  # (n, H, W) shadow falls beside the cloud
    shadow[cloudy] = np.clip(moved - alpha, 0, 1)
    return opacity, shadow


def generate_scene(
    seed: int,
    height: int,
    width: int,
    dates: Sequence[datetime.date],
    band_names: Sequence[str],
    n_crop_types: int = 8,
) -> dict:
    """Generate one synthetic scene.

    Args:
        seed: the scene is a deterministic function of the seed (and the other arguments).
        dates: acquisition dates; the phenology follows the crop season starting Sept 1.
        band_names: subset of :data:`BAND_NAMES_ALL`, in the order wanted in ``reflectance``.
        n_crop_types: crop types 1..n_crop_types are used (types follow the PASTIS classes).

    Returns:
        ``reflectance`` int16 (T, C, H, W) surface reflectance x 10000 in ``band_names`` order,
        ``label`` int64 (H, W) in 0..n_crop_types (0 = background), ``parcel_ids`` int32 (H, W)
        (0 = background), ``cloud`` bool (T, H, W) (cloud shadows are not flagged).
    """
    if not 1 <= n_crop_types <= N_CROP_TYPES:
        raise ValueError(f"n_crop_types must be in 1..{N_CROP_TYPES}, got {n_crop_types}")
    unknown = [name for name in band_names if name not in BAND_NAMES_ALL]
    if unknown:
        raise ValueError(f"unknown band names {unknown}; expected names from {BAND_NAMES_ALL}")
    rng = np.random.default_rng(seed)
    band_index = np.array([BAND_NAMES_ALL.index(name) for name in band_names], dtype=int)
    days = season_days(dates) + rng.normal(0, SEASON_SHIFT_STD)

    # ---- layout: Voronoi cells -> crop parcels or background covers ----
    cell, border = _voronoi(rng, height, width)
    n_cells = int(cell.max()) + 1
    is_background = rng.random(n_cells) < BACKGROUND_CELL_FRACTION
    crop_type = np.where(is_background, 0, rng.integers(1, n_crop_types + 1, size=n_cells))
    label = crop_type[cell]
    label[border] = 0
    parcel_ids = np.where(label > 0, cell + 1, 0).astype(np.int32)

    # ---- per-cell vegetation fraction (cells, T) ----
    params = PHENOLOGY[np.maximum(crop_type, 1) - 1].copy()  # (cells, 9)
    shift = rng.normal(0, PARCEL_SHIFT_STD, size=n_cells)
    for column in (SOW, GREEN_UP, SENESCENCE, FLOWER, CUT1, CUT2):
        params[:, column] += shift
    params[:, AMPLITUDE] *= 1 + rng.normal(0, PARCEL_AMPLITUDE_STD, size=n_cells)
    kinds = rng.choice(len(BACKGROUND_COVER_PROBS), size=n_cells, p=BACKGROUND_COVER_PROBS)
    cover = np.where(is_background[:, None], _background_cover(days, kinds), crop_cover(days, params))
    flower = np.where(is_background[:, None], 0.0, _flowering(days, params))  # (cells, T)

    # ---- per-pixel mixing of spectra ----
    pixel_cover = cover[cell].transpose(2, 0, 1)  # (H, W, T) -> (T, H, W)
    pixel_cover = pixel_cover + rng.normal(0, PIXEL_COVER_STD, size=(1, height, width))
    pixel_cover += rng.normal(0, DATE_COVER_STD, size=pixel_cover.shape)
    pixel_cover = np.clip(pixel_cover, 0, 1).astype(np.float32)[:, None]  # (T, 1, H, W)
    brightness = rng.uniform(*SOIL_BRIGHTNESS_RANGE, size=n_cells)[cell]  # (H, W)
    soil = (SOIL_SPECTRUM[band_index][:, None, None] * brightness).astype(np.float32)  # (C, H, W)
    veg = VEGETATION_SPECTRUM[band_index][:, None, None].astype(np.float32)  # (C, 1, 1)
    reflectance = soil * (1 - pixel_cover) + veg * pixel_cover  # (T, C, H, W)
    flower_pixels = flower[cell].transpose(2, 0, 1)[:, None]  # (H, W, T) -> (T, 1, H, W)
    reflectance += (FLOWER_SPECTRUM_BOOST[band_index][:, None, None] * flower_pixels).astype(np.float32)
    for kind, spectrum in ((WATER, WATER_SPECTRUM), (BUILT, BUILT_SPECTRUM)):
        pixels = (is_background & (kinds == kind))[cell] & ~border  # (H, W)
        reflectance[:, :, pixels] = spectrum[band_index][None, :, None]

    # ---- noise, shadows, clouds ----
    reflectance += BAND_NOISE_STD * rng.standard_normal(reflectance.shape, dtype=np.float32)
    opacity, shadow = _clouds(rng, len(dates), height, width)
    reflectance *= 1 - SHADOW_DARKENING * shadow[:, None]
    cloud_spectrum = CLOUD_SPECTRUM[band_index][None, :, None, None].astype(np.float32)
    reflectance = reflectance * (1 - opacity[:, None]) + cloud_spectrum * opacity[:, None]
    stored = np.clip(np.rint(reflectance * np.float32(REFLECTANCE_SCALE)), 1, np.iinfo(np.int16).max)
    return {
        "reflectance": stored.astype(np.int16),
        "label": label.astype(np.int64),
        "parcel_ids": parcel_ids,
        "cloud": opacity > CLOUD_MASK_OPACITY,
    }
