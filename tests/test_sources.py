"""Multi-source data (issue #38): the PASTIS-R layout (S2 + Sentinel-1 S1A/S1D) read against its writer,
the folder format's further sources, collate of sources of different lengths, bad files, the
``--sources`` flag and the synthetic radar series (published relations, speckle ENL, determinism, and
the optical output left unchanged)."""

import argparse
import datetime
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.args import add_data_args, check_sources
from utils.data import info_for
from utils.data_spec import DataSpec
from utils.datasets import PASTISDataset, add_synthetic_radar, build_pastis_synthetic, write_pastis_like
from utils.datasets import synthetic_radar as radar
from utils.datasets.collate import pad_collate
from utils.datasets.folder import DATASET_FILE, FolderDataset, write_folder_source
from utils.datasets.pastis import PASTIS_CLASSES, PASTIS_REFERENCE_DATE, source_path
from utils.datasets.protocols import TemporalSubset
from utils.errors import DataError

SOURCES = ("S2", "S1A", "S1D")
REVISIT = 36  # ~12 radar dates per orbit: small files


@pytest.fixture(scope="module")
def pastis_r(tmp_path_factory) -> dict:
    """A tiny version-2 synthetic set in the PASTIS-R layout, with the writer's arrays."""
    root = tmp_path_factory.mktemp("pastis_r")
    return write_pastis_like(
        root, n_patches=8, size=16, n_dates=(4, 6), seed=3, version=2, radar=True, radar_revisit=REVISIT
    )


def utae_norm(images: dict[int, np.ndarray], folds: dict[int, int], norm_folds) -> tuple[np.ndarray, np.ndarray]:
    """utae-paps compute_norm_vals, written out independently: per fold the mean of per-patch band means
    and unbiased stds, then the mean over ``norm_folds``."""
    means, stds = [], []
    for fold in norm_folds:
        patch_means = [images[i].astype(np.float64).mean(axis=(0, 2, 3)) for i in images if folds[i] == fold]
        patch_stds = [
            np.std(np.moveaxis(images[i].astype(np.float64), 1, 0).reshape(images[i].shape[1], -1), axis=1, ddof=1)
            for i in images
            if folds[i] == fold
        ]
        means.append(np.mean(patch_means, axis=0))
        stds.append(np.mean(patch_stds, axis=0))
    return np.mean(means, axis=0), np.mean(stds, axis=0)


def test_pastis_r_loader_reads_back_what_the_writer_wrote(pastis_r):
    root, folds = pastis_r["root"], pastis_r["folds"]
    data = PASTISDataset(root, folds=[1, 2, 3, 4, 5], norm_folds=[1, 2], sources=SOURCES)
    single = PASTISDataset(root, folds=[1, 2, 3, 4, 5], norm_folds=[1, 2])
    assert data.sources == SOURCES and data.source_channels == {"S2": 10, "S1A": 3, "S1D": 3}
    assert data.source_band_names["S1D"] == ("VV", "VH", "VV/VH")
    reference = datetime.date.fromisoformat(PASTIS_REFERENCE_DATE)
    metadata = {
        f["properties"]["ID_PATCH"]: f["properties"]
        for f in json.loads((root / "metadata.geojson").read_text())["features"]
    }
    for orbit in ("S1A", "S1D"):
        written = pastis_r["radar"]["images"][orbit]
        mean, std = utae_norm(written, folds, [1, 2])
        for index in (0, 5):
            patch_id = data.patch_ids[index]
            sample = data[index]
            on_disk = np.load(source_path(root, orbit, patch_id))
            assert on_disk.dtype == np.float32 and on_disk.shape == (
                len(pastis_r["radar"]["dates"][orbit][patch_id]),
                3,
                16,
                16,
            )
            expected = (written[patch_id] - mean[:, None, None]) / std[:, None, None]
            np.testing.assert_allclose(sample[f"image_{orbit}"].numpy(), expected, rtol=1e-5, atol=1e-5)
            dates = pastis_r["radar"]["dates"][orbit][patch_id]
            assert sample[f"days_{orbit}"].tolist() == [(d - reference).days for d in dates]
            assert metadata[patch_id][f"dates-{orbit}"] == {
                str(k): int(d.strftime("%Y%m%d")) for k, d in enumerate(dates)
            }
            # the primary keeps exactly the single-source sample
            for key in ("image", "ndvi", "days", "label"):
                assert torch.equal(sample[key], single[index][key])
    # the radar channels are the release's convention: VV and VH in dB, third = VV_dB - VH_dB
    array = pastis_r["radar"]["images"]["S1A"][data.patch_ids[0]]
    np.testing.assert_allclose(array[:, 2], array[:, 0] - array[:, 1], atol=1e-5)
    assert -30 < np.median(array[:, 0]) < 0 and np.median(array[:, 1]) < np.median(array[:, 0])


def test_radar_dates_as_a_json_string_read_as_the_object(pastis_r, tmp_path):
    root = _copy(pastis_r["root"], tmp_path / "copy")
    metadata = json.loads((root / "metadata.geojson").read_text())
    for feature in metadata["features"]:  # some copies of the release hold dates-* as JSON strings
        feature["properties"]["dates-S1D"] = json.dumps(feature["properties"]["dates-S1D"])
    (root / "metadata.geojson").write_text(json.dumps(metadata))
    as_string = PASTISDataset(root, folds=[2], sources=("S2", "S1D"))
    as_object = PASTISDataset(pastis_r["root"], folds=[2], sources=("S2", "S1D"))
    assert torch.equal(as_string[0]["days_S1D"], as_object[0]["days_S1D"])


def test_radar_primary_has_no_ndvi_and_temporal_subsets_apply_per_source(pastis_r):
    root = pastis_r["root"]
    data = PASTISDataset(root, folds=[1], sources=("S1D", "S2"), temporal=TemporalSubset("first", n=3))
    sample = data[0]
    assert "ndvi" not in sample and data.in_channels == 3 and data.red_index is None
    assert sample["image"].shape == (3, 3, 16, 16) and sample["image_S2"].shape == (3, 10, 16, 16)
    patch_id = data.patch_ids[0]
    reference = datetime.date.fromisoformat(PASTIS_REFERENCE_DATE)
    assert sample["days"].tolist() == [(d - reference).days for d in pastis_r["radar"]["dates"]["S1D"][patch_id][:3]]
    assert sample["days_S2"].tolist() == [(d - reference).days for d in pastis_r["dates"][patch_id][:3]]


def _sample(t: int, t_s: int, sample_id: str, radar_primary: bool = False) -> dict:
    out = {
        "image": torch.rand(t, 10, 4, 4),
        "days": torch.arange(t) * 5,
        "label": torch.zeros(4, 4, dtype=torch.int64),
        "id": sample_id,
        "image_S1A": torch.rand(t_s, 3, 4, 4) + 1,
        "days_S1A": torch.arange(t_s) * 12 + 1,
    }
    if not radar_primary:
        out["ndvi"] = torch.rand(t, 4, 4)
    return out


