"""Two CPU processes under torchrun (gloo): both ranks hold identical weights after training, every
rank skips together under --skip_nonfinite, and the entry scripts run train + test, with one source and with
two. Eager here: the scripts compiled (--compile, aot_eager) under torchrun are tests/test_real_scene.py's
torchrun test, a compile costing about half of a run."""

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fakes import FakeSITS

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def worker_results(tmp_path_factory):
    """One torchrun of tests/ddp_worker.py; a hang (a rank skipping alone) fails at the timeout."""
    out = tmp_path_factory.mktemp("ddp")
    result = torchrun([str(HERE / "ddp_worker.py"), str(out)], out, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]


def test_two_process_ddp_keeps_ranks_in_sync(worker_results):
    rank0, rank1 = worker_results
    for part in ("pretrain", "segmenter"):
        assert rank0[part]
        for key, value in rank0[part].items():
            assert torch.equal(value, rank1[part][key]), (part, key)
    # the evaluation confusion matrix is summed over ranks: every pixel of the 8 samples counted once
    assert torch.equal(rank0["cm"], rank1["cm"])
    assert rank0["cm"].sum().item() == len(FakeSITS(n=8)) * 8 * 8
    # pretext diagnostics are reduced over ranks (each rank draws its own masks, so local values differ)
    assert len(rank0["pretext"]) == 3 and torch.isfinite(rank0["pretext"]).all()
    assert torch.equal(rank0["pretext"], rank1["pretext"])


def test_two_source_ddp_keeps_ranks_in_sync(worker_results):
    """Late fusion (optical + S1A + S1D) through pre-training, fine-tuning and test on two ranks."""
    rank0, rank1 = (result["two_source"] for result in worker_results)
    for part in ("pretrain", "segmenter"):
        assert any(key.startswith("backbone.extra.S1A.") for key in rank0[part])
        for key, value in rank0[part].items():
            assert torch.equal(value, rank1[part][key]), (part, key)
    assert torch.equal(rank0["cm"], rank1["cm"]) and rank0["cm"].sum().item() == 8 * 8 * 8
    assert rank0["masked_S1A"] == rank1["masked_S1A"] > 0.3  # reduced over ranks


def test_nonfinite_batch_on_one_rank_is_skipped_by_every_rank(worker_results):
    rank0, rank1 = worker_results
    # pre-training: rank 1's NaN input (batch 0) and rank 0's NaN loss (batch 1) -> 2 steps skipped everywhere
    assert rank0["skip_pretrain"] == rank1["skip_pretrain"] == 2
    assert rank0["skip_finetune"] == rank1["skip_finetune"] == 1
    for key, value in rank0["skip_pretrain_params"].items():  # the one step taken was taken together
        assert torch.equal(value, rank1["skip_pretrain_params"][key]), key


REPO = HERE.parent
# one step per epoch and rank, and one series length
EAGER = ["--smoke", "--device", "cpu", "--num_workers", "0", "--no_progress", "--temporal", "first:6", "--batch_size", "12"]


