"""Checkpoint I/O: atomic writes, resumable training state, run folders, and ``--pretrain_pth`` loading.

Our ``.tar`` files are plain dicts of plain types (loadable with ``weights_only=True``):
``model`` (state dict), ``optimizer``, ``epoch``, ``metrics``, ``model_config`` (dict),
``args`` (dict), ``kind`` ('full' | 'backbone').

``load_pretrained_backbone`` accepts three kinds of file:
  * our full checkpoints (pre-training or fine-tuning): keeps the ``backbone.*`` tensors;
  * our backbone exports ``checkpoint_<epoch>.<name>.tar`` (``kind='backbone'``);
  * the authors' released ``checkpoint_99.utae.tar`` / ``checkpoint_99.sttrans.tar``: a bare
    state dict of their ``utae`` module, mapped key by key (docs/method.md §1.6).
Any missing, unexpected or mis-shaped key is an error that lists them: never a silent
from-scratch model.
"""

import argparse
import io
import logging
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from models import STCLNConfig
from utils.args import args_dict, dump_args
from utils.atomic import write_atomic
from utils.distributed import Runtime
from utils.errors import CheckpointError, STCLNError

log = logging.getLogger("stcln")

# The authors' modules that are built but never executed: dropped on load.
AUTHORS_UNUSED_PREFIXES = (
    "up3.",
    "temporal_encoder.inconv.",
    "temporal_encoder.out_norm.",
    "temporal_encoder.mlp.",
    "temporal_encoder.transformer_encoder.",
)

# (authors' key pattern, our key template), tried in order. Backbone keys are relative to STCLN.
AUTHORS_BACKBONE_KEYS = (
    (r"inc\.double_conv\.([0134])\.(.+)", "spatial.block1.{0}.{1}"),
    (r"down1\.maxpool_conv\.0\.double_conv\.([0134])\.(.+)", "spatial.block2.{0}.{1}"),
    (r"temporal_encoder\.in_norm\.(weight|bias)", "temporal.in_norm.{0}"),
    (r"temporal_encoder\.layer_stack\.(\d+)\.self_attn\.in_proj_(weight|bias)", "temporal.layers.{0}.qkv.{1}"),
    (r"temporal_encoder\.layer_stack\.(\d+)\.self_attn\.out_proj\.(weight|bias)", "temporal.layers.{0}.proj.{1}"),
    (r"temporal_encoder\.layer_stack\.(\d+)\.(linear1|linear2|norm1|norm2)\.(weight|bias)", "temporal.layers.{0}.{1}.{2}"),
)

# The authors' UTAEClassification head tensors -> our STCLNSegmenter names (1x1 convs become linears).
AUTHORS_HEAD_KEYS = {
    "conv1.weight": "sta.query.weight",
    "conv2.weight": "sta.key.weight",
    "conv3.weight": "sta.value.weight",
    "l": "sta.gate",
    "outlinear.weight": "classifier.weight",
    "outlinear.bias": "classifier.bias",
}

WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically and durably (utils/atomic.py): a crash mid-write leaves
    the previous file intact, never a half-written one."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CheckpointError(f"{path.parent}: cannot write checkpoints here ({err.strerror})") from None
    def save(tmp: Path) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)  # serialised in memory: a full disk then fails as an OSError of the plain write
        with open(tmp, "wb") as handle:  # below, not inside torch's zip writer (a C++ assertion, "unexpected pos")
            handle.write(buffer.getbuffer())

    try:
        write_atomic(path, save, durable=True)
    except OSError as err:  # no permission, read-only or full disk: the previous file is intact
        intact = "; the previous checkpoint is intact" if path.exists() else ""
        raise CheckpointError(f"{path}: cannot write the checkpoint ({err.strerror or err}){intact}") from None
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a run killed mid-write
        stale.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, trusted: bool = False) -> dict:
    """Load a checkpoint on CPU. ``trusted=True`` allows pickled objects (only for files you trust)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle protocol before failing on it: the
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # one line below says it all
            return torch.load(path, map_location="cpu", weights_only=not trusted)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        text = str(err)
        pickled = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if pickled and not trusted:  # a real pickle of Python objects: only then may trusting it help
            raise CheckpointError(f"{path}: holds pickled Python objects ({pickled.group(1)}) that the safe loader refuses; "
                                  "if this file is from a source you trust, pass --trust_checkpoint") from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        first = lines[0].split(". ")[0][:120] if lines and not lines[0].startswith("Weights only load failed") else ""
        reason = f"{type(err).__name__}: {first}" if first else type(err).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated, corrupt or not a PyTorch file: {reason})") from None


def load_finetuned(path: str | Path, trusted: bool = False) -> tuple[dict, STCLNConfig]:
    """A fine-tuned checkpoint (``best.tar``/``last.tar``) and its validated model configuration."""
    ckpt = load_checkpoint(path, trusted)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict) or not isinstance(ckpt.get("model_config"), dict):
        raise CheckpointError(f"{path}: not a fine-tuned STCLN checkpoint (needs dicts 'model' and 'model_config')")
    try:
        config = STCLNConfig.from_dict(ckpt["model_config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid model_config ({err})") from None
    return ckpt, config


def checkpoint_sources(ckpt: dict, config: STCLNConfig, source: str) -> tuple[str, ...]:
    """The image sources (primary first) a checkpoint's model was trained on: its saved ``args``
    ``sources``; a file written before ``--sources`` existed is the single-source S2 model.

    Raises:
        CheckpointError: the saved sources disagree with the model configuration's extra sources.
    """
    from utils.datasets.sources import PRIMARY_DEFAULT, expand_sources

    saved = (ckpt.get("args") or {}).get("sources") if isinstance(ckpt.get("args"), dict) else None
    sources = expand_sources(saved) if saved else (PRIMARY_DEFAULT, *config.extra_sources)
    if tuple(sources[1:]) != tuple(config.extra_sources):
        raise CheckpointError(f"{source}: its run arguments name the sources {list(sources)} but its model takes the "
                              f"extra sources {list(config.extra_sources)}")
    return tuple(sources)


def strip_wrapper_prefixes(state_dict: dict) -> dict:
    """Remove ``module.`` (DDP/DataParallel) and ``_orig_mod.`` (torch.compile) prefixes."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def is_authors_backbone(state_dict: dict) -> bool:
    """True for a bare state dict of the authors' ``utae`` module."""
    return any(k.startswith("inc.double_conv.") for k in state_dict)


def map_authors_backbone(state_dict: dict, source: str = "state dict") -> dict:
    """Map the authors' backbone keys to ours; unused modules are dropped, unknown keys rejected."""
    mapped, unknown = {}, []
    for key, value in state_dict.items():
        if key.startswith(AUTHORS_UNUSED_PREFIXES):
            continue
        for pattern, template in AUTHORS_BACKBONE_KEYS:
            match = re.fullmatch(pattern, key)
            if match:
                mapped[template.format(*match.groups())] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{source}: keys not in the authors' STCLN layout: {_preview(unknown)}")
    return mapped


def map_authors_head(state_dict: dict, source: str = "state dict") -> dict:
    """Map the authors' STA/classifier tensors to :class:`STCLNSegmenter` names."""
    unknown = sorted(set(state_dict) - set(AUTHORS_HEAD_KEYS))
    if unknown:
        raise CheckpointError(f"{source}: keys not in the authors' STA head layout: {_preview(unknown)}")
    out = {}
    for key, value in state_dict.items():
        ours = AUTHORS_HEAD_KEYS[key]
        out[ours] = value.flatten(1) if value.dim() == 4 else value  # (D, D, 1, 1) -> (D, D)
    return out


def extract_backbone_state(ckpt: object, source: str) -> tuple[dict, dict | None]:
    """Return (backbone state dict in our names, model_config dict or None) from any supported file."""
    if not isinstance(ckpt, dict) or not ckpt:
        raise CheckpointError(f"{source}: expected a state dict or an STCLN checkpoint dict, got {type(ckpt).__name__}")
    if "model" in ckpt and isinstance(ckpt["model"], dict):  # our full or backbone checkpoint
        state = strip_wrapper_prefixes(ckpt["model"])
        if ckpt.get("kind") != "backbone":
            state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
            if not state:
                raise CheckpointError(f"{source}: checkpoint holds no 'backbone.*' tensors")
        saved = ckpt.get("model_config")
        if saved is not None and not isinstance(saved, dict):
            raise CheckpointError(f"{source}: 'model_config' is a {type(saved).__name__}, not a dict")
        return state, saved
    if not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise CheckpointError(f"{source}: neither an STCLN checkpoint (no 'model' entry) nor a tensor state dict")
    state = strip_wrapper_prefixes(ckpt)
    if is_authors_backbone(state):
        return map_authors_backbone(state, source), None
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return state, None


