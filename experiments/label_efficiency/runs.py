"""Running the study's entry-script tasks (in this process or as subprocesses, a few at a time), its
progress, and reading back what each run wrote."""

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


from experiments.label_efficiency.anchors import baselines
from experiments.label_efficiency.design import (
    REPO,
    Run,
    backbone_fold,
    backbone_path,
    common_args,
    pretrain_dir,
    pretrain_folds,
    rotations,
    unit_fold,
)

log = logging.getLogger("stcln")


STOP_STATUSES = {130: "Ctrl-C", 143: "SIGTERM", -2: "Ctrl-C", -15: "SIGTERM"}  # a run stopped by a signal


class Stopped(Exception):
    """A run was stopped by Ctrl-C or SIGTERM (it saved its last epoch): the study stops, to be resumed."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.exit_status = 143 if signal_name == "SIGTERM" else 130


def _execute(script: str, argv: list, log_file: Path | None, threads: int | None) -> None:
    """Run an entry script in this process (log_file None) or as a subprocess writing log_file."""
    argv = [str(a) for a in argv]
    if log_file is None:
        if script == "pretrain_STCLN.py":
            import pretrain_STCLN

            status = pretrain_STCLN.main(argv)
        else:
            from utils import finetune

            status = finetune.main("mtlcc" if script.startswith("MTLCC") else "pastis", "fine-tuning", argv)
        if status in STOP_STATUSES:
            raise Stopped(STOP_STATUSES[status])
        if status != 0:
            sys.exit(f"error: {script} {' '.join(argv)} failed (exit {status})")
        return
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if threads:
        env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as handle:  # a resumed run appends to its log
        status = subprocess.run(
            [sys.executable, str(REPO / script), *argv],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=os.getcwd(),
        ).returncode
    if status in STOP_STATUSES:
        raise Stopped(STOP_STATUSES[status])
    if status != 0:
        tail = "".join(log_file.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"{script} failed (exit {status}); last lines of {log_file}:\n{tail}")


class Executor:
    """Runs tasks one at a time in-process (jobs=1) or ``jobs`` at a time (entry scripts as subprocesses).

    A task is ``(script, argv, log file)`` for an entry script, or ``(function, args, None)`` for
    work done in this process (the non-learned anchors), which then takes one of the ``jobs`` slots."""

    def __init__(self, jobs: int):
        self.jobs = jobs

    def threads(self, n_tasks: int) -> int:
        """Threads per subprocess: the cores shared by the slots this wave fills (a wave of one task,
        e.g. one pre-training, gets every core instead of 1/jobs of them)."""
        return max(1, (os.cpu_count() or 1) // max(1, min(self.jobs, n_tasks)))

    def run(self, task: tuple, in_process: bool, threads: int | None = None) -> None:
        target, argv, log_file = task
        if callable(target):
            target(*argv)
        else:
            _execute(target, argv, None if in_process else log_file, threads)

    def map(self, tasks: list[tuple]) -> None:
        """Runs every task; at the first failure the tasks not started yet are dropped (the running ones finish).

        Progress: one bar over the tasks (done / total, elapsed, time left), and a line per finished
        task with its result (:func:`task_result`)."""
        if not tasks:
            return
        progress = Progress(tasks)
        if self.jobs == 1:
            for task in tasks:
                progress.start(task)
                self.run(task, in_process=True)
                progress.finish(task)
            progress.close()
            return
        with ThreadPoolExecutor(self.jobs) as pool:
            threads = self.threads(sum(not callable(task[0]) for task in tasks))  # the anchors are short

            def run(task):
                progress.start(task)
                self.run(task, False, threads)
                progress.finish(task)

            futures = [pool.submit(run, task) for task in tasks]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
            finally:
                progress.close()


def task_name(task: tuple) -> str:
    """What a task is, for the progress line: 'pretrain_cell', 'scratch b5_s0_f1_lr0.003', 'rf majority b5 s0 f1'."""
    target, argv, _ = task
    if target is baselines:
        args, budget, seed, arms, *fold = argv
        return f"{' '.join(arms)} b{budget:g} s{seed}" + (f" f{fold[0]}" if fold and fold[0] is not None else "")
    if callable(target):
        return getattr(target, "__name__", "task")
    out = Path(str(argv[list(map(str, argv)).index("--output_dir") + 1]))
    return out.name if out.name.startswith("pretrain_") else f"{out.parent.name} {out.name}"


def task_result(task: tuple) -> str:
    """A finished task's headline: test mIoU of a fine-tune, the last masked-cell MSE of a pre-training."""
    target, argv, _ = task
    if callable(target):
        return "scored" if target is baselines else "done"
    out = Path(str(argv[list(map(str, argv)).index("--output_dir") + 1]))
    summary = out / "summary.json"
    if summary.is_file():
        return f"test mIoU {json.loads(summary.read_text())['test']['mIoU']:.3f}"
    return "backbone written" if out.name.startswith("pretrain_") else "finished"


