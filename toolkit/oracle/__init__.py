"""numpy reference execution of the IR, bit-exact with TFLite's reference kernels."""

from toolkit.oracle.run import Oracle, OracleResult

__all__ = ["Oracle", "OracleResult"]
