"""``utils.select_labels`` and the study's ``--selection`` with two-source (S2 + Sentinel-1) models (issue 38):
entropy ranks equal to scores recomputed from the fused model's own logits, k-center on a fused backbone's
pooled features equal to a farthest-first order computed here, the refusal of data without the model's radar,
and the study's selection chains with ``--sources S2 S1``. Tiny models, 16-px patches, 8-px windows, CPU."""

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments import label_efficiency as le
from experiments.label_efficiency import selection as sel
from models import STCLNSegmenter, tiny_config
from models.config import with_sources
from utils import data as data_module
from utils import select_labels as sl
from utils.checkpoint import backbone_export
from utils.datasets import PASTISDataset, pad_collate, write_pastis_like
from utils.engine import extra_inputs
from utils.finetune import parse_args

SOURCES = ("S2", "S1A", "S1D")
CHANNELS = {"S2": 10, "S1A": 3, "S1D": 3}
TRAIN = [1, 2, 3]
DATA = ["--dataset", "pastis", "--train_folds", "1", "2", "3", "--val_folds", "4", "--test_folds", "5"]
QUIET = ["--no_progress", "--device", "cpu"]


def two_source_model(fusion: str, seed: int) -> STCLNSegmenter:
    torch.manual_seed(seed)
    base = tiny_config(in_channels=10, num_classes=PASTISDataset.num_classes, positions="doy")
    return STCLNSegmenter(with_sources(base, SOURCES, CHANNELS, fusion))


@pytest.fixture(scope="module")
def radar(tmp_path_factory) -> dict:
    """10 patches of 16 px with S1A/S1D (6 in folds 1-3), an S2-only set, and two-source checkpoints."""
    tmp = tmp_path_factory.mktemp("select_sources")
    write_pastis_like(tmp / "r", n_patches=10, size=16, n_dates=(4, 6), seed=3, version=2, radar=True, radar_revisit=36)
    write_pastis_like(tmp / "s2", n_patches=5, size=16, n_dates=(4, 6), seed=3, version=2)
    paths = {}
    for fusion in ("late", "merged"):
        model = two_source_model(fusion, seed=1)
        args = {"sources": list(SOURCES), "crop_size": 8}
        paths[fusion] = tmp / f"best_{fusion}.tar"
        torch.save({"model": model.state_dict(), "model_config": model.config.to_dict(), "args": args}, paths[fusion])
        paths[f"{fusion}_backbone"] = tmp / f"checkpoint_0.{fusion}.tar"
        torch.save(backbone_export(model, model.config, 0), paths[f"{fusion}_backbone"])
    return {"root": tmp / "r", "s2": tmp / "s2", **paths}


def windows(root: Path) -> PASTISDataset:
    """The candidates as this test reads them: folds 1-3, every source, the 8-px grid."""
    return PASTISDataset(root, folds=TRAIN, norm_folds=TRAIN, crop_size=8, crop_mode="grid", sources=SOURCES)


def per_patch(dataset: PASTISDataset, value) -> dict[int, np.ndarray]:
    """ID_PATCH -> mean over its windows and pixels of ``value(batch)`` ((1, HW, ...) per window)."""
    sums: dict[int, list] = {}
    with torch.no_grad():
        for i in range(len(dataset)):
            sample = dataset[i]
            sums.setdefault(int(sample["id"].split("@")[0]), []).append(value(pad_collate([sample]))[0].double())
    return {k: torch.cat(v).mean(dim=0).numpy() for k, v in sums.items()}


def run_selection(argv: list, root: Path, out: Path) -> dict:
    assert sl.main([*map(str, argv), "--data_root", str(root), "--output_dir", str(out), *DATA, *QUIET]) == 0
    assert all((out / name).is_file() for name in sl.OUTPUTS)
    return json.loads((out / "selection.json").read_text())


