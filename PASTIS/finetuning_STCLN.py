"""Label-limited fine-tuning of STCLN on PASTIS, then testing of the best checkpoint.

    python PASTIS/finetuning_STCLN.py --data_root data/PASTIS --pretrain_pth checkpoint_99.sttrans.tar
    python PASTIS/finetuning_STCLN.py --data_root data/PASTIS --label_subset ratio --label_ratio 0.05

Paper protocol (docs/method.md §3): the authors' 2% subset of fold 1 (two 32x32 crops per
patch), validation on their fold-2 subset, test on full fold-4 patches; Adam 1e-4, 100 epochs.
--data_root is required; --dataset synthetic runs on the embedded synthetic data set (PASTIS format).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the one sys.path edit: allows `python PASTIS/...`

from utils.finetune import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("pastis", __doc__.splitlines()[0]))
