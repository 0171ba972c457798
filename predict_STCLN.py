"""Crop maps of whole scenes with a fine-tuned STCLN: overlapping sliding windows, bounded memory, resumable.

    python predict_STCLN.py --checkpoint checkpoints/finetune/folder/best.tar --geotiff_dir my_scene/ --output_dir maps/
    python predict_STCLN.py --checkpoint best.tar --geotiff_dir tile_a/ tile_b/ tile_c/ --amp --output_dir maps/
    python predict_STCLN.py --checkpoint best.tar --scene_list scenes.txt --output_dir maps/   # one folder per line
    torchrun --nproc_per_node 4 predict_STCLN.py --checkpoint best.tar --scene_list scenes.txt --output_dir maps/
    python predict_STCLN.py --checkpoint best.tar --cube ndvi.npy --dates dates.txt --output_dir maps/ --pixel_size_m 10
    python predict_STCLN.py --checkpoint s2_s1.tar --geotiff_dir s2/ --s1a_dir s1_asc/ --s1d_dir s1_desc/ --output_dir maps/

Each scene is normalised with the statistics of the checkpoint's training folds (read from its
--data_root, which --data_root here can replace), the same temporal subset is applied, and the
model runs on windows of the training crop size every --stride pixels; logits are averaged over
the overlaps (utils/predict.py). Rasters are read through rasterio in full-width row strips, never
staged. The scene flags are the converter's (several acquisitions on a date, cloud masks); a model
fine-tuned with --drop_invalid ignores the cloudy cells they mark.

A model trained with Sentinel-1 (``--sources S2 S1`` or ``S2 S1A``) maps a scene with the converter's
radar flags (``--s1a_dir``/``--s1d_dir``, ``--radar_units``, ``--radar_nodata``: one folder per
--geotiff_dir), read by the same code (utils/datasets/radar.py): every source is cut into the same
windows, each on its own dates, normalised with its own training statistics. With --scene_list each line
names its scene's radar folders (``s1a=``/``s1d=`` fields, below). --cube takes single-source
(Sentinel-2) models only.

--scene_list: one scene per line, '#' comments, relative paths relative to the list file::

    tile_a/                                   # a scene folder alone
    tile_b/  clouds/tile_b/                   # and its cloud folder (or clouds=clouds/tile_b/)
    tile_c/  s1a=s1_asc/tile_c/  s1d=s1_desc/tile_c/  clouds=clouds/tile_c/

The scene folder comes first; a second plain field is its cloud folder; named fields NAME=FOLDER follow
in any order: ``clouds=`` (the cloud folder), ``s1a=``/``s1d=`` (the scene's Sentinel-1 ascending and
descending folders, as --s1a_dir/--s1d_dir: exactly those of the model's sources). An unknown or repeated
field, or radar folders that do not match the model's sources, are refused in one line naming the list
file and line (a folder whose name holds '=' is written ./NAME).

Writes per scene (into --output_dir for one scene, into --output_dir/<scene folder name> for several):
class_map.tif (a Cloud-Optimised GeoTIFF with the source's CRS and transform, class names and colours;
raster input) or class_map.npy (cube input), class_map.png (legend), areas.json and areas.md (pixels,
share and hectares per class); for several scenes also the run's areas.json/areas.md over all scenes.

Resumable: finished row strips are kept in <scene>/.partial/ as they end; the same command again
skips finished scenes and strips (run.json records the run; another run into the folder is refused
unless --overwrite). Under torchrun every rank maps a contiguous share of each scene's strips
(no rank writes another's files) and the ranks then write the scenes' maps in turn.
"""

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models import STCLNSegmenter
from utils.args import HelpFormatter
from utils.atomic import write_atomic
from utils.checkpoint import checkpoint_sources, load_finetuned, load_state_checked
from utils.datasets.protocols import selects_a_date
from utils.datasets.radar import RADAR_FLAGS, add_radar_args, check_radar_args, flag_of, open_radar_sources, radar_folders
from utils.datasets.scene import (
    add_scene_args,
    check_scene_source,
    open_cube,
    open_raster_folder,
    open_valid_cube,
    pixel_area_m2,
    write_class_map,
)
from utils.distributed import Runtime, setup_runtime, shutdown
from utils.errors import CheckpointError, DataError
from utils.figures import plot_class_map
from utils.precision import resolve_amp
from utils.predict import (BLENDS, class_areas, plan_windows, sliding_window_logits, split_strips, strips_needed,
                           training_context)
