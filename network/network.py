"""The detector: a MobileNet-style SSD with four heads (strides 8, 16, 32, 64), optionally with RFB modules.

``build_model(settings)`` returns a Keras model mapping a float image batch [B, H, W, 3] (normalised as in
``dataset/tf_dataset_preprocess.py``) to raw predictions [B, P, 4 + num_classes]: box offsets
(see ``components.box_utils.encode_boxes``) and class logits, one row per prior of
``components.prior_box.prior_box``. The network is fully convolutional, so H and W may be anything.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

from components.errors import ProjectError

if TYPE_CHECKING:
    from collections.abc import Sequence

    import keras

    from components.config import Settings

layers = tf.keras.layers


BN_MOMENTUM = 0.9  # moving statistics follow the weights closely enough for per-epoch validation


def batch_norm(name: str, gamma_initializer: str = "ones") -> keras.layers.Layer:
    """Batch normalisation; statistics are synchronised across replicas inside a multi-replica strategy."""
    synchronized = tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1
    return layers.BatchNormalization(momentum=BN_MOMENTUM, synchronized=synchronized,
                                     gamma_initializer=gamma_initializer, name=name)


def conv_bn(x: keras.KerasTensor, filters: int, kernel_size: int = 3, strides: int = 1, dilation: int = 1,
            relu: bool = True, name: str | None = None) -> keras.KerasTensor:
    """Convolution, batch norm and (optionally) ReLU."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", dilation_rate=dilation,
                      use_bias=False, name=f"{name}_conv")(x)
    x = batch_norm(f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def conv_dw(x: keras.KerasTensor, filters: int, strides: int = 1, name: str | None = None) -> keras.KerasTensor:
    """MobileNet block: depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU."""
    x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = batch_norm(f"{name}_dw_bn")(x)
    x = layers.ReLU(name=f"{name}_dw_relu")(x)
    return conv_bn(x, filters, kernel_size=1, name=f"{name}_pw")


def basic_rfb(x: keras.KerasTensor, filters: int, scale: float = 1.0, name: str | None = None) -> keras.KerasTensor:
    """Receptive Field Block: three branches of growing dilation (1, 3, 5), fused and added to a shortcut."""
    in_channels = x.shape[-1]
    inter = max(in_channels // 8, 2)
    b0 = conv_bn(x, 2 * inter, 1, name=f"{name}_b0_0")
    b0 = conv_bn(b0, 2 * inter, 3, relu=False, name=f"{name}_b0_1")

    b1 = conv_bn(x, inter, 1, name=f"{name}_b1_0")
    b1 = conv_bn(b1, 2 * inter, 3, name=f"{name}_b1_1")
    b1 = conv_bn(b1, 2 * inter, 3, dilation=3, relu=False, name=f"{name}_b1_2")

    b2 = conv_bn(x, inter, 1, name=f"{name}_b2_0")
    b2 = conv_bn(b2, (inter // 2) * 3, 3, name=f"{name}_b2_1")
    b2 = conv_bn(b2, 2 * inter, 3, name=f"{name}_b2_2")
    b2 = conv_bn(b2, 2 * inter, 3, dilation=5, relu=False, name=f"{name}_b2_3")

    out = layers.Concatenate(name=f"{name}_cat")([b0, b1, b2])
    out = conv_bn(out, filters, 1, relu=False, name=f"{name}_linear")
    if scale != 1.0:
        out = layers.Rescaling(scale, name=f"{name}_scale")(out)
    shortcut = x if in_channels == filters else conv_bn(x, filters, 1, relu=False, name=f"{name}_short")
    out = layers.Add(name=f"{name}_add")([out, shortcut])
    return layers.ReLU(name=f"{name}_relu")(out)


@tf.keras.utils.register_keras_serializable(package="facemask")
class UpsampleLike(layers.Layer):  # type: ignore[name-defined, misc]   # layers = tf.keras.layers, untyped
    """Nearest-neighbour resize of ``inputs[0]`` to the height and width of ``inputs[1]`` (a top-down step
    from stride 2s to stride s: the finer map is ``ceil(size / s)``, not always twice the coarser one)."""

    def call(self, inputs: Sequence[tf.Tensor]) -> tf.Tensor:
        source, reference = inputs
        return tf.image.resize(source, tf.shape(reference)[1:3], method="nearest")

    def compute_output_shape(self, input_shapes: Sequence[tuple[int | None, ...]]) -> tuple[int | None, ...]:
        return input_shapes[1][:3] + input_shapes[0][3:]


def zero_init_projection(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
    """1x1 conv + BN whose scale starts at zero: a neck branch that adds nothing until training grows it, so
    a model with the neck starts as the model without it (warm start from plain ``rfb`` weights)."""
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_conv")(x)
    return batch_norm(f"{name}_bn", gamma_initializer="zeros")(x)


def pan_neck(features: Sequence[keras.KerasTensor], name: str = "neck") -> list[keras.KerasTensor]:
    """Light top-down + bottom-up neck (PANet / YuNet's tiny FPN style) over the stride 8, 16, 32 maps.

    Top-down: stride 32 -> 16 -> 8, each step a zero-initialised 1x1 projection, upsampled and added, so
    the stride-8 head sees deep features. Bottom-up: stride 8 -> 16 -> 32, each a depthwise 3x3 stride-2
    conv and a zero-initialised 1x1 projection, added. Channel counts are unchanged; ``features`` is
    [f8, f16, f32, f64] and so is the result (the stride-64 map passes through).
    """
    f8, f16, f32, f64 = features
    p16 = layers.Add(name=f"{name}_td16")(
        [f16, UpsampleLike(name=f"{name}_td16_up")([zero_init_projection(f32, f16.shape[-1], f"{name}_td16"), f16])])
    p8 = layers.Add(name=f"{name}_td8")(
        [f8, UpsampleLike(name=f"{name}_td8_up")([zero_init_projection(p16, f8.shape[-1], f"{name}_td8"), f8])])

    def down(x, filters, step):
        x = layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, name=f"{name}_bu{step}_dw")(x)
        x = batch_norm(f"{name}_bu{step}_dw_bn")(x)
        x = layers.ReLU(name=f"{name}_bu{step}_dw_relu")(x)
        return zero_init_projection(x, filters, f"{name}_bu{step}")

    n16 = layers.Add(name=f"{name}_bu16")([p16, down(p8, p16.shape[-1], 16)])
    n32 = layers.Add(name=f"{name}_bu32")([f32, down(n16, f32.shape[-1], 32)])
    return [p8, n16, n32, f64]


def context_block(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    """Residual context for a head (as the context module of SSH / RetinaFace, lighter): depthwise 3x3 at
    dilation 2 (a 5x5 field), BN, ReLU and a zero-initialised 1x1 projection added to ``x``, so the block
    starts as the identity and a model warm-started from weights without it starts unchanged."""
    y = layers.DepthwiseConv2D(3, dilation_rate=2, padding="same", use_bias=False, name=f"{name}_dw")(x)
    y = batch_norm(f"{name}_dw_bn")(y)
    y = layers.ReLU(name=f"{name}_dw_relu")(y)
    return layers.Add(name=f"{name}_add")([x, zero_init_projection(y, x.shape[-1], name)])


NETWORKS = ("slim", "rfb", "rfb_pan")


def detection_head(x: keras.KerasTensor, num_anchors: int, num_outputs: int, name: str) -> keras.KerasTensor:
    """Separable 3x3 prediction layer -> [B, H*W*num_anchors, num_outputs]."""
    x = layers.SeparableConv2D(num_anchors * num_outputs, 3, padding="same", name=name)(x)
    return layers.Reshape((-1, num_outputs), name=f"{name}_reshape")(x)


def build_model(settings: Settings, input_size: Sequence[int] | None = None, name: str | None = None) -> keras.Model:
    """Build the detector described by ``settings.model`` (``network``: "slim", "rfb" or "rfb_pan", ``base_channel``,
    ``head_context``: context blocks before the stride-8 and stride-16 heads; classes and anchors per head).

    Args:
        input_size: (h, w) of the Keras input; None (default) builds a model for any size.
    Returns:
        tf.keras.Model: images [B, H, W, 3] float32 -> predictions [B, P, 4 + num_classes] float32.
    """
    spec = settings.model
    if spec.network not in NETWORKS:
        raise ProjectError(f"unknown network {spec.network!r}: expected one of {', '.join(NETWORKS)}")
    c = spec.base_channel
    num_classes = spec.num_classes
    anchors = [len(sizes) for sizes in spec.min_sizes]
    if len(anchors) != 4 or tuple(spec.steps) != (8, 16, 32, 64):
        raise ProjectError("the network has four heads at strides 8, 16, 32, 64; "
                           f"got steps {list(spec.steps)} and {len(anchors)} anchor groups")
    height, width = input_size if input_size else (None, None)
    images = layers.Input(shape=(height, width, 3), name="images")

    x = conv_bn(images, c, 3, strides=2, name="stem")          # /2
    x = conv_dw(x, 2 * c, name="dw1")
    x = conv_dw(x, 2 * c, strides=2, name="dw2")               # /4
    x = conv_dw(x, 2 * c, name="dw3")
    x = conv_dw(x, 4 * c, strides=2, name="dw4")               # /8
    x = conv_dw(x, 4 * c, name="dw5")
    x = conv_dw(x, 4 * c, name="dw6")
    if spec.network in ("rfb", "rfb_pan"):
        x = basic_rfb(x, 4 * c, name="rfb")
    else:
        x = conv_dw(x, 4 * c, name="dw7")
    feature_8 = x
    x = conv_dw(x, 8 * c, strides=2, name="dw8")               # /16
    x = conv_bn(x, 8 * c, 3, name="conv9")
    x = conv_dw(x, 8 * c, name="dw10")
    feature_16 = x
    x = conv_dw(x, 16 * c, strides=2, name="dw11")             # /32
    x = conv_dw(x, 16 * c, name="dw12")
    feature_32 = x
    x = conv_bn(x, 4 * c, 1, name="extra_reduce")
    x = conv_dw(x, 16 * c, strides=2, name="extra_dw")         # /64
    x = conv_bn(x, 16 * c, 3, name="extra_conv")
    feature_64 = x
    features = [feature_8, feature_16, feature_32, feature_64]
    if spec.network == "rfb_pan":
        features = pan_neck(features)
    if spec.head_context:
        features = [context_block(features[0], "context8"), context_block(features[1], "context16"), *features[2:]]

    locations, logits = [], []
    for index, feature in enumerate(features):
        locations.append(detection_head(feature, anchors[index], 4, name=f"loc_head{index}"))
        logits.append(detection_head(feature, anchors[index], num_classes, name=f"conf_head{index}"))
    locations = layers.Concatenate(axis=1, name="locations")(locations)
    logits = layers.Concatenate(axis=1, name="logits")(logits)
    outputs = layers.Concatenate(axis=-1, name="predictions", dtype="float32")([locations, logits])
    return tf.keras.Model(images, outputs, name=name or f"{spec.network}_ssd")


def transfer_weights(source: keras.Model, target: keras.Model) -> tuple[list[str], list[str]]:
    """Copy into ``target`` the weights of every layer of ``source`` with the same name and weight shapes
    (warm start / fine-tuning: the backbone of a trained model, new heads when the class count differs).

    Returns (names of the layers copied, names of ``target``'s layers with weights that were not).
    """
    by_name = {layer.name: layer for layer in source.layers}
    copied, fresh = [], []
    for layer in target.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        match = by_name.get(layer.name)
        source_weights = match.get_weights() if match is not None else None
        if source_weights is not None and [w.shape for w in source_weights] == [w.shape for w in weights]:
            layer.set_weights(source_weights)
            copied.append(layer.name)
        else:
            fresh.append(layer.name)
    return copied, fresh


def transfer_class_rows(source: keras.Model, target: keras.Model, source_labels: Sequence[str],
                        target_labels: Sequence[str], prefix: str = "conf_head") -> list[str]:
    """Fine-tuning to another class list: in each class head (``prefix``*) of ``target`` that
    :func:`transfer_weights` could not copy, take the depthwise weights and, per anchor, the output rows of
    every class ``source_labels`` and ``target_labels`` share by name (background included) from
    ``source``; the rows of new classes start from a tenth of their fresh initialisation and the lowest class
    bias of ``source`` (so they are rare at first and do not drown the known classes).

    Heads are [..., anchors * classes] channels, class fastest (see ``detection_head``). Returns the names of
    the layers so filled.
    """
    shared = [(source_labels.index(name), index) for index, name in enumerate(target_labels) if name in source_labels]
    by_name = {layer.name: layer for layer in source.layers}
    filled = []
    for layer in target.layers:
        match = by_name.get(layer.name)
        if not layer.name.startswith(prefix) or match is None or not layer.get_weights():
            continue
        weights, source_weights = layer.get_weights(), match.get_weights()
        if [w.shape for w in weights] == [w.shape for w in source_weights] or len(weights) != len(source_weights):
            continue
        if weights[0].shape != source_weights[0].shape:     # the depthwise part must fit
            continue
        anchors = weights[-1].shape[0] // len(target_labels)
        if source_weights[-1].shape[0] != anchors * len(source_labels):
            continue
        new = [source_weights[0]] + [w.copy() for w in weights[1:]]
        lowest_bias = source_weights[-1].reshape(anchors, len(source_labels))[:, 1:].min()
        for position in range(1, len(new)):   # pointwise kernel [1, 1, cin, A*C] and bias [A*C]
            if position == len(new) - 1:       # new classes start unlikely: the least likely shared class's bias
                new[position][:] = lowest_bias
            else:                              # and small weights
                new[position] *= 0.1
            for anchor in range(anchors):
                for old_class, new_class in shared:
                    new[position][..., anchor * len(target_labels) + new_class] = \
                        source_weights[position][..., anchor * len(source_labels) + old_class]
        layer.set_weights(new)
        filled.append(layer.name)
    return filled
