"""--help of every entry point says each flag's default once (not a hand-written default plus argparse's)."""

import argparse
import re

import pytest

import predict_STCLN
import pretrain_STCLN
from utils import finetune, select_labels
from utils.args import HelpFormatter
from utils.datasets import convert

PARSERS = {
    "pretrain_STCLN.py": pretrain_STCLN.get_parser,
    "PASTIS/finetuning_STCLN.py": lambda: finetune.get_parser("pastis", "fine-tuning"),
    "MTLCC/finetuning_STCLN.py": lambda: finetune.get_parser("mtlcc", "fine-tuning"),
    "predict_STCLN.py": predict_STCLN.get_parser,
    "utils.datasets.convert": convert.get_parser,
    "utils.select_labels": select_labels.get_parser,
}


def defaults_said(parser: argparse.ArgumentParser) -> dict[str, int]:
    """Per flag, how many times its rendered help says a default."""
    formatter = parser._get_formatter()
    counts = {}
    for action in parser._actions:
        if action.help in (None, argparse.SUPPRESS):
            continue
        text = formatter._expand_help(action) if action.help else ""
        counts["/".join(action.option_strings) or action.dest] = len(re.findall(r"\bdefault\b", text, flags=re.I))
    return counts


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_flag_says_its_default_at_most_once(name):
    parser = PARSERS[name]()
    assert parser.formatter_class is HelpFormatter
    twice = {flag: n for flag, n in defaults_said(parser).items() if n > 1}
    assert not twice, twice


def test_the_formatter_keeps_a_stated_default_and_adds_a_missing_one():
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument("--stride", type=int, default=None, help="pixels between windows (default: window // 2)")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    assert defaults_said(parser) == {"-h/--help": 0, "--stride": 1, "--lr": 1}
    text = parser.format_help()
    assert "(default: window // 2)" in text and "(default: None)" not in text and "(default: 0.001)" in text
    stock = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    stock.add_argument("--stride", type=int, default=None, help="pixels between windows (default: window // 2)")
    assert defaults_said(stock)["--stride"] == 2  # what every entry point printed before
