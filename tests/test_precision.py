"""The GPU code paths on CPU: wrapper nesting (DDP/torch.compile), bf16 autocast, TF32/fused-Adam decisions."""

import logging
import os
import socket
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from torch import nn

from fakes import FakeSITS
from models import STCLNPretrain, STCLNSegmenter, tiny_config
from utils.checkpoint import unwrap
from utils.datasets.collate import pad_collate
from utils.distributed import Runtime
from utils.engine import LoopOptions, train_one_epoch
from utils.precision import compile_model, cpu_flags, cpu_native_bf16, resolve_amp, use_fused_adam, use_tf32
from utils.runner import make_loader, start_epoch

CPU = torch.device("cpu")


@pytest.fixture
def fresh_log(monkeypatch):
    """Messages said once per process are said again in this test."""
    import utils.precision

    monkeypatch.setattr(utils.precision, "_said", set())


@pytest.fixture(scope="module")
def one_process_group():
    """A gloo process group of world size 1 in this process, so DDP can wrap a module."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


class Sized(nn.Module):
    """A module with __len__ == 0: falsy, so `wrapper or other` picks the wrong branch."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList()
        self.linear = nn.Linear(2, 2)

    def __len__(self):
        return 0


def test_unwrap_every_nesting_of_ddp_and_compile(one_process_group):
    ddp = nn.parallel.DistributedDataParallel
    model = STCLNPretrain(tiny_config(in_channels=5, num_classes=4))
    compiled = torch.compile(model, backend="aot_eager")  # lazy: nothing is compiled until called
    nestings = [
        model,
        compiled,
        ddp(compiled),
        torch.compile(ddp(model), backend="aot_eager"),
        torch.compile(ddp(compiled), backend="aot_eager"),
        nn.DataParallel(ddp(compiled)),
    ]
    for wrapped in nestings:
        assert unwrap(wrapped) is model
    sized = Sized()
    assert unwrap(ddp(torch.compile(sized, backend="aot_eager"))) is sized
    assert unwrap(nn.DataParallel(sized)) is sized
    # the unwrapped state dict has no wrapper prefixes
    assert set(unwrap(ddp(compiled)).state_dict()) == set(model.state_dict())


def padded_batch():
    data = FakeSITS(n=3, dates=(4, 7), seed=3)
    batch = pad_collate([data[i] for i in range(3)])
    assert batch["pad_mask"].any()  # the batch really holds padded dates
    return batch


def forward_backward(model, batch, amp: bool):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        logits = model(batch["image"], batch["positions"], batch["pad_mask"])
    loss = nn.functional.cross_entropy(logits.float(), batch["label"])
    loss.backward()
    return logits.float().detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_pad_mask_with_bf16_autocast_matches_fp32():
    """Forward and backward with --use_pad_mask under bf16 autocast (it raised a dtype error in
    encode_frames). Tolerances (bf16 keeps 8 mantissa bits, ~0.4% per value; errors grow towards
    the input layers): logits within 3% of their largest magnitude (measured 0.7%); all gradients
    together within 20% relative L2 error and cosine >= 0.98 (measured 11%, 0.994); every gradient
    tensor within 35% (measured at most 18%, a first-block BatchNorm bias)."""
    torch.manual_seed(0)
    model = STCLNSegmenter(tiny_config(in_channels=5, num_classes=4, use_pad_mask=True))
    with torch.no_grad():
        model.sta.gate.fill_(0.5)  # the STA path contributes (its gate starts at 0)
    model.eval()  # dropout off: both passes see the same function
    batch = padded_batch()
    dtypes = []
    hook = model.backbone.temporal.layers[0].qkv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    ref_logits, ref_grads = forward_backward(model, batch, amp=False)
    logits, grads = forward_backward(model, batch, amp=True)
    hook.remove()
    assert dtypes == [torch.float32, torch.bfloat16]  # autocast really ran in bf16
    assert (logits - ref_logits).abs().max() <= 0.03 * ref_logits.abs().max()
    assert set(grads) == set(ref_grads)
    flat, ref_flat = (torch.cat([g[k].flatten() for k in sorted(ref_grads)]) for g in (grads, ref_grads))
    assert (flat - ref_flat).norm() <= 0.20 * ref_flat.norm()
    assert nn.functional.cosine_similarity(flat, ref_flat, dim=0) >= 0.98
    for key, ref in ref_grads.items():
        if ref.norm() > 0:
            assert (grads[key] - ref).norm() <= 0.35 * ref.norm(), key


