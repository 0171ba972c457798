"""Synthetic crop-mapping scenes, version 2: built from how real Sentinel-2 fields look.

Version 1 (:mod:`utils.datasets.synthetic`, kept unchanged for comparison) gives every parcel one
vegetation curve plus i.i.d. pixel noise and mixes two spectra; the same-date mean of a pixel's
neighbours then predicts it almost exactly, and a masked-reconstruction pretext learns no phenology
from it. Version 2 renders each 10 m pixel from a finer scene (``SUBPIXELS`` x ``SUBPIXELS`` sub-cells)
and integrates it through the sensor's point-spread function, so every pixel is a linear mixture of
whatever lies under it. Every parameter below was fixed from published or physical facts before any
pre-training or fine-tuning result was looked at; none was tuned on a model's outcome.

Parameters and their real-world reason (values in the constants below):

* **Layout.** Voronoi parcels of ``PIXELS_PER_CELL`` px (1.5 ha): the real PASTIS metadata holds
  ~89 parcels and 63 % parcel cover per 128 x 128 patch, i.e. ~1.2 ha per parcel. Parcels extend
  beyond the patch (seeds in a ``LAYOUT_MARGIN_PX`` margin), as real patches cut fields.
  ``BACKGROUND_CELL_FRACTION`` of the cells are non-crop land (forest, fallow grass, built-up, water).
* **Field boundaries.** A boundary carries a hedgerow with probability ``HEDGE_PROB`` (4-10 m wide
  with its grass margin: bocage hedges are 2-5 m plus 3-5 m buffer strips), a farm track with
  ``TRACK_PROB`` (~5 m), else the two fields touch. Only hedge/track/non-crop pixels are background.
* **Point-spread function.** Pixel integration (box) convolved with a Gaussian of
  ``PSF_SIGMA_PX`` = 0.45 px: together their MTF at Nyquist is ~0.25, inside the 0.15-0.3
  specified for the Sentinel-2 10 m bands. The label of a pixel is its dominant contributor
  (largest PSF-weighted area), so a border pixel's label agrees with its reflectance.
* **End-members mixed linearly per sub-cell.** A crop-specific green leaf canopy, a second
  (generic) green for cover crops, weeds and the previous crop, dry residue / senescent vegetation
  (straw, NDVI ~0.26, scaled by a crop-specific brightness: sunflower goes dark brown), yellow
  petals (rapeseed flowering) and soil. Leaf spectra differ by crop through three physical
  parameters: NIR plateau (leaf angle / canopy structure: erect cereals ~0.38-0.41, broad-leaf
  beet, sunflower, soybean, rapeseed ~0.5-0.55), chlorophyll (red-edge B05-B07 and red depth) and
  leaf water (SWIR B11/B12 absorption: succulent beet lowest). Dense canopies reach NDVI 0.83-0.88.
* **Soils.** Four spectra (dark organic loam, brown silt loam, bright calcareous, red ferruginous)
  with NDVI 0.09-0.10 (real bare soils 0.05-0.15, well below the 0.2 vegetation gate). Each tile
  has two dominant soils (regional geology) mixed by a smooth soil-zone field
  (``SOIL_ZONE_SCALE_PX``) with +-``SOIL_BRIGHTNESS_STD`` brightness. Surface moisture darkens soil
  after rain (up to ``MOISTURE_DARKENING``, strongest in SWIR) on ``WET_DATE_PROB`` of the dates,
  over a static drainage field: the wet pattern changes from date to date.
* **Phenology** (``PHENOLOGY``; days since Sept 1): sowing, emergence, green-up, senescence
  (green -> dry), harvest (dry -> stubble), tillage (stubble -> soil), mowing cuts and summer
  browning of grassland, rapeseed flowering, from French crop calendars (e.g. winter wheat sown mid
  October, ripe mid June, harvested mid July; maize sown late April, harvested mid October). The
  previous crop of the rotation stands or lies as stubble until seed-bed preparation, and
  ``COVER_CROP_PROB`` of the spring-crop fields hold a winter cover crop (nitrate directive).
* **Within-field variation, spatially correlated and changing over time.** Sub-parcel timing
  shifts (``SUBPARCEL_SHIFT_DAYS``, smooth field of scale ``TIMING_SCALE_PX``: emergence and
  ripening follow soil water over tens of metres), management / vigour zones (+-
  ``VIGOUR_STD`` of the canopy, scale ``VIGOUR_SCALE_PX``, as yield maps show 10-20 % in-field
  variation), a small i.i.d. sub-cell texture (rows, weeds) and sensor noise (``SENSOR_NOISE``,
  S2's radiometric noise of a few 1e-3). Timing offsets: tile (regional climate, ``TILE_SHIFT_STD``),
  patch, parcel (farmer's sowing date, ``PARCEL_SHIFT_STD``). Harvest, tillage and mowing are
  per-parcel management events (a field is cut in a day); growth stages vary within the field.
* **Classes.** 12 PASTIS crop classes (``CLASSES``) with imbalanced frequencies (``CLASS_FREQUENCY``:
  meadow, wheat and maize dominate as in French LPIS statistics), perturbed per tile
  (``TILE_MIX_STD``: regional crop mixes differ). Winter triticale is kept next to wheat and
  leguminous fodder next to meadow: real, hard pairs.
* **Atmosphere**, per tile and date (one acquisition covers the tile), with patch-level variation:
  clear (``REGIME_PROBS``), haze (aerosol optical depth 0.05-0.3 at 550 nm, Angstrom exponent 1.5:
  additive path reflectance and attenuation strongest in blue, spatially smooth), broken cumulus
  (opaque and thin cloud from a thresholded smooth field, with cloud shadows), and overcast. Shadows
  lie far from their cloud at 10 m (1-3 km cloud height x tan of the solar zenith angle), so a
  shadow field is an independent draw of the cloud field; shadowed pixels keep only diffuse light,
  relatively more in blue. About half of the dates are affected, as in Sentinel-2 over France.
* **Acquisitions.** Each tile has its own calendar (:func:`tile_calendar`): one satellite's
  ``REVISIT_DAYS``-day slots from a tile-specific first date, with a random subset of slots missing
  (data gaps, cloud-filtered products). All patches of a tile share its calendar, as in PASTIS.

Everything is vectorised numpy and deterministic by ``seed`` and ``region_seed``.

The Sentinel-1 radar series of the same scenes (PASTIS-R's S1A/S1D) are rendered by
:mod:`utils.datasets.synthetic_radar` from :func:`_draw_scene` and :func:`_fractions`, the two
halves of :func:`generate_scene`'s scene model (their random draws are those of the optical scene,
in the same order, so adding radar changes no optical value).
"""

