"""Tests of components/lr_scheduler.py: linear warm-up, step decay, floor at min_lr."""
import numpy as np
import pytest

from components.lr_scheduler import WarmupMultiStepLR, schedule_from_config

STEPS_PER_EPOCH = 10


def lr_at(schedule, step):
    return float(schedule(step))


@pytest.fixture
def schedule():
    return WarmupMultiStepLR(init_lr=1e-2, lr_decay_epoch=[10, 15], lr_rate=0.1, warmup_epoch=3, min_lr=1e-4,
                             steps_per_epoch=STEPS_PER_EPOCH)


def test_warmup_rises_linearly_from_min_lr_to_init_lr(schedule):
    warmup_steps = 3 * STEPS_PER_EPOCH
    values = np.array([lr_at(schedule, step) for step in range(warmup_steps + 1)])
    expected = 1e-4 + (1e-2 - 1e-4) * np.arange(warmup_steps + 1) / warmup_steps
    np.testing.assert_allclose(values, expected, rtol=1e-5)
    assert values[0] == pytest.approx(1e-4)
    assert values[-1] == pytest.approx(1e-2)
    assert np.all(np.diff(values) > 0)


def test_step_decay_at_each_decay_epoch(schedule):
    assert lr_at(schedule, 3 * STEPS_PER_EPOCH) == pytest.approx(1e-2)
    assert lr_at(schedule, 10 * STEPS_PER_EPOCH - 1) == pytest.approx(1e-2)
    assert lr_at(schedule, 10 * STEPS_PER_EPOCH) == pytest.approx(1e-3)
    assert lr_at(schedule, 15 * STEPS_PER_EPOCH - 1) == pytest.approx(1e-3)
    assert lr_at(schedule, 15 * STEPS_PER_EPOCH) == pytest.approx(1e-4)
    assert lr_at(schedule, 1000 * STEPS_PER_EPOCH) == pytest.approx(1e-4)


def test_never_below_min_lr():
    schedule = WarmupMultiStepLR(1e-2, [2, 4, 6], 0.01, 1, 1e-4, STEPS_PER_EPOCH)
    values = [lr_at(schedule, step) for step in range(0, 100)]
    assert min(values) == pytest.approx(1e-4)
    assert all(value >= 1e-4 * (1 - 1e-6) for value in values)
    assert lr_at(schedule, 2 * STEPS_PER_EPOCH) == pytest.approx(1e-4)   # 1e-2 * 0.01 = 1e-4


def test_without_warmup_or_decay():
    schedule = WarmupMultiStepLR(5e-3, [], 0.1, 0, 1e-4, STEPS_PER_EPOCH)
    assert [lr_at(schedule, step) for step in (0, 5, 500)] == pytest.approx([5e-3] * 3)


def test_schedule_from_config_and_round_trip():
    from components.config import DEFAULT_SETTINGS
    train = DEFAULT_SETTINGS.train
    schedule = schedule_from_config(train, 7)
    assert lr_at(schedule, 0) == pytest.approx(train.min_lr)
    assert lr_at(schedule, 7 * train.warmup_epoch) == pytest.approx(train.init_lr)
    assert lr_at(schedule, 7 * train.lr_decay_epoch[0]) == pytest.approx(train.init_lr * train.lr_rate)
    clone = WarmupMultiStepLR.from_config(schedule.get_config())
    assert [lr_at(clone, s) for s in (0, 20, 800)] == pytest.approx([lr_at(schedule, s) for s in (0, 20, 800)])