def test_sensitive_parts_stay_fp32_under_autocast():
    """BatchNorm, the GroupNorm-over-time statistics and the STA softmax compute in fp32."""
    torch.manual_seed(0)
    model = STCLNSegmenter(tiny_config(in_channels=5, num_classes=4, use_pad_mask=True)).train()
    seen = {}

    def keep(name, tensor) -> None:  # hooks must return None (a value would replace the output)
        seen.setdefault(name, tensor.dtype)

    bn = model.backbone.spatial.block1[1]
    bn.register_forward_hook(lambda m, i, o: keep("bn", o))
    model.backbone.temporal.layers[0].register_forward_pre_hook(lambda m, args: keep("after_gn", args[0]))
    model.sta.register_forward_hook(lambda m, i, o: keep("sta", o))
    batch = padded_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(batch["image"], batch["positions"], batch["pad_mask"])
    assert seen["bn"] == torch.float32 and bn.running_mean.dtype == torch.float32
    assert seen["sta"] == torch.float32
    # the first layer's input is GroupNorm output + positions: fp32 statistics give an fp32 stream
    assert seen["after_gn"] == torch.float32


def short_finetune(amp: bool, fast_dropout: bool = False) -> list[float]:
    """The same 32-step fine-tune (tiny preset, seed 0, 16 synthetic 8x8 series, batch 2, 4 epochs)."""
    torch.manual_seed(0)
    data = FakeSITS(n=16, seed=0)
    model = STCLNSegmenter(tiny_config(in_channels=data.in_channels, num_classes=data.num_classes, use_pad_mask=True))
    model.backbone.set_fast_dropout(fast_dropout)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = make_loader(data, 2, Runtime(), train=True, seed=0, workers=0)
    options = LoopOptions(CPU, grad_clip=5.0, amp=amp, progress=False)
    losses = []
    for epoch in range(4):
        start_epoch(loader, 0, epoch)
        losses.append(
            train_one_epoch(
                model,
                loader,
                optimizer,
                epoch,
                config=model.config,
                class_weight=torch.tensor([1.0, 1.0, 1.0, 0.0]),
                options=options,
            )["loss"]
        )
    return losses


def test_bf16_finetune_agrees_with_fp32():
    """fp32 vs --amp (bf16 autocast) on the same seeded run: every epoch's mean loss within 5% of
    fp32 (measured: 0.4%, 0.2%, 0.3%, 1.7% over the 4 epochs: fp32 1.191 0.999 0.881 0.687, bf16
    1.196 1.002 0.878 0.675), and both runs learn (last epoch below 80% of the first)."""
    fp32, bf16 = short_finetune(False), short_finetune(True)
    for a, b in zip(fp32, bf16):
        assert abs(a - b) <= 0.05 * a, (fp32, bf16)
    assert fp32[-1] < 0.8 * fp32[0] and bf16[-1] < 0.8 * bf16[0]


def test_fast_dropout_finetune_agrees_with_default_dropout():
    """--fast_dropout draws other masks from the same distribution: the same seeded run, in fp32 and
    with bf16 autocast (the benchmark's fast path), stays within 5% of the default fp32 run's loss
    every epoch (measured: fp32 0.8%, 0.7%, 1.9%, 1.5%; bf16 0.6%, 0.6%, 1.2%, 1.8%: fast fp32 1.200
    1.007 0.898 0.697, fast bf16 1.198 1.005 0.892 0.699), and learns."""
    default = short_finetune(False)
    for fast in (short_finetune(False, fast_dropout=True), short_finetune(True, fast_dropout=True)):
        for a, b in zip(default, fast):
            assert abs(a - b) <= 0.05 * a, (default, fast)
        assert fast[-1] < 0.8 * fast[0]


