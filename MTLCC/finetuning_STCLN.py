"""Label-limited fine-tuning of STCLN on MTLCC (48x48 tiles, 30 dates), then testing.

    python MTLCC/finetuning_STCLN.py --data_root data/MTLCC --pretrain_pth checkpoint_99.utae.tar
    python MTLCC/finetuning_STCLN.py --data_root data/MTLCC --year 2017 --temporal even:12 --pretrain_pth ...

Paper protocol (docs/method.md §3): the authors' 6 tiles per class from train_fold0,
validation on their test_fold0 tiles, test on eval tiles; unknown (class 0) ignored; Adam 1e-4,
100 epochs. --data_root is required; --dataset synthetic runs on the embedded synthetic data set
written in the MTLCC formats instead.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the one sys.path edit: allows `python MTLCC/...`

from utils.finetune import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("mtlcc", __doc__.splitlines()[0]))
