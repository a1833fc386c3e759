"""ISA features → kernel variants: which directory of ``firmware_gen/kernels`` runs each layer.

A *kernel variant* is a directory of C files with the prototypes of ``bf_kernels.h``
(``ref`` is the portable one).  The choice is a pure function of board data — the board's
``arch`` and ``features`` — or, for the host (``board=None``), of this machine's CPU flags
(read from ``/proc/cpuinfo``, or from the compiler's ``-march=native`` macros elsewhere).

* :func:`kernel_variants` — the variants a build may use, in order of preference, ``ref`` last.
  The project generator takes each kernel *family* (a source file, e.g. ``conv.c``) from the
  first variant that has it (:func:`family_variant`).
* :func:`variant_cflags` — extra compiler flags a variant needs on that target.  Only the x86
  variant has any: its code paths (portable / POPCNT / AVX2 / AVX-512 VPOPCNTDQ) are chosen at
  compile time by ``-m`` flags, and the flags come from the CPU's features here.  Arm variants
  read the board's own ``-mcpu`` (``__ARM_NEON``, ``__ARM_FEATURE_DSP``,
  ``__ARM_FEATURE_DOTPROD``), so the board file already says everything.
* :func:`layer_variant` — what actually runs one lowered call: the variant's name when it has an
  optimized kernel for that symbol *and* that geometry, else ``"ref"`` (the variant source then
  runs the reference code it includes).  The code generator records it per layer, so a plan shows
  which layers fell back.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from firmware_gen.lower import KernelCall
    from toolkit.boards import Board

log = logging.getLogger(__name__)

REF: Final = "ref"
KERNELS_DIR: Final = Path(__file__).resolve().parent.parent / "firmware_gen" / "kernels"

# x86 code paths of x86/*.c, lowest first: (level name, features it needs, -m flags).
X86_LEVELS: Final[tuple[tuple[str, frozenset[str], tuple[str, ...]], ...]] = (
    ("portable", frozenset(), ()),
    ("popcnt", frozenset({"popcnt"}), ("-mpopcnt",)),
    ("avx2", frozenset({"popcnt", "avx2"}), ("-mpopcnt", "-mavx2")),
    ("avx512-vpopcntdq", frozenset({"popcnt", "avx2", "avx512", "avx512-vpopcntdq"}),
     ("-mpopcnt", "-mavx2", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vpopcntdq")),
)


@dataclass(frozen=True)
class IsaTarget:
    """What the variant choice depends on: a board's arch and ISA features."""

    arch: str
    features: frozenset[str]
    board: str = "host"

    def has(self, feature: str) -> bool:
        return feature in self.features


Predicate = Callable[["KernelCall"], bool]


def _always(call: KernelCall) -> bool:
    return True


@dataclass(frozen=True)
class Optimized:
    """One optimized kernel of a variant: how it works, and when it runs (else ref's code)."""

    how: str
    when: Predicate = _always
    condition: str = ""  # the predicate in words, for tables


@dataclass(frozen=True)
class KernelVariant:
    name: str
    summary: str
    arches: frozenset[str]
    requires: frozenset[str]  # board features it needs (all of them)
    kernels: Mapping[str, Optimized] = field(default_factory=dict)  # symbol -> how

    def applies(self, target: IsaTarget) -> bool:
        return target.arch in self.arches and self.requires <= target.features


# ---------------------------------------------------------------------------------------------
# Geometry predicates (the Python twins of the C fallbacks).


def _dims(call: KernelCall, name: str) -> Mapping[str, Any]:
    value = call.param(name)
    return dict(value.fields)  # type: ignore[union-attr]


def _conv_not_grouped(call: KernelCall) -> bool:
    return bool(_dims(call, "filter")["c"] == _dims(call, "input")["c"])


def _depth_multiplier_one(call: KernelCall) -> bool:
    return call.param("depth_multiplier") == 1