def test_cpu_bf16_detection_and_fallback(caplog, fresh_log):
    assert cpu_flags("processor : 0\nflags : fpu avx512f avx512_bf16\n") == {"fpu", "avx512f", "avx512_bf16"}
    assert cpu_native_bf16({"avx512f", "avx512_bf16"}, "x86_64") == "avx512_bf16"
    assert cpu_native_bf16({"amx_tile", "amx_bf16"}, "x86_64") == "amx_bf16"
    assert cpu_native_bf16({"avx2", "avx512f"}, "x86_64") is None
    assert cpu_native_bf16({"asimd", "bf16"}, "aarch64") == "bf16"
    assert cpu_native_bf16({"bf16"}, "x86_64") is None  # an ARM flag name means nothing on x86
    assert not resolve_amp(False, CPU, native_bf16="avx512_bf16")  # fp32 stays the default
    with caplog.at_level(logging.INFO, logger="stcln"):
        assert resolve_amp(True, CPU, native_bf16="avx512_bf16")
        assert not resolve_amp(True, CPU, native_bf16="")
        assert not resolve_amp(True, CPU, native_bf16="")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no native bf16" in warnings[0].getMessage()  # said once
    assert resolve_amp(True, torch.device("cuda", 0))  # decided without touching a GPU


def test_tf32_and_fused_adam_decisions():
    cuda, meta = SimpleNamespace(device=torch.device("cuda", 0)), SimpleNamespace(device=torch.device("meta"))
    assert use_tf32(torch.device("cuda", 0), strict_fp32=False)
    assert not use_tf32(torch.device("cuda", 0), strict_fp32=True)
    assert not use_tf32(CPU, strict_fp32=False)
    assert use_fused_adam([cuda, cuda], strict_fp32=False)
    assert not use_fused_adam([cuda, cuda], strict_fp32=True)
    assert not use_fused_adam([cuda, meta], strict_fp32=False)  # not every parameter on CUDA
    assert not use_fused_adam(list(nn.Linear(2, 2).parameters()), strict_fp32=False)
    assert not use_fused_adam([], strict_fp32=False)


def test_finetune_script_amp_pad_mask_on_cpu(tmp_path, caplog, monkeypatch, fresh_log):
    """The documented command with --amp --use_pad_mask runs train + test; the log says whether
    bf16 autocast is on (CPUs with native bf16) or why not."""
    from utils.finetune import main

    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="stcln"):
        status = main(
            "pastis",
            "test",
            [
                "--dataset",
                "synthetic",
                "--smoke",
                "--amp",
                "--use_pad_mask",
                "--device",
                "cpu",
                "--num_workers",
                "0",
                "--no_progress",
                "--epochs",
                "1",
                "--label_ratio",
                "0.5",
                "--output_dir",
                str(tmp_path / "out"),
            ],
        )
    assert status == 0
    text = caplog.text
    if cpu_native_bf16():
        assert "--amp: bf16 autocast on the CPU" in text
    else:
        assert "--amp: this CPU has no native bf16" in text
    assert (tmp_path / "out" / "summary.json").is_file()
    assert os.path.isfile(tmp_path / "out" / "best.tar")


def test_compile_gives_every_source_its_share_of_graphs(monkeypatch):
    """A three-source model's per-date CNN is one compiled function with a graph per source (band counts differ),
    mode and date dynamism: ten graphs in the engine's pre-training, training and evaluation of
    tests/test_multisource.py's data, where torch's limit of 8 sent the rest to eager. compile_model raises the
    limit to 8 per source (and never lowers one set higher); a one-source model keeps torch's."""
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 8)
    compile_model(STCLNSegmenter(tiny_config(in_channels=4, num_classes=3)), "aot_eager")  # lazy: nothing compiled
    assert torch._dynamo.config.recompile_limit == 8
    radar = tiny_config(in_channels=4, num_classes=3, extra_sources=("S1A", "S1D"), extra_channels=(3, 3))
    compile_model(STCLNSegmenter(radar), "aot_eager")
    assert torch._dynamo.config.recompile_limit == 24
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 64)
    compile_model(STCLNSegmenter(radar), "aot_eager")
    assert torch._dynamo.config.recompile_limit == 64
