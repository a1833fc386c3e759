"""Imports every oracle kernel module so that their ``@register`` calls run."""

from toolkit.oracle import (  # noqa: F401
    activations,
    conv,
    elementwise,
    fully_connected,
    pooling,
    quantize,
    reduce,
    shape_ops,
)