import datetime
import functools
import math
from collections.abc import Sequence

import numpy as np

from utils.datasets.synthetic import (
    BAND_NAMES_ALL,
    BUILT_SPECTRUM,
    CLOUD_SPECTRUM,
    REFLECTANCE_SCALE,
    WATER_SPECTRUM,
    _sigmoid,
    season_days,
)

# ---- sensor and rendering --------------------------------------------------------------------------
WAVELENGTH_NM = np.array([443, 490, 560, 665, 705, 740, 783, 842, 865, 945, 1375, 1610, 2190], dtype=np.float64)
SUBPIXELS = 2  # sub-cells per pixel side (5 m): parcel edges, hedges and tracks at sub-pixel precision
PSF_SIGMA_PX = 0.45  # Gaussian optics on top of pixel integration: system MTF ~0.25 at Nyquist
RENDER_MARGIN_PX = 1  # rendered around the patch so the PSF at its edge sees real content
SENSOR_NOISE = 0.003  # reflectance, per pixel, date and band
TEXTURE_STD = 0.05  # i.i.d. sub-cell canopy cover texture (rows, weeds, gaps)

# ---- layout ------------------------------------------------------------------------------------------
PIXELS_PER_CELL = 150
LAYOUT_MARGIN_PX = 8
BACKGROUND_CELL_FRACTION = 0.2
VOID_INSIDE_FRACTION = 0.25  # PASTIS voids parcels mostly outside its 128-px patches; a 32-px patch is a crop of one
FOREST, FALLOW, BUILT, WATER = range(4)
BACKGROUND_COVER_PROBS = (0.4, 0.35, 0.17, 0.08)
HEDGE_PROB, TRACK_PROB = 0.3, 0.15
HEDGE_HALF_WIDTH_M = (2.0, 5.0)  # uniform; hedge + grass margin
TRACK_HALF_WIDTH_M = 2.5
PIXEL_SIZE_M = 10.0

# ---- end-member spectra (surface reflectance, BAND_NAMES_ALL order) -------------------------------------
SOIL_SPECTRA = np.array([
    [0.045, 0.050, 0.070, 0.090, 0.100, 0.105, 0.108, 0.110, 0.115, 0.080, 0.004, 0.170, 0.140],  # dark organic loam
    [0.070, 0.080, 0.110, 0.150, 0.165, 0.170, 0.175, 0.180, 0.185, 0.120, 0.005, 0.280, 0.240],  # brown silt loam
    [0.160, 0.180, 0.220, 0.260, 0.280, 0.290, 0.300, 0.310, 0.320, 0.220, 0.007, 0.380, 0.350],  # bright calcareous
    [0.060, 0.070, 0.100, 0.180, 0.210, 0.215, 0.220, 0.220, 0.225, 0.150, 0.005, 0.340, 0.280],  # red ferruginous
])
STRAW_SPECTRUM = np.array([0.070, 0.080, 0.120, 0.160, 0.200, 0.230, 0.250, 0.270, 0.280, 0.200, 0.006, 0.400, 0.300])
PETAL_SPECTRUM = np.array([0.040, 0.050, 0.240, 0.200, 0.280, 0.330, 0.380, 0.420, 0.430, 0.280, 0.005, 0.250, 0.140])
SOIL_BRIGHTNESS_STD = 0.08
MOISTURE_DARKENING = 0.3  # at most, SWIR; visible/NIR darken 0.7x as much
WET_DATE_PROB = 0.35
SWIR_BANDS = (11, 12)  # indices of B11, B12 in BAND_NAMES_ALL


def leaf_spectrum(nir: float, chlorophyll: float, water: float) -> np.ndarray:
    """Dense green canopy reflectance (13,) from NIR plateau, chlorophyll (0..1) and leaf water (0..1).

    Chlorophyll deepens the red (B04) and green absorption and moves the red edge to longer
    wavelengths (lower B05, lower B06 relative to the plateau); leaf water absorbs in SWIR.
    """
    c = chlorophyll
    return np.array([
        0.035 - 0.010 * c, 0.040 - 0.012 * c, 0.095 - 0.035 * c, 0.050 - 0.025 * c, 0.150 - 0.065 * c,
        nir * (0.78 - 0.12 * c), nir * 0.93, nir, nir * 1.02, nir * 0.65, 0.004, 0.30 - 0.12 * water,
        0.18 - 0.09 * water,
    ])


GENERIC_LEAF = leaf_spectrum(0.42, 0.7, 0.6)  # grass, weeds, cover crops, previous crop regrowth
FOREST_LEAF = leaf_spectrum(0.36, 0.85, 0.8)
CANOPY_SHADE = 0.75  # tree crowns shade themselves: forests and hedges are darker than crops

# ---- classes and phenology -------------------------------------------------------------------------------
_NAN = np.nan
# Columns (days since Sept 1; nan = not applicable): sow, winter level (fraction of the peak reached
# before winter), green-up midpoint, green-up time scale, peak cover, base cover (perennials),
# senescence midpoint, senescence time scale, harvest, stubble cover, tillage delay after harvest,
# three mowing days, summer browning, flowering day, leaf NIR, chlorophyll, leaf water,
# residue brightness, perennial flag.
(SOW, WINTER_LEVEL, GREEN_UP, RISE, PEAK, BASE, SENESCENCE, FALL, HARVEST, STUBBLE, TILL, CUT1, CUT2, CUT3,
 BROWN, FLOWER, NIR, CHL, WATER_CONTENT, RESIDUE, PERENNIAL) = range(21)
