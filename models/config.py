"""The one configuration object of the STCLN model.

Every size lives here, and ``dataclasses.asdict(config)`` is stored in every checkpoint under
``model_config`` so any script can rebuild the exact model from a file (nanoGPT's ``GPTConfig``).
Defaults reproduce the authors' released model (docs/method.md §1.1); each improvement over
the reference is a field whose default keeps the paper's behaviour.
"""

from dataclasses import asdict, dataclass, fields

POSITION_MODES = ("index", "doy")
STA_SCALES = ("d_model", "d_model_t")
MASK_TOKEN_MODES = ("scalar", "band")


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

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)
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

    def to_dict(self) -> dict:
        """Plain-type dict for checkpoints (loads with ``weights_only=True``)."""
        out = asdict(self)
        out["widths"] = list(self.widths)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "STCLNConfig":
        """Rebuild from :meth:`to_dict` output; unknown keys are an error, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown STCLNConfig fields: {sorted(unknown)}")
        return cls(**values)


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
