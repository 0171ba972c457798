"""``python -m utils.select_labels``: the strategies on hand-built values, then the command end to end on the
embedded synthetic set (``--smoke``) and on a converted folder (checkpoints built here, tiny model)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from models import STCLNSegmenter, tiny_config
from tests.region_fakes import BANDS, EPSG_UTM31N, make_scene, write_geotiff_scene
from utils import select_labels as sl
from utils.checkpoint import backbone_export
from utils.data import SYNTHETIC_PASTIS, build_pastis_synthetic
from utils.datasets.convert import main as convert_main
from utils.datasets.pastis import read_pastis_metadata

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
QUIET = ["--no_progress", "--device", "cpu"]


# ---------------------------------------------------------------------------------------------
# the strategies on hand-built values
# ---------------------------------------------------------------------------------------------
def test_kcenter_returns_the_farthest_first_order_on_hand_built_features():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [4.0, 0.0], [0.0, 3.0]])
    # mean (1, 0.8): point 3 is farthest (sqrt(9.64)); then 4 (5 from point 3); then points 0 and 1 tie at 3
    # from {3, 4}: the lower index; then 1 and 2 tie at 1 from {0, 3, 4}: the lower index
    order, radii = sl.kcenter_greedy(points, 5)
    assert order == [3, 4, 0, 1, 2]
    assert radii == pytest.approx([math.sqrt(9.64), 5.0, 3.0, 1.0, 1.0])
    # already labelled at the origin: the first pick is the farthest from it, never a copy of it
    order, radii = sl.kcenter_greedy(points, 3, labelled=np.array([[0.0, 0.0]]))
    assert order == [3, 4, 1] and radii == pytest.approx([4.0, 3.0, 1.0])


def test_kcenter_compares_l2_normalised_features():
    # rows 0 and 1 point the same way (one direction, two norms): after normalisation they coincide
    features = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    assert sl.l2_normalise(features) == pytest.approx(np.array([[1, 0], [1, 0], [0, 1], [2**-0.5, 2**-0.5]]))
    picks, _ = sl.choose("kcenter", 3, 0, {"features": features}, [0, 1, 2, 3], [])
    assert picks == [2, 0, 3]  # raw Euclidean distances would take row 1 (norm 3) second
    picks, _ = sl.choose("kcenter", 2, 0, {"features": features}, [1, 2, 3], [0])  # row 0 labelled
    assert picks == [2, 3]  # row 1 duplicates the labelled row 0 (distance 0): never picked before the others


PAIR = {"even": (0.0, 0.0), "3:1": (math.log(3.0), 0.0), "9:1": (math.log(9.0), 0.0)}  # logits of classes 1, 2


def hand_logits(kinds: list[str]) -> torch.Tensor:
    """(P, 3) logits: class 0 (ignored) far above the others, classes 1 and 2 in the given odds."""
    return torch.tensor([[50.0, *PAIR[kind]] for kind in kinds])


def test_entropy_and_margin_rank_by_hand_computed_scores():
    entropy = {  # nats, of the softmax over classes 1 and 2 only
        "even": math.log(2.0),
        "3:1": -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)),
        "9:1": -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)),
    }
    margin = {"even": 0.0, "3:1": 0.5, "9:1": 0.8}
    sums = sl.PatchSums(3, 2, classes=[1, 2])
    # patch 0: two windows; its one invalid pixel (the second 'even') does not count
    windows = [
        (0, ["even", "3:1"], [True, True]),
        (1, ["3:1", "3:1"], [True, True]),
        (0, ["9:1", "even"], [True, False]),
        (2, ["even", "even"], [False, False]),  # patch 2: no valid pixel, no score
    ]
    for batch in (windows[:2], windows[2:]):  # two batches of two windows; features unused here
        sums.add(
            np.array([patch for patch, _, _ in batch]),
            torch.zeros(2, 2, 2),
            torch.stack([hand_logits(kinds) for _, kinds, _ in batch]),  # (B, P, K)
            torch.tensor([valid for _, _, valid in batch]),
        )
    stats = sums.result()
    expected_entropy = [(entropy["even"] + entropy["3:1"] + entropy["9:1"]) / 3, entropy["3:1"], math.nan]
    expected_margin = [(margin["even"] + margin["3:1"] + margin["9:1"]) / 3, margin["3:1"], math.nan]
    assert stats["entropy"] == pytest.approx(expected_entropy, nan_ok=True, abs=1e-6)
    assert stats["margin"] == pytest.approx(expected_margin, nan_ok=True, abs=1e-6)
    assert stats["n_valid_pixels"].tolist() == [3, 2, 0]
    picks, scores = sl.choose("entropy", 3, 0, stats, [0, 1, 2], [])
    assert picks == [1, 0, 2] and scores[:2] == pytest.approx([expected_entropy[1], expected_entropy[0]], abs=1e-6)
    assert scores[2] is None  # no valid pixel: no score, ranked last
    picks, scores = sl.choose("margin", 3, 0, stats, [0, 1, 2], [])
    assert picks == [0, 1, 2] and scores[:2] == pytest.approx(expected_margin[:2], abs=1e-6)
    picks, _ = sl.choose("margin", 1, 0, stats, [1, 2], [0])  # patch 0 already labelled
    assert picks == [1]


def test_badge_embedding_is_the_last_layer_gradient_at_the_predicted_classes():
    torch.manual_seed(0)
    features, weight = torch.randn(2, 5, 4), torch.tensor([[1.0, 1, 0, 1, 1], [1, 0, 1, 1, 1]])
    layer = torch.nn.Linear(4, 3)
    logits = layer(features)  # (B, P, K)
    _, _, p = sl.pixel_uncertainty(logits.detach())
    embedding = sl.gradient_embedding(p, features, weight)  # (B, K, D + 1)
    for b in range(2):
        layer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits[b], logits[b].argmax(dim=-1), reduction="none")
        (loss * weight[b]).sum().backward(retain_graph=True)
        expected = torch.cat([layer.weight.grad, layer.bias.grad[:, None]], dim=1)  # (K, D) + (K, 1) -> (K, D + 1)
        assert torch.allclose(embedding[b], expected, atol=1e-5)


def test_same_seed_same_selection():
    embeddings = np.random.default_rng(0).normal(size=(40, 6))
    assert sl.random_order(40, 10, seed=3) == sl.random_order(40, 10, seed=3)
    assert sl.random_order(40, 10, seed=3) != sl.random_order(40, 10, seed=4)
    first = sl.kmeanspp_seeding(embeddings, 8, seed=5)
    assert first == sl.kmeanspp_seeding(embeddings, 8, seed=5)
    assert first[0][0] == int(np.argmax(np.linalg.norm(embeddings, axis=1)))  # BADGE: the largest first
    assert len(set(first[0])) == 8
    labelled = sl.kmeanspp_seeding(embeddings[:30], 8, seed=5, labelled=embeddings[30:])
    assert labelled == sl.kmeanspp_seeding(embeddings[:30], 8, seed=5, labelled=embeddings[30:])
    duplicates = np.zeros((5, 3))  # every distance 0: uniform among the rest, never a repeat
    assert sorted(sl.kmeanspp_seeding(duplicates, 5, seed=0)[0]) == [0, 1, 2, 3, 4]


def test_window_forward_reads_the_classifier_input_and_counts_clear_pixels():
    model = sl.random_smoke_model(sl.DataInfo(3, 4, list("abcd"), 0, None, 0, 1, (0, 1, 2), (), {}), seed=0)
    x = torch.randn(2, 5, 3, 4, 4)
    valid = torch.ones(2, 5, 4, 4, dtype=torch.bool)
    valid[0, :, 0, 0] = False  # pixel (0, 0) of window 0 is never clear
    batch = {
        "image": x,
        "positions": torch.arange(5).expand(2, 5),
        "days": torch.arange(5).expand(2, 5),
        "pad_mask": torch.zeros(2, 5, dtype=torch.bool),
        "valid": valid,
    }
    model.module.eval()
    with torch.no_grad():
        features, logits, clear = sl.window_forward(model, batch, torch.device("cpu"), amp=False)
        expected = model.module(x, batch["positions"], batch["pad_mask"], valid)  # (B, K, H, W)
    assert features.shape == (2, 16, model.config.d_model)
    assert torch.allclose(logits, expected.flatten(2).transpose(1, 2), atol=1e-5)  # (B, K, HW) -> (B, HW, K)
    assert clear.sum().item() == 31 and not clear[0, 0]


def test_exclude_files_take_text_and_earlier_selections(tmp_path):
    text = tmp_path / "labelled.txt"
    text.write_text("# labelled in 2024\n3, 5\n7  # a field visit\n\n")
    previous = tmp_path / "selection.json"
    previous.write_text(json.dumps({"excluded": [3], "selected": [{"rank": 1, "id": 11}, {"rank": 2, "id": 2}]}))
    assert sl.read_excluded([text, previous]) == [2, 3, 5, 7, 11]
    bad = tmp_path / "bad.txt"
    bad.write_text("4\nfield_9\n")
    with pytest.raises(sl.DataError, match=r"bad.txt:2: 'field_9' is not a patch id"):
        sl.read_excluded([bad])


def test_the_figure_falls_back_to_the_pixel_grid_then_to_id_order(tmp_path):
    geometry = {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]}
    with_rows = {1: sl.PatchPlace(1, None, 0, 0), 2: sl.PatchPlace(2, None, 0, 8), 3: sl.PatchPlace(1, geometry, 8, 0)}
    rings, axes = sl.outlines(with_rows, {1: (8, 8), 2: (8, 8), 3: (8, 8)})  # one patch without a footprint
    assert axes.startswith("scene pixels") and rings[2][0].tolist() == [[8, 0], [16, 0], [16, 8], [8, 8], [8, 0]]
    bare = {i: sl.PatchPlace(1, None, None, None) for i in (5, 6, 7)}
    rings, axes = sl.outlines(bare, {i: (4, 4) for i in bare})
    assert axes.startswith("patches by id") and rings[7][0][0].tolist() == [0, 4]  # 2 columns: the third on row 2
    sl.write_outputs(
        tmp_path,
        {
            "strategy": "random",
            "n_candidates": 3,
            "candidate_folds": [1],
            "excluded": [6],
            "selected": [{"id": 5, "rank": 1, "score": None, "fold": 1, "footprint": None}],
        },
        bare,
        None,
        {i: (4, 4) for i in bare},
    )
    geojson = json.loads((tmp_path / "selection.geojson").read_text())
    assert "crs" not in geojson and geojson["features"][0]["geometry"] is None  # no footprint, no coordinates
    assert (tmp_path / "selection.png").read_bytes()[:8] == PNG_SIGNATURE


# ---------------------------------------------------------------------------------------------
# end to end: the synthetic set in --smoke, a converted folder
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("select") / "synthetic"
    return build_pastis_synthetic(root, version=2, **SYNTHETIC_PASTIS[2]["smoke"])


def check_outputs(out: Path, n: int, folds: dict[int, int], candidate_folds: set[int], epsg: str) -> dict:
    """selection.json, a GeoJSON of ``n`` polygons of training-fold patches in the data's CRS, a PNG."""
    record = json.loads((out / "selection.json").read_text())
    ids = [entry["id"] for entry in record["selected"]]
    assert len(ids) == len(set(ids)) == n and [entry["rank"] for entry in record["selected"]] == list(range(1, n + 1))
    assert all(folds[i] in candidate_folds for i in ids)
    assert not {folds[i] for i in ids} & set(record["validation_folds"] + record["test_folds"])
    geojson = json.loads((out / "selection.geojson").read_text())
    assert geojson["type"] == "FeatureCollection" and geojson["crs"]["properties"]["name"].endswith(epsg)
    assert [feature["properties"]["id"] for feature in geojson["features"]] == ids
    for feature in geojson["features"]:
        assert feature["type"] == "Feature" and feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
        rings = feature["geometry"]["coordinates"]
        ring = rings[0] if feature["geometry"]["type"] == "Polygon" else rings[0][0]
        assert len(ring) >= 4 and ring[0] == ring[-1]  # a closed linear ring
        assert set(feature["properties"]) == {"id", "rank", "score", "fold"}
    assert (out / "selection.png").read_bytes()[:8] == PNG_SIGNATURE
    return record


