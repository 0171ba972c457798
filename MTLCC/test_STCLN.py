"""Test a fine-tuned STCLN on MTLCC eval tiles (30 evenly spaced dates, deterministic).

    python MTLCC/test_STCLN.py --data_root data/MTLCC --checkpoint checkpoints/finetune/mtlcc/best.tar

Pixels are scored by their true class only (unknown excluded); unlike the reference, no pixel is
dropped because of its predicted class (docs/method.md §4.2).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the one sys.path edit: allows `python MTLCC/...`

from utils.finetune import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("mtlcc", __doc__.splitlines()[0], eval_only=True))
