"""The image sources a run reads (``--sources``): names, aliases, channels and on-disk names.

PASTIS-R (Sainte Fare Garnot et al., ISPRS J. 2022) stores each source of a patch under
``DATA_<SOURCE>/<SOURCE>_<ID_PATCH>.npy``, its dates in ``metadata.geojson`` under ``dates-<SOURCE>``
and its normalisation statistics in ``NORM_<SOURCE>_patch.json`` (utae-paps ``src/dataset.py``).
The three sources of the release:

* ``S2``: Sentinel-2 L2A, 10 bands (the primary source of the paper's single-source model);
* ``S1A``: Sentinel-1 ascending orbit, 3 channels (VV, VH, VV/VH ratio, all in dB: PASTIS/README.md);
* ``S1D``: Sentinel-1 descending orbit, same channels.

On the command line ``S1`` stands for ``S1A S1D``. The first source listed is the primary one: it
keeps the sample's ``image``/``days``/``ndvi`` keys; every further source ``s`` adds ``image_<s>``
and ``days_<s>`` (utils/datasets/CONTRACT.md).
"""

import re
from collections.abc import Sequence

PRIMARY_DEFAULT = "S2"
S2_BAND_NAMES = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
S1_BAND_NAMES = ("VV", "VH", "VV/VH")  # dB; the third channel is VV_dB - VH_dB (PASTIS/README.md)
KNOWN_SOURCES = ("S2", "S1A", "S1D")  # PASTIS-R and the embedded synthetic set
RADAR_SOURCES = ("S1A", "S1D")
SOURCE_ALIASES = {"S1": RADAR_SOURCES}
SOURCE_BAND_NAMES = {"S2": S2_BAND_NAMES, "S1A": S1_BAND_NAMES, "S1D": S1_BAND_NAMES}
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9]*")  # a folder data set's own source names (file-name safe)


def expand_sources(names: Sequence[str]) -> tuple[str, ...]:
    """``--sources`` values -> ordered source names: aliases expanded (``S1`` -> ``S1A S1D``), each once.

    Raises:
        ValueError: empty list, a name listed twice, or a name that is not file-name safe.
    """
    expanded: list[str] = []
    for name in names:
        for source in SOURCE_ALIASES.get(name, (name,)):
            if not NAME_PATTERN.fullmatch(source):
                raise ValueError(f"--sources: {source!r} is not a source name (letters and digits, e.g. S2 S1A S1D)")
            if source in expanded:
                raise ValueError(f"--sources: {source} is listed twice ({' '.join(names)})")
            expanded.append(source)
    if not expanded:
        raise ValueError("--sources: give at least one source, e.g. S2 or S2 S1")
    return tuple(expanded)


def data_dir(source: str) -> str:
    """Folder of a source's series under the data root, e.g. ``DATA_S1A``."""
    return f"DATA_{source}"


def file_name(source: str, patch_id: int) -> str:
    """File name of one patch's series of ``source``, e.g. ``S1A_10000.npy``."""
    return f"{source}_{patch_id}.npy"


def norm_file(source: str) -> str:
    """Normalisation statistics of ``source``, e.g. ``NORM_S1A_patch.json``."""
    return f"NORM_{source}_patch.json"


def dates_key(source: str) -> str:
    """The ``metadata.geojson`` property holding a source's dates, e.g. ``dates-S1A``."""
    return f"dates-{source}"
