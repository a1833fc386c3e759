"""Build the C kernel library for this machine and call its kernels through cffi.

A *variant* is a directory ``firmware_gen/kernels/<variant>/`` of ``.c`` files implementing the
prototypes of ``kernels/include/bf_kernels.h`` (``ref`` is the portable one; ISA variants may
include ``ref``'s private headers such as ``bf_fixedpoint.h``).  A variant provides the kernel
families (source files) it optimizes; the others come from ``ref``, as in a generated project.
:func:`variants` lists the variants this machine can run (``targets.isa`` decides: ``ref`` and,
on x86-64, ``x86``; the Arm variants run under QEMU in ``tests/test_kernels_simd.py``), and a
variant is built with the ``-m`` flags ``targets.isa`` chooses for this CPU (``extra_flags``
builds another level).  :func:`build_library` compiles
one variant with ``gcc -shared -fPIC -O2 -std=c99 -Wall -Wextra -Werror`` into a shared object
cached in the temp directory under a hash of every source, the flags and the compiler version,
and opens it in cffi's ABI mode; the cdef (:func:`cdef_source`) is the region between
``BF_CDEF_BEGIN`` and ``BF_CDEF_END`` of ``bf_kernels.h`` and of every format header it includes
(``bf_binary.h``, ``bf_packed.h``, ``bf_sparse.h``…), so the prototypes are never written twice
and every kernel of the library is callable.  Params fields that are None are NULL pointers.  A
small test-only shim exports static inline helpers (fixed-point, popcount) so that tests can
compare them with their Python twins; ``defines`` builds an alternative of the library (e.g.
``BF_USE_BUILTIN_POPCOUNT``).

Sanitizers.  With ``BOARDFIT_SANITIZE=1`` the library is built with
``-fsanitize=address,undefined -fno-sanitize-recover=all``.  An ASan-instrumented shared object
can only be loaded into a process whose first loaded library is the ASan runtime, which is not
true of an ordinary ``python``; so the sanitized suite runs in a child process started by
:func:`run_sanitized_pytest` with ``LD_PRELOAD=$(gcc -print-file-name=libasan.so)`` and
``ASAN_OPTIONS=detect_leaks=0`` (CPython's own allocations would be reported as leaks).  In that
child, Python's and numpy's heap buffers come from ASan's malloc, so a kernel writing past an
output buffer is caught; independently of ASan, every output buffer is surrounded by guard bytes
that :meth:`KernelLibrary.call` checks after each call.  Any sanitizer report aborts the child,
which fails the parent test.  A test module marks its kernel tests :data:`in_process` (skipped in
the parent when the child runs them) and adds one :data:`delegating` test that calls
:func:`check_sanitized`; :func:`check_cross_compile` compiles kernel sources for Cortex-M with
the warning flags every generated project uses.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cffi
import numpy as np
import pytest

import firmware_gen
from firmware_gen.lower import ConstArray, KernelCall, Struct, TensorListArg
from targets import isa
from toolkit.model.ir import DType, Graph

KERNELS_DIR = Path(firmware_gen.__file__).resolve().parent / "kernels"
INCLUDE_DIR = KERNELS_DIR / "include"
HEADER = INCLUDE_DIR / "bf_kernels.h"
REF_DIR = KERNELS_DIR / "ref"

SANITIZE_ENV = "BOARDFIT_SANITIZE"
CC = os.environ.get("CC", "gcc")
CFLAGS = ("-shared", "-fPIC", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror")
SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                  "-fno-omit-frame-pointer", "-g")
GUARD_BYTES = 64
_GUARD_VALUE = 0xA5

# Test-only wrappers of the static inline helpers of ref/bf_fixedpoint.h and ref/bf_popcount.h.
_SHIM_HEADERS = ("bf_fixedpoint.h", "bf_popcount.h")
_SHIM_FUNCTIONS: tuple[tuple[str, str, str], ...] = (
    # (exported name, signature, body)
    ("bft_srdhm", "int32_t bft_srdhm(int32_t a, int32_t b)", "return bf_srdhm(a, b);"),
    ("bft_rdbpot", "int32_t bft_rdbpot(int32_t x, int e)", "return bf_rdbpot(x, e);"),
    ("bft_mbqm", "int32_t bft_mbqm(int32_t x, int32_t m, int32_t s)", "return bf_mbqm(x, m, s);"),
    ("bft_exp_on_negative_values", "int32_t bft_exp_on_negative_values(int32_t a, int bits)",
     "return bf_exp_on_negative_values(a, bits);"),
    ("bft_one_over_one_plus_x", "int32_t bft_one_over_one_plus_x(int32_t a)",
     "return bf_one_over_one_plus_x_for_x_in_0_1(a);"),
    ("bft_get_reciprocal", "int32_t bft_get_reciprocal(int32_t x, int digits, int *bits)",
     "return bf_get_reciprocal(x, digits, bits);"),
    ("bft_popcount_portable", "int32_t bft_popcount_portable(uint32_t x)",
     "return bf_popcount32_portable(x);"),
    ("bft_popcount", "int32_t bft_popcount(uint32_t x)", "return bf_popcount32(x);"),
)


def all_variants() -> tuple[str, ...]:
    """Every kernel variant present: directories of ``kernels/`` that hold ``.c`` files."""
    return tuple(sorted(d.name for d in KERNELS_DIR.iterdir()
                        if d.is_dir() and d.name != "include" and any(d.glob("*.c"))))


def variants() -> tuple[str, ...]:
    """The variants this machine runs through cffi: ``ref`` and the ones ``targets.isa`` picks
    for the host CPU (present as directories)."""
    present = set(all_variants())
    return tuple(v for v in ("ref", *isa.kernel_variants(isa.host_target())[:-1]) if v in present)


def variant_sources(variant: str) -> list[Path]:
    """The variant's own ``.c`` files plus ``ref``'s for the families it does not provide."""
    d = KERNELS_DIR / variant
    own = sorted(d.glob("*.c"))
    if not own:
        raise FileNotFoundError(f"kernel variant {variant!r} has no .c files in {d}")
    names = {p.name for p in own}
    return sorted([*own, *(p for p in REF_DIR.glob("*.c") if p.name not in names)], key=lambda p: p.name)


def kernel_files() -> list[Path]:
    """Every .c and .h file of the kernel library (what a build may read)."""
    return sorted(p for p in KERNELS_DIR.glob("*/*") if p.suffix in (".c", ".h"))


def variant_flags(variant: str) -> tuple[str, ...]:
    """Compiler flags ``targets.isa`` chooses for ``variant`` on this machine."""
    return isa.variant_cflags(variant, isa.host_target())


def public_headers() -> list[Path]:
    """bf_kernels.h, then the format headers it includes from kernels/include, in its order."""
    names = re.findall(r'^#include\s+"(bf_\w+\.h)"', HEADER.read_text(), flags=re.M)
    return [HEADER, *(INCLUDE_DIR / n for n in names if (INCLUDE_DIR / n).is_file())]


def cdef_region(header: Path) -> str:
    """The part of one header cffi parses (between BF_CDEF_BEGIN and BF_CDEF_END): preprocessor
    lines removed, the header's integer constants inlined."""
    text = header.read_text()
    begin, end = text.index("/* BF_CDEF_BEGIN"), text.index("/* BF_CDEF_END */")
    region = text[text.index("\n", begin) + 1 : text.rindex("\n", 0, end)]
    defines = dict(re.findall(r"^#define\s+(\w+)\s+(\d+)\s*$", text, flags=re.M))
    body = "\n".join(ln for ln in region.splitlines() if not ln.lstrip().startswith("#"))
    for name, value in defines.items():
        body = re.sub(rf"\b{name}\b", value, body)
    return body


