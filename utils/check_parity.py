"""Check that our STCLN reproduces the authors' model output.

    python -m utils.check_parity --fixture ../shared/fixtures/authors_parity

The fixture directory holds ``checkpoint_99.*.tar`` (the authors' backbone layout),
``head_state_dict.pt`` (their STA/classifier tensors), ``io.pt`` (``input``, ``positions``,
``expected_logits``) and ``config.json`` (their constructor arguments). The backbone goes through
the same loader as ``--pretrain_pth``. Prints ``max_abs_diff=<value>`` last and exits 0 only if
the value is below the tolerance.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from models import STCLNConfig, STCLNSegmenter
from utils.checkpoint import load_checkpoint, load_pretrained_backbone, load_state_checked, map_authors_head
from utils.errors import STCLNError

TOLERANCE = 1e-4


def build_from_fixture(fixture: Path) -> tuple[STCLNSegmenter, dict]:
    """Build our segmenter with the fixture's weights; return it (eval mode) and the io dict."""
    config_path = fixture / "config.json"
    if not config_path.is_file():
        raise STCLNError(f"{config_path}: missing (constructor arguments of the authors' model)")
    authors = json.loads(config_path.read_text())
    config = STCLNConfig(
        in_channels=authors["n_channels"],
        num_classes=authors["n_classes"],
        widths=tuple(authors["widths"]),
        n_heads=authors["n_head"],
    )
    if config.d_model != authors["d_model"]:
        raise STCLNError(f"{config_path}: d_model {authors['d_model']} differs from the last width {config.d_model}")
    backbones = sorted(fixture.glob("checkpoint_*.tar"))
    if len(backbones) != 1:
        raise STCLNError(f"{fixture}: expected exactly one checkpoint_*.tar, found {len(backbones)}")
    model = STCLNSegmenter(config)
    load_pretrained_backbone(model, backbones[0])
    head_path = fixture / "head_state_dict.pt"
    head = map_authors_head(load_checkpoint(head_path), str(head_path))
    head_module = torch.nn.ModuleDict({"sta": model.sta, "classifier": model.classifier})
    load_state_checked(head_module, head, str(head_path))
    io = load_checkpoint(fixture / "io.pt")
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
    if logits.shape != io["expected_logits"].shape:
        print(f"error: output shape {tuple(logits.shape)} != expected {tuple(io['expected_logits'].shape)}", file=sys.stderr)
        return 1
    max_abs_diff = (logits - io["expected_logits"]).abs().max().item()
    print(f"max_abs_diff={max_abs_diff:.3e}")
    return 0 if max_abs_diff < args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
