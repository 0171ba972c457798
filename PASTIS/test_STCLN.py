"""Test a fine-tuned STCLN on PASTIS (full 128x128 fold-4 patches by default).

    python PASTIS/test_STCLN.py --data_root data/PASTIS --checkpoint checkpoints/finetune/pastis/best.tar
    python PASTIS/test_STCLN.py --data_root data/PASTIS --checkpoint best.tar --protocol utae --sta_chunk 4096

Writes test_<protocol>/metrics.json, metrics.md, confusion_matrix.png and prediction_maps.png
under --output_dir. --sta_chunk bounds the memory of the 16384 x 16384 STA attention (exact).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the one sys.path edit: allows `python PASTIS/...`

from utils.finetune import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("pastis", __doc__.splitlines()[0], eval_only=True))