def test_sources_of_different_lengths_are_padded_on_their_own():
    samples = [_sample(3, 7, "a"), _sample(5, 2, "b")]
    batch = pad_collate(samples)
    assert batch["image"].shape == (2, 5, 10, 4, 4) and batch["image_S1A"].shape == (2, 7, 3, 4, 4)
    assert batch["pad_mask"].tolist() == [[False] * 3 + [True] * 2, [False] * 5]
    assert batch["pad_mask_S1A"].tolist() == [[False] * 7, [False] * 2 + [True] * 5]
    assert batch["positions_S1A"].tolist() == [list(range(7))] * 2
    assert torch.equal(batch["image_S1A"][1, :2], samples[1]["image_S1A"]) and not batch["image_S1A"][1, 2:].any()
    assert batch["days_S1A"][0].tolist() == samples[0]["days_S1A"].tolist() and batch["days_S1A"].dtype == torch.int64
    radar_first = pad_collate([_sample(2, 4, "c", radar_primary=True), _sample(3, 4, "d", radar_primary=True)])
    assert "ndvi" not in radar_first and radar_first["image"].shape == (2, 3, 10, 4, 4)
    with pytest.raises(ValueError, match="further sources"):
        pad_collate([_sample(2, 4, "e"), {k: v for k, v in _sample(2, 4, "f").items() if not k.endswith("S1A")}])


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(
    "defect, expected",
    [
        ("shape", r"S1A_\d+\.npy: expected a float array of shape \(T, 3, H, W\)"),
        ("dtype", r"S1A_\d+\.npy: expected a float array .* got int16"),
        ("frames", r"S1A_\d+\.npy: \d+ frames but metadata.geojson lists \d+ dates-S1A"),
        ("missing", r"S1A_\d+\.npy: file not found"),
        ("size", r"S1A_\d+\.npy: 8x8 pixels but the patch's S2 series has 16x16"),
        ("nan", r"S1A_\d+\.npy: 3 NaN/inf values"),
        ("dates", r"metadata.geojson: patch \d+ has no dates-S1A"),
        ("norm", r"NORM_S1A_patch.json: Fold_1 needs 3 means and 3 stds"),
    ],
)
def test_bad_radar_files_give_one_line_naming_the_file(pastis_r, tmp_path, defect, expected):
    root = _copy(pastis_r["root"], tmp_path / "copy")
    patch_id = min(i for i, fold in pastis_r["folds"].items() if fold == 1)
    path = source_path(root, "S1A", patch_id)
    array = np.load(path)
    if defect == "shape":
        np.save(path, array[:, :2])
    elif defect == "dtype":
        np.save(path, array.astype(np.int16))
    elif defect == "frames":
        np.save(path, array[:-1])
    elif defect == "missing":
        path.unlink()
    elif defect == "size":
        np.save(path, array[:, :, :8, :8])
    elif defect == "nan":
        array[0, 0, :3, 0] = np.nan
        np.save(path, array)
    elif defect == "dates":
        metadata = json.loads((root / "metadata.geojson").read_text())
        for feature in metadata["features"]:
            if feature["properties"]["ID_PATCH"] == patch_id:
                del feature["properties"]["dates-S1A"]
        (root / "metadata.geojson").write_text(json.dumps(metadata))
    else:
        norm = json.loads((root / "NORM_S1A_patch.json").read_text())
        norm["Fold_1"]["mean"] = norm["Fold_1"]["mean"][:2]
        (root / "NORM_S1A_patch.json").write_text(json.dumps(norm))
    with pytest.raises(DataError) as err:
        data = PASTISDataset(root, folds=[1], ids=[patch_id], sources=SOURCES)
        data[0]  # NaN values are found when the window is read
    message = str(err.value)
    assert "\n" not in message and str(root) in message
    assert __import__("re").search(expected, message), message


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_data_args(parser)
    args = parser.parse_args(list(argv))
    check_sources(parser, args)
    return args


def test_sources_flag_expands_the_alias_and_refuses_in_one_line(capsys):
    assert _parse().sources == ["S2"]
    assert _parse("--sources", "S2", "S1").sources == ["S2", "S1A", "S1D"]
    assert _parse("--sources", "S1").sources == ["S1A", "S1D"]
    for argv, said in (
        (("--sources", "S2", "S3"), "--sources S3: unknown source"),
        (("--dataset", "mtlcc", "--data_root", "x", "--sources", "S2", "S1"), "MTLCC data hold Sentinel-2 only"),
        (("--synthetic_format", "mtlcc", "--sources", "S1A"), "MTLCC data hold Sentinel-2 only"),
        (("--synthetic_version", "1", "--sources", "S2", "S1D"), "--synthetic_version 2 only"),
        (("--sources", "S2", "S1", "S1A"), "S1A is listed twice"),
    ):
        with pytest.raises(SystemExit) as exit_:
            _parse(*argv)
        assert exit_.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert said in error, error
    spec = DataSpec.from_args({"dataset": "synthetic", "sources": ["S2", "S1"]})
    assert spec.sources == SOURCES and spec.extra_sources == ("S1A", "S1D")
    assert DataSpec.from_args({"dataset": "synthetic"}).sources == ("S2",)  # a checkpoint from before --sources
    info = info_for(spec)
    assert info.in_channels == 10 and info.extra_sources == ("S1A", "S1D") and info.extra_channels == (3, 3)
    radar_info = info_for(DataSpec.from_args({"dataset": "synthetic", "sources": ["S1"]}))
    assert radar_info.in_channels == 3 and radar_info.ndvi_gate is False and radar_info.extra_channels == (3,)


