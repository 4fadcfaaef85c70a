"""Keras layers subclassed to the suite's conventions (exact mode).

`ExactBatchNorm` follows `fwbench.layers.BatchNorm`: PyTorch's momentum convention, the biased
batch variance to normalise and the *unbiased* one for the running variance (Keras uses the biased
one for both), and batch statistics in train mode even when the layer is frozen (Keras switches a
non-trainable BatchNormalization to inference mode).

`ExactLeakyReLU` follows `fwbench.layers`: slope ``alpha`` below 0 *and at exactly 0* (JAX's
``leaky_relu``, which Keras calls on that engine, takes slope 1 at 0), with ``alpha`` in the
layer's dtype (TensorFlow's ``LeakyRelu`` op holds it as a float32 attribute: 0.0099999998 for
0.01 in a float64 model).
"""
from __future__ import annotations

import keras
from keras import ops


class ExactBatchNorm(keras.layers.BatchNormalization):
    """BatchNormalization with the suite's running-variance rule; ``momentum`` is Keras' (1 - m)."""

    def call(self, inputs, training=None, mask=None):
        x = ops.cast(inputs, self.compute_dtype)
        if training:
            axes = [a for a in range(len(x.shape)) if a != self.axis % len(x.shape)]
            # two passes, as the reference: Keras' torch moments take E[x^2] - E[x]^2, which cancels
            # in float32 when a feature's spread is small against its mean
            mean = ops.mean(x, axis=axes)
            var = ops.mean(ops.square(x - ops.mean(x, axis=axes, keepdims=True)), axis=axes)
            n = 1
            for a in axes:
                n *= x.shape[a]
            unbiased = var * (n / max(n - 1, 1))
            m = self.momentum
            self.moving_mean.assign(ops.cast(self.moving_mean, x.dtype) * m + mean * (1.0 - m))
            self.moving_variance.assign(ops.cast(self.moving_variance, x.dtype) * m + unbiased * (1.0 - m))
        else:
            mean = ops.cast(self.moving_mean, x.dtype)
            var = ops.cast(self.moving_variance, x.dtype)
        return ops.batch_normalization(x, mean=mean, variance=var, axis=self.axis,
                                       offset=ops.cast(self.beta, x.dtype),
                                       scale=ops.cast(self.gamma, x.dtype), epsilon=self.epsilon)


class ExactLeakyReLU(keras.layers.Layer):
    """``x`` for ``x > 0``, else ``alpha * x`` (gradient ``alpha`` at 0), ``alpha`` in the compute dtype."""

    def __init__(self, negative_slope: float = 0.01, **kwargs):
        super().__init__(**kwargs)
        self.negative_slope = float(negative_slope)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        slope = ops.convert_to_tensor(self.negative_slope, dtype=x.dtype)  # not via float32
        return ops.where(x > 0, x, x * slope)

    def compute_output_shape(self, input_shape):
        return input_shape


class Logits(keras.layers.Layer):
    """A fresh tensor equal to its input, ``(N, classes) -> (N, classes)``. Keras' TensorFlow
    backend tags the output of a sigmoid/softmax with ``_keras_logits`` (its input), and the loss
    then uses that input instead of the model's output: a model ending in a sigmoid was trained
    on the pre-sigmoid values. A new tensor carries no tag."""

    def call(self, inputs):
        return ops.multiply(inputs, ops.convert_to_tensor(1, dtype=inputs.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape
