"""Tests of components/config.py: the settings schema (typed frozen groups) and command-line overrides of any
setting."""
import argparse
import dataclasses
import json

import pytest

from components.config import (
    CONFIG_HELP,
    DEFAULT_SETTINGS,
    DEFAULTS,
    GROUPS,
    ModelSpec,
    Settings,
    add_config_arguments,
    config_from_args,
    group_keys,
)
from components.errors import ProjectError


def parse(*argv, skip=()):
    parser = add_config_arguments(argparse.ArgumentParser(), skip=skip)
    return config_from_args(parser.parse_args(list(argv)))


def test_no_overrides_gives_the_defaults_which_cannot_change():
    config = parse()
    assert config == DEFAULT_SETTINGS and hash(config) == hash(Settings())
    with pytest.raises(AttributeError):
        config.model.min_sizes[0].append(999)     # tuples all the way down
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.detect.score_threshold = 0.1


def test_overrides_of_each_type():
    config = parse("--batch_size", "4", "--init_lr", "0.05", "--min_lr", "1", "--using_crop", "false",
                   "--using_flip", "Yes", "--steps", "[8, 16, 32, 64]", "--min_sizes", "[[12, 20], [32], [64], [128]]",
                   "--input_size", "[120, 160]", "--variances", "(0.1, 0.2)", "--network", "slim",
                   "--lr_decay_epoch", "[3]")
    assert config.train.batch_size == 4 and isinstance(config.train.batch_size, int)
    assert config.train.init_lr == 0.05
    assert config.train.min_lr == 1.0 and isinstance(config.train.min_lr, float)
    assert config.augment.using_crop is False and config.augment.using_flip is True
    assert config.model.steps == (8, 16, 32, 64)
    assert config.model.min_sizes == ((12, 20), (32,), (64,), (128,))
    assert config.model.input_size == (120, 160) and isinstance(config.model.input_size, tuple)
    assert config.model.variances == (0.1, 0.2) and isinstance(config.model.variances, tuple)
    assert config.model.network == "slim"
    assert config.train.lr_decay_epoch == (3,)
    assert DEFAULT_SETTINGS.train.batch_size == 32 and DEFAULT_SETTINGS.model.network == "rfb_pan"   # untouched


def test_tuple_written_as_tuple_and_dict_override():
    config = parse("--input_size", "(480, 640)", "--label_aliases", "{'with_mask': 'mask'}")
    assert config.model.input_size == (480, 640)
    assert config.data.label_aliases == {"with_mask": "mask"}


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
    assert single.detect.flip_test is False and single.detect.test_scales == (1,) and single.detect.tta is False
    tta = parse("--tta")     # a boolean flag alone means true
    assert tta.detect.flip_test is True and tta.detect.test_scales == (1, 2, 0.5)
    assert parse("--tta", "false").detect.flip_test is False


def test_an_explicit_flag_wins_over_tta():
    config = parse("--tta", "--flip_test", "False", "--test_scales", "[1, 2]")
    assert config.detect.flip_test is False and config.detect.test_scales == (1, 2)


def test_every_setting_is_declared_once_in_one_group_with_a_help_line():
    names = [item.name for kind in GROUPS.values() for item in dataclasses.fields(kind)]
    assert len(names) == len(set(names)) == len(DEFAULTS)
    assert all(CONFIG_HELP[name].strip() for name in names)
    assert group_keys("model") == tuple(item.name for item in dataclasses.fields(ModelSpec))


def test_replace_routes_each_setting_to_its_group_and_checks_it():
    changed = DEFAULT_SETTINGS.replace(score_threshold=0.3, input_size=[300, 400], epoch=3)
    assert (changed.detect.score_threshold, changed.model.input_size, changed.train.epoch) == (0.3, (300, 400), 3)
    assert changed.augment is DEFAULT_SETTINGS.augment          # untouched groups are shared, not copied
    with pytest.raises(ProjectError, match="--score_threshold: must be between 0 and 1, got 1.5"):
        DEFAULT_SETTINGS.replace(score_threshold=1.5)
    with pytest.raises(ProjectError, match="--no_such_setting: unknown setting"):
        DEFAULT_SETTINGS.replace(no_such_setting=1)
    with pytest.raises(ProjectError, match="--label_aliases: .* which --labels_list"):   # checked across groups
        DEFAULT_SETTINGS.replace(labels_list=["background", "face"])


def test_grouped_and_flat_forms_round_trip_through_json():
    settings = DEFAULT_SETTINGS.replace(labels_list=["background", "a", "b"], label_aliases={"x": "a"},
                                        train_tfrecord="one.tfrecord", test_scales=[1, 2], ema_decay=0.5)
    grouped = json.loads(json.dumps(settings.as_dict()))
    assert set(grouped) == set(GROUPS) and grouped["detect"]["test_scales"] == [1, 2]
    assert Settings.from_dict(grouped) == settings
    assert Settings.from_dict(json.loads(json.dumps(settings.flat()))) == settings   # older flat run_config.json
    assert Settings.from_dict({"a_setting_since_removed": 1}) == DEFAULT_SETTINGS


def test_help_lists_only_the_groups_asked_for():
    parser = add_config_arguments(argparse.ArgumentParser(), groups=("detect",), keys=("input_size",))
    flags = {action.dest[len("cfg_"):] for action in parser._actions if action.dest.startswith("cfg_")}
    assert flags == {"input_size", *group_keys("detect")}
    assert "training_data" not in {action.dest[len("cfg_"):] for action in
                                   add_config_arguments(argparse.ArgumentParser())._actions}   # not a flag