@pytest.mark.parametrize("strategy", sl.STRATEGIES)
def test_smoke_selection_on_the_synthetic_set(strategy, synthetic, tmp_path):
    out = tmp_path / strategy
    argv = ["--smoke", "--strategy", strategy, "--n", "3", "--data_root", str(synthetic), "--output_dir", str(out)]
    assert sl.main(argv + QUIET) == 0
    folds = {meta.patch_id: meta.fold for meta in read_pastis_metadata(synthetic / "metadata.geojson")}
    record = check_outputs(out, 3, folds, {1}, "EPSG::2154")
    assert record["candidate_folds"] == [1] and record["n_candidates"] == 6 and record["window"] == 8
    scores = [entry["score"] for entry in record["selected"]]
    if strategy == "entropy":
        assert scores == sorted(scores, reverse=True)
    elif strategy == "margin":
        assert scores == sorted(scores)
    if strategy in ("random", "badge"):  # the seeded ones: the same seed gives the same selection, at any batch size
        again = tmp_path / f"{strategy}_again"
        assert sl.main(argv[:-1] + [str(again), "--batch_size", "1"] + QUIET) == 0
        assert json.loads((again / "selection.json").read_text())["selected"] == record["selected"]


@pytest.fixture(scope="module")
def region(tmp_path_factory) -> dict:
    """A 40 x 40 GeoTIFF scene converted into 8-px patches (5 folds: train 1-3, validation 5, test 4), a
    fine-tuned checkpoint and a backbone export of a tiny model for it."""
    tmp = tmp_path_factory.mktemp("select_region")
    label = write_geotiff_scene(tmp / "tifs", make_scene(size=40, n_dates=5))
    argv = ["--geotiff_dir", str(tmp / "tifs"), "--label", str(label), "--out", str(tmp / "folder"), "--band_names"]
    argv += [*BANDS, "--patch_size", "8", "--fold_block", "1", "--class_names", "background", "a", "b", "c", "d"]
    assert convert_main(argv + ["--background_index", "0"]) == 0
    torch.manual_seed(0)
    config = tiny_config(in_channels=len(BANDS), num_classes=5)
    model = STCLNSegmenter(config)
    args = {"dataset": "folder", "data_root": str(tmp / "folder"), "crop_size": 8, "smoke": False, "temporal": None}
    finetuned = {"kind": "full", "model": model.state_dict(), "model_config": config.to_dict(), "args": args}
    torch.save(finetuned, tmp / "best.tar")
    torch.save(backbone_export(model, config, 0), tmp / "checkpoint_0.stcln.tar")
    folds = {meta.patch_id: meta.fold for meta in read_pastis_metadata(tmp / "folder" / "metadata.geojson")}
    return {
        "root": tmp / "folder",
        "finetuned": tmp / "best.tar",
        "backbone": tmp / "checkpoint_0.stcln.tar",
        "folds": folds,
    }


