"""Tests of components/config.py: command-line overrides of any config key."""
import argparse

import pytest

from components.config import DEFAULT_SETTINGS as cfg
from components.config import add_config_arguments, config_from_args


def parse(*argv, skip=()):
    parser = add_config_arguments(argparse.ArgumentParser(), skip=skip)
    return config_from_args(parser.parse_args(list(argv)))


def test_no_overrides_gives_an_independent_copy():
    config = parse()
    assert config == cfg
    config["min_sizes"][0].append(999)
    assert 999 not in cfg["min_sizes"][0]


def test_overrides_of_each_type():
    config = parse("--batch_size", "4", "--init_lr", "0.05", "--min_lr", "1", "--using_crop", "false",
                   "--using_flip", "Yes", "--steps", "[8, 16, 32, 64]", "--min_sizes", "[[12, 20], [32], [64], [128]]",
                   "--input_size", "[120, 160]", "--variances", "(0.1, 0.2)", "--network", "slim",
                   "--lr_decay_epoch", "[3]")
    assert config["batch_size"] == 4 and isinstance(config["batch_size"], int)
    assert config["init_lr"] == 0.05
    assert config["min_lr"] == 1.0 and isinstance(config["min_lr"], float)
    assert config["using_crop"] is False and config["using_flip"] is True
    assert config["steps"] == [8, 16, 32, 64]
    assert config["min_sizes"] == [[12, 20], [32], [64], [128]]
    assert config["input_size"] == (120, 160) and isinstance(config["input_size"], tuple)
    assert config["variances"] == [0.1, 0.2] and isinstance(config["variances"], list)
    assert config["network"] == "slim"
    assert config["lr_decay_epoch"] == [3]
    assert cfg["batch_size"] == 32 and cfg["network"] == "rfb_pan"     # the defaults are untouched


def test_tuple_written_as_tuple_and_dict_override():
    config = parse("--input_size", "(480, 640)", "--label_aliases", "{'with_mask': 'mask'}")
    assert config["input_size"] == (480, 640)
    assert config["label_aliases"] == {"with_mask": "mask"}


@pytest.mark.parametrize("key, value", [("batch_size", "abc"), ("init_lr", "fast"), ("using_crop", "maybe"),
                                        ("steps", "[8, 16"), ("input_size", "(240, 320"),
                                        ("batch_size", "2.5"), ("input_size", "240"), ("steps", "8"),
                                        ("using_crop", "1.5"), ("label_aliases", "['mask']")])
def test_bad_value_raises_naming_the_key(key, value):
    with pytest.raises(ValueError, match=f"--{key}"):
        parse(f"--{key}", value)


def test_skipped_keys_have_no_flag():
    parser = add_config_arguments(argparse.ArgumentParser(), skip=("seed",))
    with pytest.raises(SystemExit):
        parser.parse_args(["--seed", "3"])


def test_quality_targets_refused_with_the_focal_loss():
    with pytest.raises(ValueError, match="--quality_targets"):
        parse("--quality_targets", "true", "--focal_gamma", "2")


@pytest.mark.parametrize("key, value", [("batch_size", "0"), ("batch_size", "-4"), ("epoch", "0"),
                                        ("init_lr", "0.0"), ("input_size", "(0, 320)"),
                                        ("nms_threshold", "1.5"), ("min_sizes", "[[10]]"), ("min_positives", "-1"),
                                        ("min_positive_iou", "1.2"), ("soft_nms_sigma", "-0.5"),
                                        ("diou_loss_weight", "-1"), ("focal_gamma", "-2")])
def test_out_of_range_value_raises_naming_the_key(key, value):
    with pytest.raises(ValueError, match=f"--{key}"):
        parse(f"--{key}", value)


def test_default_is_one_pass_and_tta_turns_on_the_flip_test_and_three_scales():
    single = parse()
    assert single["flip_test"] is False and single["test_scales"] == [1] and single["tta"] is False
    tta = parse("--tta")     # a boolean flag alone means true
    assert tta["flip_test"] is True and tta["test_scales"] == [1, 2, 0.5]
    assert parse("--tta", "false")["flip_test"] is False


def test_an_explicit_flag_wins_over_tta():
    config = parse("--tta", "--flip_test", "False", "--test_scales", "[1, 2]")
    assert config["flip_test"] is False and config["test_scales"] == [1, 2]
