"""Arithmetic profiles: which TFLite implementation the oracle reproduces bit for bit.

The "reference kernels" of TFLite are not one implementation.  LiteRT (ai-edge-litert 2.x),
tflite-runtime 2.14 and TensorFlow Lite Micro share most of their integer arithmetic, but not
all of it: LiteRT's reference FULLY_CONNECTED requantizes in double precision where TFLM and
tflite-runtime 2.14 use the 32-bit fixed-point multiplier, TFLM computes LOGISTIC/TANH in
fixed point where the others use a lookup table built in float, and so on.  A profile names one
of them; kernels branch on :attr:`toolkit.oracle.registry.OpContext.profile` only where the
implementations were measured to differ (``tests/test_oracle_tflm.py`` against TFLM, the
``tests/test_oracle_*.py`` files against LiteRT and, with ``BOARDFIT_INTERPRETER=tflite-runtime``,
against tflite-runtime 2.14).
"""

from __future__ import annotations

from enum import Enum


class Arithmetic(str, Enum):
    """The integer arithmetic the oracle reproduces.

    * ``TFLM``: TensorFlow Lite Micro's reference kernels (``tensorflow/lite/micro/kernels``),
      checked against the ``tflite-micro`` PyPI package, which runs them on the host.  This is
      what boardfit's C kernels implement on every device (integer-only requantization, no
      double arithmetic at run time) and so the oracle's default.  Where TFLM ignores
      quantization parameters that change the meaning of a model (output parameters of RELU6
      that differ from the input's, int8 TANH/LOGISTIC outputs not quantized as the converter
      does, per-channel DEQUANTIZE), this profile computes what the model means, as LiteRT does,
      and logs a warning, instead of reproducing TFLM's wrong result.
    * ``LITERT``: the reference kernels of the desktop interpreter in ai-edge-litert 2.3
      (``OpResolverType.BUILTIN_REF``), what ``boardfit verify`` compares against with that
      backend.
    * ``TFLITE_2_14``: the reference kernels of tflite-runtime 2.14, the last standalone
      release.  Identical to ``LITERT`` on every supported op except FULLY_CONNECTED, which
      requantizes with the fixed-point multiplier as TFLM does.
    """

    TFLM = "tflm"
    LITERT = "litert"
    TFLITE_2_14 = "tflite-2.14"