def test_selection_on_a_converted_folder(region, tmp_path):
    data = ["--dataset", "folder", "--data_root", str(region["root"])] + QUIET
    train = {1, 2, 3}  # dataset.json splits.train of 5 folds
    n_train = sum(fold in train for fold in region["folds"].values())
    # round 1: core-set on the backbone (no labels needed)
    first = tmp_path / "round1"
    argv = ["--checkpoint", str(region["backbone"]), "--strategy", "kcenter", "--n", "2", "--output_dir", str(first)]
    assert sl.main(argv + data) == 0
    record = check_outputs(first, 2, region["folds"], train, f"EPSG::{EPSG_UTM31N}")
    assert record["model"] == "backbone" and record["n_candidates"] == n_train and record["window"] == 8
    # round 2: BADGE on the fine-tuned model, the first round's patches labelled
    second = tmp_path / "round2"
    argv = ["--checkpoint", str(region["finetuned"]), "--strategy", "badge", "--n", "3", "--output_dir", str(second)]
    assert sl.main(argv + ["--exclude", str(first / "selection.json")] + data) == 0
    record = check_outputs(second, 3, region["folds"], train, f"EPSG::{EPSG_UTM31N}")
    round1 = [entry["id"] for entry in json.loads((first / "selection.json").read_text())["selected"]]
    assert record["excluded"] == sorted(round1) and record["n_candidates"] == n_train - 2
    assert not set(round1) & {entry["id"] for entry in record["selected"]}
    # the footprints are those of metadata.geojson, on the scene's UTM grid
    metadata = {
        f["properties"]["ID_PATCH"]: f
        for f in json.loads((region["root"] / "metadata.geojson").read_text())["features"]
    }
    for entry in record["selected"]:
        assert entry["footprint"] == metadata[entry["id"]]["geometry"]
        assert (entry["row"], entry["col"]) == (
            metadata[entry["id"]]["properties"]["ROW"],
            metadata[entry["id"]]["properties"]["COL"],
        )


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_bad_input_is_one_line(region, tmp_path, capsys):
    data = ["--dataset", "folder", "--data_root", str(region["root"]), "--output_dir", str(tmp_path / "out")] + QUIET
    backbone = ["--checkpoint", str(region["backbone"])]
    assert sl.main(backbone + ["--strategy", "entropy", "--n", "2"] + data) == 2
    err = one_line_error(capsys)
    assert str(region["backbone"]) in err and "fine-tuned checkpoint" in err
    assert sl.main(["--strategy", "random", "--n", "500"] + data) == 2
    assert "--n 500: only" in one_line_error(capsys)
    assert sl.main(["--strategy", "random", "--n", "2", "--train_folds", "1", "4"] + data) == 2
    assert "share fold(s) [4]" in one_line_error(capsys)
    missing = tmp_path / "labelled.txt"
    assert sl.main(["--strategy", "random", "--n", "2", "--exclude", str(missing)] + data) == 2
    assert f"{missing}: file not found" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()