def cdef_source() -> str:
    """What cffi parses: the cdef regions of every public kernel header (:func:`public_headers`)."""
    return "\n".join(cdef_region(h) for h in public_headers())


def _shim_source() -> str:
    funcs = "\n".join(f"{sig} {{ {body} }}" for _, sig, body in _SHIM_FUNCTIONS)
    includes = "".join(f'#include "{h}"\n' for h in _SHIM_HEADERS)
    return f"#include <stdint.h>\n{includes}{funcs}\n"


def sanitize_requested() -> bool:
    return os.environ.get(SANITIZE_ENV, "") == "1"


def asan_loaded() -> bool:
    """Whether the ASan runtime is mapped into this process (i.e. we run under LD_PRELOAD)."""
    try:
        return "libasan" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def sanitize_active() -> bool:
    """Sanitized kernels are requested and loadable here."""
    return sanitize_requested() and asan_loaded()


def _compiler_version() -> str:
    out = subprocess.run([CC, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0]


@dataclass
class KernelLibrary:
    """One compiled variant: the cffi handle plus helpers that call kernels on numpy arrays."""

    variant: str
    path: Path
    sanitized: bool
    ffi: cffi.FFI
    lib: Any
    flags: tuple[str, ...] = ()  # the ISA flags it was built with

    def has(self, symbol: str) -> bool:
        return hasattr(self.lib, symbol)

    # -- parameters ---------------------------------------------------------------------------

    def params(self, kcall: KernelCall) -> tuple[Any, list[Any]]:
        """A ``<params_type> *`` filled from the call, and the cdata it points into (keep alive)."""
        keep: list[Any] = []
        init = {name: self._field(value, keep) for name, value in kcall.params}
        return self.ffi.new(f"{kcall.params_type} *", init), keep

    def _field(self, value: object, keep: list[Any]) -> Any:
        if value is None:
            return self.ffi.NULL
        if isinstance(value, Struct):
            return {name: self._field(v, keep) for name, v in value.fields}
        if isinstance(value, ConstArray):
            arr = self.ffi.new(f"{value.ctype}[]", list(value.values))
            keep.append(arr)
            return arr
        if isinstance(value, tuple):
            return list(value)
        return value

    def scratch_bytes(self, kcall: KernelCall) -> int:
        """What the C ``…_scratch_bytes()`` twin asks for (0 for kernels without scratch)."""
        if not kcall.takes_scratch:
            return 0
        p, _keep = self.params(kcall)
        return int(getattr(self.lib, f"{kcall.symbol}_scratch_bytes")(p))

    # -- calls --------------------------------------------------------------------------------

    def call(self, kcall: KernelCall, graph: Graph, values: Mapping[int, np.ndarray],
             *, alias: int | None = None) -> dict[int, np.ndarray]:
        """Run the kernel on ``values`` (tensor index → array) and return its outputs.

        ``alias``: an input tensor whose buffer also serves as the output (in-place execution):
        the input is copied into the output buffer and both pointers are that buffer.
        """
        p, keep = self.params(kcall)
        outputs = {t: _Guarded(graph.tensors[t].nbytes, _storage_dtype(graph.tensors[t].dtype))
                   for t in kcall.output_tensors}
        if alias is not None:
            if len(outputs) != 1:
                raise ValueError("only single-output kernels run in place")
            src = np.ascontiguousarray(_as_storage(values[alias], graph.tensors[alias].dtype))
            target = next(iter(outputs.values()))
            if src.nbytes != target.nbytes:
                raise ValueError(f"tensor {alias} ({src.nbytes} bytes) cannot share the output buffer")
            target.data[:] = np.frombuffer(src.tobytes(), dtype=np.uint8)
        argv: list[Any] = [p]
        for arg in kcall.args:
            if isinstance(arg, TensorListArg):
                ptrs = [self.ffi.cast("void *", self._ptr(t, "char", arg.output, graph, values, outputs,
                                                          keep, alias)) for t in arg.tensors]
                lst = self.ffi.new("void *[]", ptrs)
                keep.append(lst)
                argv.append(lst)
            elif arg.tensor < 0:
                argv.append(self.ffi.NULL)
            else:
                ctype = "char" if arg.ctype == "void" else arg.ctype
                argv.append(self._ptr(arg.tensor, ctype, arg.output, graph, values, outputs, keep, alias))
        if kcall.takes_scratch:
            argv.append(self._scratch(kcall, p, keep))
        getattr(self.lib, kcall.symbol)(*argv)
        result = {}
        for idx, buf in outputs.items():
            buf.check(f"{kcall.symbol} output tensor {idx}")
            result[idx] = buf.array(graph.tensors[idx].shape)
        return result

    def _ptr(self, index: int, ctype: str, output: bool, graph: Graph, values: Mapping[int, np.ndarray],
             outputs: dict[int, _Guarded], keep: list[Any], alias: int | None) -> Any:
        if output or index == alias:
            buf = outputs[index] if output else next(iter(outputs.values()))
            return self.ffi.from_buffer(f"{ctype}[]", buf.data)
        arr = np.ascontiguousarray(_as_storage(values[index], graph.tensors[index].dtype))
        keep.append(arr)
        return self.ffi.from_buffer(f"{ctype}[]", arr)

    def _scratch(self, kcall: KernelCall, p: Any, keep: list[Any]) -> Any:
        n = int(getattr(self.lib, f"{kcall.symbol}_scratch_bytes")(p))
        if n == 0:
            return self.ffi.NULL
        buf = np.full(n + 8, 0x5A, dtype=np.uint8)
        offset = (-buf.ctypes.data) % 8
        keep.append(buf)
        return self.ffi.from_buffer(buf[offset : offset + n])


def _storage_dtype(dtype: DType) -> np.dtype:
    """numpy dtype of the raw storage the kernels see (float16 travels as its uint16 bits)."""
    return np.dtype(np.uint16) if dtype is DType.FLOAT16 else dtype.numpy


def _as_storage(a: np.ndarray, dtype: DType) -> np.ndarray:
    a = np.asarray(a, dtype=dtype.numpy)
    return a.view(np.uint16) if dtype is DType.FLOAT16 else a


class _Guarded:
    """An output buffer between two guard zones that must still hold their pattern afterwards."""

    def __init__(self, nbytes: int, dtype: np.dtype) -> None:
        self.dtype = dtype
        self.nbytes = nbytes
        self.raw = np.full(nbytes + 2 * GUARD_BYTES, _GUARD_VALUE, dtype=np.uint8)
        self.data = self.raw[GUARD_BYTES : GUARD_BYTES + nbytes]

    def check(self, what: str) -> None:
        head, tail = self.raw[:GUARD_BYTES], self.raw[GUARD_BYTES + self.nbytes :]
        if (head != _GUARD_VALUE).any() or (tail != _GUARD_VALUE).any():
            raise AssertionError(f"{what}: the kernel wrote outside its output buffer")

    def array(self, shape: Sequence[int]) -> np.ndarray:
        return self.data.copy().view(self.dtype).reshape(tuple(shape))


_LIBRARIES: dict[tuple[str, bool, tuple[str, ...], tuple[str, ...]], KernelLibrary] = {}


def build_library(variant: str = "ref", sanitize: bool | None = None,
                  extra_flags: Sequence[str] | None = None, defines: Sequence[str] = ()) -> KernelLibrary:
    """Compile (or reuse) and open one kernel variant; cached for the whole session.

    ``extra_flags``: ISA flags to build with instead of :func:`variant_flags` (e.g. a lower x86
    level than this CPU allows); ``defines`` (``NAME`` or ``NAME=VALUE``) build an alternative."""
    san = sanitize_active() if sanitize is None else sanitize
    isa_flags = tuple(variant_flags(variant) if extra_flags is None else extra_flags)
    key = (variant, san, isa_flags, tuple(defines))
    if key in _LIBRARIES:
        return _LIBRARIES[key]
    sources = variant_sources(variant)
    flags = [*CFLAGS, *isa_flags, *(SANITIZE_FLAGS if san else ()), *(f"-D{d}" for d in defines)]
    includes = [f"-I{INCLUDE_DIR}", f"-I{KERNELS_DIR / variant}", f"-I{REF_DIR}"]
    shim = _shim_source()
    digest = hashlib.sha256()
    # Every kernel file, not only the sources: variant files include ref's and opt/'s by path.
    for f in [*kernel_files(), *sources]:
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    digest.update(" ".join([*flags, _compiler_version(), shim]).encode())
    out_dir = Path(tempfile.gettempdir()) / "boardfit-kernels" / f"{variant}-{digest.hexdigest()[:16]}"
    so = out_dir / ("libbf_kernels_san.so" if san else "libbf_kernels.so")
    if not so.exists():
        _compile(out_dir, so, sources, shim, flags, includes)
    ffi = cffi.FFI()
    ffi.cdef(cdef_source())
    ffi.cdef("\n".join(f"{sig};" for _, sig, _ in _SHIM_FUNCTIONS))
    lib = ffi.dlopen(str(so))
    _LIBRARIES[key] = KernelLibrary(variant, so, san, ffi, lib, isa_flags)
    return _LIBRARIES[key]


def _compile(out_dir: Path, so: Path, sources: Sequence[Path], shim: str, flags: Sequence[str],
             includes: Sequence[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    shim_c = out_dir / "bf_test_shim.c"
    shim_c.write_text(shim)
    tmp = so.with_name(f"{so.name}.{os.getpid()}.tmp")
    cmd = [CC, *flags, *includes, *map(str, sources), str(shim_c), "-o", str(tmp), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"compiling the kernel library failed:\n{' '.join(cmd)}\n{proc.stderr}")
    os.replace(tmp, so)


# ---------------------------------------------------------------------------------------------
# The sanitized child run.


def asan_runtime() -> str | None:
    """Path of the compiler's ASan runtime, or None if it has none."""
    proc = subprocess.run([CC, "-print-file-name=libasan.so"], capture_output=True, text=True)
    path = proc.stdout.strip()
    return path if proc.returncode == 0 and os.path.isabs(path) and os.path.exists(path) else None


def run_sanitized_pytest(test_file: str, extra_args: Sequence[str] = ()) -> tuple[
        subprocess.CompletedProcess[str], str]:
    """Run ``pytest test_file`` in a child with the ASan runtime preloaded and sanitizers on.

    Returns the finished process and the sanitizer reports (written to files, because pytest
    captures the child's stderr per test and a sanitizer abort would lose it)."""
    runtime = asan_runtime()
    if runtime is None:
        raise RuntimeError(f"{CC} has no libasan.so")
    with tempfile.TemporaryDirectory(prefix="bf-sanitize-") as logs:
        env = dict(os.environ)
        env.update({
            SANITIZE_ENV: "1",
            "LD_PRELOAD": runtime,
            "ASAN_OPTIONS": f"detect_leaks=0:exitcode=99:log_path={logs}/asan",
            "UBSAN_OPTIONS": f"print_stacktrace=1:halt_on_error=1:exitcode=98:log_path={logs}/ubsan",
            "PYTHONDONTWRITEBYTECODE": "1",
        })
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file, *extra_args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              cwd=str(KERNELS_DIR.parent.parent))
        reports = "".join(f.read_text(errors="replace") for f in sorted(Path(logs).iterdir()))
    return proc, reports


def delegated() -> bool:
    """The sanitized kernel tests were asked for and run in a child, not in this process."""
    return sanitize_requested() and not asan_loaded()


# Kernel tests: run here, unless a sanitized child runs them.
in_process = pytest.mark.skipif(delegated(), reason="runs in the sanitized child process")
# The one test that starts the sanitized child.
delegating = pytest.mark.skipif(not delegated(),
                                reason="set BOARDFIT_SANITIZE=1 to run the kernels under sanitizers")


def check_sanitized(test_file: str, selection: str) -> None:
    """Run the tests of ``test_file`` matching ``-k selection`` under ASan/UBSan in a child
    process; fail with its output and the sanitizer reports unless they all pass."""
    if asan_runtime() is None:
        pytest.skip(f"{CC} has no AddressSanitizer runtime")
    proc, log = run_sanitized_pytest(test_file, ["-k", selection])
    report = (proc.stdout + proc.stderr)[-4000:] + log[:6000]
    assert proc.returncode == 0, f"sanitized kernel tests failed (exit {proc.returncode}):\n{report}"
    assert " passed" in proc.stdout, report


# The Cortex-M cores every kernel must compile for (issue 5): -mcpu flags by name.
CORTEX_M_FLAGS: Mapping[str, tuple[str, ...]] = {
    "cortex-m4": ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
    "cortex-m0plus": ("-mcpu=cortex-m0plus", "-mthumb"),
}


def check_cross_compile(sources: Sequence[Path], flags: Sequence[str]) -> None:
    """Compile each kernel source with ``arm-none-eabi-gcc`` and ``flags`` (``-mcpu=…``) under
    ``-std=c99 -Wall -Wextra -Werror -O2``; skip when the compiler is not installed."""
    import shutil

    cc = shutil.which("arm-none-eabi-gcc")
    if cc is None:
        pytest.skip("arm-none-eabi-gcc is not installed")
    for src in sources:
        cmd = [cc, *flags, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", f"-I{INCLUDE_DIR}",
               f"-I{src.parent}", f"-I{REF_DIR}", "-c", str(src), "-o", os.devnull]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"