def test_entropy_of_a_two_source_model_is_that_of_its_fused_logits(radar, tmp_path):
    """Every candidate ranked: the scores are the mean entropy over the classes fine-tuning learns of the
    softmax of the model's own forward logits (radar included: with the radar zeroed they change)."""
    model = two_source_model("late", seed=1).eval()
    trained = [c for c in range(model.config.num_classes) if c not in (0, PASTISDataset.ignore_index)]

    def entropy(batch):
        logits = model(batch["image"], batch["days"], batch["pad_mask"], None, extra_inputs(batch, model.config))
        p = torch.softmax(logits.double()[:, trained], dim=1).flatten(2)  # (1, K', H, W) -> (1, K', HW)
        return -(p * p.log()).sum(dim=1)[..., None]  # (1, HW, 1)

    data = windows(radar["root"])
    hand = {k: float(v[0]) for k, v in per_patch(data, entropy).items()}
    record = run_selection(
        ["--checkpoint", radar["late"], "--strategy", "entropy", "--n", 6], radar["root"], tmp_path / "entropy"
    )
    assert record["sources"] == list(SOURCES) and record["n_candidates"] == len(hand) == 6
    assert [e["id"] for e in record["selected"]] == sorted(hand, key=lambda k: -hand[k])
    assert [e["score"] for e in record["selected"]] == pytest.approx(sorted(hand.values(), reverse=True), abs=1e-5)
    geojson = json.loads((tmp_path / "entropy" / "selection.geojson").read_text())
    assert [f["properties"]["id"] for f in geojson["features"]] == [e["id"] for e in record["selected"]]

    def no_radar(batch):
        return entropy(batch | {f"image_{s}": torch.zeros_like(batch[f"image_{s}"]) for s in SOURCES[1:]})

    blind = {k: float(v[0]) for k, v in per_patch(data, no_radar).items()}
    assert max(abs(blind[k] - hand[k]) for k in hand) > 1e-4  # the radar moves the scores this test checks


@pytest.mark.parametrize("fusion", ["late", "merged"])
def test_kcenter_on_a_two_source_backbone_is_the_farthest_first_order(radar, tmp_path, fusion):
    """The backbone's pooled features recomputed here (merged: the joint sequence max-pooled over every date;
    late: each source's branch over its own dates, concatenated), averaged per patch, L2-normalised, then a
    plain farthest-first traversal from the point farthest from the mean."""
    backbone = two_source_model(fusion, seed=1).backbone.eval()

    def pooled(batch):
        out = backbone(batch["image"], batch["days"], batch["pad_mask"], None, extra_inputs(batch, backbone.config))
        parts = (
            [out["temporal"]]
            if fusion == "merged"
            else [out["temporal"]] + [e["temporal"] for e in out["extra"].values()]
        )
        return torch.cat([part.amax(dim=3).flatten(1, 2) for part in parts], dim=-1)  # (1, H, W, T, D) -> (1, HW, D')

    features = per_patch(windows(radar["root"]), pooled)
    ids = sorted(features)
    points = np.stack([features[k] / np.linalg.norm(features[k]) for k in ids])
    assert points.shape[1] == backbone.config.d_model * (3 if fusion == "late" else 1)
    order = [int(np.argmax(np.linalg.norm(points - points.mean(axis=0), axis=1)))]
    while len(order) < 4:
        nearest = np.array([min(np.linalg.norm(p - points[o]) for o in order) for p in points])
        order.append(int(np.argmax(nearest)))
    backbone_file = radar[f"{fusion}_backbone"]
    argv = ["--checkpoint", backbone_file, "--strategy", "kcenter", "--n", 4, "--window", 8]  # a backbone has no crop
    record = run_selection(argv, radar["root"], tmp_path / fusion)
    assert record["model"] == "backbone" and record["sources"] == list(SOURCES)
    assert [e["id"] for e in record["selected"]] == [ids[i] for i in order]


