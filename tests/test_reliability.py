"""Reliability of the entry scripts, run as real subprocesses.

1. ``kill -9`` mid-training then ``--resume`` ends bitwise equal to an uninterrupted run
   (pre-training and fine-tuning), and ``last.tar`` is never half-written.
2. Determinism: the resumed fine-tune of 1 is a second run of the same command, so its bitwise equal
   weights and test metrics are also the check that identical runs give identical results.
3. Bad inputs (corrupt data, bad flags, bad checkpoints, unwritable output) end with exit status 2
   and ONE ``error: ...`` line naming the file or flag, never a traceback (most cases run the
   scripts' ``main`` in-process; a few run the real scripts).

Subprocesses run with one intra-op thread: much faster on a loaded 2-core machine, and the
reference and resumed runs use the same thread count (bitwise comparisons).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PRETRAIN = REPO / "pretrain_STCLN.py"
PASTIS_FT = REPO / "PASTIS" / "finetuning_STCLN.py"
MTLCC_FT = REPO / "MTLCC" / "finetuning_STCLN.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("STCLN_DEBUG", None)  # it turns clean errors back into tracebacks
COMMON = ["--num_workers", "0", "--no_progress", "--seed", "3"]
PRETRAIN_EPOCHS, FINETUNE_EPOCHS = 5, 6  # killed after 2 saved epochs: 3-4 epochs of margin
KILL_AFTER_EPOCH = 1  # 0-based epoch stored in last.tar
RUN_TIMEOUT = 300


def run_script(script: Path, *args, timeout: int = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    return Background(script, *args).result(timeout)


class Background:
    """A run of ``script`` started now and waited for by :meth:`result`; the uninterrupted reference runs
    start beside the run that gets killed (1 thread each: on 2 cores the pair takes the time of one;
    results are bitwise those of a run alone)."""

    def __init__(self, script: Path, *args):
        self.proc = subprocess.Popen([sys.executable, str(script), *map(str, args)], cwd=REPO, env=ENV,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.done: subprocess.CompletedProcess | None = None

    def result(self, timeout: int = RUN_TIMEOUT) -> subprocess.CompletedProcess:
        if self.done is None:
            try:
                stdout, stderr = self.proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()
                raise
            self.done = subprocess.CompletedProcess(self.proc.args, self.proc.returncode, stdout, stderr)
        return self.done


def check_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), f"tensor {key} differs"


def kill_after_checkpoint(script: Path, out: Path, args: list, epochs: int) -> None:
    """Start ``script``; SIGKILL it as soon as ``out/last.tar`` holds epoch >= KILL_AFTER_EPOCH."""
    log_path = out.with_name(out.name + ".log")  # a file, not a pipe: a full pipe would block the child
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, str(script), *map(str, args), "--output_dir", str(out)], cwd=REPO,
                                env=ENV, stdout=log_file, stderr=subprocess.STDOUT)
    last, deadline = out / "last.tar", time.monotonic() + RUN_TIMEOUT
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if last.is_file():
                try:
                    if load(last)["epoch"] >= KILL_AFTER_EPOCH:
                        os.kill(proc.pid, signal.SIGKILL)
                        break
                except Exception:  # noqa: BLE001 -- must never happen (atomic writes): asserted below
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    raise AssertionError(f"{last} was readable-but-broken while the run was writing it")
            time.sleep(0.01)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, \
        f"run ended before the kill (exit {proc.returncode}): {log_path.read_text()[-2000:]}"
    # The file left behind by the killed run is a complete checkpoint of a finished epoch.
    state = load(last)
    assert KILL_AFTER_EPOCH <= state["epoch"] < epochs - 1
    assert state["kind"] == "full" and state["model"]
    # A kill during a write can only leave a hidden temp file, which nothing ever loads as a checkpoint.
    leftovers = [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert all(p.name.startswith(".") for p in leftovers), leftovers
    assert not any(p.suffix == ".tar" and p.name.startswith(".") for p in out.iterdir())


# ---------------------------------------------------------------------------------------------
# 1. kill -9 + --resume (and 2. determinism: the resumed run equals the reference bitwise)
# ---------------------------------------------------------------------------------------------
def test_pretrain_kill9_then_resume_is_bitwise_identical(tmp_path):
    args = ["--smoke", "--epochs", PRETRAIN_EPOCHS, "--save_every", 1, *COMMON]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    uninterrupted = Background(PRETRAIN, *args, "--output_dir", reference)
    kill_after_checkpoint(PRETRAIN, resumed, args, PRETRAIN_EPOCHS)
    check_ok(uninterrupted.result())
    check_ok(run_script(PRETRAIN, *args, "--output_dir", resumed, "--resume"))
    ref, res = load(reference / "last.tar"), load(resumed / "last.tar")
    assert ref["epoch"] == res["epoch"] == PRETRAIN_EPOCHS - 1
    assert_same_tensors(ref["model"], res["model"])
    for (_, a), (_, b) in zip(sorted(ref["optimizer"]["state"].items()), sorted(res["optimizer"]["state"].items())):
        assert_same_tensors(a, b)
    export = f"checkpoint_{PRETRAIN_EPOCHS - 1}.stcln.tar"
    assert_same_tensors(load(reference / export)["model"], load(resumed / export)["model"])


FINETUNE_ARGS = ["--dataset", "synthetic", "--smoke", "--epochs", FINETUNE_EPOCHS, "--save_every", 1, "--label_ratio", 0.3, *COMMON]


@pytest.fixture(scope="module")
def finetune_reference(tmp_path_factory):
    """An uninterrupted fine-tune, started in the background at once (the kill test runs beside it); calling the
    fixture's value waits for it and returns its output folder."""
    out = tmp_path_factory.mktemp("ft_runs") / "reference"
    run = Background(PASTIS_FT, *FINETUNE_ARGS, "--output_dir", out)

    def finished() -> Path:
        check_ok(run.result())
        return out

    yield finished
    if run.proc.poll() is None:
        run.proc.kill()
        run.proc.communicate()


