"""The network's optional parts: the head context block (``head_context``) and its warm start."""
import os

import numpy as np
import pytest
from conftest import REPO_ROOT

from components.config import DEFAULT_SETTINGS


def _context_block_parameters(channels):
    """Depthwise 3x3, its BN (4 values a channel), the 1x1 projection and its BN."""
    return 9 * channels + 4 * channels + channels * channels + 4 * channels


@pytest.fixture(scope="module")
def plain_and_context_models():
    """A model without the blocks holding the shipped model's trained weights, and one with the blocks
    warm-started from it."""
    from network.network import build_model, transfer_weights
    from runtime.adapters import load_keras_model
    shipped = load_keras_model(os.path.join(REPO_ROOT, "checkpoints", "mask_detector.keras"))
    plain = build_model(DEFAULT_SETTINGS)
    transfer_weights(shipped, plain)
    with_context = build_model(DEFAULT_SETTINGS.replace(head_context=True))
    transfer_weights(plain, with_context)
    return plain, with_context


def test_context_blocks_add_their_parameters_only_within_the_budget(plain_and_context_models):
    plain, with_context = plain_and_context_models
    c = DEFAULT_SETTINGS.model.base_channel
    added = _context_block_parameters(4 * c) + _context_block_parameters(8 * c)   # stride-8 and stride-16 maps
    assert with_context.count_params() - plain.count_params() == added
    assert with_context.count_params() <= 1_100_000


def test_a_warm_start_without_the_blocks_starts_unchanged_and_the_blocks_are_wired_in(plain_and_context_models):
    plain, with_context = plain_and_context_models
    images = np.random.default_rng(0).uniform(-1, 1, (1, 240, 320, 3)).astype(np.float32)
    np.testing.assert_allclose(with_context(images).numpy(), plain(images).numpy(), atol=1e-6)
    scale = with_context.get_layer("context8_bn").gamma
    saved = scale.numpy()
    try:
        scale.assign(np.ones_like(saved))
        moved = np.abs(with_context(images).numpy() - plain(images).numpy()).max()
    finally:
        scale.assign(saved)
    assert moved > 1e-3


def test_the_sidecar_keeps_head_context_and_older_sidecars_read_as_off(tmp_path):
    import json

    from runtime.model_files import load_model_config, model_config_path, save_model_config
    model_file = str(tmp_path / "m.keras")
    save_model_config(model_file, DEFAULT_SETTINGS.replace(head_context=True))
    assert load_model_config(model_file).model.head_context is True
    sidecar = json.loads(open(model_config_path(model_file)).read())
    del sidecar["head_context"]
    with open(model_config_path(model_file), "w") as handle:
        json.dump(sidecar, handle)
    assert load_model_config(model_file).model.head_context is False


def test_a_resumed_run_cannot_switch_head_context():
    from components.run_config import ResumeError, resumed_config
    saved = {key: value for key, value in DEFAULT_SETTINGS.flat().items()
             if key != "head_context"}   # a run saved before the key
    settings, _ = resumed_config(saved, {}, DEFAULT_SETTINGS)
    assert settings.model.head_context is False
    with pytest.raises(ResumeError, match="head_context"):
        resumed_config(saved, {"head_context": True}, DEFAULT_SETTINGS)
