"""Per-layer compression specs: the TOML files users write and the planner emits.

```toml
[default]                 # every compressible layer not named below
method = "int8"

[layers.3]                # by op index (as `boardfit inspect` shows it) ...
method = "prune"
sparsity = 0.9
index_bits = 5

[layers."dense_1/MatMul"] # ... or by op name (its first output tensor)
method = "kmeans"
bits = 4
```

Each table holds ``method`` and that method's documented parameters (docs/compression.md).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.compress.base import COMPRESSIBLE_OPS, Setting
from toolkit.errors import CompressionError
from toolkit.model.ir import Graph, Op

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class CompressionSpec:
    default: Setting | None = None
    layers: Mapping[str, Setting] = field(default_factory=dict)
    source: str = "<spec>"

    def resolve(self, graph: Graph) -> dict[int, Setting]:
        """Setting per compressible op index; names/indices that match no such op are errors.

        ``[default]`` covers the layers its method can compress (binarization and low rank skip
        depthwise convolutions, for one); the others stay as they are.  A ``[layers.*]`` entry
        must name a layer its method can compress.
        """
        ops = [op for op in graph.ops if op.opcode in COMPRESSIBLE_OPS]
        by_key: dict[str, int] = {}
        for op in ops:
            by_key[str(op.index)] = op.index
            if op.name:
                by_key[op.name] = op.index
        chosen: dict[int, Setting] = {}
        if self.default is not None:
            chosen = {op.index: self.default for op in ops if _applies(self.default, graph, op)}
        for key, setting in self.layers.items():
            if key not in by_key:
                names = ", ".join(f"{op.index} ({op.name or op.opcode})" for op in ops)
                raise CompressionError(
                    f"{self.source}: [layers.{key}] names no compressible layer; "
                    f"compressible layers are: {names}"
                )
            chosen[by_key[key]] = setting
        return chosen

    def to_toml(self) -> str:
        lines: list[str] = []
        if self.default is not None:
            lines += ["[default]", *_toml_items(self.default.to_table()), ""]
        for key in sorted(self.layers, key=_layer_sort_key):
            name = key if key.isdigit() else f'"{key}"'
            lines += [f"[layers.{name}]", *_toml_items(self.layers[key].to_table()), ""]
        return "\n".join(lines)


def _applies(setting: Setting, graph: Graph, op: Op) -> bool:
    from toolkit.compress.base import LayerRef
    from toolkit.compress.registry import get_method

    return get_method(setting.method).applicable(LayerRef(graph, op))


def _layer_sort_key(key: str) -> tuple[int, str]:
    return (int(key), "") if key.isdigit() else (1 << 30, key)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot write {v!r} to TOML")


def _toml_items(table: Mapping[str, Any]) -> list[str]:
    return [f"{k} = {_toml_value(v)}" for k, v in table.items()]


def _setting(table: Any, where: str) -> Setting:
    if not isinstance(table, dict):
        raise CompressionError(f"{where} must be a table with a 'method' key")
    if "method" not in table or not isinstance(table["method"], str):
        raise CompressionError(f"{where} needs method = \"<name>\"")
    params = {k: v for k, v in table.items() if k != "method"}
    for k, v in params.items():
        if not isinstance(v, (bool, int, float, str)):
            raise CompressionError(f"{where}.{k} must be a number, a boolean or a string")
    return Setting.of(table["method"], **params)


def parse_spec(text: str, source: str = "<spec>") -> CompressionSpec:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CompressionError(f"{source}: not valid TOML: {exc}") from exc
    unknown = set(doc) - {"default", "layers"}
    if unknown:
        raise CompressionError(
            f"{source}: unknown top-level key(s) {sorted(unknown)}; expected [default], [layers.*]"
        )
    default = _setting(doc["default"], f"{source}: [default]") if "default" in doc else None
    layers_doc = doc.get("layers", {})
    if not isinstance(layers_doc, dict):
        raise CompressionError(f"{source}: layers must be tables [layers.<index or name>]")
    layers = {str(k): _setting(v, f"{source}: [layers.{k}]") for k, v in layers_doc.items()}
    return CompressionSpec(default, layers, source)


def load_spec(path: str | Path) -> CompressionSpec:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise CompressionError(f"cannot read spec file {p}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise CompressionError(f"spec file {p} is not UTF-8 text (byte {exc.start})") from exc
    return parse_spec(text, str(p))