def torchrun(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """2-process gloo torchrun of an entry script; the whole process group is killed on a timeout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def assert_same_test_metrics(ddp_run: Path, one_process_run: Path) -> None:
    """The test metrics (summary.json) of a torchrun fine-tune equal a one-process test of its best.tar."""
    ddp = json.loads((ddp_run / "summary.json").read_text())["test"]
    single = json.loads((one_process_run / "summary.json").read_text())["test"]
    assert ddp["n_pixels"] > 0
    for key in ("OA", "mIoU", "mF1", "kappa", "n_pixels"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-12), key


def test_ddp_pretraining_writes_and_resumes_checkpoints(tmp_path):
    """DDP(model) with bf16 autocast: checkpoints are written (unwrap) and a resumed run continues from them.
    (DDP(compiled) checkpoints holding unwrapped keys: test_real_scene.py's torchrun test.)"""
    from models import STCLNSegmenter, tiny_config
    from utils.checkpoint import load_pretrained_backbone

    out = tmp_path / "pt"
    first = torchrun([str(REPO / "pretrain_STCLN.py"), *EAGER, "--epochs", "1", "--amp", "--output_dir", str(out)],
                     tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "torch.compile" not in first.stdout
    # --fast_dropout on the resumed run: the repository's own dropout masks (compiled, it is PyTorch's dropout)
    second = torchrun([str(REPO / "pretrain_STCLN.py"), *EAGER, "--epochs", "2", "--resume", "--fast_dropout",
                       "--output_dir", str(out)], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout and "epoch 1/2" not in second.stdout and "epoch 2/2" in second.stdout
    last = torch.load(out / "last.tar", weights_only=True)
    assert last["epoch"] == 1 and not any(k.startswith(("module.", "_orig_mod.")) for k in last["model"])
    export = out / "checkpoint_1.stcln.tar"
    model = STCLNSegmenter(tiny_config(in_channels=10, num_classes=20))
    assert load_pretrained_backbone(model, export) == len(model.backbone.state_dict())


def test_ddp_finetuning_tests_the_final_best_checkpoint_on_every_rank(tmp_path):
    """Train two epochs (bf16 autocast) then test on both ranks (no best.tar race): the test metrics
    equal a one-process evaluation of the final best.tar. (Resuming under DDP is the pre-training
    test's; the fine-tune's own resume state is tested bit for bit in test_reliability.py.) The compiled
    fine-tuning script under torchrun, with the same comparison, is test_real_scene.py's torchrun test."""
    from utils.finetune import main

    out = tmp_path / "ft"
    script = str(REPO / "PASTIS/finetuning_STCLN.py")
    first = torchrun([script, "--dataset", "synthetic", *EAGER, "--label_ratio", "0.5", "--output_dir", str(out),
                      "--epochs", "2", "--amp"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "epoch 2/2" in first.stdout
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)  # the synthetic data set cached by the runs above
        status = main("pastis", "test", ["--dataset", "synthetic", "--smoke", "--device", "cpu", "--num_workers", "0",
                                         "--temporal", "first:6",
                                         "--no_progress", "--eval_only", "--output_dir", str(tmp_path / "single"),
                                         "--checkpoint", str(out / "best.tar"), "--amp"])
    finally:
        os.chdir(cwd)
    assert status == 0
    assert_same_test_metrics(out, tmp_path / "single")


def test_two_source_ddp_scripts_train_and_test(tmp_path, caplog):
    """--sources S2 S1 (late fusion) end to end under a 2-process gloo torchrun with --amp: pre-training (every
    radar source masked), then fine-tuning that loads the whole export (train and test on both ranks); the DDP
    test metrics equal a one-process test of the final best.tar whose sources the test script reads from the
    checkpoint (no --sources given). The CI smoke of issue 38's scripts with two sources. Eager: compiling both
    scripts in both ranks took 40 of this test's 80 CPU-s; --compile under torchrun runs in the real scene's
    test (tests/test_real_scene.py), a compiled two-source model through the engine's loops in
    tests/test_multisource.py."""
    from utils.finetune import main

    two = [*EAGER, "--amp", "--sources", "S2", "S1", "--epochs", "1"]  # the GPU path's bf16
    pretrain = torchrun([str(REPO / "pretrain_STCLN.py"), *two, "--output_dir", str(tmp_path / "pt")], tmp_path)
    assert pretrain.returncode == 0, pretrain.stderr[-3000:]
    last = torch.load(tmp_path / "pt" / "last.tar", weights_only=True)
    assert not any(key.startswith("module.") for key in last["model"])  # DDP, unwrapped
    assert last["model_config"]["extra_sources"] == ["S1A", "S1D"] and last["model_config"]["fusion"] == "late"
    for name in ("S1A", "S1D"):
        assert 0.2 < last["metrics"][f"masked_fraction_{name}"] < 0.6  # radar cells masked at ~--mask_ratio 0.4
    export = tmp_path / "pt" / "checkpoint_0.stcln.tar"
    exported = torch.load(export, weights_only=True)["model"]
    assert any(".S1D." in key for key in exported)
    out = tmp_path / "ft"
    finetune = torchrun([str(REPO / "PASTIS/finetuning_STCLN.py"), "--dataset", "synthetic", *two, "--label_ratio", "0.5",
                         "--output_dir", str(out), "--pretrain_pth", str(export)], tmp_path)
    assert finetune.returncode == 0, finetune.stderr[-3000:]
    assert f"loaded {len(exported)} backbone tensors" in finetune.stdout  # every source's encoder
    best = torch.load(out / "best.tar", weights_only=True)
    assert best["args"]["sources"] == ["S2", "S1A", "S1D"] and best["model_config"]["extra_channels"] == [3, 3]
    cwd = os.getcwd()
    caplog.set_level(logging.INFO)
    try:
        os.chdir(tmp_path)  # the synthetic data set (with its radar) cached by the runs above
        status = main("pastis", "test", ["--dataset", "synthetic", "--smoke", "--device", "cpu", "--num_workers", "0",
                                         "--temporal", "first:6", "--no_progress", "--eval_only", "--output_dir",
                                         str(tmp_path / "single"), "--checkpoint", str(out / "best.tar"), "--amp"])
    finally:
        os.chdir(cwd)
    assert status == 0
    assert "testing on the checkpoint's sources S2 S1A S1D" in caplog.text
    assert_same_test_metrics(out, tmp_path / "single")