@dataclass
class PretrainedBackbone:
    """A backbone read from any supported file, with what the file says about its architecture.

    ``sizes``: the architecture fields (``in_channels``, ``widths``, ``n_layers``, ``d_ffn``) read from
    the tensors themselves, so a file of any size is understood. ``saved_config``: the
    ``model_config`` our checkpoints store (None for the authors' files and bare state dicts).
    """

    state: dict
    sizes: dict
    saved_config: dict | None
    authors: bool
    source: str


def sizes_from_tensors(state: dict, source: str) -> dict:
    """Read in_channels, widths, n_layers and d_ffn of a backbone state dict (our key names).

    The feed-forward width comes from the live Transformer layers (``temporal.layers.*``); in the
    authors' files it is 4 x d_model, while their never-run modules keep fixed sizes and are not
    looked at (they were dropped by :func:`map_authors_backbone`).
    """
    try:
        block1, block2 = state["spatial.block1.0.weight"], state["spatial.block2.3.weight"]
        layers = {int(m.group(1)) for k in state if (m := re.fullmatch(r"temporal\.layers\.(\d+)\..+", k))}
        ffn = state["temporal.layers.0.linear1.weight"]
    except KeyError as err:
        raise CheckpointError(f"{source}: no backbone tensor {err.args[0]!r}; not an STCLN backbone") from None
    return {"in_channels": int(block1.shape[1]), "widths": (int(block1.shape[0]), int(block2.shape[0])),
            "n_layers": len(layers), "d_ffn": int(ffn.shape[0])}


def read_pretrained_backbone(path: str | Path, trusted: bool = False) -> PretrainedBackbone:
    """Read any ``--pretrain_pth`` file (see the module docstring) without building a model."""
    source = str(path)
    raw = load_checkpoint(path, trusted)
    state, saved_config = extract_backbone_state(raw, source)
    authors = saved_config is None and isinstance(raw, dict) and is_authors_backbone(strip_wrapper_prefixes(raw))
    return PretrainedBackbone(state, sizes_from_tensors(state, source), saved_config, authors, source)


# What the authors' released backbones were trained with (their n_head, date-index positions,
# period 1000); their files do not store it.
AUTHORS_N_HEADS = 8
AUTHORS_ENCODING = {"positions": "index", "pe_period": 1000.0}
ENCODING_FIELDS = ("positions", "pe_period")


def config_for_backbone(config: STCLNConfig, backbone: PretrainedBackbone, allow_encoding_change: bool = False) -> STCLNConfig:
    """The model configuration that fits ``backbone``, starting from ``config`` (flags and data).

    The authors' files and bare state dicts give their sizes through the tensors: the widths, layer
    count and feed-forward width are taken from there (the authors' head count is 8). Our
    checkpoints store their configuration: any architecture difference is an error. The number of
    bands must always match the data. A backbone pre-trained with another positional encoding
    (``positions``, ``pe_period``) is refused unless ``allow_encoding_change``.
    """
    source = backbone.source
    if backbone.saved_config is not None:
        try:
            saved = STCLNConfig.from_dict({k: v for k, v in backbone.saved_config.items() if k != "num_classes"}
                                          | {"num_classes": config.num_classes})
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{source}: invalid model_config ({err})") from None
        architecture = ("in_channels", "widths", "n_heads", "n_layers", "d_ffn")
        if saved.extra_sources:  # a multi-source backbone fits only the same sources and fusion
            architecture += ("extra_sources", "extra_channels", "fusion")
        diff = [f"{k}: file {getattr(saved, k)} vs model {getattr(config, k)}" for k in architecture if getattr(saved, k) != getattr(config, k)]
        if diff:
            raise CheckpointError(f"{source}: backbone was trained with a different architecture ({'; '.join(diff)})")
        encoding = {k: getattr(saved, k) for k in ENCODING_FIELDS}
    else:
        if backbone.sizes["in_channels"] != config.in_channels:
            raise CheckpointError(f"{source}: backbone expects {backbone.sizes['in_channels']} bands, "
                                  f"the data has {config.in_channels}")
        n_heads = AUTHORS_N_HEADS if backbone.authors else config.n_heads
        try:
            config = replace(config, widths=backbone.sizes["widths"], n_layers=backbone.sizes["n_layers"],
                             d_ffn=backbone.sizes["d_ffn"], n_heads=n_heads)
        except ValueError as err:
            raise CheckpointError(f"{source}: backbone sizes {backbone.sizes} do not make a model ({err})") from None
        encoding = AUTHORS_ENCODING if backbone.authors else None
    if encoding is not None and not allow_encoding_change:
        diff = [f"{k}: backbone {encoding[k]!r} vs model {getattr(config, k)!r}" for k in ENCODING_FIELDS
                if encoding[k] != getattr(config, k)]
        if diff:
            raise CheckpointError(f"{source}: backbone was pre-trained with another positional encoding ({'; '.join(diff)}); "
                                  "use the same flags, or pass --allow_encoding_change to fine-tune it anyway")
    return config