def _xnor_fits(tile_words: int, row_align: int) -> Predicate:
    """bf_xt_shape_for of opt/bf_xnor_tiled.h: A rows of round_up(taps * words) fit the tile."""

    def fits(call: KernelCall) -> bool:
        words, planes = int(call.param("words")), int(call.param("act_planes"))  # type: ignore[arg-type]
        taps = 1
        if call.symbol.startswith("bf_conv2d"):
            f = _dims(call, "filter")
            taps = int(f["h"]) * int(f["w"])
        stride = -(-taps * words // row_align) * row_align
        return 1 <= planes <= 3 and stride * planes <= tile_words

    return fits


_GROUPS = "not grouped (filter depth = input depth)"
_MULT1 = "depth multiplier 1"


def _xnor(how: str, tile_words: int, row_align: int) -> dict[str, Optimized]:
    cond = f"taps·words·act_planes ≤ {tile_words} words (stack tile)"
    pred = _xnor_fits(tile_words, row_align)
    return {"bf_conv2d_xnor_s8": Optimized(how, pred, cond),
            "bf_fully_connected_xnor_s8": Optimized(how, pred, cond)}


VARIANTS: Final[tuple[KernelVariant, ...]] = (
    KernelVariant(
        "x86", "x86-64 hosts: POPCNT / AVX2 / AVX-512 VPOPCNTDQ chosen by -m flags",
        frozenset({"x86_64"}), frozenset(),
        {"bf_conv2d_s8": Optimized("AVX2 builds: im2col to int16 (x + input offset) in scratch + "
                                   "VPMADDWD GEMM, 2 channels × 4 positions (portable build: ref)",
                                   _conv_not_grouped, _GROUPS),
         "bf_depthwise_conv2d_s8": Optimized("AVX2 builds: 8 channels per vector (VPMOVSXBD + "
                                             "VPMULLD) (portable build: ref)", _depth_multiplier_one,
                                             _MULT1),
         "bf_fully_connected_s8": Optimized("AVX2 builds: 4 units per pass, int16 widening + VPMADDWD "
                                            "(portable build: ref)"),
         **_xnor("im2col bit tile + POPCNT / AVX2 VPSHUFB / AVX-512 VPOPCNTQ; AVX2 compare+movemask "
                 "binarization", 4096, 16)}),
    KernelVariant(
        "neon", "Arm Advanced SIMD (AArch64 and Armv7-A), SDOT where the core has it",
        frozenset({"aarch64", "armv7-a"}), frozenset({"neon"}),
        {"bf_conv2d_s8": Optimized("im2col into scratch + int8 GEMM (SMULL/SMLAL/SADALP, SDOT with "
                                   "dotprod), 2 channels × 4 positions", _conv_not_grouped, _GROUPS),
         "bf_depthwise_conv2d_s8": Optimized("8 channels per vector (SMLAL), vector requantization "
                                             "(SQRDMULH + rounding shift)", _depth_multiplier_one, _MULT1),
         "bf_fully_connected_s8": Optimized("4 units per pass over the input (SMULL/SADALP, SDOT "
                                            "with dotprod)"),
         **_xnor("im2col bit tile + VCNT/VPADAL; NEON compare + bit-weight binarization", 4096, 4)}),
    KernelVariant(
        "armv7em", "Cortex-M4/M7/M33 DSP extension (SMLAD, SXTB16, USADA8)",
        frozenset({"armv7e-m", "armv8-m.main", "armv8.1-m.main"}), frozenset({"dsp"}),
        {"bf_conv2d_s8": Optimized("im2col to q15 in scratch + SMLAD GEMM, 2 channels × 2 positions",
                                   _conv_not_grouped, _GROUPS),
         "bf_depthwise_conv2d_s8": Optimized("4 channels per word (SXTB16 + SMLABB/SMLATT)",
                                             _depth_multiplier_one, _MULT1),
         "bf_fully_connected_s8": Optimized("input to q15 in scratch + SMLAD, 2 units per pass"),
         **_xnor("im2col bit tile + SWAR popcount over 31 words, USADA8 byte sums", 256, 1)}),
    KernelVariant(
        "armv6m", "Cortex-M0/M0+ (no DSP, no popcount instruction)",
        frozenset({"armv6-m", "armv8-m.base"}), frozenset(),
        _xnor("im2col bit tile + SWAR popcount with deferred byte sums", 128, 1)),
)
_BY_NAME: Final = {v.name: v for v in VARIANTS}


def variant(name: str) -> KernelVariant:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown kernel variant {name!r}; known: {REF}, {', '.join(_BY_NAME)}") from None


def variant_names() -> tuple[str, ...]:
    return (REF, *_BY_NAME)


# ---------------------------------------------------------------------------------------------
# Targets.

# /proc/cpuinfo flag -> boardfit feature name (toolkit.boards.FEATURES).
_CPUINFO_X86: Final[Mapping[str, str]] = {
    "popcnt": "popcnt", "sse4_2": "sse4.2", "avx2": "avx2", "avx512_vnni": "avx512-vnni",
    "avx512_vpopcntdq": "avx512-vpopcntdq",
}
_CPUINFO_ARM: Final[Mapping[str, str]] = {
    "asimd": "neon", "neon": "neon", "asimddp": "dotprod", "crc32": "crc", "asimdhp": "fp16",
    "i8mm": "i8mm", "sve": "sve", "fp": "fpu", "vfp": "fpu",
}
# Compiler macros of -march=native -> feature (where /proc/cpuinfo is missing).
_MACROS: Final[Mapping[str, str]] = {
    "__POPCNT__": "popcnt", "__SSE4_2__": "sse4.2", "__AVX2__": "avx2",
    "__AVX512VNNI__": "avx512-vnni", "__AVX512VPOPCNTDQ__": "avx512-vpopcntdq",
    "__ARM_NEON": "neon", "__ARM_FEATURE_DOTPROD": "dotprod", "__ARM_FEATURE_CRC32": "crc",
}


def host_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def features_from_cpuinfo(text: str, arch: str) -> frozenset[str]:
    """boardfit feature names from the ``flags``/``Features`` line of /proc/cpuinfo."""
    m = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", text, flags=re.M)
    if m is None:
        return frozenset()
    flags = set(m.group(1).split())
    table = _CPUINFO_X86 if arch == "x86_64" else _CPUINFO_ARM
    found = {name for flag, name in table.items() if flag in flags}
    if arch == "x86_64" and {"avx512f", "avx512bw", "avx512vl"} <= flags:
        found.add("avx512")
    return frozenset(found)


def _features_from_compiler(cc: str = "gcc") -> frozenset[str]:
    try:
        out = subprocess.run([cc, "-march=native", "-dM", "-E", "-x", "c", "/dev/null"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    defined = set(re.findall(r"^#define (\w+)", out, flags=re.M))
    found = {name for macro, name in _MACROS.items() if macro in defined}
    if {"__AVX512F__", "__AVX512BW__", "__AVX512VL__"} <= defined:
        found.add("avx512")
    return frozenset(found)


@functools.cache
def host_features() -> frozenset[str]:
    """This machine's ISA features (boardfit names), detected once per process."""
    arch = host_arch()
    try:
        found = features_from_cpuinfo(Path("/proc/cpuinfo").read_text(), arch)
    except OSError:
        found = frozenset()
    if not found:
        found = _features_from_compiler()
    log.info("host %s features: %s", arch, ", ".join(sorted(found)) or "none")
    return found


def host_target() -> IsaTarget:
    return IsaTarget(host_arch(), host_features(), "host")


def target_of(board: Board | None) -> IsaTarget:
    """The ISA facts of a board (``None`` or a board of kind ``host``: this machine)."""
    if board is None or board.kind == "host":
        return host_target()
    return IsaTarget(board.arch, frozenset(board.features), board.id)


# ---------------------------------------------------------------------------------------------
# Choices.


def kernel_variants(target: IsaTarget) -> tuple[str, ...]:
    """Variants for ``target`` in order of preference; ``ref`` always last."""
    return (*(v.name for v in VARIANTS if v.applies(target)), REF)


OVERRIDE_ENV: Final = "BOARDFIT_KERNEL_VARIANTS"


def board_variants(board: Board | None) -> tuple[str, ...]:
    """:func:`kernel_variants` of a board — unless ``$BOARDFIT_KERNEL_VARIANTS`` lists variants
    (comma-separated, e.g. ``ref`` to build with the portable kernels only, for comparisons)."""
    override = os.environ.get(OVERRIDE_ENV, "").strip()
    if not override:
        return kernel_variants(target_of(board))
    names = [n.strip() for n in override.split(",") if n.strip()]
    for n in names:
        if n != REF:
            variant(n)  # raises for an unknown name
    return (*(n for n in names if n != REF), REF)


def x86_level(features: frozenset[str]) -> str:
    """The highest x86 code path ``features`` allow (a name of :data:`X86_LEVELS`)."""
    return [name for name, needs, _ in X86_LEVELS if needs <= features][-1]


def x86_level_flags(level: str) -> tuple[str, ...]:
    for name, _, flags in X86_LEVELS:
        if name == level:
            return flags
    raise ValueError(f"unknown x86 level {level!r}; known: {', '.join(n for n, _, _ in X86_LEVELS)}")


def x86_target_header(target: IsaTarget) -> str:
    """``kernels/x86/bf_x86_target.h`` for a generated project: the -m flags of the target's x86
    level as a GCC target pragma (GCC defines the same ``__AVX2__``… macros), so the project
    builds that code path whatever its compiler flags.  Clang ignores it (portable path)."""
    flags = x86_level_flags(x86_level(target.features)) if target.arch == "x86_64" else ()
    lines = ["/* bf_x86_target.h — generated by boardfit (targets/isa.py): x86 level "
             f"{x86_level(target.features) if flags else 'portable'} for {target.board}. */",
             "#ifndef BF_X86_TARGET_H", "#define BF_X86_TARGET_H"]
    if flags:
        names = ",".join(f.removeprefix("-m") for f in flags)
        lines += ["#if defined(__GNUC__) && !defined(__clang__)", f'#pragma GCC target("{names}")', "#endif"]
    lines.append("#endif")
    return "\n".join(lines) + "\n"


def variant_cflags(name: str, target: IsaTarget) -> tuple[str, ...]:
    """Compiler flags variant ``name`` needs on ``target`` (beyond the board's own)."""
    if name == "x86" and target.arch == "x86_64":
        return x86_level_flags(x86_level(target.features))
    if name == "neon" and target.board == "host" and target.arch == "aarch64" and target.has("dotprod"):
        return ("-march=armv8.2-a+dotprod",)
    return ()


def build_cflags(variants: Sequence[str], target: IsaTarget) -> tuple[str, ...]:
    """The flags of every variant of a build, without repeats, in order."""
    out: list[str] = []
    for name in variants:
        for flag in variant_cflags(name, target):
            if flag not in out:
                out.append(flag)
    return tuple(out)


def family_variant(variants: Sequence[str], family: str, kernels_dir: Path = KERNELS_DIR) -> str:
    """The variant whose ``<family>.c`` a build with ``variants`` compiles (``ref`` fallback)."""
    for name in variants:
        if (kernels_dir / name / f"{family}.c").is_file():
            return name
    return REF


def layer_variant(variants: Sequence[str], call: KernelCall, kernels_dir: Path = KERNELS_DIR) -> str:
    """What runs ``call`` in a build with ``variants``: an optimized variant, or ``"ref"``."""
    name = family_variant(variants, call.family, kernels_dir)
    if name == REF:
        return REF
    opt = _BY_NAME[name].kernels.get(call.symbol)
    return name if opt is not None and opt.when(call) else REF
