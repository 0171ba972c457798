"""What a built data set hands to the scripts (DataInfo, DataBundle) and the labelled-subset draw,
shared by utils/data.py and utils/data_folder.py (which utils/data.py imports, never the reverse)."""

import json
import logging
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset, Subset

from utils.data_spec import DataSpec
from utils.datasets import label_ratio_subset
from utils.errors import DataError, STCLNError
from utils.metrics import EvalProtocol

log = logging.getLogger("stcln")
SMOKE_CROP = 8  # --smoke patches are 16x16: crops of 8 keep the crop/grid code paths


@dataclass
class DataInfo:
    """What the model, loss and reports need to know about a data set."""

    in_channels: int
    num_classes: int
    classes: list
    ignore_index: int | None
    background_index: int | None
    red_index: int
    nir_index: int
    rgb_indices: tuple
    colormap: tuple
    protocols: dict[str, EvalProtocol]
    ndvi_gate: bool = True  # the masking's vegetation gate can be computed (red/NIR, or an NDVI band)
    sources: tuple[str, ...] = ("S2",)  # image sources, primary first (in_channels is the primary's)
    source_channels: dict[str, int] | None = None  # channels per source (None: the primary only, in_channels)

    @property
    def extra_sources(self) -> tuple[str, ...]:
        """Sources after the primary (``STCLNConfig.extra_sources``)."""
        return tuple(self.sources[1:])

    @property
    def extra_channels(self) -> tuple[int, ...]:
        """Channels of :attr:`extra_sources`, aligned (``STCLNConfig.extra_channels``)."""
        return tuple(self.source_channels[source] for source in self.extra_sources) if self.source_channels else ()


@dataclass
class DataBundle:
    train: Dataset | None
    val: Dataset | None
    test: Dataset | None
    info: DataInfo


def labelled_subset(spec: DataSpec, full: Dataset, classes: np.ndarray) -> Dataset:
    """A seeded, class-stratified ``spec.label_ratio`` of ``full`` (``classes``: each sample's dominant class)."""
    if not 0.0 < spec.label_ratio <= 1.0:
        raise STCLNError(f"--label_ratio must be in (0, 1], got {spec.label_ratio}")
    scored = int((np.asarray(classes) >= 0).sum())
    if scored == 0:
        raise DataError(f"--label_ratio: none of the {len(full)} training samples has a labelled crop pixel")
    index = label_ratio_subset(classes, spec.label_ratio, spec.seed)
    log.info(
        "labelled subset: %d of the %d samples with a crop pixel (%d without one are never drawn; "
        "--label_ratio %g, class-stratified, seed %d)",
        len(index),
        scored,
        len(full) - scored,
        spec.label_ratio,
        spec.seed,
    )
    return Subset(full, [int(i) for i in index])


def listed_subset(spec: DataSpec, full: Dataset) -> Dataset:
    """The training samples whose ids ``spec.label_ids`` lists (--label_subset ids), in ``full``'s order.

    The file is JSON: a list of sample ids ('<ID_PATCH>', or '<ID_PATCH>@<top>,<left>' of a grid crop: the
    samples' ``id``), or an object whose 'labelled' member is that list (the round files of the label-efficiency
    study's --selection). An id that is not a training sample, or listed twice, is a DataError.
    """
    path = spec.label_ids
    if path is None:
        raise STCLNError("--label_subset ids needs --label_ids FILE")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (--label_ids)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read the --label_ids file ({err})") from None
    listed = data.get("labelled") if isinstance(data, dict) else data
    if not isinstance(listed, list) or not listed or not all(isinstance(i, str) for i in listed):
        raise DataError(
            f"{path}: --label_ids needs a non-empty JSON list of sample ids (strings), or an object with one as 'labelled'"
        )
    if len(set(listed)) < len(listed):
        twice = next(i for i in listed if listed.count(i) > 1)
        raise DataError(f"{path}: sample id {twice!r} is listed twice")
    index = {sample_id: k for k, sample_id in enumerate(full.sample_ids)}
    outside = [i for i in listed if i not in index]
    if outside:
        raise DataError(
            f"{path}: {len(outside)} id(s) are not samples of the training split (e.g. {outside[0]!r}; "
            f"its ids look like {next(iter(index))!r})"
        )
    log.info("labelled subset: the %d samples listed in %s (of %d training samples)", len(listed), path, len(full))
    return Subset(full, sorted(index[i] for i in listed))


def training_subset(spec: DataSpec, full: Dataset, subset: str) -> Dataset:
    """The labelled training samples of a PASTIS-layout or folder grid set: all, a ratio or the listed ids."""
    if subset == "all":
        return full
    if subset == "ids":
        return listed_subset(spec, full)
    return labelled_subset(spec, full, full.dominant_classes())
