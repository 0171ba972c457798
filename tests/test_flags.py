"""Flags that used to be accepted and then ignored: refused in one line (argparse, exit 2) before any work."""

import pytest

import pretrain_STCLN
from utils import finetune


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--compile_backend", "aot_eager"], "--compile_backend aot_eager needs --compile"),
        (["--n_dates", "12"], "--n_dates 12 samples dates of MTLCC tiles only"),
    ],
)
def test_an_ignored_flag_is_refused(tmp_path, capsys, extra, words):
    argv = ["--dataset", "synthetic", "--smoke", "--output_dir", str(tmp_path / "out"), *extra]
    for run in (lambda: pretrain_STCLN.main(argv), lambda: finetune.main("pastis", "fine-tuning", argv)):
        with pytest.raises(SystemExit) as stop:
            run()
        assert stop.value.code == 2 and words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_compile_backend_defaults_to_inductor_with_compile():
    args = finetune.parse_args("pastis", "fine-tuning", ["--dataset", "synthetic", "--smoke", "--compile"])
    assert args.compile_backend == "inductor"
    assert (
        finetune.parse_args("pastis", "fine-tuning", ["--dataset", "synthetic", "--smoke"]).compile_backend
        == "inductor"
    )