def test_folder_further_source_is_read_back_with_its_own_dates_and_statistics(tmp_path):
    root = tmp_path / "folder"
    written = write_pastis_like(root, n_patches=5, size=8, n_dates=(3, 4), seed=1, version=2, folds=(1, 2))
    (root / DATASET_FILE).write_text(
        json.dumps(
            {
                "band_names": list(PASTISDataset.band_names),
                "red_band": "B04",
                "nir_band": "B08",
                "classes": PASTIS_CLASSES,
                "ignore_index": 19,
                "background_index": 0,
                "reflectance_scale": 10000,
            }
        )
    )
    rng = np.random.default_rng(0)
    images = {i: rng.normal(-12, 3, size=(2 + k, 2, 8, 8)).astype(np.float32) for k, i in enumerate(written["ids"])}
    dates = {
        i: [datetime.date(2019, 1, 1) + datetime.timedelta(days=6 * t) for t in range(len(images[i]))]
        for i in written["ids"]
    }
    write_folder_source(root, "SAR", ("VV", "VH"), images, dates)
    data = FolderDataset(root, folds=[1, 2], norm_folds=[1], sources=("S2", "SAR"))
    assert data.source_channels == {"S2": 10, "SAR": 2} and (root / "NORM_SAR_patch.json").is_file()
    mean, std = utae_norm(images, written["folds"], [1])
    reference = data.reference_date
    for index, patch_id in enumerate(data.patch_ids):
        sample = data[index]
        np.testing.assert_allclose(
            sample["image_SAR"].numpy(),
            (images[patch_id] - mean[:, None, None]) / std[:, None, None],
            rtol=1e-5,
            atol=1e-5,
        )
        assert sample["days_SAR"].tolist() == [(d - reference).days for d in dates[patch_id]]
    batch = pad_collate([data[i] for i in range(len(data))])
    assert batch["image_SAR"].shape[1] == max(len(a) for a in images.values())
    with pytest.raises(DataError, match=r"dataset.json: --sources S1A: not in field 'sources' \(SAR\)"):
        FolderDataset(root, folds=[1], sources=("S2", "S1A"))
    with pytest.raises(DataError, match="first --sources entry must be S2"):
        FolderDataset(root, folds=[1], sources=("SAR", "S2"))


# ---- the synthetic radar series ----------------------------------------------------------------------------


def test_water_cloud_limits_are_the_soil_and_the_dense_canopy():
    soil = radar.linear(-15.0)
    assert radar.water_cloud(-10.0, 0.2, np.array(0.0), soil, 40.0) == pytest.approx(soil)  # no canopy: the soil
    dense = radar.water_cloud(-10.0, 0.2, np.array(1e3), soil, 40.0)
    assert dense == pytest.approx(0.1 * math.cos(math.radians(40.0)))  # opaque canopy: A cos(theta)
    one = radar.water_cloud(-10.0, 0.2, np.array(1.0), soil, 40.0)  # tau^2 = exp(-0.4 / cos 40)
    tau2 = math.exp(-0.4 / math.cos(math.radians(40.0)))
    assert one == pytest.approx(0.1 * math.cos(math.radians(40.0)) * (1 - tau2) + tau2 * 10**-1.5)


@pytest.fixture(scope="module")
def scenes() -> dict:
    """Clean (no speckle) and speckled radar of four 32-px patches of one tile, one orbit."""
    dates = radar.tile_radar_calendars(0, "t31tfj")["S1D"]
    clean, speckled = [], []
    for patch in range(4):
        clean.append(radar.generate_radar([0, 20000 + patch], 32, dates, [0, 5], "S1D", speckle=False))
        speckled.append(radar.generate_radar([0, 20000 + patch], 32, dates, [0, 5], "S1D"))
    return {"dates": dates, "clean": clean, "speckled": speckled}


def _pixels(scenes: dict, key: str) -> np.ndarray:
    """(T * pixels of all patches,) values of a clean-scene field: VV, VH, lai, mv or label."""
    out = []
    for scene in scenes["clean"]:
        t = len(scenes["dates"])
        value = {
            "VV": scene["backscatter"][:, 0],
            "VH": scene["backscatter"][:, 1],
            "lai": scene["lai"],
            "mv": scene["soil_moisture"],
            "label": np.broadcast_to(scene["label"], scene["lai"].shape),
        }[key]
        out.append(value.reshape(t, -1))
    return np.concatenate(out, axis=1).ravel()


