"""Two CPU processes under torchrun (gloo): both ranks hold identical weights after training."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from fakes import FakeSITS

HERE = Path(__file__).resolve().parent


def test_two_process_ddp_keeps_ranks_in_sync(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(HERE / "ddp_worker.py"), str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
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