CLASSES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14, 15)  # PASTIS class indices
CLASS_FREQUENCY = (0.30, 0.18, 0.16, 0.07, 0.06, 0.025, 0.035, 0.05, 0.02, 0.035, 0.045, 0.02)
PHENOLOGY = np.array([
    # sow wl  up  rise peak base sen fall harv stub till cut1 cut2 cut3 brown flow  nir  chl  wat  res  per
    [_NAN, 0, 200, 14, 0.92, 0.55, 430, 20, _NAN, 0.3, _NAN, 268, 318, _NAN, 0.30, _NAN, 0.42, 0.60, 0.60, 0.90, 1],  # 1 meadow
    [45, .30, 200, 12, 0.92, 0.0, 290, 9, 318, 0.35, 35, _NAN, _NAN, _NAN, 0.0, _NAN, 0.40, 0.80, 0.50, 1.00, 0],  # 2 wheat
    [240, 0, 290, 9, 0.95, 0.0, 378, 10, 410, 0.45, 60, _NAN, _NAN, _NAN, 0.0, _NAN, 0.46, 0.90, 0.70, 0.85, 0],  # 3 maize
    [35, .35, 188, 12, 0.88, 0.0, 272, 8, 303, 0.35, 40, _NAN, _NAN, _NAN, 0.0, _NAN, 0.38, 0.65, 0.45, 1.05, 0],  # 4 w. barley
    [5, .60, 175, 12, 0.95, 0.0, 285, 8, 310, 0.30, 30, _NAN, _NAN, _NAN, 0.0, 228, 0.52, 0.70, 0.70, 0.80, 0],  # 5 rapeseed
    [195, 0, 235, 10, 0.80, 0.0, 298, 8, 322, 0.30, 30, _NAN, _NAN, _NAN, 0.0, _NAN, 0.38, 0.65, 0.45, 1.05, 0],  # 6 s. barley
    [235, 0, 280, 9, 0.85, 0.0, 340, 10, 378, 0.35, 30, _NAN, _NAN, _NAN, 0.0, _NAN, 0.55, 0.75, 0.75, 0.55, 0],  # 7 sunflower
    [_NAN, 0, 240, 12, 0.55, 0.15, 400, 12, _NAN, 0.15, _NAN, _NAN, _NAN, _NAN, 0.0, _NAN, 0.40, 0.60, 0.50, 0.60, 1],  # 8 vine
    [205, 0, 265, 12, 0.95, 0.0, 395, 15, 410, 0.10, 10, _NAN, _NAN, _NAN, 0.0, _NAN, 0.55, 0.85, 0.90, 0.70, 0],  # 9 beet
    [45, .30, 196, 12, 0.93, 0.0, 287, 9, 315, 0.40, 35, _NAN, _NAN, _NAN, 0.0, _NAN, 0.41, 0.75, 0.50, 1.00, 0],  # 10 triticale
    [_NAN, 0, 205, 14, 0.90, 0.50, 430, 20, _NAN, 0.2, _NAN, 258, 300, 345, 0.10, _NAN, 0.50, 0.85, 0.75, 0.90, 1],  # 14 fodder
    [250, 0, 290, 9, 0.90, 0.0, 365, 8, 388, 0.20, 40, _NAN, _NAN, _NAN, 0.0, _NAN, 0.53, 0.80, 0.75, 0.75, 0],  # 15 soybean
])
LEAF_SPECTRA = np.stack([leaf_spectrum(*row[[NIR, CHL, WATER_CONTENT]]) for row in PHENOLOGY])  # (12, 13)
# Background covers as perennial rows (forest: deciduous broadleaf with evergreen share; fallow grass).
BACKGROUND_PHENOLOGY = np.array([
    [_NAN, 0, 225, 8, 0.92, 0.35, 410, 12, _NAN, 0.9, _NAN, _NAN, _NAN, _NAN, 0.0, _NAN, 0.36, 0.85, 0.80, 0.60, 1],
    [_NAN, 0, 200, 14, 0.80, 0.50, 430, 20, _NAN, 0.3, _NAN, _NAN, _NAN, _NAN, 0.45, _NAN, 0.42, 0.60, 0.60, 0.90, 1],
])
HEDGE_ROW, TRACK_GREEN, BUILT_GREEN = BACKGROUND_PHENOLOGY[0], 0.15, 0.1  # verges; gardens, street trees
EMERGENCE_DAYS = 12.0  # sowing -> emergence midpoint
CUT_DEPTH, REGROWTH_DAYS = 0.6, 18.0
BROWN_DAY, BROWN_WIDTH_DAYS = 335.0, 25.0  # summer drought on grassland, early August
FLOWER_FRACTION, FLOWER_WIDTH_DAYS = 0.35, 10.0
EVENT_DAYS = 2.0  # time scale of harvest, tillage and seed-bed preparation (a field is done in days)
COVER_CROP_PROB, COVER_CROP_PEAK, COVER_CROP_DELAY = 0.4, 0.5, 25.0
PREP_WINTER_DAYS = (5.0, 20.0)  # seed-bed preparation before sowing a winter crop
PREP_SPRING_FIRST = 75.0  # earliest ploughing day before a spring crop (mid November)

# ---- timing and within-field variation ---------------------------------------------------------------------
TILE_SHIFT_STD = 7.0  # regional climate, days
PATCH_SHIFT_STD = 3.0
PARCEL_SHIFT_STD = 7.0  # farmer's sowing / management date
SUBPARCEL_SHIFT_DAYS = 3.0
TIMING_SCALE_PX = 3.0  # Gaussian smoothing scale of the random fields, pixels (30 m)
VIGOUR_STD, VIGOUR_SCALE_PX = 0.12, 4.0
SOIL_ZONE_SCALE_PX, DRAINAGE_SCALE_PX = 6.0, 5.0
PARCEL_PEAK_STD = 0.06
TILE_MIX_STD = 0.5  # log-normal perturbation of the class frequencies per tile

# ---- atmosphere -------------------------------------------------------------------------------------------------
CLEAR, HAZE, BROKEN, OVERCAST = range(4)
REGIME_PROBS = (0.5, 0.15, 0.2, 0.15)
CLOUD_FRACTION = REGIME_PROBS[BROKEN] + REGIME_PROBS[OVERCAST]  # 0.35 of the dates under broken cloud or overcast
HAZE_AOD = (0.05, 0.3)  # aerosol optical depth at 550 nm
ANGSTROM = 1.5
HAZE_PATH_REFLECTANCE = 0.25  # path reflectance per unit optical depth
CIRRUS_PROB, CIRRUS_OPACITY = 0.5, (0.1, 0.4)  # thin cirrus on hazy dates
BROKEN_COVER, OVERCAST_COVER = (0.2, 0.8), (0.85, 1.0)
PATCH_COVER_STD = 0.15
CLOUD_SCALE_PX = 5.0
CLOUD_EDGE = 0.6  # width (field std units) of the thin transition from clear to opaque
SHADOW_DARKENING = 0.65  # direct light removed in a shadow
DIFFUSE_FRACTION_BLUE, DIFFUSE_FRACTION_SWIR = 0.35, 0.08
CLOUD_MASK_OPACITY = 0.3