def test_finetune_kill9_then_resume_is_bitwise_identical(finetune_reference, tmp_path):
    """Also the determinism check: the killed and resumed run is a second run of the reference's command, and
    its weights, best checkpoint and test metrics are bitwise the reference's."""
    resumed = tmp_path / "resumed"
    kill_after_checkpoint(PASTIS_FT, resumed, FINETUNE_ARGS, FINETUNE_EPOCHS)
    check_ok(run_script(PASTIS_FT, *FINETUNE_ARGS, "--output_dir", resumed, "--resume"))
    reference = finetune_reference()
    ref, res = load(reference / "last.tar"), load(resumed / "last.tar")
    assert ref["epoch"] == res["epoch"] == FINETUNE_EPOCHS - 1
    assert_same_tensors(ref["model"], res["model"])
    assert ref["extra"] == res["extra"]  # best validation score carried across the kill
    assert_same_tensors(load(reference / "best.tar")["model"], load(resumed / "best.tar")["model"])
    first, second = test_numbers(reference), test_numbers(resumed)
    assert first["metrics"]["OA"] is not None and np.asarray(first["confusion_matrix"]).sum() > 0
    assert first == second


def test_numbers(out: Path) -> dict:
    payload = json.loads((out / "test_stcln" / "metrics.json").read_text())
    return {"metrics": payload["metrics"], "confusion_matrix": payload["confusion_matrix"]}


test_numbers.__test__ = False  # a helper, not a test


