"""Compilers and binutils for the host and for each board, as data plus one subprocess funnel.

A :class:`Toolchain` knows the compiler driver, the binutils prefix and the target flags
(``-mcpu``, ``-mfpu``, ``--specs`` …).  Target flags come from board data only
(``boards/<id>.toml``), never from a table here; this module adds the flags every boardfit build
uses (C99, warnings as errors) and the flags of a build *kind* (position-independent code for a
host shared library, sanitizers).  Every compiler, ``size`` and ``readelf`` call goes through
:func:`run_tool`, which logs the argv and turns a failure into a :class:`BuildError` that quotes
the tool's message.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import BuildError

if TYPE_CHECKING:
    from toolkit.boards import Board

log = logging.getLogger(__name__)

# Every generated project must compile cleanly with these (issue 3: -Wall -Wextra -Werror -std=c99).
WARNING_FLAGS: tuple[str, ...] = ("-std=c99", "-Wall", "-Wextra", "-Werror")
# Let the linker drop unused kernels and data; size accounting relies on one section per symbol.
SECTION_FLAGS: tuple[str, ...] = ("-ffunction-sections", "-fdata-sections")
SANITIZE_FLAGS: tuple[str, ...] = (
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
)

HOST = "host"
BARE_METAL = "bare-metal"
LINUX = "linux"


@dataclass(frozen=True)
class Toolchain:
    """One compiler driver with its binutils and target flags.

    ``kind`` is ``host`` (this machine: shared libraries loaded through cffi), ``bare-metal``
    (an MCU image linked with a linker script) or ``linux`` (a static executable for an emulated
    Linux board).  ``cflags`` are the target flags used for compiling *and* linking (as GCC wants
    for ``-mcpu``/``-mfloat-abi``); ``ldflags`` only for linking.
    """

    name: str
    cc: str
    prefix: str = ""
    kind: str = HOST
    cflags: tuple[str, ...] = ()
    ldflags: tuple[str, ...] = ()
    opt: tuple[str, ...] = ("-O2",)
    isa: str = "host"

    def tool(self, name: str) -> str:
        """The binutils program ``name`` (``size``, ``readelf``, ``objcopy``) of this toolchain."""
        return f"{self.prefix}{name}"

    def available(self) -> bool:
        return shutil.which(self.cc) is not None and shutil.which(self.tool("size")) is not None

    def require(self) -> None:
        if shutil.which(self.cc) is None:
            raise BuildError(
                f"compiler {self.cc!r} of toolchain {self.name} is not installed (see TOOLCHAIN.md)"
            )

    def with_flags(self, *extra: str) -> Toolchain:
        return replace(self, cflags=(*self.cflags, *extra))

    def compile_argv(
        self,
        sources: Sequence[str | os.PathLike[str]],
        output: str | os.PathLike[str],
        *,
        include_dirs: Sequence[str | os.PathLike[str]] = (),
        defines: Sequence[str] = (),
        compile_only: bool = False,
        extra: Sequence[str] = (),
    ) -> list[str]:
        """argv that compiles ``sources`` (``-c`` when ``compile_only``) into ``output``."""
        # GCC spec files (--specs=nano.specs, picolibc.specs) select the C library's headers as
        # well as its libraries, so they apply when compiling too.
        specs = [f for f in self.ldflags if f.startswith("--specs=")] if compile_only else []
        argv = [self.cc, *WARNING_FLAGS, *self.opt, *SECTION_FLAGS, *self.cflags, *specs]
        argv += [f"-I{d}" for d in include_dirs]
        argv += [f"-D{d}" for d in defines]
        argv += list(extra)
        if compile_only:
            argv.append("-c")
        argv += [str(s) for s in sources]
        argv += ["-o", str(output)]
        if not compile_only:
            argv += list(self.ldflags)
        return argv

    @property
    def version(self) -> str:
        """The first line of ``cc --version`` (part of every cache key of measured sizes)."""
        return _version(self.cc)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cc": self.cc,
            "kind": self.kind,
            "cflags": list(self.cflags),
            "ldflags": list(self.ldflags),
            "opt": list(self.opt),
        }


@functools.cache
def _version(cc: str) -> str:
    try:
        return run_tool([cc, "--version"]).splitlines()[0].strip()
    except (BuildError, IndexError):
        return "unknown"


def host_toolchain(cc: str | None = None, opt: Sequence[str] = ("-O2",)) -> Toolchain:
    """This machine's C compiler (``$CC`` or ``gcc``) building position-independent code."""
    compiler = cc or os.environ.get("CC", "gcc")
    return Toolchain(name="host", cc=compiler, kind=HOST, cflags=("-fPIC",), opt=tuple(opt))


