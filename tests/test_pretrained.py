"""The released backbones of pretrained/: the manifest's hashes and sizes hold, and each loads for fine-tuning."""

import hashlib
import json
from pathlib import Path

import pytest

from models.config import PRESETS
from utils.checkpoint import read_pretrained_backbone

ROOT = Path(__file__).resolve().parents[1] / "pretrained"
MANIFEST = json.loads((ROOT / "MANIFEST.json").read_text())


@pytest.mark.parametrize("entry", MANIFEST, ids=[entry["file"] for entry in MANIFEST])
def test_manifest_entry_matches_its_file(entry):
    path = ROOT / entry["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    backbone = read_pretrained_backbone(path, trusted=False)
    expected = PRESETS[entry["preset"]]()
    assert tuple(backbone.saved_config["widths"]) == expected.widths
    assert backbone.saved_config["n_layers"] == expected.n_layers
    assert entry["pretext_mse_last_epoch"]["model"] < entry["pretext_mse_last_epoch"]["neighbour_mean"]


def test_every_file_is_in_the_manifest():
    assert sorted(p.name for p in ROOT.glob("*.tar")) == sorted(entry["file"] for entry in MANIFEST)