# ---------------------------------------------------------------------------------------------
# 3. bad inputs: exit 2, one `error:` line naming the file or flag
# ---------------------------------------------------------------------------------------------
SMALL = ["--crop_size", 8, "--preset", "tiny", "--epochs", 1, "--num_workers", 0, "--no_progress"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict:
    """One small PASTIS-format and one small MTLCC data set, copied (then broken) by each case."""
    from utils.datasets.mtlcc_writers import write_mtlcc_like
    from utils.datasets.writers import write_pastis_like

    base = tmp_path_factory.mktemp("pristine")
    # folds 1-4 only: fold 5 exists in PASTIS but holds no patch here (an empty selection)
    pastis = write_pastis_like(base / "pastis", n_patches=8, size=16, n_dates=(4, 6), seed=1, folds=(1, 2, 3, 4),
                               return_arrays=False)
    write_mtlcc_like(base / "mtlcc", size=12, n_dates=4, return_arrays=False)
    fold1 = sorted(pid for pid, fold in pastis["folds"].items() if fold == 1)
    return {"pastis": base / "pastis", "mtlcc": base / "mtlcc", "patch": fold1[0]}


class Case:
    """Copy the pristine data set into ``tmp``, break it; ``args`` are the script's flags."""

    def __init__(self, tmp: Path, pristine: dict, dataset: str):
        self.tmp, self.pristine, self.dataset = tmp, pristine, dataset
        self.root = tmp / dataset
        shutil.copytree(pristine[dataset], self.root)
        self.patch = pristine["patch"]

    @property
    def s2(self) -> Path:
        return self.root / "DATA_S2" / f"S2_{self.patch}.npy"

    @property
    def target(self) -> Path:
        return self.root / "ANNOTATIONS" / f"TARGET_{self.patch}.npy"

    @property
    def metadata(self) -> Path:
        return self.root / "metadata.geojson"

    def edit_dates(self, edit) -> None:
        collection = json.loads(self.metadata.read_text())
        for feature in collection["features"]:
            if feature["properties"]["ID_PATCH"] == self.patch:
                edit(feature["properties"])
        self.metadata.write_text(json.dumps(collection))

    def base_args(self) -> list:
        return ["--dataset", self.dataset, "--data_root", self.root, "--output_dir", self.tmp / "out",
                "--label_subset", "all", *SMALL]


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for offset in range(middle, middle + 16):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _s2(case: Case, dtype=np.int16, bands: int = 10, steps: int | None = None) -> None:
    image = np.load(case.s2)
    steps = image.shape[0] if steps is None else steps
    np.save(case.s2, np.zeros((steps, bands, *image.shape[2:]), dtype=dtype))


def _label_out_of_range(case: Case) -> None:
    target = np.load(case.target)
    target[0, 0, 0] = 42
    np.save(case.target, target)


def _drop_last_date(props: dict) -> None:
    dates = props["dates-S2"]
    del dates[str(len(dates) - 1)]


def _export_13_band_backbone(case: Case) -> Path:
    from models import STCLNPretrain, tiny_config
    from utils.checkpoint import backbone_export, save_checkpoint

    config = tiny_config(in_channels=13, num_classes=18)
    path = case.tmp / "checkpoint_0.mtlcc13.tar"
    save_checkpoint(path, backbone_export(STCLNPretrain(config), config, 0))
    return path


def _garbage(path: Path) -> Path:
    path.write_bytes(os.urandom(4096))
    return path


def _output_under_a_file(case: Case) -> list:
    (case.tmp / "file.txt").write_text("a regular file")
    return ["--output_dir", case.tmp / "file.txt" / "out"]


def _garbage_last(case: Case) -> list:
    (case.tmp / "out").mkdir()
    _garbage(case.tmp / "out" / "last.tar")
    return ["--resume", "--folds", 1]


# id -> (script, dataset, setup(case) -> extra args, substring the error line must contain)
CASES = {
    "s2-truncated": (PASTIS_FT, "pastis", lambda c: _truncate(c.s2), "S2_{patch}.npy"),
    "s2-float64": (PASTIS_FT, "pastis", lambda c: _s2(c, dtype=np.float64), "S2_{patch}.npy"),
    "s2-wrong-band-count": (PASTIS_FT, "pastis", lambda c: _s2(c, bands=9), "S2_{patch}.npy"),
    "s2-zero-dates": (PASTIS_FT, "pastis", lambda c: _s2(c, steps=0), "S2_{patch}.npy"),
    "s2-missing": (PASTIS_FT, "pastis", lambda c: c.s2.unlink(), "S2_{patch}.npy"),
    "metadata-dates-missing": (PASTIS_FT, "pastis", lambda c: c.edit_dates(lambda p: p.pop("dates-S2")), "metadata.geojson"),
    "metadata-dates-count": (PASTIS_FT, "pastis", lambda c: c.edit_dates(_drop_last_date), "S2_{patch}.npy"),
    "target-label-out-of-range": (PASTIS_FT, "pastis", _label_out_of_range, "TARGET_{patch}.npy"),
    "metadata-missing": (PASTIS_FT, "pastis", lambda c: c.metadata.unlink(), "metadata.geojson"),
    "metadata-not-json": (PASTIS_FT, "pastis", lambda c: _truncate(c.metadata), "metadata.geojson"),
    "norm-missing": (PASTIS_FT, "pastis", lambda c: (c.root / "NORM_S2_patch.json").unlink(), "NORM_S2_patch.json"),
    "folds-out-of-range": (PASTIS_FT, "pastis", lambda c: ["--train_folds", 9], "folds"),
    "test-fold-without-patches": (PASTIS_FT, "pastis", lambda c: ["--test_folds", 5], "folds [5]"),
    "label-ratio-zero": (PASTIS_FT, "pastis", lambda c: ["--label_subset", "ratio", "--label_ratio", 0], "--label_ratio"),
    "label-ratio-above-one": (PASTIS_FT, "pastis", lambda c: ["--label_subset", "ratio", "--label_ratio", 1.5],
                              "--label_ratio"),
    "tfrecord-flipped-bytes": (MTLCC_FT, "mtlcc", lambda c: _flip_bytes(c.root / "data16" / "1.tfrecord.gz"),
                               "1.tfrecord.gz"),
    "tfrecord-truncated-gzip": (MTLCC_FT, "mtlcc", lambda c: _truncate(c.root / "data16" / "1.tfrecord.gz"),
                                "1.tfrecord.gz"),
    "mtlcc-tileids-missing": (MTLCC_FT, "mtlcc", lambda c: (c.root / "tileids" / "train_fold0.tileids").unlink(),
                              "train_fold0.tileids"),
    "mtlcc-classes-missing": (MTLCC_FT, "mtlcc", lambda c: (c.root / "classes.txt").unlink(), "classes.txt"),
    "pretrain-pth-missing": (PASTIS_FT, "pastis", lambda c: ["--pretrain_pth", c.tmp / "nope.tar"], "nope.tar"),
    "pretrain-pth-garbage": (PASTIS_FT, "pastis", lambda c: ["--pretrain_pth", _garbage(c.tmp / "junk.tar")], "junk.tar"),
    "pretrain-pth-13-bands-into-10": (PASTIS_FT, "pastis", lambda c: ["--pretrain_pth", _export_13_band_backbone(c)],
                                      "checkpoint_0.mtlcc13.tar"),
    "output-dir-under-a-file": (PASTIS_FT, "pastis", _output_under_a_file, "file.txt"),
    "pretrain-resume-without-last": (PRETRAIN, "pastis", lambda c: ["--resume", "--folds", 1], "last.tar"),
    "pretrain-resume-garbage-last": (PRETRAIN, "pastis", _garbage_last, "last.tar"),
    "pretrain-data-root-missing": (PRETRAIN, "pastis", lambda c: shutil.rmtree(c.root) or ["--folds", 1], "pastis"),
}


SUBPROCESS_CASES = ("s2-truncated", "tfrecord-flipped-bytes")  # the real scripts, end to end; the rest in-process


def run_in_process(script: Path, *args) -> subprocess.CompletedProcess:
    """The script's ``main`` in this process (no interpreter start-up): exit status, stdout, stderr.

    The entry scripts are thin wrappers over these functions. A bug's traceback lands in stderr.
    """
    import contextlib
    import io
    import traceback

    import pretrain_STCLN
    from utils import finetune

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    debug = os.environ.pop("STCLN_DEBUG", None)  # it turns clean errors back into tracebacks
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                if script == PRETRAIN:
                    status = pretrain_STCLN.main(argv)
                else:
                    status = finetune.main("mtlcc" if script == MTLCC_FT else "pastis", script.stem, argv)
            except SystemExit as stop:  # argparse errors
                status = stop.code
            except Exception:  # noqa: BLE001 -- a bug: reported like the interpreter would
                traceback.print_exc()
                status = 1
    finally:
        if debug is not None:
            os.environ["STCLN_DEBUG"] = debug
    return subprocess.CompletedProcess([str(script), *argv], status, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def bad_input_results(pristine, tmp_path_factory) -> dict:
    """Run every case: most in this process, one after the other (seconds in all), a few as subprocesses."""
    results = {}
    for case_id, (script, dataset, setup, names) in CASES.items():
        try:
            case = Case(tmp_path_factory.mktemp(case_id), pristine, dataset)
            args = case.base_args()
            if script is PRETRAIN:
                args = [a for a in args if a not in ("--label_subset", "all")]
            args += setup(case) or []
            run = run_script if case_id in SUBPROCESS_CASES else run_in_process
            results[case_id] = (run(script, *args), names.format(patch=case.patch))
        except Exception as err:  # noqa: BLE001 -- reported by the case's own test
            results[case_id] = (err, names)
    return results


@pytest.mark.parametrize("case_id", list(CASES), ids=list(CASES))
def test_bad_input_gives_one_clean_error_line(case_id, bad_input_results):
    result, names = bad_input_results[case_id]
    if isinstance(result, Exception):
        raise result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines and lines[-1].startswith("error: "), result.stderr[-3000:]
    assert len(lines) == 1, f"expected one error line, stderr was:\n{result.stderr[-3000:]}"
    assert names in lines[-1], lines[-1]
