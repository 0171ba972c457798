"""results/gpu_check/gpu_check/pretext_curves.png: the masked-cell MSE per epoch of the GPU pre-trainings, read from
their logs (their TensorBoard folders stayed on the GPU machine): cell masking, tiny and small model
(results/gpu_check/gpu_check.sh), then block and frame masking, tiny model (results/gpu_check/gpu_check2.sh).

    python results/gpu_check/gpu_check_figure.py
"""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from utils.figures import pretext_curves_figure, save_figure  # noqa: E402

DOCS = Path(__file__).parent
HERE = DOCS / "gpu_check"
LINE = re.compile(
    r"epoch (\d+)/\d+  loss ([\d.]+) .* pretext MSE model ([\d.]+) / neighbour mean ([\d.]+) "
    r"/ temporal interp ([\d.]+)"
)


def history(log: Path) -> list[dict]:
    keys = ("epoch", "loss", "model", "neighbour_mean", "temporal_interp")
    return [dict(zip(keys, (int(m[1]), *map(float, m.groups()[1:])))) for m in LINE.finditer(log.read_text())]


if __name__ == "__main__":
    histories = {f"{size} model (H200), cell": history(HERE / f"pretext_{size}.log") for size in ("tiny", "small")}
    for mode in ("block", "frame"):
        histories[f"tiny model (H200), {mode}"] = history(DOCS / "gpu_check2" / f"pretext_{mode}.log")
    save_figure(pretext_curves_figure(histories), HERE / "pretext_curves.png")
    for name, epochs in histories.items():
        first = next((e["epoch"] for e in epochs if e["model"] < e["neighbour_mean"]), None)
        print(
            f"{name}: {len(epochs)} epochs, below the neighbour mean from epoch {first}, last "
            f"{epochs[-1]['model']:.5f} vs {epochs[-1]['neighbour_mean']:.5f}"
        )
