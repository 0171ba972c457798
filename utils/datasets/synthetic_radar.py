"""Sentinel-1 radar series of the version-2 synthetic scenes (PASTIS-R's ``S1A``/``S1D``).

The radar image of a patch is rendered from the SAME scene as its optical series
(:func:`utils.datasets.synthetic_v2._draw_scene`: layout, crops, previous crops, sowing and harvest
dates, within-field timing and vigour, soil zones, drainage) and the same weather (the wet dates of
:func:`utils.datasets.synthetic_v2._weather` are keyed by the calendar day, so a rainy day is wet
for both sensors), evaluated on the radar's own acquisition dates. Radar sees through clouds: there
are no clouds, haze or shadows here. Every parameter below was fixed from published values (cited)
before any model was trained on the radar series; none was tuned on a model's outcome.

Parameters and their source (values in the constants below):

* **Backscatter model.** Water-cloud model (Attema & Ulaby, Radio Science 13(2), 1978), per
  polarisation, in linear power, with V1 = 1 and V2 = LAI (a common simplification of the model)::

      sigma0 = A cos(theta) (1 - tau2) + tau2 * sigma0_soil,   tau2 = exp(-2 B LAI / cos(theta))

  ``A`` is then the backscatter of a dense canopy (LAI -> infinity) at ``cos(theta)`` = 1. Per crop
  structure group (``RADAR_GROUPS``) we take ``A`` from the dense-canopy levels that Sentinel-1 shows
  over French crops (Veloso et al., Remote Sens. Environ. 199, 2017, S1 over south-west France:
  wheat/barley VV falls to about -16 dB at heading because vertical stems attenuate VV, while VH stays
  near -19 dB; maize, sunflower and soybean VH rises to about -14/-15 dB, VV to about -9/-10 dB;
  grassland stays near VV -11 / VH -17 dB), and forest at about VV -7.5 / VH -12.5 dB (C-band
  volume scattering of temperate broadleaf forest). ``B`` (extinction per unit LAI) is in the range
  0.1-0.4 of C-band water-cloud calibrations with LAI as descriptor; VV extinction of cereals is
  the highest of the range (vertical stems), the others take mid-range values.
* **Vegetation descriptor.** LAI from the scene's green cover fraction through Beer's law,
  ``fc = 1 - exp(-K_EXT LAI)`` with ``K_EXT`` = 0.5 (spherical leaf-angle distribution), cover
  capped at ``FC_MAX`` (LAI <= 6). Dry standing matter (ripening cereals, straw) holds about a sixth
  of the water of green leaves per unit area: it counts ``DRY_WATER_WEIGHT`` of its LAI (a ripe
  cereal's VV recovers before harvest, as Veloso et al. observe). Current crop, cover crop, weeds
  and the previous crop's regrowth all count as green.
* **Soil.** ``sigma0_soil[dB] = C + D * mv[vol %] + roughness``: ``D`` = 0.25 dB per vol-% at C-band
  VV (Baghdadi et al., e.g. Remote Sens. 9, 2017: 0.2-0.3 dB/vol-%), same slope for VH; cross-pol
  ratio of bare soil ``SOIL_CROSS_POL_DB`` = -8 dB (surface scattering: VH 6-10 dB below VV);
  ``C`` such that dry soil (``MV_DRY`` = 0.10 m3/m3) gives VV -13.5 dB. Per-parcel roughness
  (tillage, clods, crusts) adds a normal offset of ``ROUGHNESS_STD_DB`` = 1.5 dB, fixed per parcel.
* **Wet soil.** Volumetric moisture ``mv = MV_DRY + (MV_WET - MV_DRY) * wetness`` (``MV_WET`` =
  0.40, near saturation of loams) with the optical generator's ``wetness`` (the date's rain times the
  static drainage field): bare soil brightens by up to ~7 dB after rain, as observed at C-band.
* **Geometry and calendars.** Incidence angle per tile and orbit uniform in 30-45 deg (the
  Sentinel-1 IW swath covers 29-46 deg). Each orbit has its own calendar: every
  ``RADAR_REVISIT_DAYS`` = 12 days (one satellite's repeat cycle) from a first day drawn per tile and
  orbit, the two orbits on different days; no acquisition is missing (SAR is systematic and has no
  cloud filter). The PASTIS-R release
  (Sentinel-1A and 1B, 6-day revisit) has ~70 dates per orbit; one satellite gives ~35 here, in
  proportion to the ~25 optical dates of the synthetic set (real PASTIS: ~45).
* **Sensor.** Additive noise floor ``NESZ_DB`` = -22 dB (Sentinel-1 IW noise-equivalent sigma zero,
  ESA Sentinel-1 User Guide), then multiplicative speckle: per pixel, date and polarisation an
  independent Gamma(L, 1/L) draw with ``ENL`` = 4.4 looks (ESA Sentinel-1 User Guide, IW GRD high
  resolution). Each 10 m pixel integrates the scene through the optical generator's PSF (linear power
  mixing); the spatial correlation of speckle from the 20 x 22 m GRD resolution is not modelled.
* **Channels**, as the PASTIS-R release (PASTIS/README.md): VV and VH in dB and the "VV/VH" ratio in
  dB (VV_dB - VH_dB), float32. Built-up areas return double-bounce ``BUILT_DB``; calm water is dark
  (``WATER_DB``), both at the noise floor's scale.

Everything is vectorised numpy and deterministic by ``seed``, ``region_seed`` and the orbit.
"""

