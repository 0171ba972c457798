"""One typed description of a run's data (:class:`DataSpec`), built once from the parsed flags or from a
checkpoint's saved ``args`` dict; every builder of data sets and splits (``utils/data.py``,
``utils/data_folder.py``) reads it, as the model is built from ``STCLNConfig``.

The fold fields hold what the flags say (None: not given). ``utils.data.resolve_data_spec`` fills the
unset ones (the paper's folds, or a folder's dataset.json splits) before any split is built.
"""

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from utils.args import data_layout
from utils.datasets.sources import PRIMARY_DEFAULT, expand_sources

FOLD_FLAGS = ("folds", "train_folds", "val_folds", "test_folds")  # pre-training, then fine-tuning splits


@dataclass(frozen=True)
class DataSpec:
    """What the data builders read: which data set, where, which folds, crops, dates and labels.

    Defaults apply to flags a run does not have (pre-training has no label flags, fine-tuning no
    ``--folds``) and to keys missing from an older checkpoint's ``args``.
    """

    dataset: str  # 'synthetic', 'pastis', 'mtlcc' or 'folder' (--dataset)
    synthetic_format: str = "pastis"  # the layout the synthetic set is written in (ignored for real data)
    data_root: Path | None = None  # the data set folder; synthetic: its cache folder (None: under data_cache/)
    synthetic_version: int = 2
    year: int = 2016  # MTLCC year
    crop_size: int = 0  # training crop side in pixels, 0 = whole patches/tiles
    n_dates: int = 0  # MTLCC dates per series, 0 = all
    temporal: str | None = None  # the --temporal text (parsed where the data sets are built)
    seed: int = 0  # crops, date sampling and the labelled-subset draw
    cache_dir: Path | None = None  # MTLCC: .npy cache of the decoded tiles
    smoke: bool = False  # tiny sizes: the smoke synthetic set and SMOKE_CROP crops
    folds: tuple[int, ...] | None = None  # pre-training folds
    train_folds: tuple[int, ...] | None = None
    val_folds: tuple[int, ...] | None = None
    test_folds: tuple[int, ...] | None = None
    label_subset: str | None = None  # 'authors', 'ratio', 'ids', 'all', or None: the data set's default
    label_ratio: float = 0.02  # fraction of the training samples labelled with label_subset 'ratio'
    label_ids: Path | None = None  # label_subset 'ids': a file listing the labelled training samples' ids
    authors_ndvi: bool = False  # pre-training computes NDVI the authors' way: a folder needs red and NIR bands
    sources: tuple[str, ...] = (PRIMARY_DEFAULT,)  # --sources, aliases expanded, primary first
    cloud_fraction: float | None = None  # synthetic v2: fraction of cloudy optical dates (None: the generator's 0.35)

    @classmethod
    def from_args(cls, args: argparse.Namespace | Mapping) -> "DataSpec":
        """The spec of parsed flags, or of a checkpoint's ``args`` dict (paths as strings, folds as lists)."""
        given = dict(args) if isinstance(args, Mapping) else vars(args)
        values = {field.name: given[field.name] for field in fields(cls) if field.name in given}
        for name in ("data_root", "cache_dir", "label_ids"):
            values[name] = Path(values[name]) if values.get(name) else None  # '' (no folder) -> None
        for name in FOLD_FLAGS:
            values[name] = tuple(values[name]) if values.get(name) is not None else None
        if values.get("sources"):  # older checkpoints have none: S2
            values["sources"] = expand_sources(values["sources"])
        else:
            values.pop("sources", None)
        return cls(**values)

    @property
    def extra_sources(self) -> tuple[str, ...]:
        """The sources after the primary one (empty: the paper's single-source data)."""
        return self.sources[1:]

    @property
    def layout(self) -> str:
        """The file layout read: 'pastis', 'mtlcc' or 'folder' (synthetic: its ``synthetic_format``)."""
        return data_layout(self)

    @property
    def synthetic(self) -> bool:
        return self.dataset == "synthetic"

    @property
    def size(self) -> str:
        """The synthetic set's size: 'smoke' or 'full'."""
        return "smoke" if self.smoke else "full"

    def split_folds(self, flag: str) -> list[int]:
        """The folds of ``flag`` (one of :data:`FOLD_FLAGS`) as a list; they must have been resolved."""
        folds = getattr(self, flag)
        if folds is None:
            raise ValueError(f"DataSpec.{flag} is unresolved: build the spec with utils.data.resolve_data_spec")
        return list(folds)
