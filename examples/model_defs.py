"""Keras definitions and training recipes of the example models (used by ``train.py``).

The MLPerf Tiny architectures follow the reference training code of mlcommons/tiny
(benchmark/training/<task>/keras_model.py and the EEMBC models it is derived from) layer by
layer at the published shapes; where this file deviates it says so.  Dropout layers are kept
because the reference has them (they vanish at conversion); BatchNormalization is folded into
the preceding convolution or dense layer by the TFLite converter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers, regularizers


@dataclass(frozen=True)
class StreamSpec:
    """A stateful model exported from a ``tf.Module`` (its ``__call__`` has an input signature)."""

    module: Any


@dataclass(frozen=True)
class Trained:
    model: Any  # the Keras model (for parameter and MAC counts, and conversion if not streaming)
    stream: StreamSpec | None
    recipe: str  # how it was trained, for models.json


@dataclass(frozen=True)
class Architecture:
    description: str
    reference: str
    input_shape: tuple[int, ...]  # without the batch dimension
    classes: int | None  # None: autoencoder
    synthetic: str | None  # None: digits; "image" / "normal": synthetic inputs of that kind
    flat_input: bool  # digits fed as 64 values rather than 8×8×1
    train: Callable[[np.ndarray, np.ndarray], Trained]


def _fit(model: Any, x: np.ndarray, y: np.ndarray, epochs: int, loss: str, lr: float = 1e-3) -> str:
    batch = 32
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=loss)
    model.fit(x, y, epochs=epochs, batch_size=batch, shuffle=True, verbose=0)
    return f"{epochs} epoch(s), Adam lr {lr:g}, batch {batch}, loss {loss}"


# ---------------------------------------------------------------------------------------------
# digits


def train_digits_mlp(x: np.ndarray, y: np.ndarray) -> Trained:
    inp = keras.Input((64,), name="pixels")
    h = layers.Dense(300, activation="relu")(inp)
    h = layers.Dense(100, activation="relu")(h)
    out = layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inp, out, name="digits_mlp")
    recipe = _fit(model, x, y, epochs=40, loss="sparse_categorical_crossentropy")
    return Trained(model, None, recipe)


def train_digits_cnn(x: np.ndarray, y: np.ndarray) -> Trained:
    inp = keras.Input((8, 8, 1), name="image")
    h = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    h = layers.DepthwiseConv2D(3, padding="same", activation="relu")(h)
    h = layers.Conv2D(16, 1, activation="relu")(h)
    h = layers.MaxPooling2D(2)(h)
    h = layers.Flatten()(h)
    out = layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inp, out, name="digits_cnn")
    recipe = _fit(model, x, y, epochs=40, loss="sparse_categorical_crossentropy")
    return Trained(model, None, recipe)


class EmaClassifier(tf.Module):
    """``state ← 0.5·state + 0.5·frame`` (a tf.Variable), then a 64→32→10 classifier of the state."""

    def __init__(self, weights: list[np.ndarray]) -> None:
        super().__init__(name="digits_stream")
        self.state = tf.Variable(tf.zeros([1, 64]), trainable=False, name="ema_state")
        self.w1, self.b1, self.w2, self.b2 = (tf.constant(w) for w in weights)

    @tf.function(input_signature=[tf.TensorSpec([1, 64], tf.float32, name="frame")])
    def __call__(self, frame: tf.Tensor) -> tf.Tensor:
        state = 0.5 * self.state + 0.5 * frame
        self.state.assign(state)
        hidden = tf.nn.relu(tf.matmul(state, self.w1) + self.b1)
        return tf.nn.softmax(tf.matmul(hidden, self.w2) + self.b2)


def train_digits_stream(x: np.ndarray, y: np.ndarray) -> Trained:
    inp = keras.Input((64,), name="state")
    h = layers.Dense(32, activation="relu")(inp)
    out = layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inp, out, name="digits_stream_classifier")
    # The state after k identical frames is (1 - 0.5**k)·frame: train on those scales.
    scales = np.array([0.5, 0.75, 0.875, 1.0], dtype=np.float32)
    xs = np.concatenate([x * s for s in scales])
    ys = np.concatenate([y] * len(scales))
    recipe = _fit(model, xs, ys, epochs=20, loss="sparse_categorical_crossentropy")
    module = EmaClassifier([np.asarray(w, dtype=np.float32) for w in model.get_weights()])
    return Trained(model, StreamSpec(module), recipe + "; inputs scaled by 0.5/0.75/0.875/1 (EMA states)")


# ---------------------------------------------------------------------------------------------
# MLPerf Tiny


def _conv_bn_relu(x: Any, filters: int, kernel: Any, strides: Any = 1) -> Any:
    x = layers.Conv2D(
        filters, kernel, strides=strides, padding="same", kernel_regularizer=regularizers.l2(1e-4)
    )(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x)


def _dw_bn_relu(x: Any, strides: int = 1) -> Any:
    reg = regularizers.l2(1e-4)
    x = layers.DepthwiseConv2D(3, strides=strides, padding="same", depthwise_regularizer=reg)(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x)


def train_kws_dscnn(x: np.ndarray, y: np.ndarray) -> Trained:
    # DS-CNN (Hello Edge "small"): conv 10×4 stride 2 with 64 filters, four depthwise-separable
    # blocks of 64, average pool over the whole (25×5) map with the reference's (24, 5) window.
    inp = keras.Input((49, 10, 1), name="mfcc")
    h = _conv_bn_relu(inp, 64, (10, 4), strides=(2, 2))
    h = layers.Dropout(0.2)(h)
    for _ in range(4):
        h = _dw_bn_relu(h)
        h = _conv_bn_relu(h, 64, (1, 1))
    h = layers.Dropout(0.4)(h)
    h = layers.AveragePooling2D(pool_size=(49 // 2, 10 // 2))(h)
    h = layers.Flatten()(h)
    out = layers.Dense(12, activation="softmax")(h)
    model = keras.Model(inp, out, name="kws_dscnn")
    return Trained(model, None, _fit(model, x, y, epochs=1, loss="sparse_categorical_crossentropy"))


def train_vww_mobilenet(x: np.ndarray, y: np.ndarray) -> Trained:
    # MobileNetV1 with alpha 0.25 (8 filters in the first conv), 96×96×3 input, 13
    # depthwise-separable blocks, average pool 3×3, dense 2 with softmax.
    inp = keras.Input((96, 96, 3), name="image")
    h = _conv_bn_relu(inp, 8, 3, strides=2)
    blocks = [(1, 16), (2, 32), (1, 32), (2, 64), (1, 64), (2, 128)] + [(1, 128)] * 5 + [(2, 256), (1, 256)]
    for stride, filters in blocks:
        h = _dw_bn_relu(h, stride)
        h = _conv_bn_relu(h, filters, 1)
    h = layers.AveragePooling2D(pool_size=tuple(int(d) for d in h.shape[1:3]))(h)
    h = layers.Flatten()(h)
    out = layers.Dense(2, activation="softmax")(h)
    model = keras.Model(inp, out, name="vww_mobilenet")
    return Trained(model, None, _fit(model, x, y, epochs=1, loss="sparse_categorical_crossentropy"))


def _conv_bn(x: Any, filters: int, kernel: int, strides: int) -> Any:
    x = layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding="same",
        kernel_initializer="he_normal",
        kernel_regularizer=regularizers.l2(1e-4),
    )(x)
    return layers.BatchNormalization()(x)


def train_ic_resnet8(x: np.ndarray, y: np.ndarray) -> Trained:
    # ResNet-8 (EEMBC ResNet v1): conv 16, three residual stacks of 16/32/64 filters (the last
    # two downsample with stride 2 and a 1×1 stride-2 projection on the identity path; the
    # projection has no BatchNormalization, as in the reference), average pool 8×8, dense 10.
    inp = keras.Input((32, 32, 3), name="image")
    h = layers.Activation("relu")(_conv_bn(inp, 16, 3, 1))
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        y_ = layers.Activation("relu")(_conv_bn(h, filters, 3, stride))
        y_ = _conv_bn(y_, filters, 3, 1)
        if stride != 1:
            h = layers.Conv2D(
                filters,
                1,
                strides=stride,
                padding="same",
                kernel_initializer="he_normal",
                kernel_regularizer=regularizers.l2(1e-4),
            )(h)
        h = layers.Activation("relu")(layers.add([h, y_]))
    h = layers.AveragePooling2D(pool_size=tuple(int(d) for d in h.shape[1:3]))(h)
    h = layers.Flatten()(h)
    out = layers.Dense(10, activation="softmax", kernel_initializer="he_normal")(h)
    model = keras.Model(inp, out, name="ic_resnet8")
    return Trained(model, None, _fit(model, x, y, epochs=1, loss="sparse_categorical_crossentropy"))


def train_ad_autoencoder(x: np.ndarray, y: np.ndarray) -> Trained:
    # FC autoencoder (DCASE 2020 baseline): 640 → 4×(dense 128, BN, relu) → dense 8, BN, relu →
    # 4×(dense 128, BN, relu) → dense 640 (linear).
    inp = keras.Input((640,), name="log_mel")
    h = inp
    for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        h = layers.Dense(units)(h)
        h = layers.BatchNormalization()(h)
        h = layers.Activation("relu")(h)
    out = layers.Dense(640)(h)
    model = keras.Model(inp, out, name="ad_autoencoder")
    return Trained(model, None, _fit(model, x, y, epochs=1, loss="mean_squared_error"))


_MLPERF = "mlcommons/tiny benchmark/training"
ARCHITECTURES: dict[str, Architecture] = {
    "digits_mlp": Architecture(
        "LeNet-300-100 shape (64 → 300 → 100 → 10, relu, softmax) on 8×8 digits.",
        "LeCun et al. 1998 (LeNet-300-100), as used in Deep Compression",
        (64,),
        10,
        None,
        True,
        train_digits_mlp,
    ),
    "digits_cnn": Architecture(
        "Conv 3×3 8ch SAME relu → depthwise 3×3 relu → conv 1×1 16 relu → max pool 2 → flatten → "
        "dense 10 → softmax.",
        "boardfit example",
        (8, 8, 1),
        10,
        None,
        False,
        train_digits_cnn,
    ),
    "digits_stream": Architecture(
        "Streaming: EMA of 64-pixel frames kept in a resource variable, classified by dense 32 relu "
        "→ dense 10 → softmax.",
        "boardfit example (tf.Module exported from a concrete function)",
        (64,),
        10,
        None,
        True,
        train_digits_stream,
    ),
    "kws_dscnn": Architecture(
        "MLPerf Tiny keyword spotting DS-CNN: 49×10×1 MFCC input, 12 classes.",
        f"{_MLPERF}/keyword_spotting (DS-CNN small, Zhang et al. 2017 'Hello Edge')",
        (49, 10, 1),
        12,
        "normal",
        False,
        train_kws_dscnn,
    ),
    "vww_mobilenet": Architecture(
        "MLPerf Tiny visual wake words MobileNetV1 alpha 0.25: 96×96×3 input, 2 classes.",
        f"{_MLPERF}/visual_wake_words (EEMBC mobilenet_v1)",
        (96, 96, 3),
        2,
        "image",
        False,
        train_vww_mobilenet,
    ),
    "ic_resnet8": Architecture(
        "MLPerf Tiny image classification ResNet-8: 32×32×3 input, 10 classes, ADD residuals.",
        f"{_MLPERF}/image_classification (EEMBC resnet_v1, 16 base filters)",
        (32, 32, 3),
        10,
        "image",
        False,
        train_ic_resnet8,
    ),
    "ad_autoencoder": Architecture(
        "MLPerf Tiny anomaly detection FC autoencoder: 640 → 128×4 → 8 → 128×4 → 640.",
        f"{_MLPERF}/anomaly_detection (DCASE 2020 task 2 baseline)",
        (640,),
        None,
        "normal",
        False,
        train_ad_autoencoder,
    ),
}