def test_a_two_source_model_on_data_without_radar_is_refused_in_one_line(radar, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--checkpoint", radar["late"], "--strategy", "kcenter", "--n", "1", "--data_root", radar["s2"]]
    assert sl.main([*map(str, argv), "--dataset", "pastis", "--output_dir", str(out), *QUIET]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert str(radar["late"]) in err and "lacks S1A S1D" in err and not out.exists()


class TwoSourceExecutor:
    """Runs no training: pre-training and fine-tuning runs leave a seeded two-source segmenter checkpoint (and a
    fine-tune its summary), after checking that the run reads S2 S1A S1D with late fusion."""

    def __init__(self, jobs):
        pass

    def map(self, tasks):
        for script, argv, _ in tasks:
            argv = [str(a) for a in argv]
            out = Path(argv[argv.index("--output_dir") + 1])
            out.mkdir(parents=True, exist_ok=True)
            model = two_source_model("late", seed=zlib.crc32(str(out.name).encode()))
            state = {"model": model.state_dict(), "model_config": model.config.to_dict()}
            if script == "pretrain_STCLN.py":
                torch.save(state, out / f"checkpoint_{int(argv[argv.index('--epochs') + 1]) - 1}.stcln.tar")
                continue
            flags = parse_args("pastis", "fine-tuning", argv)
            assert (flags.sources, flags.fusion, flags.label_subset) == (list(SOURCES), "late", "ids")
            torch.save(state, out / "best.tar")
            (out / "history.json").write_text(json.dumps({"history": [{"epoch": 1, "steps": 1, "val_mIoU": 0.1}]}))
            (out / "summary.json").write_text(json.dumps({"test": {"mIoU": 0.5, "OA": 0.5}}))


@pytest.fixture
def one_thread():
    """The selections gain nothing from a second thread on a shared core (tests/test_selection_study.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_study_selects_with_two_source_models(tmp_path, monkeypatch, one_thread):
    """--selection random entropy --sources S2 S1, two rounds: round 1's entropy picks are the most uncertain
    samples under round 0's two-source best.tar, recomputed here from its forward logits."""
    monkeypatch.setattr(data_module, "CACHE_ROOT", tmp_path / "cache")  # the radar is added to a set of this test
    monkeypatch.setattr(sel, "Executor", TwoSourceExecutor)
    out = tmp_path / "study"
    argv = ["--smoke", "--device", "cpu", "--selection", "random", "entropy", "--sources", "S2", "S1"]
    le.main(argv + ["--budgets", "10", "20", "--arms", "wp_cell", "--only_seeds", "0", "--output_dir", str(out)])
    start, after = (
        json.loads((out / f"runs/wp_cell/select_{name}").read_text())
        for name in ("random/b10_s0.selection.json", "entropy/b20_s0.selection.json")
    )
    n_new = len(after["labelled"]) - len(start["labelled"])
    assert after["labelled"][: len(start["labelled"])] == start["labelled"] and n_new > 0
    assert after["checkpoint"].endswith("select_random/b10_s0_lr0.001/best.tar")
    checkpoint = torch.load(after["checkpoint"], weights_only=True)
    model = STCLNSegmenter(sl.STCLNConfig.from_dict(checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    model.eval()
    pool = sel.candidate_pool(le.resolve_args(argv + ["--budgets", "10", "20", "--output_dir", str(out)]), None)[0]
    assert pool.sources == SOURCES
    trained = [c for c in range(model.config.num_classes) if c not in (0, PASTISDataset.ignore_index)]
    scores = {}
    with torch.no_grad():
        for i in range(len(pool)):
            batch = pad_collate([pool[i]])
            if batch["id"][0] in start["labelled"]:
                continue
            logits = model(batch["image"], batch["days"], batch["pad_mask"], None, extra_inputs(batch, model.config))
            p = torch.softmax(logits.double()[:, trained], dim=1)
            scores[batch["id"][0]] = float(-(p * p.log()).sum(dim=1).mean())
    ranked = sorted(scores, key=lambda k: -scores[k])
    assert [e["id"] for e in after["new"]] == ranked[:n_new]
    assert [e["score"] for e in after["new"]] == pytest.approx([scores[k] for k in ranked[:n_new]], abs=1e-5)