# ---- acquisitions ------------------------------------------------------------------------------------------------
REVISIT_DAYS = 12  # one Sentinel-2 satellite
SEASON_START, SEASON_END = datetime.date(2018, 9, 1), datetime.date(2019, 10, 31)


def tile_calendar(seed, n_dates: tuple[int, int], start: datetime.date = SEASON_START,
                  end: datetime.date = SEASON_END) -> tuple[datetime.date, ...]:
    """A tile's acquisition dates: ``REVISIT_DAYS`` slots from a random first day, some missing.

    ``seed`` is anything ``numpy.random.default_rng`` takes; the length is drawn in ``n_dates``
    (inclusive). Raises ValueError if the season holds fewer slots than the drawn length.
    """
    rng = np.random.default_rng(seed)
    first = start + datetime.timedelta(days=int(rng.integers(REVISIT_DAYS)))
    n_slots = (end - first).days // REVISIT_DAYS + 1
    length = int(rng.integers(n_dates[0], n_dates[1] + 1))
    if not 1 <= length <= n_slots:
        raise ValueError(f"cannot draw {length} dates from {n_slots} acquisition slots between {start} and {end}")
    slots = np.sort(rng.choice(n_slots, size=length, replace=False))
    return tuple(first + datetime.timedelta(days=int(REVISIT_DAYS * slot)) for slot in slots)


@functools.lru_cache(maxsize=16)
def psf_matrix(n_pixels: int, factor: int = SUBPIXELS, sigma: float = PSF_SIGMA_PX,
               margin: int = RENDER_MARGIN_PX) -> np.ndarray:
    """(n_pixels, (n_pixels + 2 margin) factor) weights: pixel integration (box) convolved with a Gaussian.

    Column j is the sub-cell of centre ``(j + 0.5) / factor - margin`` (pixel units). Rows sum to 1.
    Applied along both axes, it turns a rendered sub-cell image into the pixel image.
    """
    centres = (np.arange((n_pixels + 2 * margin) * factor) + 0.5) / factor - margin
    offset = centres[None, :] - (np.arange(n_pixels) + 0.5)[:, None]  # (n, n_sub)
    erf = np.vectorize(math.erf)
    scale = sigma * math.sqrt(2.0)
    weight = erf((offset + 0.5) / scale) - erf((offset - 0.5) / scale)  # box [-0.5, 0.5] * Gaussian
    weight = (weight / weight.sum(axis=1, keepdims=True)).astype(np.float32)
    weight.setflags(write=False)  # cached: shared by every call
    return weight


def apply_psf(image: np.ndarray, n_pixels: int) -> np.ndarray:
    """Sub-cell image (..., S, S) -> pixel image (..., n_pixels, n_pixels) through :func:`psf_matrix`."""
    matrix = psf_matrix(n_pixels)
    return matrix @ image @ matrix.T  # (..., S, S) -> (..., n, n)


