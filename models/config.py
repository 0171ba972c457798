"""The one configuration object of the STCLN model.

Every size lives here, and ``dataclasses.asdict(config)`` is stored in every checkpoint under
``model_config`` so any script can rebuild the exact model from a file (nanoGPT's ``GPTConfig``).
Defaults reproduce the authors' released model (docs/method.md §1.1); each improvement over
the reference is a field whose default keeps the paper's behaviour.
"""

from dataclasses import asdict, dataclass, fields, replace

POSITION_MODES = ("index", "doy")
STA_SCALES = ("d_model", "d_model_t")
MASK_TOKEN_MODES = ("scalar", "band")
FUSION_MODES = ("late", "merged")


@dataclass
class STCLNConfig:
    """Sizes and switches of STCLN.

    Attributes:
        in_channels: spectral bands C (PASTIS 10, MTLCC 13).
        num_classes: output classes K (PASTIS 20, MTLCC 18).
        widths: channels of the two DoubleConv blocks of the per-date CNN; the last is d_model.
        n_heads: attention heads of the temporal Transformer (and GroupNorm groups).
        n_layers: temporal Transformer layers.
        d_ffn: hidden width of the Transformer feed-forward block.
        dropout: dropout of attention and feed-forward blocks.
        pe_period: period T of the sinusoidal positional encoding (U-TAE uses 1000).
        positions: "index" feeds the date index 0..T-1 (paper); "doy" feeds the acquisition day.
        use_pad_mask: if True, padded time steps never change any output (key-padding mask,
            masked GroupNorm, masked max-pool and STA). False reproduces the reference.
        use_valid_mask: if True and the data carries per-cell validity (cloud masks, ``valid``),
            invalid cells never change any output: their input is zeroed before the CNN, and per
            pixel they are left out of the temporal attention keys, the temporal GroupNorm, the STA
            dot products and the temporal max-pool (``--drop_invalid``). False (paper): every
            observation is used as it is.
        sta_scale: "d_model" divides STA logits by sqrt(d_model) (paper); "d_model_t" by
            sqrt(d_model * T_valid), the dimension the dot product actually runs over.
        sta_chunk: queries per STA chunk (0 = all at once). Exact; bounds memory at inference.
        mask_token: "scalar" shares one learnable token over bands (paper); "band" has one per band.
        extra_sources: names of the sources besides the primary one (``in_channels``), e.g.
            ("S1A", "S1D"); empty (paper) is the single-source model, unchanged.
        extra_channels: bands of each extra source, aligned with ``extra_sources``.
        fusion: how the sources meet (docs/model.md, "Several sources"): "late" encodes every
            source with its own CNN and Transformer on its own dates and adds each extra source's
            STA output, projected, to the primary's before the classifier; "merged" encodes every
            source with its own CNN, then runs ONE Transformer over the joint sequence of all
            frames, positioned by acquisition day (needs ``positions="doy"``) plus a learned
            per-source embedding. Ignored without extra sources.
    """

    in_channels: int = 10
    num_classes: int = 20
    widths: tuple[int, ...] = (32, 256)
    n_heads: int = 8
    n_layers: int = 3
    d_ffn: int = 1024
    dropout: float = 0.1
    pe_period: float = 1000.0
    positions: str = "index"
    use_pad_mask: bool = False
    use_valid_mask: bool = False
    sta_scale: str = "d_model"
    sta_chunk: int = 0
    mask_token: str = "scalar"
    extra_sources: tuple[str, ...] = ()
    extra_channels: tuple[int, ...] = ()
    fusion: str = "late"

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)
        self.extra_sources = tuple(str(s) for s in self.extra_sources)
        self.extra_channels = tuple(int(c) for c in self.extra_channels)
        if len(self.extra_channels) != len(self.extra_sources):
            raise ValueError(
                f"extra_channels {self.extra_channels} must give one band count per extra source {self.extra_sources}"
            )
        if len(set(self.extra_sources)) != len(self.extra_sources) or not all(
            s.isidentifier() for s in self.extra_sources
        ):
            raise ValueError(f"extra_sources must be distinct identifiers, got {self.extra_sources}")
        if any(c < 1 for c in self.extra_channels):
            raise ValueError(f"extra_channels must be >= 1, got {self.extra_channels}")
        if self.fusion not in FUSION_MODES:
            raise ValueError(f"fusion must be one of {FUSION_MODES}, got {self.fusion!r}")
        if self.extra_sources and self.fusion == "merged" and self.positions != "doy":
            raise ValueError(
                "fusion='merged' places the frames of every source on one time axis: it needs "
                "positions='doy' (date indices of different sources are not comparable)"
            )
        if len(self.widths) != 2:
            raise ValueError(f"widths must have 2 entries (CNN width, d_model), got {self.widths}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model={self.d_model} must split into {self.n_heads} even heads")
        for name, value, allowed in (
            ("positions", self.positions, POSITION_MODES),
            ("sta_scale", self.sta_scale, STA_SCALES),
            ("mask_token", self.mask_token, MASK_TOKEN_MODES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")

    @property
    def d_model(self) -> int:
        """Feature width D of both branches (the CNN's last width)."""
        return self.widths[-1]

    def extra_source_channels(self) -> dict[str, int]:
        """Bands of every extra source by name (empty for the single-source model)."""
        return dict(zip(self.extra_sources, self.extra_channels))

    def to_dict(self) -> dict:
        """Plain-type dict for checkpoints (loads with ``weights_only=True``)."""
        out = asdict(self)
        out["widths"] = list(self.widths)
        out["extra_sources"] = list(self.extra_sources)
        out["extra_channels"] = list(self.extra_channels)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "STCLNConfig":
        """Rebuild from :meth:`to_dict` output; unknown keys are an error, not ignored. Fields a
        file predates (e.g. ``extra_sources`` in checkpoints written before it) take their default."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown STCLNConfig fields: {sorted(unknown)}")
        return cls(**values)


def with_sources(config: STCLNConfig, sources, source_channels: dict, fusion: str | None = None) -> STCLNConfig:
    """``config`` for the ordered ``sources`` of a data set (its ``sources`` and ``source_channels``
    attributes): the first is the primary (``in_channels``), the others become ``extra_sources``.
    ``fusion`` None keeps ``config.fusion``. One source gives the single-source model."""
    sources = tuple(sources)
    if not sources or any(name not in source_channels for name in sources):
        raise ValueError(f"sources {list(sources)} need a band count each, got {source_channels}")
    return replace(
        config,
        in_channels=int(source_channels[sources[0]]),
        extra_sources=sources[1:],
        extra_channels=tuple(int(source_channels[name]) for name in sources[1:]),
        fusion=config.fusion if fusion is None else fusion,
    )


def paper_config(dataset: str, **overrides) -> STCLNConfig:
    """The configuration the authors ran on ``dataset`` ('pastis' or 'mtlcc')."""
    sizes = {"pastis": dict(in_channels=10, num_classes=20), "mtlcc": dict(in_channels=13, num_classes=18)}
    if dataset not in sizes:
        raise ValueError(f"dataset must be one of {sorted(sizes)}, got {dataset!r}")
    return STCLNConfig(**{**sizes[dataset], **overrides})


def tiny_config(**overrides) -> STCLNConfig:
    """A small model for tests and the CPU demo (same structure, smaller widths; ~34k parameters)."""
    base = dict(widths=(8, 32), n_heads=4, n_layers=2, d_ffn=64)
    return STCLNConfig(**{**base, **overrides})


def small_config(**overrides) -> STCLNConfig:
    """Between tiny and paper: widths 16/64, 4 heads, 2 layers, FFN 128 (~131k parameters on PASTIS).

    Room for both reconstruction and class features on CPU-sized studies, where tiny may be too small.
    """
    base = dict(widths=(16, 64), n_heads=4, n_layers=2, d_ffn=128)
    return STCLNConfig(**{**base, **overrides})


PRESETS = {"paper": STCLNConfig, "small": small_config, "tiny": tiny_config}