def test_radar_follows_the_published_relations(scenes):
    vv, vh, lai, mv, label = (_pixels(scenes, key) for key in ("VV", "VH", "lai", "mv", "label"))
    maize = label == 3  # Veloso et al. 2017: maize VH rises with biomass
    assert np.corrcoef(lai[maize], vh[maize])[0, 1] > 0.5
    assert vh[maize & (lai > 3)].mean() - vh[maize & (lai < 0.3)].mean() > 2.0
    wheat = label == 2  # vertical stems attenuate VV: wheat VV falls at full canopy
    assert vv[wheat & (lai > 3)].mean() < vv[wheat & (lai < 0.3)].mean() - 2.0
    bare = (lai < 0.02) & (label > 0)  # wet soil brightens bare fields after rain
    assert vv[bare & (mv > 0.25)].mean() - vv[bare & (mv < 0.11)].mean() > 2.0
    assert np.all(vh < vv + 1e-3)  # cross-pol below co-pol everywhere (no built-up double bounce here)


def test_speckle_enl_measured_on_a_homogeneous_field_is_the_stated_one(scenes):
    ratios = []  # speckled / clean intensity: the speckle itself, a homogeneous field of mean 1
    for clean, speckled in zip(scenes["clean"], scenes["speckled"]):
        for pol in (0, 1):
            ratios.append(
                10 ** ((speckled["backscatter"][:, pol].astype(np.float64) - clean["backscatter"][:, pol]) / 10)
            )
    ratio = np.concatenate([r.ravel() for r in ratios])  # ~290k pixels
    assert ratio.mean() == pytest.approx(1.0, abs=0.01)
    assert ratio.mean() ** 2 / ratio.var() == pytest.approx(radar.ENL, rel=0.03)


def test_radar_is_deterministic_and_orbits_have_their_own_calendars(scenes):
    again = radar.generate_radar([0, 20000], 32, scenes["dates"], [0, 5], "S1D")
    assert np.array_equal(again["backscatter"], scenes["speckled"][0]["backscatter"])
    other = radar.generate_radar([1, 20000], 32, scenes["dates"], [0, 5], "S1D")
    assert not np.array_equal(other["backscatter"], again["backscatter"])
    calendars = radar.tile_radar_calendars(0, "t31tfj")
    for dates in calendars.values():
        assert {(b - a).days for a, b in zip(dates, dates[1:])} == {radar.RADAR_REVISIT_DAYS} and 33 <= len(dates) <= 36
    for tile in ("t30uxv", "t31tfj", "t31tfm", "t32ulu", "t31udq", "t31tcj", "t30tyq", "t31ufq"):
        ascending, descending = radar.tile_radar_calendars(0, tile).values()
        assert not set(ascending) & set(descending)  # the two orbits pass on different days
    assert calendars == radar.tile_radar_calendars(0, "t31tfj")


def test_adding_radar_changes_no_optical_file_and_the_cache_gains_the_same_files(pastis_r, tmp_path):
    optical = write_pastis_like(tmp_path / "optical", n_patches=8, size=16, n_dates=(4, 6), seed=3, version=2)
    for patch_id in optical["ids"]:
        assert np.array_equal(optical["images"][patch_id], pastis_r["images"][patch_id])
        assert np.array_equal(optical["targets"][patch_id], pastis_r["targets"][patch_id])
    for name in ("NORM_S2_patch.json",):
        assert (tmp_path / "optical" / name).read_bytes() == (pastis_r["root"] / name).read_bytes()
    with_radar = json.loads((pastis_r["root"] / "metadata.geojson").read_text())
    for feature in with_radar["features"]:
        del feature["properties"]["dates-S1A"], feature["properties"]["dates-S1D"]
    assert with_radar == json.loads((tmp_path / "optical" / "metadata.geojson").read_text())
    # a cached optical set: adding radar keeps COMPLETE.json and every S2 file, and writes what the writer writes
    cache = build_pastis_synthetic(tmp_path / "cache", n_patches=8, size=16, n_dates=(4, 6), seed=3)
    before = {p: p.read_bytes() for p in [cache / "COMPLETE.json", *sorted((cache / "DATA_S2").iterdir())]}
    add_synthetic_radar(cache, size=16, seed=3, revisit=REVISIT)
    assert all(p.read_bytes() == content for p, content in before.items())
    for name in (
        "metadata.geojson",
        "NORM_S1A_patch.json",
        "NORM_S1D_patch.json",
        *(f"DATA_{o}/{o}_{i}.npy" for o in ("S1A", "S1D") for i in pastis_r["ids"]),
    ):
        assert (cache / name).read_bytes() == (pastis_r["root"] / name).read_bytes(), name
    with pytest.raises(DataError, match="COMPLETE_S1.json: the cached radar series were built with other parameters"):
        add_synthetic_radar(cache, size=16, seed=3, revisit=12)