from utils.report import format_table, write_text_atomic
from utils.runner import guarded_main

log = logging.getLogger("stcln")
MAP_OUTPUTS = ("class_map.tif", "class_map.npy", "class_map.png", "areas.json", "areas.md")
PARTIAL_DIR = ".partial"
RUN_FILE = "run.json"
RUN_KEYS = ("checkpoint_sha256", "scenes", "window", "stride", "blend", "margin", "amp", "same_date",
            "cloud_threshold", "pixel_size_m")
RADAR_RUN_KEYS = ("radar", "radar_units", "radar_nodata")  # recorded only for a run with radar folders


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="fine-tuned checkpoint (best.tar or last.tar of fine-tuning)")
    add_scene_args(parser, many=True)
    add_radar_args(parser, many=True)
    parser.add_argument("--data_root", type=Path, default=None,
                        help="the training data folder (its dataset.json and statistics); default: the checkpoint's --data_root")
    windows = parser.add_argument_group("sliding windows")
    windows.add_argument("--window", type=int, default=None, help="window side in pixels (default: the training crop size)")
    windows.add_argument("--stride", type=int, default=None, help="pixels between window starts (default: window // 2)")
    windows.add_argument("--blend", choices=BLENDS, default="uniform",
                         help="overlap weights: 'uniform' (plain mean) or 'linear' (less weight near window edges)")
    windows.add_argument("--margin", type=int, default=0,
                         help="ignore this many pixels next to window edges inside the scene (needs stride <= window - 2 margin)")
    windows.add_argument("--batch_size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--amp", action="store_true",
                        help="bf16 autocast (CUDA, or a CPU with native bf16; fp32 with a warning elsewhere)")
    parser.add_argument("--pixel_size_m", type=float, default=None,
                        help="pixel side in metres for the area table (default: from the raster's georeferencing)")
    parser.add_argument("--sta_chunk", type=int, default=0, help="STA queries per chunk (0 = all); exact, bounds memory")
    parser.add_argument("--device", default="auto",
                        help="'auto' (cuda if available, else cpu), 'cuda' or 'cpu'; under torchrun each rank its local GPU")
    parser.add_argument("--trust_checkpoint", action="store_true",
                        help="allow pickled objects in --checkpoint (only files you trust)")
    parser.add_argument("--output_dir", type=Path, required=True, help="where the maps, figures and area tables go")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the maps of another run in --output_dir (refused otherwise: a folder holds one run)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


# ---------------------------------------------------------------------------------------------
# scenes of the run and its output folder
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneJob:
    """One scene of the run: where it is read from and where its map goes."""

    name: str
    folder: Path | None  # a raster folder, or None for the --cube scene
    cloud_dir: Path | None
    output_dir: Path
    radar: tuple = ()  # (source, folder) pairs of the Sentinel-1 folders (a multi-source model)
    where: str = ""  # "<list file>:<line>" of a --scene_list scene (for messages)


LIST_FIELDS = ("clouds", *(source.lower() for source in RADAR_FLAGS))  # named fields of a --scene_list line
FIELD_NAME = re.compile(r"[A-Za-z_]\w*")  # NAME of NAME=FOLDER; a folder "tile=1" is written ./tile=1


