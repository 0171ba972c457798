"""The label-efficiency study's --selection (rounds of select, fine-tune): the rounds' sets on the embedded smoke
data, every strategy, with the fine-tuning runs replaced by seeded random models (the selections read real
checkpoints; the fine-tuning of listed ids is checked on its own below); and fine-tuning's --label_subset ids."""

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from experiments import label_efficiency as le
from experiments.label_efficiency import selection as sel
from models import STCLNConfig, STCLNSegmenter, tiny_config
from utils.data import SYNTHETIC_PASTIS, build_finetune_data, pastis_root, resolve_data_spec
from utils.data_spec import DataSpec
from utils.datasets import PASTISDataset, pad_collate
from utils.errors import DataError
from utils.finetune import parse_args

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STRATEGIES = ["random", "kcenter", "entropy", "margin", "badge"]
SMOKE_BUDGETS = [10.0, 20.0, 40.0]


def seeded_segmenter_checkpoint(path: Path, name: str) -> None:
    """A fine-tuned-format checkpoint (model_config + model with its classifier) of a tiny segmenter seeded by ``name``."""
    torch.manual_seed(zlib.crc32(name.encode()))
    config = tiny_config(in_channels=PASTISDataset.in_channels, num_classes=PASTISDataset.num_classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": STCLNSegmenter(config).state_dict(), "model_config": config.to_dict()}, path)


def fake_score(ids: list[str]) -> float:
    """The fake run's test mIoU: a function of its labelled ids (so the report has numbers to check)."""
    return float(np.mean([zlib.crc32(i.encode()) % 1000 for i in ids]) / 1000)


class FakeExecutor:
    """Runs no training: a pre-training leaves a seeded checkpoint at the backbone path, a fine-tune (which must
    be given --label_subset ids and its round's file) a seeded best.tar, its summary and its history."""

    def __init__(self, jobs):
        pass

    def map(self, tasks):
        for script, argv, log_file in tasks:
            argv = [str(a) for a in argv]
            out = Path(argv[argv.index("--output_dir") + 1])
            out.mkdir(parents=True, exist_ok=True)
            if script == "pretrain_STCLN.py":
                epochs = int(argv[argv.index("--epochs") + 1])
                seeded_segmenter_checkpoint(out / f"checkpoint_{epochs - 1}.stcln.tar", out.name)
                continue
            flags = parse_args("pastis", "fine-tuning", argv)  # what the fine-tuning script would run on
            assert flags.label_subset == "ids" and flags.smoke and flags.train_folds == [1, 2, 3]
            ids = json.loads(flags.label_ids.read_text())["labelled"]
            seeded_segmenter_checkpoint(out / "best.tar", str(out.relative_to(out.parents[3])))
            (out / "history.json").write_text(json.dumps({"history": [{"epoch": 1, "steps": 1, "val_mIoU": 0.1}]}))
            (out / "summary.json").write_text(json.dumps({"test": {"mIoU": fake_score(ids), "OA": 0.5}}))


@pytest.fixture
def one_thread():
    """The selections (tiny model, 8-px crops) gain nothing from a second thread and slow down many times when
    it competes for a core shared with other work (as tests/test_study_folder.py's smoke runs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_fake_study(tmp_path: Path, monkeypatch, name: str, extra: list[str]) -> tuple[dict, Path]:
    monkeypatch.setattr(sel, "Executor", FakeExecutor)
    out = tmp_path / name
    argv = ["--smoke", "--device", "cpu", "--selection", *STRATEGIES, "--output_dir", str(out), *extra]
    return le.main(argv), out


def selections(out: Path) -> dict[str, dict]:
    return {str(p.relative_to(out)): json.loads(p.read_text()) for p in sorted(out.glob("runs/*/*/*.selection.json"))}


def smoke_folds() -> dict[int, int]:
    """ID_PATCH -> fold of the smoke synthetic set, read from its metadata.geojson directly."""
    root = pastis_root(DataSpec("synthetic", smoke=True))
    features = json.loads((root / "metadata.geojson").read_text())["features"]
    return {int(f["properties"]["ID_PATCH"]): int(f["properties"]["Fold"]) for f in features}


def test_selection_rounds_on_the_smoke_data(tmp_path, monkeypatch, one_thread):
    """Every strategy, 3 rounds: the round-0 sets are one random set per seed for every strategy and arm (kcenter:
    its own), each round extends the previous one to the budget's count with training-fold samples only, the same
    seed gives the same selections, and the report's numbers are those of the runs."""
    results, out = run_fake_study(tmp_path, monkeypatch, "a", ["--arms", "wp_cell"])
    _, other = run_fake_study(tmp_path, monkeypatch, "b", ["--arms", "scratch", "wp_cell", "--only_seeds", "0"])
    files, again = selections(out), selections(other)
    # the same seed again: the same selections; and the rounds that read no model are the same for every arm
    assert {k: v["labelled"] for k, v in again.items() if "wp_cell" in k} == {
        k: v["labelled"] for k, v in files.items() if "_s0." in k
    }
    for key, record in again.items():
        if "scratch" in key and ("select_random" in key or "b10_" in key):
            assert record["labelled"] == files[key.replace("scratch", "wp_cell")]["labelled"], key
    folds = smoke_folds()
    size = SYNTHETIC_PASTIS[2]["smoke"]["size"]
    n_training = sum(fold in (1, 2, 3) for fold in folds.values()) * (size // 8) ** 2  # folds 1-3, 8-px crops
    counts = [round(b / 100 * n_training) for b in SMOKE_BUDGETS]
    assert counts == [7, 14, 29]
    for seed in (0, 1):
        # one random start per seed, shared by random, entropy, margin and badge (no file of their own)
        assert not any(f"select_{s}/b10_s{seed}" in key for key in files for s in ("entropy", "margin", "badge"))
        for strategy in STRATEGIES:
            chain = [
                files[f"runs/wp_cell/select_{sel.round_owner(strategy, r)}/b{b:g}_s{seed}.selection.json"]
                for r, b in enumerate(SMOKE_BUDGETS)
            ]
            start = chain[0]["checkpoint"]  # kcenter: the pre-trained backbone; the random start: no model
            assert start.endswith("pretrain_cell/checkpoint_0.stcln.tar") if strategy == "kcenter" else start is None
            for r, record in enumerate(chain):
                assert len(record["labelled"]) == len(set(record["labelled"])) == counts[r]
                assert all(folds[int(i.split("@")[0])] in (1, 2, 3) for i in record["labelled"])  # never fold 4/5
                if r:
                    assert record["labelled"][: counts[r - 1]] == chain[r - 1]["labelled"]  # nested
                    assert record["labelled"][counts[r - 1] :] == [e["id"] for e in record["new"]]
                    previous = f"select_{sel.round_owner(strategy, r - 1)}/b{SMOKE_BUDGETS[r - 1]:g}_s{seed}_lr0.001"
                    model = record["checkpoint"]  # the previous round's model (random: none)
                    assert model is None if strategy == "random" else model.endswith(f"wp_cell/{previous}/best.tar")
    assert (
        files["runs/wp_cell/select_random/b10_s0.selection.json"]["labelled"]
        != files["runs/wp_cell/select_random/b10_s1.selection.json"]["labelled"]
    )
    check_entropy_round(
        files["runs/wp_cell/select_entropy/b20_s0.selection.json"],
        files["runs/wp_cell/select_random/b10_s0.selection.json"],
    )

    # the report: one record per chain round, a cell and a paired difference checked against the run summaries
    assert len(results["runs"]) == 2 * len(STRATEGIES) * 3
    kcenter, random = (
        np.array(
            [fake_score(files[f"runs/wp_cell/select_{s}/b40_s{seed}.selection.json"]["labelled"]) for seed in (0, 1)]
        )
        for s in ("kcenter", "random")
    )
    text = (out / "results.md").read_text()
    assert f"{kcenter.mean():.3f} ± {kcenter.std(ddof=1):.3f}" in text
    diff = kcenter - random
    half = stats.t.ppf(0.975, 1) * diff.std(ddof=1) / np.sqrt(2)
    assert f"{diff.mean():+.3f} [{diff.mean() - half:+.3f}, {diff.mean() + half:+.3f}]" in text
    assert (out / "selection_curves.png").read_bytes()[:8] == PNG_SIGNATURE


def check_entropy_round(record: dict, before: dict) -> None:
    """An entropy round's new samples are the unlabelled training samples of highest mean pixel entropy under the
    previous round's model, each sample's entropy computed here by a forward pass of that sample alone."""
    raw = torch.load(record["checkpoint"], weights_only=True)
    model = STCLNSegmenter(STCLNConfig.from_dict(raw["model_config"]))
    model.load_state_dict(raw["model"])
    model.eval()
    train = build_finetune_data(finetune_spec(["--label_subset", "all"]), splits=("train",)).train
    labelled = set(before["labelled"])
    unlearned = (PASTISDataset.background_index, PASTISDataset.ignore_index)  # weight 0 in fine-tuning
    learned = [c for c in range(PASTISDataset.num_classes) if c not in unlearned]
    entropy = {}
    with torch.no_grad():
        for index in range(len(train)):
            batch = pad_collate([train[index]])
            if batch["id"][0] in labelled:
                continue
            logits = model(batch["image"], batch["positions"], batch["pad_mask"])[:, learned]  # (1, K', H, W)
            p = torch.softmax(logits.double(), dim=1)
            entropy[batch["id"][0]] = float(-(p * p.log()).sum(dim=1).mean())
    ranked = sorted(entropy, key=lambda i: -entropy[i])
    assert [e["id"] for e in record["new"]] == ranked[: len(record["new"])]
    assert [e["score"] for e in record["new"]] == pytest.approx([entropy[i] for i in ranked[: len(record["new"])]])


def test_a_budget_inserted_below_the_rounds_written_is_refused(tmp_path, monkeypatch, capsys, one_thread):
    """Budgets may grow above the largest (the chains go on); one below would renumber the rounds already chosen."""
    _, out = run_fake_study(
        tmp_path, monkeypatch, "d", ["--arms", "scratch", "--only_seeds", "0", "--selection", "random"]
    )
    monkeypatch.setitem(le.study_module.SMOKE_SELECTION, "budgets", [5.0, *SMOKE_BUDGETS])  # --smoke sets them
    with pytest.raises(SystemExit) as stop:
        le.main(["--smoke", "--device", "cpu", "--selection", "random", "--arms", "scratch", "--only_seeds", "0",
                 "--output_dir", str(out)])  # fmt: skip
    assert stop.value.code == 2
    assert "b10_s0.selection.json: written as another round than round 1" in capsys.readouterr().err


def finetune_spec(extra: list[str]) -> DataSpec:
    """The fine-tuning runs' data of --smoke --selection (training folds 1-3, 8-px crops), with ``extra`` flags."""
    argv = [
        "--dataset",
        "synthetic",
        "--smoke",
        "--crop_size",
        "8",
        "--train_folds",
        "1",
        "2",
        "3",
        "--val_folds",
        "5",
        "--test_folds",
        "4",
        *extra,
    ]
    return resolve_data_spec(parse_args("synthetic", "t", argv))


def test_label_ids_trains_on_exactly_the_listed_samples(tmp_path):
    full = build_finetune_data(finetune_spec(["--label_subset", "all"]), splits=("train",)).train
    ids = full.sample_ids
    assert ids == [full[i]["id"] for i in range(len(full))]  # the ids without reading pixels, as the samples say
    chosen = [ids[5], ids[0], ids[17]]
    path = tmp_path / "round.json"
    path.write_text(json.dumps({"labelled": chosen}))
    train = build_finetune_data(
        finetune_spec(["--label_subset", "ids", "--label_ids", str(path)]), splits=("train",)
    ).train
    assert sorted(train[i]["id"] for i in range(len(train))) == sorted(chosen)
    path.write_text(json.dumps(["99999@0,0"]))
    with pytest.raises(DataError, match=r"round\.json: 1 id\(s\) are not samples of the training split"):
        build_finetune_data(finetune_spec(["--label_subset", "ids", "--label_ids", str(path)]), splits=("train",))


def test_selection_flags_are_checked(capsys):
    for argv, message in [
        (["--selection", "kcenter"], "needs 'random'"),
        (["--selection", "random", "--budgets", "5"], "at least two --budgets"),
        (["--selection", "random", "--budgets", "5", "10", "--lrs", "1e-3", "3e-3"], "one lr"),
        (["--selection", "random", "--budgets", "5", "10", "--lrs", "1e-3", "--arms", "rf"], "learned arms only"),
    ]:
        with pytest.raises(SystemExit) as stop:
            le.resolve_args(argv)
        assert stop.value.code == 2 and message in capsys.readouterr().err