import datetime
import math
import zlib
from collections.abc import Sequence

import numpy as np

from utils.datasets import synthetic_v2 as v2

# ---- geometry and calendars ----------------------------------------------------------------------------
ORBITS = ("S1A", "S1D")  # ascending, descending: PASTIS-R source names
INCIDENCE_DEG = (30.0, 45.0)
RADAR_REVISIT_DAYS = 12
RADAR_STREAM = 0x51  # separates the radar's random streams from the optical ones

# ---- water-cloud model -----------------------------------------------------------------------------------
K_EXT, FC_MAX, DRY_WATER_WEIGHT = 0.5, 0.95, 0.15
CEREAL, BROADLEAF, GRASS, VINE, FOREST_GROUP = range(5)
# dense-canopy level (dB, at cos(theta) = 1) and extinction B per unit LAI, VV then VH
DENSE_DB = np.array([[-16.0, -19.0], [-9.5, -14.5], [-11.0, -17.0], [-10.0, -16.0], [-7.5, -12.5]])
EXTINCTION = np.array([[0.40, 0.15], [0.20, 0.20], [0.25, 0.20], [0.20, 0.20], [0.30, 0.30]])
RADAR_GROUPS = {  # PASTIS class -> structure group (v2.CLASSES)
    1: GRASS,
    2: CEREAL,
    3: BROADLEAF,
    4: CEREAL,
    5: BROADLEAF,
    6: CEREAL,
    7: BROADLEAF,
    8: VINE,
    9: BROADLEAF,
    10: CEREAL,
    14: GRASS,
    15: BROADLEAF,
}

# ---- soil ----------------------------------------------------------------------------------------------------
MV_DRY, MV_WET = 0.10, 0.40  # m3/m3
SOIL_MV_SLOPE_DB = 0.25  # dB per vol-%
SOIL_DRY_VV_DB = -13.5
SOIL_CROSS_POL_DB = -8.0
ROUGHNESS_STD_DB = 1.5
BUILT_DB, WATER_DB = (-3.0, -11.0), (-22.0, -28.0)  # VV, VH

# ---- sensor ----------------------------------------------------------------------------------------------------
NESZ_DB = -22.0
ENL = 4.4
S1_CHANNELS = ("VV", "VH", "VV/VH")