def read_scene_list(path: Path) -> list[tuple[Path, Path | None, tuple, str]]:
    """--scene_list (the module docstring's format): per scene (folder, cloud folder or None, radar
    ((source, folder), ...) in source order, "<list file>:<line>"); relative paths are relative to the list file."""
    if not path.is_file():
        raise DataError(f"{path}: scene list not found (--scene_list)")

    def located(field: str) -> Path:
        return Path(field) if Path(field).is_absolute() else path.parent / field

    scenes = []
    known = ", ".join(f"{name}=" for name in LIST_FIELDS)
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        where, plain, named = f"{path}:{number}", [], {}
        for index, field in enumerate(fields):
            name, equals, value = field.partition("=")
            if not equals or not FIELD_NAME.fullmatch(name):  # a folder
                plain.append(field)
                continue
            if index == 0:
                raise DataError(f"{where}: starts with the field {name}=; the scene folder comes first")
            if name not in LIST_FIELDS:
                raise DataError(f"{where}: unknown field {name}= (known: {known}; a folder whose name holds '=' is "
                                "written ./NAME)")
            if name in named:
                raise DataError(f"{where}: {name}= given twice")
            if not value:
                raise DataError(f"{where}: {name}= names no folder")
            named[name] = value
        if len(plain) > 2:
            raise DataError(f"{where}: expected a scene folder and optionally its cloud folder, got {len(plain)} "
                            f"fields (further folders are named: {known})")
        if len(plain) == 2 and "clouds" in named:
            raise DataError(f"{where}: the cloud folder given twice (the second field and clouds=)")
        clouds = plain[1] if len(plain) == 2 else named.get("clouds")
        radar = tuple((source, located(named[source.lower()])) for source in RADAR_FLAGS if source.lower() in named)
        scenes.append((located(plain[0]), located(clouds) if clouds else None, radar, where))
    if not scenes:
        raise DataError(f"{path}: no scene in the list (--scene_list)")
    return scenes