def gaussian_fields(rng: np.random.Generator, n: int, height: int, width: int, scale: float) -> np.ndarray:
    """``n`` stationary Gaussian random fields (n, H, W), zero mean and unit variance, smoothing scale in cells.

    White noise is filtered by a Gaussian kernel in Fourier space on a grid padded by 3 scales
    (no wrap-around at the edges) and divided by the theoretical standard deviation, so a patch is
    not forced to zero mean (a whole patch can be wet, hazy or under a cloud).
    """
    pad = math.ceil(3 * scale)
    full_h, full_w = height + 2 * pad, width + 2 * pad
    ky, kx = np.fft.fftfreq(full_h)[:, None], np.fft.fftfreq(full_w)[None, :]
    kernel = np.exp(-2 * np.pi ** 2 * scale ** 2 * (ky ** 2 + kx ** 2))  # (full_h, full_w)
    noise = rng.standard_normal((n, full_h, full_w), dtype=np.float32)
    half = kernel[:, : full_w // 2 + 1]  # the rfft half-plane
    field = np.fft.irfft2(np.fft.rfft2(noise) * half, s=(full_h, full_w))
    field /= np.sqrt(np.mean(kernel ** 2))  # Parseval: the std of filtered unit white noise
    return field[:, pad:pad + height, pad:pad + width].astype(np.float32)


def _layout(rng: np.random.Generator, n_sub: int, offset_sub: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-cell component map (n_sub, n_sub): Voronoi cell index, or N (hedge) / N + 1 (track).

    Seeds cover the rendered area plus ``LAYOUT_MARGIN_PX``; coordinates are in pixels. Returns the
    map, the number of cells N and the cell centres (N, 2).
    """
    lo, hi = -offset_sub / SUBPIXELS - LAYOUT_MARGIN_PX, n_sub / SUBPIXELS - offset_sub / SUBPIXELS + LAYOUT_MARGIN_PX
    n_cells = max(2, round((hi - lo) ** 2 / PIXELS_PER_CELL))
    seeds = rng.uniform(lo, hi, size=(n_cells, 2))  # (N, 2) row, col in pixels
    centre = (np.arange(n_sub) + 0.5) / SUBPIXELS - offset_sub / SUBPIXELS
    points = np.stack(np.meshgrid(centre, centre, indexing="ij"), axis=-1).reshape(-1, 2)  # (S*S, 2)
    dist2 = ((points[:, None, :] - seeds[None]) ** 2).sum(axis=2)  # (S*S, N)
    two = np.argpartition(dist2, 1, axis=1)[:, :2]  # (S*S, 2) two nearest, unsorted
    d_two = np.take_along_axis(dist2, two, axis=1)
    order = np.argsort(d_two, axis=1)
    nearest, second = np.take_along_axis(two, order, axis=1).T
    d1, d2 = np.sort(d_two, axis=1).T
    gap = np.linalg.norm(seeds[nearest] - seeds[second], axis=1)
    to_boundary = (d2 - d1) / (2 * gap) * PIXEL_SIZE_M  # metres to the bisector of the two seeds
    kind = rng.random((n_cells, n_cells))
    kind = np.triu(kind, 1) + np.triu(kind, 1).T  # one draw per boundary
    half_width = rng.uniform(*HEDGE_HALF_WIDTH_M, size=(n_cells, n_cells))
    half_width = np.triu(half_width, 1) + np.triu(half_width, 1).T
    pair_kind = kind[nearest, second]
    hedge = (pair_kind < HEDGE_PROB) & (to_boundary < half_width[nearest, second])
    track = (pair_kind >= HEDGE_PROB) & (pair_kind < HEDGE_PROB + TRACK_PROB) & (to_boundary < TRACK_HALF_WIDTH_M)
    component = np.where(hedge, n_cells, np.where(track, n_cells + 1, nearest))
    return component.reshape(n_sub, n_sub), n_cells, seeds  # (S*S,) -> (S, S)


def _cuts(days: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Mowing factor in (0, 1]: each cut removes ``CUT_DEPTH`` of the green, regrown with a time scale."""
    factor = np.ones(np.broadcast_shapes(days.shape, params[..., CUT1].shape))
    for column in (CUT1, CUT2, CUT3):
        cut = params[..., column]
        since = days - np.nan_to_num(cut)
        dip = CUT_DEPTH * _sigmoid(since / 1.5) * np.exp(-np.maximum(since, 0.0) / REGROWTH_DAYS)
        factor = factor * (1.0 - np.where(np.isnan(cut), 0.0, dip))
    return factor


def management(event_days: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Harvested, tilled and mowing factors in [0, 1] of parcels: one event day per parcel, not per pixel.

    ``event_days`` and ``params`` (PHENOLOGY rows, last axis) broadcast, e.g. (K, T) and (K, 1, 21).
    """
    p = params
    harvest_day = np.nan_to_num(p[..., HARVEST], nan=1e4)
    harvested = _sigmoid((event_days - harvest_day) / EVENT_DAYS)
    tilled = _sigmoid((event_days - harvest_day - np.nan_to_num(p[..., TILL])) / EVENT_DAYS)
    return harvested, tilled, _cuts(event_days, p)


def crop_state(pheno_days: np.ndarray, params: np.ndarray, events: tuple, vigour=1.0):
    """Green, dry and petal fractions of one crop season.

    ``pheno_days`` drive growth stages (they may carry a sub-parcel timing shift); ``events`` is
    :func:`management` of the parcel (harvest, tillage and mowing happen on one day per parcel);
    ``params`` are PHENOLOGY rows (last axis) broadcast against the days; ``vigour`` scales the peak.
    Returns three arrays in [0, 1] of the broadcast shape.
    """
    p = params.astype(np.float32)
    harvested, tilled, cuts = events
    peak = np.clip(p[..., PEAK] * vigour, 0.0, 1.0)
    spring = _sigmoid((pheno_days - p[..., GREEN_UP]) / p[..., RISE])
    sen = _sigmoid((pheno_days - p[..., SENESCENCE]) / p[..., FALL])
    perennial = p[..., PERENNIAL] > 0
    # annual crops: autumn establishment (winter crops), spring growth, senescence, harvest, tillage
    sow = p[..., SOW]
    autumn = np.where(np.isnan(sow), 0.0, p[..., WINTER_LEVEL] * _sigmoid((pheno_days - np.nan_to_num(sow) - EMERGENCE_DAYS) / 6.0))
    canopy = peak * np.maximum(autumn, spring)
    green_a = canopy * (1 - sen) * (1 - harvested)
    dry_a = canopy * sen * (1 - harvested) + p[..., STUBBLE] * harvested * (1 - tilled)
    # perennials: base cover all year, seasonal growth, mowing, summer browning
    total = (p[..., BASE] + (peak - p[..., BASE]) * spring * (1 - sen)) * cuts
    browned = p[..., BROWN] * np.exp(-0.5 * ((pheno_days - BROWN_DAY) / BROWN_WIDTH_DAYS) ** 2)
    green = np.where(perennial, total * (1 - browned), green_a)
    dry = np.where(perennial, total * browned + p[..., STUBBLE] * (1 - total), dry_a)
    flower_day = p[..., FLOWER]
    petals = np.where(np.isnan(flower_day), 0.0, FLOWER_FRACTION
                      * np.exp(-0.5 * ((pheno_days - np.nan_to_num(flower_day)) / FLOWER_WIDTH_DAYS) ** 2)) * green
    return green - petals, dry, petals


def _mostly_outside(seeds: np.ndarray, parcel_ids: np.ndarray) -> np.ndarray:
    """Ids of the parcels with less than ``VOID_INSIDE_FRACTION`` of their area inside the patch (void).

    A parcel's full area is counted on a 1-px grid over the seed domain (cells at the domain edge
    are truncated there, which only makes them look more inside).
    """
    lo, hi = seeds.min(), seeds.max()
    grid = np.arange(math.floor(lo), math.ceil(hi)) + 0.5
    points = np.stack(np.meshgrid(grid, grid, indexing="ij"), axis=-1).reshape(-1, 2)  # (G*G, 2)
    nearest = ((points[:, None, :] - seeds[None]) ** 2).sum(axis=2).argmin(axis=1)
    area = np.bincount(nearest, minlength=len(seeds))
    inside = np.bincount(parcel_ids.ravel(), minlength=len(seeds) + 1)[1:len(seeds) + 1]
    ids = np.flatnonzero((inside > 0) & (inside < VOID_INSIDE_FRACTION * area)) + 1
    return ids.astype(np.int32)


def regime_probs(cloud_fraction: float | None = None) -> tuple[float, ...]:
    """Probabilities of the clear, haze, broken-cloud and overcast regimes of a date. ``cloud_fraction``
    (None: :data:`CLOUD_FRACTION`, :data:`REGIME_PROBS` exactly) is the probability of broken cloud or
    overcast; the clear:haze and broken:overcast ratios of :data:`REGIME_PROBS` are kept."""
    if cloud_fraction is None:
        return REGIME_PROBS
    if not 0.0 <= cloud_fraction <= 1.0:
        raise ValueError(f"cloud_fraction must be in [0, 1], got {cloud_fraction}")
    clear, haze, broken, overcast = REGIME_PROBS
    fair = 1.0 - cloud_fraction
    return (fair * clear / (clear + haze), fair * haze / (clear + haze),
            cloud_fraction * broken / (broken + overcast), cloud_fraction * overcast / (broken + overcast))


def _weather(region_seed, dates: Sequence[datetime.date],
             cloud_fraction: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per date of a tile: regime, level (AOD or cloud cover) and soil wetness, each (T,).

    Each date takes the same number of draws whatever ``cloud_fraction`` is (:func:`regime_probs`),
    so the soil wetness (and the radar rendered from it) does not depend on it."""
    probs = regime_probs(cloud_fraction)
    regime, level, wet = np.zeros(len(dates), dtype=int), np.zeros(len(dates)), np.zeros(len(dates))
    for t, date in enumerate(dates):
        rng = np.random.default_rng([*np.atleast_1d(region_seed), date.toordinal()])
        regime[t] = rng.choice(len(probs), p=probs)
        bounds = {CLEAR: (0.0, 0.0), HAZE: HAZE_AOD, BROKEN: BROKEN_COVER, OVERCAST: OVERCAST_COVER}[regime[t]]
        level[t] = rng.uniform(*bounds)
        wet[t] = rng.uniform(0.3, 1.0) if rng.random() < WET_DATE_PROB else 0.0
    return regime, level, wet


def _region(region_seed) -> dict:
    """Tile-level properties: timing shift, class frequencies, two dominant soils."""
    rng = np.random.default_rng([*np.atleast_1d(region_seed), 7])
    freq = np.asarray(CLASS_FREQUENCY) * np.exp(rng.normal(0, TILE_MIX_STD, size=len(CLASSES)))
    return {"shift": rng.normal(0, TILE_SHIFT_STD), "class_p": freq / freq.sum(),
            "soils": rng.choice(len(SOIL_SPECTRA), size=2, replace=False)}


def _atmosphere(rng, regime, level, height, width):
    """Haze AOD (T, H, W), cloud opacity (T, H, W) and shadow (T, H, W), float32."""
    n = len(regime)
    aod = np.zeros((n, height, width), np.float32)
    opacity = np.zeros((n, height, width), np.float32)
    shadow = np.zeros((n, height, width), np.float32)
    affected = np.flatnonzero(regime != CLEAR)
    fields = np.zeros((n, 3, height, width), np.float32)
    fields[affected] = gaussian_fields(rng, 3 * affected.size, height, width, CLOUD_SCALE_PX).reshape(-1, 3, height, width)
    for t in affected:
        if regime[t] == HAZE:
            aod[t] = level[t] * np.clip(1 + 0.3 * fields[t, 0], 0.3, None)
            if rng.random() < CIRRUS_PROB:
                opacity[t] = rng.uniform(*CIRRUS_OPACITY) * _sigmoid(2 * fields[t, 1] + 1)
        elif regime[t] in (BROKEN, OVERCAST):
            cover = np.clip(level[t] + rng.normal(0, PATCH_COVER_STD), 0.0, 1.0)
            threshold = _normal_quantile(1 - cover)
            opacity[t] = np.clip((fields[t, 1] - threshold) / CLOUD_EDGE + 0.5, 0, 1)
            shadow[t] = np.clip((fields[t, 2] - threshold) / CLOUD_EDGE + 0.5, 0, 1) * (1 - opacity[t])
    return aod, opacity, shadow


def _normal_quantile(p: float) -> float:
    """Standard normal quantile (Acklam-free bisection on erf; p in [0, 1], clipped to +-5)."""
    lo, hi = -5.0, 5.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p else (lo, mid)
    return 0.5 * (lo + hi)


def _draw_scene(rng: np.random.Generator, height: int, region_seed) -> dict:
    """Every random, date-independent property of a version-2 scene (layout, crops, timing offsets, fields).

    The draws happen in one fixed order from ``rng``, so the optical (:func:`generate_scene`) and the
    radar (:func:`generate_radar`) renderings of a patch see the same scene.
    """
    region = _region(region_seed)
    n_sub = (height + 2 * RENDER_MARGIN_PX) * SUBPIXELS
    component, n_cells, seeds = _layout(rng, n_sub, RENDER_MARGIN_PX * SUBPIXELS)

    # ---- what each cell is ----
    is_background = rng.random(n_cells) < BACKGROUND_CELL_FRACTION
    kinds = rng.choice(len(BACKGROUND_COVER_PROBS), size=n_cells, p=BACKGROUND_COVER_PROBS)
    crop = rng.choice(len(CLASSES), size=n_cells, p=region["class_p"])  # row of PHENOLOGY
    annual_rows = np.flatnonzero(PHENOLOGY[:, PERENNIAL] == 0)
    annual_p = np.asarray(CLASS_FREQUENCY)[annual_rows] / np.sum(np.asarray(CLASS_FREQUENCY)[annual_rows])
    previous = np.where(PHENOLOGY[crop, PERENNIAL] > 0, crop, annual_rows[rng.choice(annual_rows.size, size=n_cells, p=annual_p)])
    params = PHENOLOGY[crop].copy()  # (N, 21)
    params[is_background] = np.where((kinds[is_background] == FOREST)[:, None], BACKGROUND_PHENOLOGY[0],
                                     BACKGROUND_PHENOLOGY[1])  # built-up and water: fractions overridden below
    params[:, PEAK] *= 1 + rng.normal(0, PARCEL_PEAK_STD, size=n_cells)
    prev_params = PHENOLOGY[previous].copy()
    prev_params[is_background] = params[is_background]
    sow = params[:, SOW]
    winter = sow < 120
    latest_spring = np.maximum(np.nan_to_num(sow, nan=200.0) - 20.0, PREP_SPRING_FIRST)
    prep = np.where(winter, sow - rng.uniform(*PREP_WINTER_DAYS, size=n_cells),
                    PREP_SPRING_FIRST + rng.random(n_cells) * (latest_spring - PREP_SPRING_FIRST))
    cover_crop = ~winter & ~np.isnan(sow) & (rng.random(n_cells) < COVER_CROP_PROB)
    cover_start = prev_params[:, HARVEST] - 365.0 + COVER_CROP_DELAY
    leaf = LEAF_SPECTRA[crop]  # (N, 13)
    leaf[is_background] = np.where((kinds[is_background] == FOREST)[:, None], FOREST_LEAF, GENERIC_LEAF)
    residue = params[:, RESIDUE]
    shade = np.where(is_background & (kinds == FOREST), CANOPY_SHADE, 1.0)
    label_of = np.where(is_background, 0, np.asarray(CLASSES)[crop])
    # hedges (component N) and tracks (N + 1): hedges are forest-like, tracks soil with a grass verge
    params = np.vstack([params, HEDGE_ROW, BACKGROUND_PHENOLOGY[1]])
    prev_params = np.vstack([prev_params, HEDGE_ROW, BACKGROUND_PHENOLOGY[1]])
    prep = np.append(prep, [_NAN, _NAN])
    cover_crop = np.append(cover_crop, [False, False])
    cover_start = np.append(cover_start, [0.0, 0.0])
    leaf = np.vstack([leaf, FOREST_LEAF, GENERIC_LEAF])
    residue = np.append(residue, [0.6, 0.9])
    shade = np.append(shade, [CANOPY_SHADE, 1.0])
    label_of = np.append(label_of, [0, 0])
    special = np.append(np.where(is_background, kinds, -1), [FOREST, -2])  # -2: track
    row_of = np.append(np.where(is_background, -1, crop), [-1, -1])  # PHENOLOGY row of each component, -1: none

    # ---- timing: tile + patch + parcel (+ sub-parcel for growth stages) ----
    patch_shift = rng.normal(0, PATCH_SHIFT_STD)
    parcel_shift = rng.normal(0, PARCEL_SHIFT_STD, size=n_cells + 2)
    timing = gaussian_fields(rng, 1, n_sub, n_sub, TIMING_SCALE_PX * SUBPIXELS)[0]
    vigour = gaussian_fields(rng, 1, n_sub, n_sub, VIGOUR_SCALE_PX * SUBPIXELS)[0]
    soil_zone = gaussian_fields(rng, 1, n_sub, n_sub, SOIL_ZONE_SCALE_PX * SUBPIXELS)[0]
    soil_bright = gaussian_fields(rng, 1, n_sub, n_sub, SOIL_ZONE_SCALE_PX * SUBPIXELS)[0]
    drainage = gaussian_fields(rng, 1, n_sub, n_sub, DRAINAGE_SCALE_PX * SUBPIXELS)[0]
    gain = rng.uniform(0.3, 1.7, size=n_cells + 2).astype(np.float32)  # how strongly each parcel expresses the fields
    vigour_px = 1 + VIGOUR_STD * gain[component] * vigour  # (S, S)
    texture = TEXTURE_STD * rng.standard_normal((1, n_sub, n_sub), dtype=np.float32)
    return {
        "region": region, "n_sub": n_sub, "component": component, "n_cells": n_cells, "seeds": seeds,
        "params": params, "prev_params": prev_params, "prep": prep, "cover_crop": cover_crop,
        "cover_start": cover_start, "leaf": leaf, "residue": residue, "shade": shade, "label_of": label_of,
        "special": special, "row_of": row_of, "patch_shift": patch_shift, "parcel_shift": parcel_shift,
        "timing": timing, "soil_zone": soil_zone, "soil_bright": soil_bright, "drainage": drainage, "gain": gain,
        "vigour_px": vigour_px, "texture": texture,
    }


def _fractions(scene: dict, dates: Sequence[datetime.date]) -> tuple[np.ndarray, ...]:
    """Sub-cell cover fractions of a :func:`_draw_scene` scene on ``dates``: green (current crop), other
    green (previous crop, cover crop, weeds), dry, petals and the residue term, each (T, S, S), the soil
    fraction (T, S, S) and the component kind map (S, S) (background kind, -1 crop, -2 track)."""
    region, component, params, prev_params = scene["region"], scene["component"], scene["params"], scene["prev_params"]
    prep, cover_crop, cover_start, residue = scene["prep"], scene["cover_crop"], scene["cover_start"], scene["residue"]
    gain, timing, vigour_px = scene["gain"], scene["timing"], scene["vigour_px"]
    days = season_days(dates) - region["shift"] - scene["patch_shift"]  # (T,)
    cell_days = (days[None, :] - scene["parcel_shift"][:, None]).astype(np.float32)  # (K, T) management events per parcel
    pheno_days = cell_days[component].transpose(2, 0, 1) + (SUBPARCEL_SHIFT_DAYS * gain[component] * timing)[None]  # (S, S, T) -> (T, S, S)
    to_pixels = lambda a: a[component].transpose(2, 0, 1)  # per parcel (K, T) -> (S, S, T) -> (T, S, S)

    # ---- fractions per sub-cell and date: current crop at sub-cell level, the rest per parcel ----
    events = [to_pixels(a) for a in management(cell_days, params[:, None])]
    green, dry, petals = crop_state(pheno_days, params[component][None], events, vigour_px[None])
    prev_days = cell_days + 365.0  # the previous season, same parcel
    g_prev, d_prev, _ = crop_state(prev_days, prev_params[:, None], management(prev_days, prev_params[:, None]))
    before_prep = 1 - _sigmoid((cell_days - np.nan_to_num(prep, nan=-1e4)[:, None]) / EVENT_DAYS)  # (K, T)
    cover = COVER_CROP_PEAK * _sigmoid((cell_days - cover_start[:, None]) / 8.0) * cover_crop[:, None]
    annual = (params[:, PERENNIAL] == 0)[:, None]
    other_green = to_pixels(np.where(annual, (g_prev + cover) * before_prep, 0.0))
    prev_dry = np.where(annual, d_prev * before_prep, 0.0)  # (K, T)
    residue_term = dry * to_pixels(np.broadcast_to(residue[:, None], prev_dry.shape)) + to_pixels(prev_dry * prev_params[:, RESIDUE, None])
    dry = dry + to_pixels(prev_dry)
    kind_px = scene["special"][component]  # (S, S) background kind, -1 crop, -2 track
    green = np.where(kind_px == -2, TRACK_GREEN, np.where(kind_px == BUILT, BUILT_GREEN, green))
    green = np.where(kind_px == WATER, 0.0, green)
    dry = np.where(np.isin(kind_px, (-2, BUILT, WATER)), 0.0, dry)
    residue_term = np.where(np.isin(kind_px, (-2, BUILT, WATER)), 0.0, residue_term)
    green = np.clip(green * (1 + scene["texture"]), 0, 1)
    total = green + other_green + dry + petals
    excess = np.maximum(total, 1.0)  # keep the fractions a partition of the sub-cell
    green, other_green, dry, petals, residue_term = (a / excess for a in (green, other_green, dry, petals, residue_term))
    soil_fraction = 1 - green - other_green - dry - petals  # (T, S, S)
    return green, other_green, dry, petals, residue_term, soil_fraction, kind_px


def generate_scene(
    seed,
    height: int,
    width: int,
    dates: Sequence[datetime.date],
    band_names: Sequence[str],
    region_seed=0,
    atmosphere: bool = True,
    return_fractions: bool = False,
    cloud_fraction: float | None = None,
) -> dict:
    """Generate one version-2 scene (square patches: ``height == width``).

    Args:
        seed: the patch (layout, fields, clouds); ``numpy.random.default_rng`` input.
        region_seed: the tile: timing shift, crop mix, soils and each date's weather regime.
        atmosphere: False leaves out haze, clouds and shadows (diagnostics and tests).
        return_fractions: also return the pixel fractions ``green``, ``dry``, ``soil`` (T, H, W).
        cloud_fraction: probability that a date is under broken cloud or overcast (None: 0.35,
            :data:`CLOUD_FRACTION`); the layout, crops and soil wetness do not depend on it.

    Returns:
        ``reflectance`` int16 (T, C, H, W) (x 10000, ``band_names`` order), ``label`` int64 (H, W)
        PASTIS class indices (0 = background), ``parcel_ids`` int32 (H, W) (0 = background),
        ``cloud`` bool (T, H, W) (opacity > 0.3), ``opacity``, ``shadow`` float32 (T, H, W),
        ``aod`` float32 (T,) patch-mean haze optical depth, ``dominance`` float32 (H, W) the PSF
        weight of the labelled component, ``void_ids`` int32 the parcels mostly outside the patch.
    """
    if height != width:
        raise ValueError(f"version-2 scenes are square, got {height}x{width}")
    unknown = [name for name in band_names if name not in BAND_NAMES_ALL]
    if unknown:
        raise ValueError(f"unknown band names {unknown}; expected names from {BAND_NAMES_ALL}")
    bands = np.array([BAND_NAMES_ALL.index(name) for name in band_names], dtype=int)
    rng = np.random.default_rng(seed)
    scene = _draw_scene(rng, height, region_seed)
    region, n_sub, component, n_cells, seeds = (scene[k] for k in ("region", "n_sub", "component", "n_cells", "seeds"))
    shade, label_of, drainage = scene["shade"], scene["label_of"], scene["drainage"]
    soil_zone, soil_bright, leaf = scene["soil_zone"], scene["soil_bright"], scene["leaf"]
    green, other_green, dry, petals, residue_term, soil_fraction, kind_px = _fractions(scene, dates)

    # ---- soil end-member per sub-cell and date ----
    soils = SOIL_SPECTRA[region["soils"]][:, bands]  # (2, C)
    mix = _sigmoid(3 * soil_zone)[..., None]  # (S, S, 1) smooth zones of the two regional soils
    soil = (mix * soils[0] + (1 - mix) * soils[1]) * (1 + SOIL_BRIGHTNESS_STD * soil_bright)[..., None]  # (S, S, C)
    soil = np.where((kind_px == BUILT)[..., None], BUILT_SPECTRUM[bands], soil)
    soil = np.where((kind_px == WATER)[..., None], WATER_SPECTRUM[bands], soil)
    _, _, wet = _weather(region_seed, dates)
    swir = np.isin(bands, SWIR_BANDS)
    band_weight = np.where(swir, 1.0, 0.7)  # (C,)
    wetness = wet[:, None, None] * _sigmoid(1.5 * drainage)[None]  # (T, S, S)
    wet_soil = -MOISTURE_DARKENING * soil_fraction * wetness  # (T, S, S): soil term darkened by wetness

    # ---- linear mixing of end-members (float32), then the sensor's PSF ----
    shade_px = shade[component].astype(np.float32)  # (S, S)
    f32 = lambda a: (a * shade_px).astype(np.float32)[..., None]  # (T, S, S) -> (T, S, S, 1)
    fixed = np.stack([GENERIC_LEAF, STRAW_SPECTRUM, PETAL_SPECTRUM])[:, bands].astype(np.float32)  # (3, C)
    soil32 = soil.astype(np.float32)  # (S, S, C)
    sub = np.stack([other_green, residue_term, petals], axis=-1).astype(np.float32) @ fixed  # (T, S, S, C)
    sub *= shade_px[..., None]
    sub += f32(green) * leaf[component][..., bands].astype(np.float32)
    sub += f32(soil_fraction) * soil32
    sub += f32(wet_soil) * (soil32 * band_weight.astype(np.float32))
    sub = np.ascontiguousarray(sub.transpose(0, 3, 1, 2))  # (T, S, S, C) -> (T, C, S, S)
    reflectance = apply_psf(sub, height)  # (T, C, H, W)
    abundance = apply_psf(np.eye(n_cells + 2, dtype=np.float32)[component].transpose(2, 0, 1), height)  # (K, H, W)
    dominant = abundance.argmax(axis=0)
    label = label_of[dominant]
    parcel_ids = np.where(label > 0, dominant + 1, 0).astype(np.int32)
    void_ids = _mostly_outside(seeds, parcel_ids)

    # ---- atmosphere and sensor noise ----
    regime, level, _ = _weather(region_seed, dates, cloud_fraction)
    if not atmosphere:
        regime = np.zeros_like(regime)
    aod, opacity, shadow = _atmosphere(rng, regime, level, height, width)
    tau = aod[:, None] * (WAVELENGTH_NM[bands] / 550.0)[None, :, None, None].astype(np.float32) ** -ANGSTROM  # (T, C, H, W)
    reflectance = reflectance * (1 - 0.5 * tau) + HAZE_PATH_REFLECTANCE * tau
    diffuse = np.interp(WAVELENGTH_NM[bands], (490.0, 2190.0), (DIFFUSE_FRACTION_BLUE, DIFFUSE_FRACTION_SWIR))
    reflectance = reflectance * (1 - SHADOW_DARKENING * (1 - diffuse)[None, :, None, None] * shadow[:, None])
    cloud = CLOUD_SPECTRUM[bands][None, :, None, None].astype(np.float32)
    reflectance = reflectance * (1 - opacity[:, None]) + cloud * opacity[:, None]
    reflectance += SENSOR_NOISE * rng.standard_normal(reflectance.shape, dtype=np.float32)
    stored = np.clip(np.rint(reflectance * np.float32(REFLECTANCE_SCALE)), 1, np.iinfo(np.int16).max)
    out = {
        "reflectance": stored.astype(np.int16),
        "label": label.astype(np.int64),
        "parcel_ids": parcel_ids,
        "cloud": opacity > CLOUD_MASK_OPACITY,
        "opacity": opacity,
        "shadow": shadow,
        "aod": aod.mean(axis=(1, 2)),
        "dominance": abundance.max(axis=0),
        "void_ids": void_ids,
    }
    if return_fractions:
        fractions = {"green": green + other_green + petals, "dry": dry, "soil": soil_fraction}
        out.update({name: apply_psf(value.astype(np.float32), height) for name, value in fractions.items()})
    return out