def db(linear: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(linear)


def linear(decibels) -> np.ndarray:
    return 10.0 ** (np.asarray(decibels, dtype=np.float64) / 10.0)


def water_cloud(dense_db, extinction, lai: np.ndarray, soil: np.ndarray, theta_deg: float) -> np.ndarray:
    """Water-cloud backscatter (linear) of a canopy of ``lai`` over a soil of backscatter ``soil`` (linear).

    ``dense_db``: the canopy's backscatter at infinite LAI and cos(theta) = 1 (A in dB, V1 = 1);
    ``extinction``: B per unit LAI. Arguments broadcast.
    """
    cos = math.cos(math.radians(theta_deg))
    tau2 = np.exp(-2.0 * np.asarray(extinction) * lai / cos)
    return linear(dense_db) * cos * (1.0 - tau2) + tau2 * soil


def lai_from_cover(cover: np.ndarray) -> np.ndarray:
    """Beer's law: leaf area index of a green cover fraction, capped at ``FC_MAX``."""
    return -np.log1p(-np.clip(cover, 0.0, FC_MAX)) / K_EXT


def soil_moisture(wetness: np.ndarray) -> np.ndarray:
    """Volumetric soil moisture (m3/m3) of the optical generator's wetness in [0, 1]."""
    return MV_DRY + (MV_WET - MV_DRY) * wetness


def soil_db(mv: np.ndarray, roughness_db: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Bare-soil VV and VH backscatter (dB) at moisture ``mv`` (m3/m3) and roughness offset."""
    vv = SOIL_DRY_VV_DB + SOIL_MV_SLOPE_DB * 100.0 * (mv - MV_DRY) + roughness_db
    return vv, vv + SOIL_CROSS_POL_DB


def apply_speckle(rng: np.random.Generator, intensity: np.ndarray, looks: float = ENL) -> np.ndarray:
    """Multiplicative speckle: ``intensity`` (linear) times independent Gamma(looks, 1/looks) draws (mean 1)."""
    return intensity * rng.gamma(looks, 1.0 / looks, size=intensity.shape)


def radar_calendar(
    first_offset: int,
    start: datetime.date = v2.SEASON_START,
    end: datetime.date = v2.SEASON_END,
    revisit: int = RADAR_REVISIT_DAYS,
) -> tuple[datetime.date, ...]:
    """One orbit's acquisition dates: every ``revisit`` days from ``start + first_offset`` days, none missing."""
    first = start + datetime.timedelta(days=int(first_offset))
    return tuple(first + datetime.timedelta(days=step) for step in range(0, (end - first).days + 1, revisit))


def tile_radar_calendars(
    seed: int, tile: str, revisit: int = RADAR_REVISIT_DAYS
) -> dict[str, tuple[datetime.date, ...]]:
    """The ascending and descending calendars of a synthetic tile (PASTIS-R: one per orbit and tile).

    The ascending orbit's first day is drawn in the first ``revisit`` days; the descending orbit's is
    another of those days (the two orbits never share a date).
    """
    rng = np.random.default_rng([seed, zlib.crc32(tile.encode()), RADAR_STREAM])
    ascending = int(rng.integers(revisit))
    descending = (ascending + 1 + int(rng.integers(revisit - 1))) % revisit
    return {orbit: radar_calendar(offset, revisit=revisit) for orbit, offset in zip(ORBITS, (ascending, descending))}


def incidence_angle(region_seed, orbit: str) -> float:
    """The incidence angle (deg) of ``orbit`` over a tile."""
    rng = np.random.default_rng([*np.atleast_1d(region_seed), RADAR_STREAM, ORBITS.index(orbit)])
    return float(rng.uniform(*INCIDENCE_DEG))


def generate_radar(
    seed, size: int, dates: Sequence[datetime.date], region_seed, orbit: str, speckle: bool = True
) -> dict:
    """The Sentinel-1 series of one version-2 patch on ``dates`` (its orbit's calendar).

    ``seed`` and ``region_seed`` are those of :func:`utils.datasets.synthetic_v2.generate_scene` for the
    same patch: the scene is the same. ``speckle`` False leaves out the speckle (tests, diagnostics).

    Returns:
        ``backscatter`` float32 (T, 3, H, W): VV, VH and VV/VH, all in dB; ``lai`` and
        ``soil_moisture`` float32 (T, H, W), the pixel means of the sub-cell values; ``label`` int64
        (H, W) and ``parcel_ids`` int32 (H, W) as the optical scene; ``incidence_deg`` float.
    """
    if orbit not in ORBITS:
        raise ValueError(f"orbit must be one of {ORBITS}, got {orbit!r}")
    scene = v2._draw_scene(np.random.default_rng(seed), size, region_seed)
    green, other_green, dry, petals, _, soil_fraction, kind_px = v2._fractions(scene, dates)
    component, n_cells = scene["component"], scene["n_cells"]
    theta = incidence_angle(region_seed, orbit)
    _, _, wet = v2._weather(region_seed, dates)
    wetness = wet[:, None, None] * v2._sigmoid(1.5 * scene["drainage"])[None]  # (T, S, S), as the optical soil
    mv = soil_moisture(wetness)
    parcel_rng = np.random.default_rng([*np.atleast_1d(seed), RADAR_STREAM])  # both orbits see the same fields
    roughness = parcel_rng.normal(0.0, ROUGHNESS_STD_DB, size=n_cells + 2)[component]  # (S, S)
    soil_vv, soil_vh = soil_db(mv, roughness[None])
    lai = lai_from_cover(green + other_green + petals) + DRY_WATER_WEIGHT * lai_from_cover(dry)  # (T, S, S)

    group = np.full(component.shape, GRASS)  # hedgerow verges, tracks' grass, fallow: grassland
    crop_class = scene["label_of"][component]  # (S, S) PASTIS class, 0 background
    for pastis_class, radar_group in RADAR_GROUPS.items():
        group = np.where(crop_class == pastis_class, radar_group, group)
    group = np.where(kind_px == v2.FOREST, FOREST_GROUP, group)  # forests and hedges (kind FOREST)
    channels = []
    for pol, soil in enumerate((soil_vv, soil_vh)):
        sigma = water_cloud(
            DENSE_DB[group, pol][None], EXTINCTION[group, pol][None], lai, linear(soil), theta
        )  # (T, S, S)
        sigma = np.where(kind_px == v2.BUILT, linear(BUILT_DB[pol]), sigma)
        sigma = np.where(kind_px == v2.WATER, linear(WATER_DB[pol]), sigma)
        channels.append(v2.apply_psf(sigma.astype(np.float32), size))  # (T, S, S) -> (T, H, W) linear mixing
    intensity = np.stack(channels, axis=1).astype(np.float64) + linear(NESZ_DB)  # (T, 2, H, W)
    if speckle:
        rng = np.random.default_rng([*np.atleast_1d(seed), RADAR_STREAM, 1 + ORBITS.index(orbit)])
        intensity = apply_speckle(rng, intensity)
    vv, vh = db(intensity[:, 0]), db(intensity[:, 1])
    backscatter = np.stack([vv, vh, vv - vh], axis=1).astype(np.float32)  # (T, 3, H, W)
    abundance = v2.apply_psf(np.eye(n_cells + 2, dtype=np.float32)[component].transpose(2, 0, 1), size)  # (K, H, W)
    dominant = abundance.argmax(axis=0)
    label = scene["label_of"][dominant]
    return {
        "backscatter": backscatter,
        "lai": v2.apply_psf(lai.astype(np.float32), size),
        "soil_moisture": v2.apply_psf(mv.astype(np.float32), size),
        "label": label.astype(np.int64),
        "parcel_ids": np.where(label > 0, dominant + 1, 0).astype(np.int32),
        "incidence_deg": theta,
    }
