"""core.train_config: every TrainConfig field is a flag, generated, and the flags round-trip."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from core.model import ModelConfig
from core.train_config import TrainConfig, add_arguments, config_from_args


def parse(*flags: str) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(list(flags)))


def test_no_flags_give_the_defaults():
    assert parse() == TrainConfig()


# A non-default value for every field, as text on the command line.
CHANGED = {
    "data_dir": ("--data-dir", "elsewhere", "elsewhere"), "data_url": ("--data-url", "http://x/y.zip", "http://x/y.zip"),
    "data_sha256": ("--data-sha256", "ab" * 32, "ab" * 32), "download": ("--no-download", None, False),
    "train_folds": ("--train-folds", "1,2", (1, 2)), "val_fold": ("--val-fold", "3", 3),
    "test_fold": ("--test-fold", "4", 4), "feature_cache": ("--no-cache", None, False),
    "cache_dir": ("--cache-dir", "/c", "/c"), "runs_dir": ("--runs-dir", "/r", "/r"),
    "run_name": ("--run-name", "x", "x"), "epochs": ("--epochs", "7", 7), "batch_size": ("--batch-size", "8", 8),
    "lr": ("--lr", "0.1", 0.1), "weight_decay": ("--weight-decay", "0.2", 0.2), "max_lr": ("--max-lr", "0.3", 0.3),
    "pct_start": ("--pct-start", "0.4", 0.4), "label_smoothing": ("--label-smoothing", "0", 0.0),
    "mixup_alpha": ("--mixup-alpha", "0.5", 0.5), "mixup_prob": ("--mixup-prob", "0", 0.0),
    "freq_mask": ("--freq-mask", "3", 3), "time_mask": ("--time-mask", "4", 4), "seed": ("--seed", "9", 9),
    "device": ("--device", "cpu", "cpu"), "amp": ("--no-amp", None, False),
    "channels_last": ("--no-channels-last", None, False), "eval_batch_size": ("--eval-batch-size", "5", 5),
    "progress": ("--no-progress", None, False),
    "folds": ("--folds", "3", 3), "split_seed": ("--split-seed", "4", 4),
    "clip_seconds": ("--clip-seconds", "2.5", 2.5), "init_from": ("--init-from", "p.pt", "p.pt"),
    "freeze_stages": ("--freeze-stages", "2", 2),
}


@pytest.mark.parametrize("name", [f.name for f in fields(TrainConfig) if f.name not in ("model", "features")])
def test_every_field_has_a_flag_that_sets_it(name):
    flag, text, want = CHANGED[name]  # a KeyError here: a new field needs a row (and gets its flag for free)
    config = parse(flag, *([text] if text is not None else []))
    assert getattr(config, name) == want != getattr(TrainConfig(), name)


def test_model_fields_are_flags_too():
    config = parse("--num-classes", "5", "--stem-channels", "8", "--widths", "8,16", "--depths", "1,2",
                   "--dropout", "0.1")
    assert config.model == ModelConfig(num_classes=5, stem_channels=8, widths=(8, 16), depths=(1, 2), dropout=0.1)


def test_test_fold_zero_means_none_and_bad_lists_are_refused():
    assert parse("--test-fold", "0").test_fold is None
    with pytest.raises(SystemExit):
        parse("--train-folds", "1,x")
