"""The error hierarchy of boardfit.

Library code raises these (chaining the original cause with ``raise ... from``); only the CLI
turns them into messages and exit codes. Every message names the file, op, byte or field that
was wrong and what was expected, so a user can act on it without a traceback.
"""

from __future__ import annotations


class BoardfitError(Exception):
    """Base of every error boardfit raises on purpose."""


class ModelError(BoardfitError):
    """A .tflite file is malformed, truncated or not a TFLite model at all."""


class UnsupportedOp(BoardfitError):
    """An operator (or an operator option) that boardfit cannot execute or generate code for."""

    def __init__(self, op_name: str, index: int, supported: tuple[str, ...], detail: str = "") -> None:
        self.op_name = op_name
        self.index = index
        self.supported = supported
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"operator {op_name} at index {index} is not supported{extra}; "
            f"supported operators: {', '.join(supported)}"
        )


class OracleError(BoardfitError):
    """The numpy reference could not execute a graph (bad inputs, inconsistent shapes)."""


class DataError(BoardfitError):
    """A data set given with --data is missing, malformed or does not match the model."""


class BoardError(BoardfitError):
    """A board file is missing or invalid, or a board name is unknown."""


class InterpreterError(BoardfitError):
    """The TFLite reference interpreter is not installed or refused a model."""


class BuildError(BoardfitError):
    """Code generation, compilation or linking failed, or a model does not fit a board."""


class DoesNotFit(BuildError):
    """A model needs more flash or RAM than a board (or a budget) provides."""

    def __init__(self, what: str, needed: int, available: int, board: str) -> None:
        self.what = what
        self.needed = needed
        self.available = available
        self.board = board
        super().__init__(
            f"{what} does not fit {board}: needs {needed:,} bytes, {available:,} bytes available "
            f"({needed - available:,} bytes over)"
        )


class RunnerError(BoardfitError):
    """Flashing, starting an emulator or talking to a board failed."""


class ProtocolError(BoardfitError):
    """The serial link returned a malformed, corrupted or unexpected frame."""


class CompressionError(BoardfitError):
    """A compression spec is invalid or cannot be applied to a layer."""


class PlanError(BoardfitError):
    """No plan meets the budget, or a plan file is invalid."""
