"""Numeric precision of a run: bf16 autocast (``--amp``), TF32 and the fused Adam (``--strict_fp32``).

The decisions are plain functions of the device and the flags so they can be unit-tested on a
CPU. Defaults:

* ``--amp`` off: fp32 everywhere (the paper's numbers, the parity check). With ``--amp``, bf16
  autocast on CUDA, and on a CPU with native bf16 (``avx512_bf16``/``amx_bf16`` on x86, ``bf16``
  on ARM); another CPU falls back to fp32 with one warning. Under autocast the numerically
  sensitive parts stay fp32 in the model itself: BatchNorm, the GroupNorm-over-time statistics,
  the STA logits and softmax, and the losses.
* On CUDA, unless ``--strict_fp32``: TF32 matmuls and convolutions and the fused Adam kernel.
  TF32 keeps fp32 range with a 10-bit mantissa in the matmul inputs; PyTorch already runs cuDNN
  convolutions in TF32 by default, so the authors' own GPU runs used it for the CNN.
  ``--strict_fp32`` turns both off (full fp32 matmuls and convolutions, the for-each Adam).
"""

import logging
import platform
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger("stcln")

X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
ARM_BF16_FLAGS = ("bf16",)
_said = set()  # messages already logged by this process (each is said once)


def _once(level: int, message: str, *fmt) -> None:
    text = message % fmt if fmt else message
    if text not in _said:
        _said.add(text)
        log.log(level, text)


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The feature flags of the CPU (``flags``/``Features`` lines of /proc/cpuinfo; empty elsewhere)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def cpu_native_bf16(flags: set[str] | None = None, machine: str | None = None) -> str | None:
    """The CPU feature that gives native bf16 arithmetic (e.g. 'avx512_bf16'), or None."""
    flags = cpu_flags() if flags is None else flags
    machine = (machine or platform.machine()).lower()
    candidates = ARM_BF16_FLAGS if machine in ("aarch64", "arm64") else X86_BF16_FLAGS
    return next((f for f in candidates if f in flags), None)


def resolve_amp(requested: bool, device: torch.device, native_bf16: str | None = None) -> bool:
    """Whether bf16 autocast runs: ``--amp`` on CUDA, or on a CPU with native bf16 (said once in the log).

    ``native_bf16`` overrides the CPU detection (tests)."""
    if not requested:
        return False
    if device.type == "cuda":
        _once(logging.INFO, "--amp: bf16 autocast on %s", str(device))
        return True
    if device.type == "cpu":
        feature = native_bf16 if native_bf16 is not None else cpu_native_bf16()
        if feature:
            _once(logging.INFO, "--amp: bf16 autocast on the CPU (native bf16: %s)", feature)
            return True
        _once(
            logging.WARNING,
            "--amp: this CPU has no native bf16 (no %s flag): running in fp32",
            "/".join(X86_BF16_FLAGS),
        )
        return False
    _once(logging.WARNING, "--amp: no bf16 autocast on device %s: running in fp32", str(device))
    return False


def autocast_context(enabled: bool, device: torch.device):
    """bf16 autocast on ``device`` when ``enabled`` (a disabled autocast otherwise)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def fp32_region(x: torch.Tensor):
    """A block where autocast is off for ``x``'s device: numerically sensitive code runs in fp32."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def autocast_active(x: torch.Tensor) -> bool:
    return torch.is_autocast_enabled(x.device.type)


def use_tf32(device: torch.device, strict_fp32: bool) -> bool:
    """TF32 matmuls/convolutions: on CUDA unless ``--strict_fp32``."""
    return device.type == "cuda" and not strict_fp32


def use_fused_adam(params, strict_fp32: bool) -> bool:
    """The fused Adam kernel: when every parameter is on CUDA, unless ``--strict_fp32``."""
    params = list(params)
    return not strict_fp32 and bool(params) and all(p.device.type == "cuda" for p in params)


def configure_matmul_precision(device: torch.device, strict_fp32: bool) -> bool:
    """Set TF32 on or off for CUDA matmuls and cuDNN convolutions (say it once); returns whether on."""
    tf32 = use_tf32(device, strict_fp32)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        _once(logging.INFO, "CUDA matmuls and convolutions: %s", "TF32" if tf32 else "strict fp32 (--strict_fp32)")
    return tf32


def make_adam(params, lr: float, weight_decay: float, strict_fp32: bool) -> torch.optim.Adam:
    """Adam, fused on CUDA unless ``--strict_fp32``."""
    params = list(params)
    fused = use_fused_adam(params, strict_fp32)
    if fused:
        _once(logging.INFO, "optimizer: fused Adam")
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **({"fused": True} if fused else {}))


RECOMPILE_LIMIT_PER_SOURCE = 8  # torch._dynamo's default recompile_limit, for one source


def compile_model(model: nn.Module, backend: str) -> nn.Module:
    """``torch.compile`` with ``backend`` (said once in the log)."""
    import torch._dynamo

    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        from utils.errors import STCLNError

        examples = ", ".join(b for b in ("inductor", "aot_eager", "eager") if b in known)
        raise STCLNError(f"--compile_backend {backend!r}: not a torch.compile backend (e.g. {examples})")
    _once(logging.INFO, "torch.compile: %s with backend %s", type(model).__name__, backend)
    sources = 1 + len(getattr(getattr(model, "config", None), "extra_sources", ()))
    limit = RECOMPILE_LIMIT_PER_SOURCE * sources
    if sources > 1 and torch._dynamo.config.recompile_limit < limit:
        # Every source's per-date CNN is a graph of the same function (band counts differ), in training and in
        # evaluation, with static then dynamic dates: three sources passed torch's 8 and ran the CNN eager.
        torch._dynamo.config.recompile_limit = limit
        _once(logging.INFO, "torch.compile: up to %d graphs per function (%d sources)", limit, sources)
    return torch.compile(model, backend=backend)