def scene_jobs(args) -> list[SceneJob]:
    """The run's scenes; one scene maps into --output_dir itself, several into one sub-folder each."""
    if args.cube is not None:
        return [SceneJob(args.cube.stem, None, None, args.output_dir)]
    folders = radar_folders(args)
    if args.scene_list is not None:
        if folders:
            flags = " ".join(flag_of(source) for source in folders)
            fields = " ".join(f"{source.lower()}=FOLDER" for source in folders)
            verb = "goes" if len(folders) == 1 else "go"
            raise DataError(f"{args.scene_list}: {flags} {verb} with --geotiff_dir; with --scene_list each line names "
                            f"its scene's radar folders ({fields})")
        scenes = read_scene_list(args.scene_list)
    else:
        clouds = args.cloud_dir or [None] * len(args.geotiff_dir)
        scenes = [(folder, cloud, tuple((source, folders[source][index]) for source in folders), "")
                  for index, (folder, cloud) in enumerate(zip(args.geotiff_dir, clouds))]
    if len(scenes) == 1:
        folder, clouds, radar, where = scenes[0]
        return [SceneJob(folder.name, folder, clouds, args.output_dir, radar, where)]
    names = [folder.resolve().name for folder, *_ in scenes]
    if len(set(names)) < len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise DataError(f"scenes {', '.join(twice)}: several scene folders of one name; each scene's maps go to "
                        "--output_dir/<folder name>: rename them")
    return [SceneJob(name, folder, clouds, args.output_dir / name, radar, where)
            for name, (folder, clouds, radar, where) in zip(names, scenes)]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_record(args, jobs: list[SceneJob], window: int) -> dict:
    """What makes two runs' maps the same: the weights, the scenes and every flag that changes a pixel."""
    radar = {}
    if any(job.radar for job in jobs):
        radar = {"radar": [{source: str(folder.resolve()) for source, folder in job.radar} for job in jobs],
                 "radar_units": args.radar_units, "radar_nodata": args.radar_nodata}
    return radar | {
        "checkpoint_sha256": sha256_of(args.checkpoint),
        "scenes": [str(job.folder.resolve() if job.folder else args.cube.resolve()) for job in jobs],
        "window": window,
        "stride": args.stride or max(1, window // 2),
        "blend": args.blend,
        "margin": args.margin,
        "amp": bool(args.amp),
        "same_date": args.same_date,
        "cloud_threshold": args.cloud_threshold,
        "pixel_size_m": args.pixel_size_m,
    }


def prepare_output_dir(args, jobs: list[SceneJob], record: dict) -> None:
    """--output_dir holds this run only: created, checked writable; a folder of another run (another
    run.json, or maps without one) is refused unless --overwrite, which removes that run's files first."""
    out = args.output_dir
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder (--output_dir)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{out}: cannot create the output folder ({err.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise DataError(f"{out}: the output folder is not writable")
    previous = read_run(out)
    keys = RUN_KEYS + tuple(key for key in RADAR_RUN_KEYS if key in record or key in (previous or {}))
    same = previous is not None and all(previous.get(key) == record.get(key) for key in keys)
    if not same:
        found = [name for name in (RUN_FILE, *MAP_OUTPUTS, PARTIAL_DIR) if (out / name).exists()]
        found += [f"{job.name}/" for job in jobs if job.output_dir != out and job.output_dir.exists()]
        if found and not args.overwrite:
            differs = [key for key in keys if previous is not None and previous.get(key) != record.get(key)]
            why = f"its run.json differs in {', '.join(differs)}" if differs else "maps of an earlier run"
            raise DataError(f"{out}: holds another run ({why}: {', '.join(found[:4])}); choose another --output_dir "
                            "or pass --overwrite to replace it (the same command again resumes)")
        remove_run(out, previous, jobs)
    write_text_atomic(out / RUN_FILE, json.dumps(record, indent=2) + "\n")


def read_run(out: Path) -> dict | None:
    try:
        return json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def remove_run(out: Path, previous: dict | None, jobs: list[SceneJob]) -> None:
    """Remove the map files of a run (this folder's and its scene sub-folders'), never anything else."""
    folders = {out} | {job.output_dir for job in jobs}
    folders |= {out / Path(scene).name for scene in (previous or {}).get("scenes", [])}
    for folder in folders:
        for name in MAP_OUTPUTS:
            (folder / name).unlink(missing_ok=True)
        shutil.rmtree(folder / PARTIAL_DIR, ignore_errors=True)
        if folder != out and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    (out / RUN_FILE).unlink(missing_ok=True)


def is_done(job: SceneJob) -> bool:
    return (job.output_dir / "areas.json").is_file()  # written last (write_outputs)


# ---------------------------------------------------------------------------------------------
# one scene
# ---------------------------------------------------------------------------------------------
def open_job_scene(args, job: SceneJob):
    if job.folder is None:
        scene = open_cube(args.cube, args.dates)
        if args.cloud_cube is not None:
            frames, _, height, width = scene.cube.shape
            scene.valid = open_valid_cube(args.cloud_cube, args.cloud_threshold, (frames, height, width))
        return scene
    scene = open_raster_folder(job.folder, (), job.cloud_dir, args.cloud_threshold, args.same_date)
    try:
        scene.sources = open_radar_sources(dict(job.radar), scene, args.radar_units, args.radar_nodata, args.same_date)
    except BaseException:
        scene.close()
        raise
    return scene


def warn_outside_season(dates: list, training: tuple | None, source: str) -> None:
    """Say so when the scene's dates lie outside the training series' span (another year or season):
    the model maps them, but it never saw such a series."""
    if training is None:
        return
    first, last = training
    outside = [date for date in dates if not first <= date <= last]
    if outside:
        log.warning("%s: %d of the scene's %d dates lie outside the training series (%s to %s), e.g. %s: the map "
                    "describes a season the model was not trained on", source, len(outside), len(dates), first, last,
                    ", ".join(map(str, outside[:3])))


def check_window_finite(raw: np.ndarray, valid: np.ndarray | None, scene, frames: np.ndarray, row: int,
                        col: int) -> None:
    """Refuse NaN/inf values the model would read (all of them, or only those on valid cells when the
    model drops invalid ones: ``valid`` given), naming the date and the window."""
    if not np.issubdtype(raw.dtype, np.floating):
        return
    bad = ~np.isfinite(raw).all(axis=1)  # (T', h, w)
    if valid is not None:
        bad &= valid
    if bad.any():
        t = int(np.argwhere(bad.any(axis=(1, 2)))[0, 0])
        raise DataError(f"{scene.source}: {int(bad[t].sum())} pixel(s) with NaN or infinite values on "
                        f"{scene.dates[frames[t]]} in the window at row {row}, column {col} (fill them, or mark them "
                        "cloudy with --cloud_dir/--cloud_cube and map with a --drop_invalid model)")


def check_sources(args, sources: tuple[str, ...], jobs: list[SceneJob]) -> None:
    """The scenes' sources are the model's: Sentinel-2 first, a radar folder for each further source (and
    none it does not take), from the radar flags or from each --scene_list line; one line otherwise."""
    wanted = " ".join(sources)
    if sources[0] != "S2" or any(source not in RADAR_FLAGS for source in sources[1:]):
        raise CheckpointError(f"{args.checkpoint}: the model takes --sources {wanted}; predict_STCLN.py maps Sentinel-2 "
                              f"scenes with Sentinel-1 {' and '.join(RADAR_FLAGS)} folders (test other models with "
                              "PASTIS/test_STCLN.py)")
    if len(sources) > 1 and args.cube is not None:
        raise CheckpointError(f"{args.checkpoint}: the model takes --sources {wanted}: map it from --geotiff_dir with "
                              f"{' '.join(flag_of(source) for source in sources[1:])}, or from --scene_list with "
                              f"{' '.join(f'{source.lower()}=' for source in sources[1:])} on each line (--cube takes "
                              "Sentinel-2 models only)")
    listed = args.scene_list is not None  # radar named per line (fields) rather than by the flags (scene_jobs)
    for job in jobs:
        given = [source for source, _ in job.radar]
        missing = [f"{source.lower()}=FOLDER" if listed else flag_of(source) for source in sources[1:]
                   if source not in given]
        unused = [f"{source.lower()}=" if listed else flag_of(source) for source in given if source not in sources[1:]]
        if missing or unused:
            raise CheckpointError(f"{args.checkpoint}: the model takes --sources {wanted}: "
                                  + (f"{job.where}: " if listed else "")
                                  + (f"give {' '.join(missing)}" if missing else f"it takes no {' '.join(unused)}"))


def load_model(args, jobs: list[SceneJob]) -> tuple[STCLNSegmenter, dict]:
    ckpt, config = load_finetuned(args.checkpoint, args.trust_checkpoint)
    check_sources(args, checkpoint_sources(ckpt, config, str(args.checkpoint)), jobs)
    config.sta_chunk = args.sta_chunk or config.sta_chunk
    model = STCLNSegmenter(config)
    load_state_checked(model, ckpt["model"], str(args.checkpoint))
    return model, ckpt.get("args")


def save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle: np.save would append .npy to the temporary name
        np.save(handle, array, allow_pickle=False)


@dataclass
class Mapper:
    """The model and everything a scene is prepared with (one per process)."""

    model: STCLNSegmenter
    context: object  # utils.predict.TrainingContext
    window: int
    amp: bool
    device: torch.device

    def prepare(self, args, scene, warn: bool = True) -> tuple:
        """The scene checked against the model; (frames used, model positions, window plan, further sources:
        {source: (frames, positions)})."""
        context, config = self.context, self.model.config
        if warn and config.use_valid_mask and scene.valid is None:
            log.warning("%s: the model was fine-tuned with --drop_invalid but the scene has no cloud information "
                        "(--cloud_dir/--cloud_cube): every observation is taken as clear", scene.source)
        T, C, H, W = scene.cube.shape
        if C != config.in_channels:
            raise DataError(f"{scene.source}: {C} bands, the model was trained on {config.in_channels}")
        if not selects_a_date(context.temporal, scene.dates):
            raise DataError(f"{scene.source}: no date inside the training run's temporal subset ({context.temporal!r})")
        frames = np.asarray(context.temporal(scene.dates) if context.temporal else range(T), dtype=np.int64)
        if warn:
            warn_outside_season(scene.dates, context.date_range, scene.source)
        days = [(scene.dates[f] - context.reference_date).days for f in frames]
        positions = torch.tensor(days if config.positions == "doy" else range(len(frames)), dtype=torch.int64)
        plan = plan_windows(H, W, self.window, args.stride or max(1, self.window // 2), args.blend, args.margin)
        extra = {}
        for name, channels in config.extra_source_channels().items():  # each on its own dates
            radar = scene.sources[name]
            if radar.cube.shape[1] != channels:
                raise DataError(f"{radar.source}: {radar.cube.shape[1]} {name} bands, the model takes {channels}")
            if not selects_a_date(context.temporal, radar.dates):
                raise DataError(f"{radar.source}: no {name} date inside the training run's temporal subset "
                                f"({context.temporal!r})")
            own = np.asarray(context.temporal(radar.dates) if context.temporal else range(len(radar.dates)),
                             dtype=np.int64)
            if warn:
                warn_outside_season(radar.dates, context.source_date_range.get(name), f"{radar.source} ({name})")
            days = [(radar.dates[f] - context.reference_date).days for f in own]
            extra[name] = (own, torch.tensor(days if config.positions == "doy" else range(len(own)), dtype=torch.int64))
        return frames, positions, plan, extra

    def map_strips(self, args, scene, prepared: tuple, strips: list[int], partial: Path, progress: bool) -> None:
        """Map the strips ``strips`` of ``scene`` (``prepared`` by :meth:`prepare`), saving each strip's class
        rows to ``partial`` as it ends."""
        frames, positions, plan, extra = prepared
        mean, std = self.context.mean[:, None, None], self.context.std[:, None, None]
        drops_invalid = self.model.config.use_valid_mask and scene.valid is not None

        def read_window(row: int, col: int, h: int, w: int) -> np.ndarray:
            raw = np.asarray(scene.cube[:, :, row:row + h, col:col + w])[frames]  # (T', C, h, w)
            valid = read_valid(row, col, h, w) if drops_invalid else None
            check_window_finite(raw, valid, scene, frames, row, col)
            return np.nan_to_num((raw.astype(np.float32) - mean) / std)  # non-finite only where never read

        def read_extra(row: int, col: int, h: int, w: int) -> dict[str, np.ndarray]:
            windows = {}
            for name, (own, _) in extra.items():  # finite dB: gaps filled or refused (utils/datasets/radar.py)
                own_mean, own_std = (value[:, None, None] for value in self.context.source_norm[name])
                raw = np.asarray(scene.sources[name].cube[:, :, row:row + h, col:col + w])[own]  # (T_s', C_s, h, w)
                windows[name] = (raw - own_mean) / own_std
            return windows

        def read_valid(row: int, col: int, h: int, w: int) -> np.ndarray:
            return np.asarray(scene.valid[:, row:row + h, col:col + w])[frames] != 0  # (T', h, w)

        def keep_rows(first: int, logits: np.ndarray) -> None:
            rows = logits.argmax(axis=0).astype(np.uint8 if logits.shape[0] <= 256 else np.int32)  # (n, W)
            write_atomic(partial / f"rows_{first:06d}.npy", lambda tmp: save_npy(tmp, rows))

        log.info("%s: %dx%d, %d dates (%d used), %d of %d strips of %d windows (%dx%d, stride %s, %s blend)%s",
                 scene.source, plan.height, plan.width, len(scene.dates), len(frames), len(strips),
                 len(plan.row_starts), len(plan.col_starts), plan.window_h, plan.window_w,
                 args.stride or self.window // 2, args.blend, ", bf16" if self.amp else "")
        partial.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        sliding_window_logits(self.model, read_window, positions, plan, self.model.config.num_classes, keep_rows,
                              batch_size=args.batch_size, device=self.device, progress=progress,
                              read_valid=read_valid if scene.valid is not None else None, strips=strips, amp=self.amp,
                              **({"read_extra": read_extra, "extra_positions": {name: place for name, (_, place)
                                                                               in extra.items()}} if extra else {}))
        seconds = time.perf_counter() - start
        n_windows = len(strips_needed(plan, strips)) * len(plan.col_starts)
        log.info("%s: %d windows in %.1f s (%.2f windows/s, reading included)", scene.source, n_windows, seconds,
                 n_windows / max(seconds, 1e-9))


def finished_strips(plan, partial: Path) -> set[int]:
    return {index for index, top in enumerate(plan.row_starts) if (partial / f"rows_{top:06d}.npy").is_file()}


def assemble(plan, partial: Path, num_classes: int) -> np.ndarray:
    """The (H, W) class map from the strips' rows (every strip must be there)."""
    class_map = np.zeros((plan.height, plan.width), dtype=np.uint8 if num_classes <= 256 else np.int32)
    ends = list(plan.row_starts[1:]) + [plan.height]
    for top, end in zip(plan.row_starts, ends):
        rows = np.load(partial / f"rows_{top:06d}.npy")
        if rows.shape != (end - top, plan.width):
            raise DataError(f"{partial}: rows_{top:06d}.npy holds {rows.shape}, expected {(end - top, plan.width)} "
                            "(a partial map of another run: pass --overwrite)")
        class_map[top:end] = rows
    return class_map


def write_outputs(args, job: SceneJob, class_map: np.ndarray, scene, info) -> list[dict]:
    """The scene's map, figure and area table; areas.json last (it marks the scene as done)."""
    out = job.output_dir
    if job.folder is not None:
        write_class_map(out / "class_map.tif", class_map, scene.georeferencing, info.classes, info.colormap)
    else:
        write_atomic(out / "class_map.npy", lambda tmp: save_npy(tmp, class_map))
    area = args.pixel_size_m ** 2 if args.pixel_size_m else pixel_area_m2(scene.georeferencing)
    rows = class_areas(class_map, info.classes, area)
    plot_class_map(class_map, info.classes, info.colormap, out / "class_map.png", title=f"{scene.source}",
                   shares=[row["share"] for row in rows])
    write_area_tables(out, rows, area)
    return rows


def write_area_tables(out: Path, rows: list[dict], area: float | None) -> None:
    columns = ["index", "class", "pixels", "share"] + (["hectares"] if area else [])
    write_text_atomic(out / "areas.md", format_table(rows, columns))
    write_text_atomic(out / "areas.json", json.dumps({"pixel_area_m2": area, "classes": rows}, indent=2))


def write_run_areas(args, jobs: list[SceneJob], classes: list[str]) -> list[dict]:
    """The run's area table over all scenes (pixels and hectares summed; shares of the run's pixels)."""
    tables = [json.loads((job.output_dir / "areas.json").read_text(encoding="utf-8")) for job in jobs]
    pixels = np.sum([[row["pixels"] for row in table["classes"]] for table in tables], axis=0)
    known = all(table["pixel_area_m2"] for table in tables)
    rows = []
    for index, name in enumerate(classes):
        row = {"index": index, "class": name, "pixels": int(pixels[index]), "share": float(pixels[index] / pixels.sum())}
        if known:
            row["hectares"] = float(sum(table["classes"][index]["hectares"] for table in tables))
        rows.append(row)
    columns = ["index", "class", "pixels", "share"] + (["hectares"] if known else [])
    scenes = [{"scene": job.name, "pixels": int(sum(r["pixels"] for r in t["classes"]))} for job, t in zip(jobs, tables)]
    write_text_atomic(args.output_dir / "areas.md", f"{len(jobs)} scenes\n\n" + format_table(rows, columns))
    write_text_atomic(args.output_dir / "areas.json", json.dumps({"scenes": scenes, "classes": rows}, indent=2))
    return rows


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
def predict(args, runtime: Runtime) -> None:
    jobs = scene_jobs(args)  # a bad --scene_list is refused before the checkpoint is read
    model, ckpt_args = load_model(args, jobs)
    context = training_context(ckpt_args, args.data_root)
    window = args.window or context.window
    if not window:
        raise DataError("the checkpoint was trained on whole patches (--crop_size 0): give --window")
    if len(context.info.classes) != model.config.num_classes:
        raise CheckpointError(f"{args.checkpoint}: {model.config.num_classes} classes, the training data declares "
                              f"{len(context.info.classes)} ({context.info.classes[:5]}...)")
    if runtime.is_main:
        prepare_output_dir(args, jobs, run_record(args, jobs, window))
    runtime.barrier()
    mapper = Mapper(model.to(runtime.device), context, window, resolve_amp(args.amp, runtime.device), runtime.device)
    progress = not args.no_progress and runtime.is_main
    for job in jobs:  # every rank maps its share of every scene's strips
        if is_done(job):
            log.info("%s: mapped by an earlier run (%s), skipped", job.name, job.output_dir)
            continue
        with open_job_scene(args, job) as scene:
            prepared = mapper.prepare(args, scene, warn=runtime.is_main)
            plan, partial = prepared[2], job.output_dir / PARTIAL_DIR
            mine = split_strips(len(plan.row_starts), runtime.world_size, runtime.rank)
            todo = sorted(set(mine) - finished_strips(plan, partial))
            if len(todo) < len(mine):
                log.info("%s: %d of this process's %d strips finished by an earlier run, kept", job.name,
                         len(mine) - len(todo), len(mine))
            if todo:
                mapper.map_strips(args, scene, prepared, todo, partial, progress)
    runtime.barrier()
    for index, job in enumerate(jobs):  # the ranks write the scenes' maps in turn
        if index % runtime.world_size != runtime.rank or is_done(job):
            continue
        with open_job_scene(args, job) as scene:
            plan, partial = mapper.prepare(args, scene, warn=False)[2], job.output_dir / PARTIAL_DIR
            rows = write_outputs(args, job, assemble(plan, partial, model.config.num_classes), scene, context.info)
            shutil.rmtree(partial, ignore_errors=True)
        log.info("wrote %s\n%s", job.output_dir, format_table(rows, list(rows[0])))
    runtime.barrier()
    if runtime.is_main and len(jobs) > 1:
        rows = write_run_areas(args, jobs, context.info.classes)
        log.info("%d scenes: %s\n%s", len(jobs), args.output_dir / "areas.md", format_table(rows, list(rows[0])))


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    check_scene_source(parser, args)
    if args.scene_list is None:  # with --scene_list the radar flags are refused naming the list (scene_jobs)
        check_radar_args(parser, args)
    if args.batch_size < 1 or args.margin < 0 or (args.window is not None and args.window < 1):
        parser.error("--batch_size and --window must be >= 1 and --margin >= 0")
    if args.stride is not None and args.stride < 1:
        parser.error(f"--stride must be >= 1 (omit it for half a window), got {args.stride}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)
    runtime = None

    def run() -> None:
        nonlocal runtime
        runtime = setup_runtime(args.device)
        if not runtime.is_main:
            logging.getLogger().setLevel(logging.WARNING)
        predict(args, runtime)

    status = guarded_main(run, None)  # only STCLNError is one line: a bug keeps its traceback
    if status == 0 and runtime is not None:
        shutdown(runtime)
    return status


if __name__ == "__main__":
    sys.exit(main())
