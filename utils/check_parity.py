"""Check that our STCLN reproduces the authors' model output.

    python -m utils.check_parity --fixture ../shared/fixtures/authors_parity

The fixture directory holds ``checkpoint_99.*.tar`` (the authors' backbone layout),
``head_state_dict.pt`` (their STA/classifier tensors), ``io.pt`` (``input``, ``positions``,
``expected_logits``) and ``config.json`` (their constructor arguments). The backbone goes through
the same loader as ``--pretrain_pth`` and every size is read from its tensors. Prints
``max_abs_diff=<value>`` last and exits 0 only if the value is below the tolerance.
"""

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from models import STCLNConfig, STCLNSegmenter
from utils.checkpoint import (config_for_backbone, load_checkpoint, load_pretrained_backbone, load_state_checked,
                              map_authors_head, read_pretrained_backbone)
from utils.errors import STCLNError

TOLERANCE = 1e-4


CONFIG_KEYS = ("n_channels", "n_classes", "d_model", "n_head", "widths")
IO_KEYS = ("input", "positions", "expected_logits")


def read_authors_config(path: Path) -> dict:
    """The authors' constructor arguments from ``config.json``, checked (one-line errors)."""
    if not path.is_file():
        raise STCLNError(f"{path}: missing (constructor arguments of the authors' model)")
    try:
        authors = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise STCLNError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(authors, dict):
        raise STCLNError(f"{path}: expected a JSON object with {list(CONFIG_KEYS)}, got {type(authors).__name__}")
    missing = [k for k in CONFIG_KEYS if k not in authors]
    if missing:
        raise STCLNError(f"{path}: missing keys {missing}")
    ints = ("n_channels", "n_classes", "d_model", "n_head")
    widths = authors["widths"]
    if not all(type(authors[k]) is int and authors[k] > 0 for k in ints) or not (
            isinstance(widths, list) and len(widths) == 2 and all(type(w) is int and w > 0 for w in widths)):
        raise STCLNError(f"{path}: {list(ints)} must be positive integers and 'widths' a list of 2, got {authors}")
    return authors


def read_io(path: Path) -> dict:
    """``io.pt``: input (B, T, C, H, W), positions (B, T) and expected_logits (B, K, H, W)."""
    io = load_checkpoint(path)
    if not isinstance(io, dict) or any(not isinstance(io.get(k), torch.Tensor) for k in IO_KEYS):
        raise STCLNError(f"{path}: expected a dict of tensors {list(IO_KEYS)}")
    x, positions, expected = (io[k] for k in IO_KEYS)
    if x.dim() != 5 or positions.shape != x.shape[:2] or expected.dim() != 4:
        raise STCLNError(f"{path}: shapes input {tuple(x.shape)}, positions {tuple(positions.shape)}, expected_logits "
                         f"{tuple(expected.shape)} are not (B, T, C, H, W), (B, T), (B, K, H, W)")
    return io


def build_from_fixture(fixture: Path) -> tuple[STCLNSegmenter, dict]:
    """Build our segmenter with the fixture's weights; return it (eval mode) and the io dict.

    Every size except the head count comes from the tensors (as for ``--pretrain_pth``); the
    sizes written in ``config.json`` must agree with them.
    """
    config_path = fixture / "config.json"
    authors = read_authors_config(config_path)
    backbones = sorted(fixture.glob("checkpoint_*.tar"))
    if len(backbones) != 1:
        raise STCLNError(f"{fixture}: expected exactly one checkpoint_*.tar, found {len(backbones)}")
    backbone = read_pretrained_backbone(backbones[0])
    if not backbone.authors:
        raise STCLNError(f"{backbones[0]}: not in the authors' backbone layout (no inc.double_conv.* tensors)")
    written = {"in_channels": authors["n_channels"], "widths": tuple(authors["widths"])}
    read = {k: backbone.sizes[k] for k in written}
    if written != read or authors["d_model"] != backbone.sizes["widths"][-1]:
        raise STCLNError(f"{config_path}: sizes {written} (d_model {authors['d_model']}) differ from the tensors of "
                         f"{backbones[0].name} {read}")
    try:
        base = STCLNConfig(in_channels=authors["n_channels"], num_classes=authors["n_classes"],
                           widths=tuple(authors["widths"]), n_heads=authors["n_head"])
    except ValueError as err:
        raise STCLNError(f"{config_path}: {err}") from None
    config = replace(config_for_backbone(base, backbone), n_heads=authors["n_head"])
    model = STCLNSegmenter(config)
    load_pretrained_backbone(model, backbone)
    head_path = fixture / "head_state_dict.pt"
    head = load_checkpoint(head_path)
    if not isinstance(head, dict) or not all(isinstance(v, torch.Tensor) for v in head.values()):
        raise STCLNError(f"{head_path}: expected a dict of tensors (the authors' STA/classifier head)")
    head_module = torch.nn.ModuleDict({"sta": model.sta, "classifier": model.classifier})
    load_state_checked(head_module, map_authors_head(head, str(head_path)), str(head_path))
    io = read_io(fixture / "io.pt")
    if io["input"].shape[2] != config.in_channels:
        raise STCLNError(f"{fixture / 'io.pt'}: input has {io['input'].shape[2]} bands, the model {config.in_channels}")
    return model.eval(), io


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixture", type=Path, required=True, help="directory in the authors_parity layout")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest accepted max |diff|")
    args = parser.parse_args(argv)
    try:
        model, io = build_from_fixture(args.fixture)
    except STCLNError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with torch.no_grad():
        logits = model(io["input"], io["positions"])
    if logits.shape != io["expected_logits"].shape:  # the fixture's expected output does not fit its own input
        print(f"error: {args.fixture / 'io.pt'}: expected_logits has shape {tuple(io['expected_logits'].shape)}, the "
              f"model's output for its input {tuple(logits.shape)}", file=sys.stderr)
        return 2
    max_abs_diff = (logits - io["expected_logits"]).abs().max().item()
    print(f"max_abs_diff={max_abs_diff:.3e}")
    return 0 if max_abs_diff < args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
