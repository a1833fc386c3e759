"""Support for the binary and low-rank compression tests: their C kernels through cffi, and a
whole-model simulation with compressed layers in place.

Kernels.  :func:`format_library` compiles the kernel families a format needs (the variant's own
``<family>.c``, else ``ref``'s) with the harness's flags (sanitizers included when
``BOARDFIT_SANITIZE=1`` runs us under ASan) and opens them in cffi ABI mode with the cdef of
``bf_kernels.h`` plus the ``BF_CDEF`` sections of the format headers — so only the formats under
test are compiled, and :class:`kernel_harness.KernelLibrary` calls them like any other kernel.
``defines`` builds an alternative (e.g. ``BF_USE_BUILTIN_POPCOUNT``); ``shim`` adds test-only C
functions.

Models.  :func:`run_model` runs many samples through an int8 graph with the numpy oracle's
kernels, op by op on the re-batched graph, with some ops replaced by compressed forwards;
:func:`compress_model` compresses layers in graph order on calibration data the way
``toolkit.compress.model`` does (each layer sees the activations of the already compressed
ones).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import cffi
import kernel_harness as kh
import numpy as np

from toolkit.compress.base import Calibration, CompressedLayer, LayerRef, Setting
from toolkit.compress.model import batched_graph, match_float_weights
from toolkit.compress.registry import get_method
from toolkit.model.ir import Graph
from toolkit.oracle.registry import KERNELS, OpContext

_LIBS: dict[tuple[str, ...], kh.KernelLibrary] = {}


def cdef_region(header: Path) -> str:
    """The BF_CDEF section of a header, preprocessor lines removed (as the harness does)."""
    text = header.read_text()
    begin, end = text.index("/* BF_CDEF_BEGIN"), text.index("/* BF_CDEF_END */")
    region = text[text.index("\n", begin) + 1 : text.rindex("\n", 0, end)]
    return "\n".join(ln for ln in region.splitlines() if not ln.lstrip().startswith("#"))


def format_library(families: Sequence[str], headers: Sequence[str], variant: str = "ref",
                   defines: Sequence[str] = (), shim: str = "",
                   shim_cdef: Sequence[str] = ()) -> kh.KernelLibrary:
    san = kh.sanitize_active()
    key = (variant, str(san), *families, *headers, *defines, shim)
    if key in _LIBS:
        return _LIBS[key]
    sources = []
    for fam in families:
        own = kh.KERNELS_DIR / variant / f"{fam}.c"
        sources.append(own if own.exists() else kh.REF_DIR / f"{fam}.c")
    flags = [*kh.CFLAGS, *(kh.SANITIZE_FLAGS if san else ()), *(f"-D{d}" for d in defines)]
    includes = [f"-I{kh.INCLUDE_DIR}", f"-I{kh.KERNELS_DIR / variant}", f"-I{kh.REF_DIR}"]
    digest = hashlib.sha256()
    for f in [*sorted(kh.INCLUDE_DIR.glob("*.h")), *sorted(kh.REF_DIR.glob("*.h")), *sources]:
        digest.update(f.name.encode() + f.read_bytes())
    digest.update(" ".join([*flags, shim, subprocess.run([kh.CC, "--version"], capture_output=True,
                                                         text=True).stdout]).encode())
    out = Path(tempfile.gettempdir()) / "boardfit-kernels" / f"binlr-{variant}-{digest.hexdigest()[:16]}"
    so = out / "lib.so"
    if not so.exists():
        out.mkdir(parents=True, exist_ok=True)
        extra = []
        if shim:
            (out / "shim.c").write_text(shim)
            extra = [str(out / "shim.c")]
        tmp = out / f"lib.{id(key)}.tmp"
        cmd = [kh.CC, *flags, *includes, *map(str, sources), *extra, "-o", str(tmp), "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"compiling failed:\n{' '.join(cmd)}\n{proc.stderr}")
        tmp.replace(so)
    ffi = cffi.FFI()
    base = kh.cdef_source()
    ffi.cdef(base)
    for h in headers:
        region = cdef_region(kh.INCLUDE_DIR / h)
        first_type = re.search(r"\}\s*(\w+)\s*;", region)
        if first_type is None or not re.search(rf"\b{first_type.group(1)}\b", base):
            ffi.cdef(region)  # unless the harness's cdef already has this header
    if shim_cdef:
        ffi.cdef("\n".join(shim_cdef))
    lib = kh.KernelLibrary(variant, so, san, ffi, ffi.dlopen(str(so)))
    _LIBS[key] = lib
    return lib


# ---------------------------------------------------------------------------------------------
# Whole models.

Forward = Callable[[np.ndarray], np.ndarray]


def run_model(graph: Graph, x: np.ndarray, overrides: Mapping[int, Forward],
              upto: int | None = None) -> dict[int, np.ndarray]:
    """Values (``(n, *tensor.shape[1:])``) of every tensor after running ops ``[0, upto)``
    (all by default) on the samples ``x`` (``(n, *input.shape[1:])``)."""
    n = x.shape[0]
    big = batched_graph(graph, n)
    assert big is not None, f"{graph.name} cannot run samples as a batch"
    values: dict[int, np.ndarray] = {t.index: t.data for t in big.tensors if t.data is not None}
    values[graph.inputs[0]] = np.asarray(x).reshape(big.tensors[graph.inputs[0]].shape)
    for op in big.ops[:upto]:
        if op.index in overrides:
            tin, tout = big.tensors[op.inputs[0]], big.tensors[op.outputs[0]]
            y = overrides[op.index](values[tin.index].reshape((n, *graph.tensors[tin.index].shape[1:])))
            values[tout.index] = np.asarray(y).reshape(tout.shape)
            continue
        ctx = OpContext(big, op, tuple(values.get(i) if i >= 0 else None for i in op.inputs))
        for t, v in zip(op.outputs, KERNELS[op.opcode](ctx), strict=True):
            values[t] = v
    return {t: v.reshape((n, *graph.tensors[t].shape[1:])) for t, v in values.items()
            if not graph.tensors[t].is_constant}


def compress_model(graph: Graph, settings: Mapping[int, Setting], calib_x: np.ndarray | None,
                   float_graph: Graph | None = None) -> dict[int, CompressedLayer]:
    floats = match_float_weights(graph, float_graph) if float_graph is not None else {}
    layers: dict[int, CompressedLayer] = {}
    for i in sorted(settings):
        op = graph.ops[i]
        layer = LayerRef(graph, op, floats.get(i))
        calib = None
        if calib_x is not None:
            seen = run_model(graph, calib_x, {k: v.forward for k, v in layers.items()}, upto=i)
            ref = run_model(graph, calib_x, {}, upto=i + 1)
            calib = Calibration(seen[op.inputs[0]], ref[op.outputs[0]])
        layers[i] = get_method(settings[i].method).apply(layer, settings[i], calib)
    return layers


def accuracy(graph: Graph, x: np.ndarray, y: np.ndarray, layers: Mapping[int, CompressedLayer]) -> float:
    """Top-1 accuracy in percent of the graph's first output."""
    out = run_model(graph, x, {k: v.forward for k, v in layers.items()})[graph.outputs[0]]
    return float(100.0 * np.mean(out.reshape(len(x), -1).argmax(axis=1) == y))