# Board kinds (toolkit.boards.KINDS) -> build kinds.
_BUILD_KIND = {"mcu": BARE_METAL, "linux": LINUX, "host": HOST}


def toolchain_for(board: Board | None, opt: Sequence[str] = ("-O2",)) -> Toolchain:
    """The toolchain that builds for ``board`` (``None``: this machine).

    The compiler, binutils prefix and every target flag come from the board file's
    ``[toolchain]`` table; only the build kind's own flags (``-fPIC`` on the host) are added here.
    """
    if board is None:
        return host_toolchain(opt=opt)
    tc = board.toolchain
    kind = _BUILD_KIND[board.kind]
    cflags = (*tc.cflags, "-fPIC") if kind == HOST else tuple(tc.cflags)
    return Toolchain(
        name=board.id,
        cc=tc.cc,
        prefix=tc.prefix,
        kind=kind,
        cflags=cflags,
        ldflags=tuple(tc.ldflags),
        opt=tuple(opt),
        isa=board.arch,
    )


def run_tool(argv: Sequence[str], cwd: str | os.PathLike[str] | None = None, timeout: float = 300) -> str:
    """Run one toolchain program; return its stdout.  Logs the command line.

    A missing program or a non-zero exit raises :class:`BuildError` with the command and the end
    of its stderr (a compiler's first error is what a user needs).
    """
    cmd = [str(a) for a in argv]
    log.info("$ %s", shlex.join(cmd))
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise BuildError(f"{cmd[0]} is not installed: {shlex.join(cmd)}") from exc
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"{cmd[0]} timed out after {timeout:.0f} s: {shlex.join(cmd)}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
        raise BuildError(f"{cmd[0]} failed (exit {proc.returncode}): {shlex.join(cmd)}\n{tail}")
    return proc.stdout


def cache_dir() -> Path:
    """Where compiled objects and measured sizes are cached (``$BOARDFIT_CACHE_DIR`` or
    ``~/.cache/boardfit``).  Entries are content-addressed, so the cache is never stale."""
    env = os.environ.get("BOARDFIT_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "boardfit"
    return base


def compile_object(
    tc: Toolchain,
    source: str | os.PathLike[str],
    *,
    include_dirs: Sequence[str | os.PathLike[str]] = (),
    extra: Sequence[str] = (),
    cache: Path | None = None,
) -> Path:
    """Compile one C file to an object, reusing a cached object when nothing that could change it
    changed: the compiler (path and version), every flag, the source and every header in
    ``include_dirs`` are the cache key.  Safe for concurrent callers (atomic rename)."""
    src = Path(source)
    h = hashlib.sha256()
    h.update(repr((tc.cc, tc.version, tc.describe(), tuple(extra), src.name)).encode())
    h.update(src.read_bytes())
    for d in include_dirs:
        for header in sorted(Path(d).glob("*.h")):
            h.update(header.name.encode())
            h.update(header.read_bytes())
    key = h.hexdigest()[:24]
    out = (cache or cache_dir() / "objects") / f"{src.stem}-{key}.o"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".o", dir=out.parent)
    os.close(fd)
    try:
        run_tool(tc.compile_argv([src], tmp, include_dirs=include_dirs, extra=extra, compile_only=True))
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def compile_objects(
    tc: Toolchain,
    sources: Sequence[str | os.PathLike[str]],
    *,
    include_dirs: Sequence[str | os.PathLike[str]] = (),
    extra: Sequence[str] = (),
) -> list[Path]:
    """:func:`compile_object` for several sources, in parallel on the available cores."""
    workers = max(1, min(len(sources), os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(compile_object, tc, s, include_dirs=include_dirs, extra=extra) for s in sources
        ]
        return [f.result() for f in futures]


def libasan_path(cc: str = "gcc") -> Path | None:
    """The ASan runtime a sanitized shared object needs preloaded, if the compiler has one."""
    try:
        out = run_tool([cc, "-print-file-name=libasan.so"]).strip()
    except BuildError:
        return None
    path = Path(out)
    return path if path.is_absolute() and path.exists() else None
