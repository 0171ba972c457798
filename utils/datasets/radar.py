"""Sentinel-1 scenes as users have them: one GeoTIFF per acquisition and orbit, read onto the optical grid.

Read by the converter (``python -m utils.datasets.convert --s1a_dir ... --s1d_dir ...``) and by
``predict_STCLN.py`` (the same flags), through this one module, so a map sees exactly the values
training saw.

* One folder per orbit: ``--s1a_dir`` (ascending, source ``S1A``) and ``--s1d_dir`` (descending,
  ``S1D``), the PASTIS-R sources (utils/datasets/sources.py). One raster per acquisition, the date
  (and ``THHMMSS`` time) in the file name as for the optical files; several acquisitions on one
  date (adjacent slices of one pass) are combined by ``--same_date`` as the optical ones (``mean``:
  the mean of the acquisitions holding data, in the files' units; ``clearest``: the acquisition with
  the most cells holding data).
* Bands: the bands whose GDAL descriptions are ``VV`` and ``VH`` (any case; further bands such as
  Google Earth Engine's ``angle`` are not read); a file without such descriptions must hold exactly
  two bands, taken as VV then VH. Anything else is refused in one line naming the file.
* Grid: every file on the optical scene's grid (same CRS, transform and size, the optical rule of
  :func:`utils.datasets.scene.check_same_grid`), refused in one line naming the file otherwise.
* Units (``--radar_units``, default ``db``): ``db`` files hold backscatter in decibels (Google Earth
  Engine's ``COPERNICUS/S1_GRD`` exports, and PASTIS-R, the data the radar branch was built on);
  ``linear`` files hold linear power (Sentinel Hub's default ``sigma0``/``gamma0`` output) and are
  converted: ``dB = 10 log10(value)``. The third channel is ``VV_dB - VH_dB``, as PASTIS-R's
  (PASTIS/README.md). Written channels: VV, VH, VV/VH, float32, dB.
* Cells without data: a file's GDAL nodata value, NaN or infinite values, and in ``linear`` files
  values <= 0 (no logarithm). ``--radar_nodata error`` (default) refuses them in one line naming the
  date, its files and the rows; ``fill`` gives each such cell its pixel's mean over the source's
  dates that hold data (per band, in dB; the ratio recomputed from the filled VV and VH), and
  refuses a pixel with no such date. The folder format keeps no validity for further sources and
  their loader refuses NaN (utils/datasets/pastis.py), so a gap is either filled by this documented
  rule or refused, never passed on. The fill is per pixel over the whole series, so a patch and a
  prediction window get the same value for the same cell.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.datasets.scene import (
    CUBE_NDIM,
    RasterSeries,
    Scene,
    _row_range,
    check_same_grid,
    geotiff_files,
    grid_of,
    open_raster,
    open_raster_folder,
)
from utils.datasets.sources import S1_BAND_NAMES
from utils.errors import DataError

log = logging.getLogger("stcln")

RADAR_FLAGS = {"S1A": "s1a_dir", "S1D": "s1d_dir"}  # source -> argparse dest of its folder flag
RADAR_UNITS = ("db", "linear")
RADAR_NODATA = ("error", "fill")
POLARISATIONS = ("VV", "VH")


def flag_of(source: str) -> str:
    return "--" + RADAR_FLAGS[source]


def add_radar_args(parser, many: bool = False) -> None:
    """The Sentinel-1 flags shared by the converter (one scene) and predict_STCLN.py (``many``: one folder
    per --geotiff_dir)."""
    group = parser.add_argument_group("Sentinel-1 (optional; utils/datasets/radar.py)")
    per_scene = "; one folder per --geotiff_dir, in the same order (--scene_list: s1a=/s1d= fields)" if many else ""
    for source, dest in RADAR_FLAGS.items():
        orbit = "ascending" if source == "S1A" else "descending"
        group.add_argument(
            f"--{dest}",
            type=Path,
            nargs="+" if many else None,
            default=None,
            help=f"with --geotiff_dir: one Sentinel-1 {orbit}-orbit raster per acquisition (source {source}), "
            "bands VV and VH, date (and time) in the name, on the optical grid" + per_scene,
        )
    group.add_argument(
        "--radar_units",
        choices=RADAR_UNITS,
        default="db",
        help="units of the Sentinel-1 files: db (Google Earth Engine S1_GRD exports, PASTIS-R) or linear "
        "power (Sentinel Hub's usual output), converted to dB",
    )
    group.add_argument(
        "--radar_nodata",
        choices=RADAR_NODATA,
        default="error",
        help="Sentinel-1 cells without data (GDAL nodata, NaN, linear <= 0): refuse them, or fill each with "
        "its pixel's mean over the dates holding data",
    )


def radar_folders(args) -> dict:
    """{source: folder (or list of folders)} of the radar flags given, in source order."""
    return {source: getattr(args, dest) for source, dest in RADAR_FLAGS.items() if getattr(args, dest, None)}


def check_radar_args(parser, args) -> None:
    """Radar folders go with --geotiff_dir (one per scene folder); ``parser.error`` otherwise."""
    folders = radar_folders(args)
    if not folders:
        return
    flags = " ".join(flag_of(source) for source in folders)
    if args.geotiff_dir is None:
        parser.error(f"{flags} go with --geotiff_dir (the radar is read onto the optical scene's grid)")
    for source, given in folders.items():
        if isinstance(given, list) and len(given) != len(args.geotiff_dir):
            parser.error(
                f"{flag_of(source)} gives {len(given)} folders for {len(args.geotiff_dir)} --geotiff_dir "
                "folders (one each, in the same order)"
            )


def polarisation_bands(path: Path, dataset) -> tuple[int, int]:
    """The 1-based (VV, VH) bands of a Sentinel-1 raster: by band description, else bands 1 and 2 of a
    two-band file (one line naming the file otherwise)."""
    names = [(name or "").strip().upper() for name in dataset.descriptions]
    found = [name for name in POLARISATIONS if name in names]
    if len(found) == len(POLARISATIONS):
        return tuple(names.index(name) + 1 for name in POLARISATIONS)
    if found or any(name in ("HH", "HV") for name in names):
        missing = [name for name in POLARISATIONS if name not in names]
        raise DataError(
            f"{path}: band descriptions {[d or '' for d in dataset.descriptions]} name no {' or '.join(missing)} "
            "band (a Sentinel-1 file needs VV and VH: dual-polarisation IW)"
        )
    if dataset.count != len(POLARISATIONS):
        raise DataError(
            f"{path}: {dataset.count} band(s) and no VV/VH band descriptions; a Sentinel-1 file needs the "
            "two bands VV, VH (in that order) or band descriptions naming them"
        )
    return (1, 2)


def invalid_rule(units: str):
    """(C, h, w) raw image -> (h, w) bool cells without data beyond the declared nodata: non-finite values,
    and in linear units values <= 0."""

    def invalid(image: np.ndarray) -> np.ndarray:
        if not np.issubdtype(image.dtype, np.floating):
            bad = np.zeros(image.shape[1:], dtype=bool)
        else:
            bad = ~np.isfinite(image).all(axis=0)
        if units == "linear":
            with np.errstate(invalid="ignore"):
                bad |= (image <= 0).any(axis=0)
        return bad

    return invalid


def to_db(raw: np.ndarray, valid: np.ndarray, units: str) -> np.ndarray:
    """(T, 3, h, w) float64 VV, VH, VV - VH in dB of (T, 2, h, w) raw VV, VH; NaN where ``valid`` (T, h, w) is 0."""
    values = raw.astype(np.float64)
    bad = np.broadcast_to(~valid.astype(bool)[:, None], values.shape)
    if units == "linear":
        values = 10.0 * np.log10(np.where(bad, 1.0, values))
    values = np.where(bad, np.nan, values)
    return np.concatenate([values, values[:, :1] - values[:, 1:2]], axis=1)


def fill_gaps(db: np.ndarray, where: str) -> np.ndarray:
    """NaN cells of (T, 3, h, w) dB series replaced by their pixel's mean over the dates holding data (per
    band); the ratio recomputed from the filled VV and VH. A pixel with no such date is refused."""
    bad = np.isnan(db[:, 0])  # (T, h, w): every channel is NaN on one cell together
    count = (~bad).sum(axis=0)  # (h, w)
    if (count == 0).any():
        raise DataError(
            f"{where}: {int((count == 0).sum())} pixel(s) hold no radar data on any date (outside every "
            "acquisition's footprint?): --radar_nodata fill has nothing to fill them with; crop the scene to "
            "the radar's footprint"
        )
    mean = np.where(bad[:, None], 0.0, db[:, :2]).sum(axis=0) / count  # (2, h, w)
    filled = np.where(bad[:, None], mean[None], db[:, :2])
    return np.concatenate([filled, filled[:, :1] - filled[:, 1:2]], axis=1)


@dataclass
class RadarSeries:
    """(T, 3, H, W) float32 array-like of a Sentinel-1 folder in dB (VV, VH, VV/VH), read in full-width row
    strips through a :class:`RasterSeries` (raw VV, VH) and converted per strip (the last one kept)."""

    series: RasterSeries
    units: str
    nodata_rule: str
    source: str  # e.g. "S1A" (for messages)
    folder: Path
    dates: list
    dtype: np.dtype = np.dtype(np.float32)
    _strip: tuple | None = field(default=None, repr=False)  # (first row, end row, cube)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        n_dates, _, height, width = self.series.shape
        return (n_dates, len(S1_BAND_NAMES), height, width)

    @property
    def ndim(self) -> int:
        return CUBE_NDIM

    def read_rows(self, first: int, end: int) -> np.ndarray:
        """(T, 3, end - first, W) float32 dB of rows first..end-1 (gaps filled or refused)."""
        if self._strip is not None and self._strip[0] <= first and end <= self._strip[1]:
            return self._strip[2][:, :, first - self._strip[0] : end - self._strip[0]]
        raw, valid = self.series.read_rows(first, end)  # (T, 2, n, W), (T, n, W): invalid rule set
        db = to_db(raw, valid, self.units)
        bad = valid == 0
        if bad.any():
            if self.nodata_rule == "error":
                t = int(np.flatnonzero(bad.any(axis=(1, 2)))[0])
                files = ", ".join(path.name for path in self.series.groups[t])
                extra = ", values <= 0: dB files? pass --radar_units db" if self.units == "linear" else ""
                raise DataError(
                    f"{self.folder}: {int(bad[t].sum())} {self.source} cell(s) without data (GDAL nodata, NaN or "
                    f"infinite{extra}) on {self.dates[t]} ({files}) in rows {first}..{end - 1}; pass "
                    "--radar_nodata fill (each takes its pixel's mean over the dates holding data)"
                )
            db = fill_gaps(db, f"{self.folder} rows {first}..{end - 1}")
        cube = db.astype(np.float32)
        self._strip = (first, end, cube)
        return cube

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (CUBE_NDIM - len(key))
        first, end = _row_range(key[2], self.shape[2])
        cube = self.read_rows(first, end)
        return cube[key[0], key[1], :, key[3]] if isinstance(key[0], slice) else cube[key[0]][key[1], :, key[3]]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        cube = self[:, :, :, :]
        return cube if dtype is None else cube.astype(dtype)

    def close(self) -> None:
        self.series.close()
        self._strip = None


def open_radar_folder(
    folder: Path, source: str, reference: Path, grid: dict, units: str, nodata_rule: str, same_date: str
) -> Scene:
    """One orbit's folder as a lazy :class:`Scene` of a :class:`RadarSeries`: every file's header checked
    (on ``grid``, the optical ``reference`` file's; VV and VH bands at the same places), nothing read."""
    folder = Path(folder)
    bands = None
    for acquisition in geotiff_files(folder):
        with open_raster(acquisition.path) as dataset:
            check_same_grid(acquisition.path, grid_of(dataset), reference, grid)
            own = polarisation_bands(acquisition.path, dataset)
        if bands is None:
            bands, first = own, acquisition.path
        elif own != bands:
            raise DataError(
                f"{acquisition.path}: VV and VH are bands {own}, in {first.name} bands {bands}; every "
                "file of an orbit needs them at the same places"
            )
    scene = open_raster_folder(folder, same_date=same_date, bands=bands, invalid=invalid_rule(units))
    series = RadarSeries(scene.cube, units, nodata_rule, source, folder, scene.dates)
    return Scene(series, scene.dates, scene.georeferencing, str(folder), None, list(S1_BAND_NAMES))


def open_radar_sources(folders: dict, scene: Scene, units: str, nodata_rule: str, same_date: str) -> dict:
    """{source: radar Scene} of ``folders`` ({source: folder}), each on the optical ``scene``'s grid."""
    if not folders:
        return {}
    if not isinstance(scene.cube, RasterSeries):
        raise DataError("Sentinel-1 folders go with --geotiff_dir (the radar is read onto the optical grid)")
    reference = scene.cube.groups[0][0]
    opened = {}
    try:
        for source, folder in folders.items():
            opened[source] = open_radar_folder(
                folder, source, reference, scene.georeferencing, units, nodata_rule, same_date
            )
            log.info(
                "%s: %s, %d dates %s..%s (%s)",
                folder,
                source,
                len(opened[source].dates),
                opened[source].dates[0],
                opened[source].dates[-1],
                "dB" if units == "db" else "linear power -> dB",
            )
    except BaseException:
        for radar in opened.values():
            radar.close()
        raise
    return opened