def test_cloud_fraction_sets_the_share_of_cloudy_dates_and_nothing_else():
    """--cloud_fraction: the regimes' frequencies over 4,000 dates are the stated ones (default: the
    generator's table exactly), and the soil wetness that the radar is rendered from does not move."""
    from utils.datasets import synthetic_v2 as v2

    dates = [datetime.date(2019, 1, 1) + datetime.timedelta(days=d) for d in range(4000)]
    default, _, wet = v2._weather([0, 1], dates)
    assert v2.regime_probs(None) == v2.REGIME_PROBS and v2.CLOUD_FRACTION == pytest.approx(0.35)
    assert np.array_equal(default, v2._weather([0, 1], dates, None)[0])
    for fraction in (0.35, 0.5):
        regime, _, wet_now = v2._weather([0, 1], dates, fraction)
        cloudy = np.isin(regime, (v2.BROKEN, v2.OVERCAST))
        assert cloudy.mean() == pytest.approx(fraction, abs=0.025)  # 4 binomial sd at n = 4,000
        assert (regime == v2.HAZE).mean() == pytest.approx((1 - fraction) * 0.15 / 0.65, abs=0.025)
        assert np.array_equal(wet_now, wet)
    with pytest.raises(ValueError, match="cloud_fraction"):
        v2.regime_probs(1.5)


def test_cloudier_set_is_cached_apart_with_the_same_labels_and_radar(tmp_path, monkeypatch, capsys):
    """The cloudier set is its own cached folder (the default one's marker unchanged); fields, labels
    and radar equal the default set's, the optical series differ, and a bad value is refused in one line."""
    from utils import data as data_module
    from utils.datasets.pastis import s2_path, target_path

    monkeypatch.setattr(data_module, "CACHE_ROOT", tmp_path)
    tiny = {2: {"smoke": dict(n_patches=5, size=16, n_dates=(4, 5))}}
    monkeypatch.setattr(data_module, "SYNTHETIC_PASTIS", tiny)
    plain = data_module.pastis_root(DataSpec("synthetic", smoke=True, sources=SOURCES))
    cloudy = data_module.pastis_root(DataSpec("synthetic", smoke=True, sources=SOURCES, cloud_fraction=1.0))
    assert cloudy.name == plain.name + "_clouds1" and "cloud_fraction" not in json.loads(
        (plain / "COMPLETE.json").read_text()
    )
    ids = [int(p.stem.split("_")[1]) for p in (plain / "DATA_S2").glob("S2_*.npy")]
    assert ids
    differ = 0
    for patch in ids:
        assert np.array_equal(np.load(target_path(plain, patch)), np.load(target_path(cloudy, patch)))
        for orbit in ("S1A", "S1D"):
            assert np.array_equal(np.load(source_path(plain, orbit, patch)), np.load(source_path(cloudy, orbit, patch)))
        differ += not np.array_equal(np.load(s2_path(plain, patch)), np.load(s2_path(cloudy, patch)))
    assert differ == len(ids)  # every date clouded at 1.0: no patch keeps its optical series
    parser = argparse.ArgumentParser()
    add_data_args(parser)
    from utils.args import check_cloud_fraction

    for argv, message in (
        (["--cloud_fraction", "1.2"], "in [0, 1]"),
        (["--dataset", "pastis", "--cloud_fraction", "0.5"], "synthetic version-2"),
    ):
        with pytest.raises(SystemExit):
            check_cloud_fraction(parser, parser.parse_args(argv))
        assert message in capsys.readouterr().err