def load_pretrained_backbone(model: nn.Module, path: str | Path | PretrainedBackbone, trusted: bool = False) -> int:
    """Load a pre-trained backbone into ``model.backbone``; return how many tensors were loaded.

    Checks the model configuration stored in our checkpoints and every key and shape, raising
    :class:`CheckpointError` with the offending keys (missing, unexpected, shape mismatches).

    A single-source backbone (ours or the authors') loaded into a multi-source model fills its
    primary (optical) encoder, ``spatial.*`` and ``temporal.*``; the further sources' encoders
    (``extra.*``, ``source_embedding``) keep their initialisation. A multi-source backbone must
    match the model's sources and fusion exactly.
    """
    backbone = path if isinstance(path, PretrainedBackbone) else read_pretrained_backbone(path, trusted)
    config: STCLNConfig = model.config
    if backbone.saved_config is not None:
        config_for_backbone(config, backbone, allow_encoding_change=True)  # architecture check only
    only = None
    if config.extra_sources and not any(is_extra_source_key(key) for key in backbone.state):
        only = {key for key in model.backbone.state_dict() if not is_extra_source_key(key)}
        log.info("%s: a single-source backbone: loaded into the primary encoder; the encoders of %s start from "
                 "their initialisation", backbone.source, ", ".join(config.extra_sources))
    load_state_checked(model.backbone, backbone.state, backbone.source, only)
    return len(backbone.state)


def is_extra_source_key(key: str) -> bool:
    """True for a backbone tensor of a further source (models/stcln.py: ``extra.<s>.*``, ``source_embedding``)."""
    return key.startswith("extra.") or key == "source_embedding"


