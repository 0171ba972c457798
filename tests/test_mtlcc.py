"""MTLCC: TFRecord I/O without TensorFlow, both on-disk layouts, the .npy cache, splits and skipped tiles."""

import datetime
import gzip
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.datasets import mtlcc, mtlcc_sources
from utils.datasets.collate import pad_collate
from utils.datasets.mtlcc import (
    MTLCC_RAW_IDS, MTLCCDataset, authors_mtlcc_subset, read_tfrecord_tile, year_folder,
)
from utils.datasets.mtlcc_writers import write_mtlcc_like
from utils.datasets.protocols import TemporalSubset
from utils.datasets.tfrecord import (
    crc32c, iter_records, masked_crc32c, parse_example, read_examples, write_examples,
    write_records,
)
from utils.errors import DataError

SIZE = 12
TILES = {"train_fold0": (11, 12, 13), "test_fold0": (21, 22), "eval": (31, 32)}
N_DATES = {11: 6, 12: 7, 13: 5, 21: 6, 22: 8, 31: 7, 32: 6}
PAD_TO = 10
FACTORS = {"x10": 1, "x20": 2, "x60": 6}
CHANNEL_SLICES = {"x10": slice(0, 4), "x20": slice(4, 10), "x60": slice(10, 13)}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The same synthetic tiles in both layouts (TFRecords padded in time), plus 2017 TFRecords."""
    base = tmp_path_factory.mktemp("mtlcc")
    tfrecord = write_mtlcc_like(base / "tfr", TILES, size=SIZE, n_dates=N_DATES, pad_to=PAD_TO)
    geotiff = write_mtlcc_like(base / "tif", TILES, size=SIZE, n_dates=N_DATES, layout="geotiff")
    year2017 = write_mtlcc_like(base / "tfr", TILES, size=SIZE, n_dates=4, year=2017, seed=5)
    return {"tfrecord": tfrecord, "geotiff": geotiff, "2017": year2017}


def copy_of(root: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(root, target)
    return target


def all_samples(dataset) -> list[dict]:
    return [dataset[index] for index in range(len(dataset))]


# ---------------------------------------------------------------------------------------------
# TFRecord reader / writer
# ---------------------------------------------------------------------------------------------
def bitwise_crc32c(data: bytes) -> int:
    """The CRC-32C definition, one bit at a time (reflected polynomial 0x82F63B78)."""
    register = 0xFFFFFFFF
    for byte in data:
        register ^= byte
        for _ in range(8):
            register = (register >> 1) ^ (0x82F63B78 if register & 1 else 0)
    return register ^ 0xFFFFFFFF


def test_crc32c_known_value_and_definition():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    data = np.random.default_rng(0).integers(0, 256, 3_001, dtype=np.uint8).tobytes()
    assert crc32c(data) == bitwise_crc32c(data)
    masked = masked_crc32c(data)  # rotate right by 15 bits, add 0xa282ead8 (TFRecord)
    crc = bitwise_crc32c(data)
    assert masked == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % 2**32


def test_example_round_trip_of_every_mtlcc_key_packed_and_unpacked(tmp_path):
    rng = np.random.default_rng(1)
    cube = rng.integers(0, 20_000, size=(3, 6, 6, 4), dtype=np.int64)
    features = {
        "x10/data": cube.astype("<i8").tobytes(), "x10/shape": np.array(cube.shape),
        "x20/data": cube[:, :3, :3, :3].astype("<i8").tobytes(), "x20/shape": np.array([3, 3, 3, 3]),
        "x60/data": cube[:, :1, :1, :3].astype("<i8").tobytes(), "x60/shape": np.array([3, 1, 1, 3]),
        "dates/doy": np.array([5, 40, 0], "<i8").tobytes(), "dates/year": np.array([2016] * 3, "<i8").tobytes(),
        "dates/shape": np.array([3]), "labels/data": cube[..., 0].astype("<i8").tobytes(),
        "labels/shape": np.array([3, 6, 6]), "signed": np.array([-1, 0, 2**62]), "floats": np.array([0.5, -2.25]),
        "several": [b"", b"a", b"\x00\xff" * 300],
    }
    for packed in (True, False):
        path = write_examples(tmp_path / f"p{packed}.tfrecord.gz", [features, {"x": b"second"}], packed=packed)
        first, second = read_examples(path)
        assert second == {"x": [b"second"]}
        assert set(first) == set(features)
        for key, value in features.items():
            if isinstance(value, np.ndarray):
                assert first[key].dtype == (np.float32 if value.dtype.kind == "f" else np.int64), key
                np.testing.assert_array_equal(first[key], value)
            else:
                assert first[key] == (value if isinstance(value, list) else [value]), key


def test_plain_and_gzip_records_and_record_framing(tmp_path):
    payloads = [b"", b"abc", bytes(range(256)) * 100]
    for compress in (True, False):
        path = write_records(tmp_path / f"r{compress}", payloads, compress=compress)
        assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
        assert list(iter_records(path)) == payloads
    raw = (tmp_path / "rFalse").read_bytes()
    assert raw[:8] == (0).to_bytes(8, "little") and raw[8:12] == masked_crc32c(raw[:8]).to_bytes(4, "little")


def corrupt_gzip_record(path: Path, position: int) -> None:
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[position] ^= 0x01
    path.write_bytes(gzip.compress(bytes(content)))


def test_crc_mismatch_and_truncation_raise_dataerror_naming_the_file(written, tmp_path):
    source = written["tfrecord"]["root"] / year_folder(2016) / "11.tfrecord.gz"
    for position, problem in ((20_00, "payload"), (3, "length")):
        path = tmp_path / f"bad_{problem}.tfrecord.gz"
        shutil.copy(source, path)
        corrupt_gzip_record(path, position)
        with pytest.raises(DataError, match=rf"{path.name}.*CRC32C mismatch on the {problem}"):
            read_tfrecord_tile(path)
    truncated = tmp_path / "truncated.tfrecord.gz"
    truncated.write_bytes(source.read_bytes()[: len(source.read_bytes()) // 2])
    with pytest.raises(DataError, match=rf"{truncated.name}: corrupted or truncated gzip"):
        read_tfrecord_tile(truncated)
    cut_record = tmp_path / "cut.tfrecord"
    cut_record.write_bytes(gzip.decompress(source.read_bytes())[:-10])
    with pytest.raises(DataError, match=rf"{cut_record.name}: record 0 truncated"):
        read_tfrecord_tile(cut_record)
    with pytest.raises(DataError, match="not a valid tf.train.Example"):
        parse_example(b"\x0a\xff\xff", source="x.tfrecord")


def test_missing_feature_is_a_dataerror(tmp_path):
    path = write_examples(tmp_path / "1.tfrecord.gz", [{"dates/shape": np.array([2])}])
    with pytest.raises(DataError, match=r"1.tfrecord.gz: feature 'dates/doy' missing"):
        read_tfrecord_tile(path)


# ---------------------------------------------------------------------------------------------
# loader output vs the written arrays, both layouts
# ---------------------------------------------------------------------------------------------
def test_both_layouts_load_identical_samples(written):
    tfr = MTLCCDataset(written["tfrecord"]["root"], "train", date_sampling="all")
    tif = MTLCCDataset(written["geotiff"]["root"], "train", date_sampling="all")
    assert (tfr.layout, tif.layout) == ("tfrecord", "geotiff")
    for left, right in zip(all_samples(tfr), all_samples(tif), strict=True):
        assert left["id"] == right["id"]
        for key in ("image", "ndvi", "days", "label"):
            assert left[key].dtype == right[key].dtype and torch.equal(left[key], right[key]), key
    batch = pad_collate(all_samples(tfr))  # tiles of 6, 7 and 5 dates
    assert batch["image"].shape == (3, 7, 13, SIZE, SIZE) and batch["pad_mask"].sum().item() == 1 + 2


@pytest.mark.parametrize("layout", ["tfrecord", "geotiff"])
def test_samples_equal_generated_arrays(written, layout):
    dataset = MTLCCDataset(written[layout]["root"], "test", date_sampling="all")
    assert dataset.reference_date == datetime.date(2015, 12, 31)
    rows, cols = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    raw_to_index = {raw_id: index for index, raw_id in enumerate(MTLCC_RAW_IDS)}
    for sample in all_samples(dataset):
        tile = written[layout]["tiles"][int(sample["id"])]
        n_real = len(tile["dates"])  # padded frames removed
        assert sample["image"].shape == (n_real, 13, SIZE, SIZE) and sample["image"].dtype == torch.float32
        expected = np.empty((n_real, 13, SIZE, SIZE))
        for key, factor in FACTORS.items():  # nearest upsampling by index arithmetic
            expected[:, CHANNEL_SLICES[key]] = tile["bands"][key][:, :, rows // factor, cols // factor]
        np.testing.assert_array_equal(sample["image"].numpy(), expected.astype(np.float32) * np.float32(1e-4))
        red, nir = expected[:, 0], expected[:, 3]  # B04, B08
        np.testing.assert_allclose(sample["ndvi"].numpy(), (nir - red) / (nir + red + 1e-6), rtol=1e-5, atol=1e-6)
        assert sample["days"].tolist() == [date.timetuple().tm_yday for date in tile["dates"]]
        expected_label = np.vectorize(raw_to_index.get)(tile["raw_label"])
        np.testing.assert_array_equal(sample["label"].numpy(), expected_label)
        np.testing.assert_array_equal(expected_label, tile["label"])  # crop type k -> k-th raw id -> index k
        assert sample["label"].dtype == torch.int64 and sample["days"].dtype == torch.int64
    assert len(np.unique(written[layout]["tiles"][21]["bands"]["x20"])) > 1


def test_class_attributes():
    assert MTLCCDataset.num_classes == 18 and MTLCCDataset.classes[0] == "unknown"
    assert MTLCCDataset.ignore_index == 0 and MTLCCDataset.background_index is None
    assert MTLCCDataset.in_channels == 13 and len(MTLCCDataset.band_names) == 13
    assert MTLCCDataset.band_names[MTLCCDataset.red_index] == "B04"
    assert MTLCCDataset.band_names[MTLCCDataset.nir_index] == "B08"


def test_pixel_interleaved_geotiffs_read_the_same(written, tmp_path):
    import tifffile

    root = copy_of(written["geotiff"]["root"], tmp_path)
    for path in (root / "data" / "31").glob("*m.tif"):
        planar = tifffile.imread(path)  # (C, H, W)
        tifffile.imwrite(path, np.moveaxis(planar, 0, -1).copy(), photometric="minisblack", planarconfig="contig")
    left = MTLCCDataset(root, "eval", date_sampling="all")[0]
    right = MTLCCDataset(written["geotiff"]["root"], "eval", date_sampling="all")[0]
    assert torch.equal(left["image"], right["image"])


def test_cross_year_reads_its_own_folder(written):
    dataset = MTLCCDataset(written["2017"]["root"], "eval", year=2017, date_sampling="all")
    assert dataset.reference_date == datetime.date(2016, 12, 31)
    sample, tile = dataset[0], written["2017"]["tiles"][31]
    assert sample["days"].tolist() == [date.timetuple().tm_yday for date in tile["dates"]]
    assert all(date.year == 2017 for date in dataset.dates(0)) and len(sample["days"]) == 4
    other = MTLCCDataset(written["tfrecord"]["root"], "eval", year=2016, date_sampling="all")[0]
    assert sample["image"].shape[0] != other["image"].shape[0]


# ---------------------------------------------------------------------------------------------
# dates
# ---------------------------------------------------------------------------------------------
def test_date_sampling_random_even_all_and_temporal(written):
    root = written["tfrecord"]["root"]
    train = MTLCCDataset(root, "train", n_dates=4, seed=3)
    assert train.date_sampling == "random"
    first = [train[index]["days"].tolist() for index in range(len(train))]
    assert first == [train[index]["days"].tolist() for index in range(len(train))]  # seeded
    assert all(len(days) == 4 and days == sorted(days) for days in first)
    train.set_epoch(1)
    assert [train[index]["days"].tolist() for index in range(len(train))] != first
    evaluation = MTLCCDataset(root, "test", n_dates=4)
    assert evaluation.date_sampling == "even"
    assert evaluation.select_frames(1).tolist() == [0, 2, 5, 7]  # tile 22: 8 dates
    everything = MTLCCDataset(root, "test", n_dates=4, date_sampling="all")
    assert len(everything[1]["days"]) == 8
    subset = MTLCCDataset(root, "test", n_dates=2, temporal=TemporalSubset("first", 5), date_sampling="even")
    assert subset.select_frames(1).tolist() == [0, 4]  # temporal first, then n_dates among its frames


# ---------------------------------------------------------------------------------------------
# splits, missing and short tiles
# ---------------------------------------------------------------------------------------------
def test_split_names_and_tile_lists(written, caplog):
    root = written["tfrecord"]["root"]
    assert MTLCCDataset(root, "train").tile_ids == [11, 12, 13]
    assert MTLCCDataset(root, "test").tile_ids == [21, 22]
    assert MTLCCDataset(root, "eval").tile_ids == MTLCCDataset(root, "eval.tileids").tile_ids == [31, 32]
    with caplog.at_level(logging.WARNING, logger="stcln"):
        chosen = MTLCCDataset(root, "train", tile_ids=[13, 11, 13, 31])
    assert chosen.tile_ids == [13, 11, 13, 31]  # order and duplicates kept, as the authors' lists
    assert "1 of the given tiles are not in train_fold0.tileids" in caplog.text
    with pytest.raises(DataError, match="no_such.tileids: tile id list not found"):
        MTLCCDataset(root, "no_such")


def test_authors_subsets():
    train, val = authors_mtlcc_subset("train"), authors_mtlcc_subset("val")
    assert len(train) == len(set(train)) == 78
    assert len(val) == 78 and len(set(val)) == 73
    assert train[:7] == [1175, 8813, 4325, 6045, 11503, 7935, 17003]
    assert val[-6:] == [1008, 12627, 9398, 12107, 11317, 10208]
    assert not set(train) & set(val)
    assert len(authors_mtlcc_subset("train", per_class=15)) == 13 * 15


def test_missing_and_short_tiles_counted_and_reported_once(written, tmp_path, caplog):
    root = copy_of(written["tfrecord"]["root"], tmp_path)
    (root / year_folder(2016) / "12.tfrecord.gz").unlink()
    with caplog.at_level(logging.WARNING, logger="stcln"):
        dataset = MTLCCDataset(root, "train", n_dates=6)  # tile 13 has 5 dates
    assert dataset.tile_ids == [11]
    lines = [record.getMessage() for record in caplog.records if "MTLCC" in record.getMessage()]
    assert lines == ["MTLCC train_fold0: 2016 listed 3, 1 missing, 1 too short (< 6 dates), 1 kept"]
    assert MTLCCDataset(root, "train", n_dates=6, min_dates=5).tile_ids == [11, 13]
    with pytest.raises(DataError, match="no usable tile"):
        MTLCCDataset(root, "train", n_dates=8)


def test_bad_side_files(written, tmp_path):
    root = copy_of(written["geotiff"]["root"], tmp_path)
    (root / "classes.txt").write_text("0|unknown\n1|sugar beet\n")
    with pytest.raises(DataError, match="classes.txt: expected 18"):
        MTLCCDataset(root, "train")
    with pytest.raises(DataError, match="neither data16/"):
        MTLCCDataset(tmp_path, "train")


# ---------------------------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------------------------
def forbid_sources(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a source file was parsed although the tile is cached")

    for name in ("read_tfrecord_tile", "read_geotiff_tile", "geotiff_dates"):  # every source read goes through these
        monkeypatch.setattr(mtlcc_sources, name, refuse)


@pytest.mark.parametrize("layout", ["tfrecord", "geotiff"])
def test_cache_gives_identical_samples_and_is_used_on_the_second_pass(written, tmp_path, monkeypatch, layout):
    root, cache = written[layout]["root"], tmp_path / "cache"
    direct = all_samples(MTLCCDataset(root, "test", date_sampling="all"))
    first = all_samples(MTLCCDataset(root, "test", date_sampling="all", cache_dir=cache))
    folder = cache / year_folder(2016)
    assert (folder / "manifest.json").is_file()
    assert np.load(folder / "21.x20.npy").dtype == np.int16 and np.load(folder / "21.x20.npy").shape[1:] == (6, 6, 6)
    assert np.load(folder / "21.label.npy").dtype == np.uint8 and np.load(folder / "21.doy.npy").dtype == np.int16
    assert not list(folder.glob(".*"))  # no temporary file left behind
    forbid_sources(monkeypatch)
    second = MTLCCDataset(root, "test", date_sampling="all", cache_dir=cache)
    assert all(info.cached for info in second.tiles)
    for samples in (first, all_samples(second)):
        for left, right in zip(direct, samples, strict=True):
            assert all(torch.equal(left[key], right[key]) for key in ("image", "ndvi", "days", "label"))


def test_cli_converts_everything_once(written, tmp_path, monkeypatch, capsys):
    root, cache = written["tfrecord"]["root"], tmp_path / "cache"
    assert mtlcc.main(["--root", str(root), "--cache_dir", str(cache), "--year", "2017"]) == 0
    assert "7 listed, 0 missing, 0 cached, 7 converted" in capsys.readouterr().out
    assert mtlcc.main(["--root", str(root), "--cache_dir", str(cache), "--year", "2017"]) == 0
    assert "0 converted" in capsys.readouterr().out
    forbid_sources(monkeypatch)
    dataset = MTLCCDataset(root, "train", year=2017, n_dates=3, cache_dir=cache)
    assert dataset[0]["image"].shape == (3, 13, SIZE, SIZE)


def test_a_binary_classes_file_is_one_line(tmp_path):
    from utils.datasets.mtlcc_sources import read_classes

    path = tmp_path / "classes.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00binary")
    with pytest.raises(DataError, match="classes.txt: not a text file"):
        read_classes(path)


@pytest.mark.parametrize(
    "dates, words",
    [
        ("unsorted", "not strictly increasing"),
        ("day_401", "dates/doy 401 is not a day of 2016"),
        ("year_0", "dates/year 0 is not a year"),
    ],
)
def test_impossible_or_unsorted_record_dates_are_one_line(tmp_path, dates, words):
    """A record's (year, day of year) used to roll into the next year (day 401), crash (year 0) or be
    taken in any order: each is refused naming the file."""
    from utils.datasets.mtlcc_writers import _write_tfrecord, make_tile

    tile = make_tile(1, 12, 4, 2016, 0)
    path = tmp_path / "1.tfrecord.gz"
    if dates == "unsorted":
        tile["dates"] = tile["dates"][::-1]
        _write_tfrecord(path, tile, None)
    else:
        _write_tfrecord(path, tile, None)
        # rewrite the last frame's day or year in the serialised example (the writer only takes real dates)
        features = {key: value[0] if len(value) == 1 else np.asarray(value) for key, value in read_examples(path)[0].items()}
        doy = np.frombuffer(features["dates/doy"], dtype="<i8").copy()  # bytes lists of the writer's format
        years = np.frombuffer(features["dates/year"], dtype="<i8").copy()
        if dates == "day_401":
            doy[-1] = 401
        else:
            years[-1] = 0
        features["dates/doy"], features["dates/year"] = doy.tobytes(), years.tobytes()
        write_examples(path, [features])
    with pytest.raises(DataError, match=words) as info:
        read_tfrecord_tile(path)
    assert path.name in str(info.value)
