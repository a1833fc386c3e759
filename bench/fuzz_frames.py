"""Fuzz the device's frame parser and command handlers at scale and print a table of outcomes.

    python bench/fuzz_frames.py --frames 100000 [--seed 0] [--batch 20000] [--no-sanitize]

Builds the runtime + fake model + in-memory platform (tests/fixtures/frame_fuzz_main.c) with
AddressSanitizer and UndefinedBehaviorSanitizer, feeds it random and mutated frames (valid
requests with edge-value fields, bit flips, byte mutations, noise, oversized frames, bad
version or length fields, truncated and spliced frames, whole OPEN/INVOKE/read sessions) and
holds every answer to the host's independent verdict (tests/fixtures/frame_fuzz.py): no crash,
no sanitizer report, no frame with a bad CRC accepted, exactly one well-formed reply per frame.
Exit status 1 on any violation.  The default test suite runs a few thousand of the same cases
(tests/test_frame_fuzz.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures import frame_fuzz as ff
from fixtures.runtime_build import VARIANTS, Variant, build, sanitizer_env


def _table(outcomes: Counter[str]) -> str:
    categories = sorted({k.split(" ", 1)[0] for k in outcomes})
    columns = ["silent", "rejected", "refused", "accepted"]
    lines = [f"{'category':<12}" + "".join(f"{c:>10}" for c in columns) + f"{'total':>10}"]
    for cat in categories:
        row = Counter()
        for k, v in outcomes.items():
            if k.startswith(cat + " "):
                row[k.split(" ", 1)[1].split(":")[0]] += v
        lines.append(f"{cat:<12}" + "".join(f"{row[c]:>10}" for c in columns) + f"{sum(row.values()):>10}")
    return "\n".join(lines)


def _detail(outcomes: Counter[str], kind: str) -> str:
    per: Counter[str] = Counter()
    for k, v in outcomes.items():
        if f" {kind}:" in k:
            per[k.rsplit(":", 1)[1]] += v
    return ", ".join(f"{name} {n}" for name, n in sorted(per.items(), key=lambda x: -x[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=100_000, help="number of cases (default 100000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=20_000, help="cases per driver run")
    ap.add_argument("--no-sanitize", action="store_true", help="plain -O2 build (faster, weaker)")
    args = ap.parse_args(argv)

    if args.no_sanitize:
        base = VARIANTS["fuzz-asan"]
        VARIANTS["fuzz-plain"] = Variant("fuzz-plain", base.sources, base.defines, sanitize=False)
    exe = build("fuzz-plain" if args.no_sanitize else "fuzz-asan")
    env = None if args.no_sanitize else sanitizer_env()

    outcomes: Counter[str] = Counter()
    pieces = 0
    t0 = time.perf_counter()
    done = 0
    batch_no = 0
    try:
        while done < args.frames:
            n = min(args.batch, args.frames - done)
            batch = ff.cases(n, seed=args.seed * 1_000_003 + batch_no)
            replies = ff.run_driver(exe, batch, env)
            outcomes += ff.check(batch, replies)
            pieces += len(replies)
            done += n
            batch_no += 1
    except ff.Mismatch as e:
        print(f"VIOLATION after {done} cases (seed {args.seed}, batch {batch_no}):\n{e}")
        return 1
    elapsed = time.perf_counter() - t0

    print(
        f"frame fuzzing: {done:,} cases, {pieces:,} delimited frames, seed {args.seed}, "
        f"{'plain' if args.no_sanitize else 'ASan+UBSan'} build, max payload {ff.MAX_PAYLOAD}, "
        f"{elapsed:.1f} s"
    )
    print()
    print(_table(outcomes))
    print()
    print("silent: empty frames (bare delimiters); rejected: error frame, frame not authentic or malformed;")
    print("refused: authentic request answered with a command error; accepted: authentic request served.")
    print("Every verdict is checked against the host's own decoding (zlib CRC) of the same bytes.")
    print()
    print(f"rejected (frame not authentic or malformed): {_detail(outcomes, 'rejected')}")
    print(f"refused (authentic request, command error):  {_detail(outcomes, 'refused')}")
    print(f"accepted (authentic request, served):        {_detail(outcomes, 'accepted')}")
    flips = sum(
        v for k, v in outcomes.items() if k.startswith("bitflip ") and ("accepted" in k or "refused" in k)
    )
    print(f"bit-flipped frames executed: {flips} (must be 0); violations: 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