def load_state_checked(module: nn.Module, state: dict, source: str, only: set[str] | None = None) -> None:
    """``load_state_dict`` that requires the exact key set and shapes, with a readable error.

    ``only``: the state-dict keys of ``module`` that ``state`` must fill exactly (the others keep
    their values); None = all of them."""
    expected = module.state_dict()
    if only is not None:
        expected = {key: value for key, value in expected.items() if key in only}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in sorted(set(state) & set(expected)) if state[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected {_preview(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {_preview(shapes)}")
    if problems:
        raise CheckpointError(f"{source}: does not fit the model: {'; '.join(problems)}")
    nonfinite = sorted(k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if nonfinite:
        raise CheckpointError(f"{source}: non-finite weights (NaN/inf) in {_preview(nonfinite)}")
    if only is None:
        module.load_state_dict(state, strict=True)
    else:
        missing, unexpected = module.load_state_dict(state, strict=False)
        assert not unexpected and set(missing).isdisjoint(only), (missing, unexpected)  # checked above


def backbone_export(model: nn.Module, config: STCLNConfig, epoch: int) -> dict:
    """The backbone-only file ``checkpoint_<epoch>.<name>.tar`` that ``--pretrain_pth`` accepts."""
    return {
        "kind": "backbone",
        "model": {k: v.detach().cpu() for k, v in unwrap(model).backbone.state_dict().items()},
        "model_config": config.to_dict(),
        "epoch": epoch,
    }


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model under any nesting of DDP/DataParallel and torch.compile wrappers.

    Wrappers are recognised by type (DDP) or by their registered ``_orig_mod`` submodule
    (torch.compile); a module is never tested for truth (``nn.Module`` may define ``__len__``).
    """
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(model._modules.get("_orig_mod"), nn.Module):
            model = model._modules["_orig_mod"]
        else:
            return model


def _preview(items: list, limit: int = 6) -> str:
    shown = ", ".join(map(str, items[:limit]))
    return f"[{shown}{f', ... ({len(items)} in all)' if len(items) > limit else ''}]"


# ---------------------------------------------------------------------------------------------
# Run folders: the refusal to train over an earlier run, resumable state (last.tar / best.tar)
# ---------------------------------------------------------------------------------------------
RUN_FILES = ("last.tar", "best.tar", "checkpoint_*.tar", "summary.json", "tb/events.out.tfevents.*")


def previous_run_files(out: Path) -> list[Path]:
    """Files of an earlier training run in ``out`` (checkpoints, exports, summary, TensorBoard events)."""
    return sorted(path for pattern in RUN_FILES for path in out.glob(pattern) if path.is_file())


def prepare_output_dir(args: argparse.Namespace, runtime: Runtime) -> Path:
    """Create the run folder and check it is writable; refuse to train over an earlier run.

    A folder that already holds a run needs ``--resume`` (continue it) or ``--overwrite`` (its
    checkpoints, exports, summary and TensorBoard events are deleted first, so no stale
    ``checkpoint_<e>`` is left next to the new ones). ``config.json`` is written by
    :func:`write_run_config` once a resumed checkpoint has loaded.
    """
    out = Path(args.output_dir)
    previous = previous_run_files(out) if out.is_dir() else []
    if previous and not (args.resume or args.overwrite):
        names = ", ".join(str(path.relative_to(out)) for path in previous[:3])
        raise STCLNError(f"--output_dir {out}: already holds a run ({names}{', ...' if len(previous) > 3 else ''}); "
                         "pass --resume to continue it, --overwrite to replace it, or choose another --output_dir")
    if runtime.is_main:
        if previous and args.overwrite and not args.resume:
            for path in previous:
                path.unlink(missing_ok=True)
            log.info("--overwrite: deleted %d files of the previous run in %s", len(previous), out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write_test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            raise STCLNError(f"{out}: output directory is not writable ({err.strerror})") from None
    return out


def write_run_config(args: argparse.Namespace, out: Path, runtime: Runtime) -> None:
    """Dump the resolved flags to ``config.json`` (rank 0), after any ``--resume`` has loaded."""
    if runtime.is_main:
        dump_args(args, out / "config.json")


def resume_state(out: Path, model: nn.Module, optimizer: torch.optim.Optimizer, config: STCLNConfig, trusted: bool) -> tuple[int, dict]:
    """Load ``last.tar`` into model and optimizer; return (next epoch, saved extras)."""
    path = out / "last.tar"
    ckpt = load_checkpoint(path, trusted)
    if not isinstance(ckpt, dict) or not all(isinstance(ckpt.get(k), dict) for k in ("model", "optimizer", "model_config")) \
            or not isinstance(ckpt.get("epoch"), int):
        raise CheckpointError(f"{path}: not a resumable STCLN checkpoint (needs dicts 'model', 'optimizer', "
                              "'model_config' and an integer 'epoch')")
    try:  # fields added since the file was written (e.g. extra_sources) take their defaults
        saved = STCLNConfig.from_dict(ckpt["model_config"]).to_dict()
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid model_config ({err})") from None
    if saved != config.to_dict():
        diff = sorted(k for k in set(saved) | set(config.to_dict()) if saved.get(k) != config.to_dict().get(k))
        raise CheckpointError(f"{path}: saved with a different model configuration ({', '.join(diff)}); "
                              "resume with the same flags")
    load_state_checked(unwrap(model), ckpt["model"], str(path))  # e.g. a pre-training run resumed by fine-tuning
    wanted = [{key: group[key] for key in ("lr", "weight_decay") if key in group} for group in optimizer.param_groups]
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: optimizer state does not fit this run ({err})") from None
    for group, flags in zip(optimizer.param_groups, wanted):  # --lr / --weight_decay of this command, as config.json says
        for key, value in flags.items():
            if group[key] != value:
                log.info("--%s %g replaces the saved %g from epoch %d on", key, value, group[key], ckpt["epoch"] + 2)
                group[key] = value
    log.info("resumed from %s at epoch %d", path, ckpt["epoch"] + 1)
    return ckpt["epoch"] + 1, ckpt.get("extra", {})


def full_state(model: nn.Module, optimizer, config: STCLNConfig, args, epoch: int, metrics: dict, extra: dict | None = None) -> dict:
    return {
        "kind": "full", "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
        "metrics": metrics, "model_config": config.to_dict(), "args": args_dict(args), "extra": extra or {},
    }