class Progress:
    """One progress bar over a wave of tasks and a log line per finished task (thread-safe)."""

    def __init__(self, tasks: list[tuple]):
        from threading import Lock

        from tqdm import tqdm

        self.total, self.done, self.start_time, self.lock = len(tasks), 0, time.perf_counter(), Lock()
        self.running: dict[int, str] = {}
        self.bar = tqdm(total=self.total, unit="run", desc="study", dynamic_ncols=True, mininterval=1.0)

    def start(self, task: tuple) -> None:
        with self.lock:
            self.running[id(task)] = task_name(task)
            self.bar.set_postfix_str(", ".join(self.running.values()), refresh=True)

    def finish(self, task: tuple) -> None:
        with self.lock:
            self.done += 1
            self.running.pop(id(task), None)
            elapsed = time.perf_counter() - self.start_time
            left = elapsed / self.done * (self.total - self.done)
            self.bar.write(
                f"[{self.done}/{self.total}] {task_name(task)}: {task_result(task)} "
                f"({elapsed / 60:.1f} min so far, about {left / 60:.1f} min left in this wave)"
            )
            self.bar.set_postfix_str(", ".join(self.running.values()), refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def pretrain_tasks(args, modes: list[str]) -> list:
    tasks = []
    for mode in modes:
        for fold in dict.fromkeys(backbone_fold(args, f) for f in rotations(args)):
            if backbone_path(args, mode, fold).is_file():
                continue
            out = pretrain_dir(args, mode, fold)
            resume = ["--resume"] if (out / "last.tar").is_file() else []
            if not resume and out.exists():
                shutil.rmtree(out)
            layout = ["--synthetic_format", "mtlcc"] if args.dataset == "mtlcc" else []  # of a --smoke synthetic set
            argv = (
                common_args(args)
                + pretrain_folds(args, fold)
                + layout
                + [
                    "--mask_mode",
                    mode,
                    "--epochs",
                    args.pretrain_epochs,
                    "--lr",
                    args.pretrain_lr,
                    "--batch_size",
                    args.pretrain_batch_size,
                    "--seed",
                    0,
                    "--save_every",
                    1,
                    "--output_dir",
                    out,
                ]
                + resume
            )
            if args.hide_invalid:
                argv += ["--hide_invalid"]
            tasks.append(("pretrain_STCLN.py", argv, out / "log.txt"))
    return tasks


def run_tasks(runs: list[Run], script: str) -> list:
    """The unfinished runs' tasks. A run stopped after an epoch resumes from its last.tar (each epoch is
    re-seeded from (seed, epoch), so it ends as the uninterrupted run would); one stopped before, restarts."""
    tasks = []
    for run in runs:
        if run.done:
            continue
        argv = run.argv
        if (run.out / "last.tar").is_file():
            argv = argv + ["--resume"]
        elif run.out.exists():
            shutil.rmtree(run.out)
        tasks.append((script, argv, run.out / "log.txt"))
    return tasks


def read_run(run: Run) -> dict:
    summary = json.loads((run.out / "summary.json").read_text())
    history = json.loads((run.out / "history.json").read_text())["history"]
    validated = [h for h in history if "val_mIoU" in h]
    best_val = max((h["val_mIoU"] for h in validated if h["val_mIoU"] == h["val_mIoU"]), default=float("nan"))
    return {
        "arm": run.arm,
        "budget": run.budget,
        "seed": run.seed,
        **unit_fold(run.fold),
        "lr": run.lr,
        "dir": str(run.out),
        "best_val_mIoU": best_val,
        "steps": history[-1]["steps"],
        "epochs": history[-1]["epoch"],
        "test": summary["test"],
        "history": history,
    }


def pretrain_diagnostics(args, mode: str, fold: int | None = None) -> dict:
    """Final-epoch pre-training numbers (masked MSE and, where logged, the non-learned baselines)."""
    from utils.checkpoint import load_checkpoint

    path = pretrain_dir(args, mode, fold) / "last.tar"
    if (
        not path.is_file()
    ):  # a backbone export pre-trained elsewhere and copied in (results/label_efficiency_synthetic/commands.sh, 13)
        return {}
    ckpt = load_checkpoint(path, trusted=False)
    return {k: v for k, v in ckpt.get("metrics", {}).items() if isinstance(v, (int, float))}


PRETEXT_TAGS = {
    "loss": "pretrain/loss",
    "model": "pretext/model",
    "neighbour_mean": "pretext/neighbour_mean",
    "temporal_interp": "pretext/temporal_interp",
}


def pretrain_history(args, mode: str, fold: int | None = None) -> list[dict]:
    """Per-epoch training loss and masked-cell MSE of the model and the non-learned baselines, from the
    pre-training's TensorBoard log (every epoch, across resumed launches)."""
    from utils.report import read_scalars

    log_dir = pretrain_dir(args, mode, fold) / "tb"
    if not log_dir.is_dir():  # a backbone export copied in without its pre-training folder
        return []
    scalars = read_scalars(log_dir, list(PRETEXT_TAGS.values()))
    by_epoch: dict[int, dict] = {}
    for key, tag in PRETEXT_TAGS.items():
        for step, value in scalars[tag]:
            by_epoch.setdefault(step, {"epoch": step + 1})[key] = value
    return [by_epoch[e] for e in sorted(by_epoch)]
