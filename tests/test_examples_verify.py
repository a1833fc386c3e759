"""Whole-model checks: the oracle against the TFLite interpreter on every committed example.

Integer models must agree bit for bit on every intermediate tensor, float models within the
relative tolerance, over real data (digits) or random inputs spanning the input domain.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.datasets import load_dataset
from toolkit.model.tflite import read_tflite
from toolkit.verify import random_inputs, verify

MODELS = sorted((Path(__file__).parent.parent / "examples" / "models").glob("*.tflite"))


def _inputs(graph, name: str, n: int):
    if name.startswith("digits_"):
        ds = load_dataset("digits:test", graph)
        shape = graph.input_tensors[0].shape
        return [[x.reshape(shape)] for x in ds.x[:n]], "digits"
    return random_inputs(graph, n, seed=1), "random"


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_example_agrees_with_interpreter_layer_by_layer(path: Path) -> None:
    raw = path.read_bytes()
    graph = read_tflite(raw)
    n = 2 if graph.tensors[graph.inputs[0]].num_elements > 5000 else 20
    inputs, source = _inputs(graph, path.stem, n)
    report = verify(graph, raw, inputs, input_source=source, layerwise=True)
    assert report.layers_compared == len(graph.ops)
    div = report.first_divergence
    assert div is None, f"first divergence at op {div.op_index} {div.opcode}: {div.comparison}"
    for out in report.outputs:
        assert out.ok, out
        if out.dtype in ("int8", "uint8"):
            assert out.bit_exact, out


def test_example_list_is_complete() -> None:
    names = {p.stem for p in MODELS}
    for base in ("digits_mlp", "digits_cnn", "kws_dscnn", "vww_mobilenet", "ic_resnet8", "ad_autoencoder"):
        assert f"{base}_int8" in names
