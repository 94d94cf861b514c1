"""Replays issue 23's hostile inputs, files and clients; prints (case, expected, observed) and exits 1 on a miss.

Every case lives in ``benchmarks/hardening/<area>.py`` and runs the real CLI or a real server on loopback,
each in a fresh temporary directory. Writes docs/benchmarks/hardening.{md,json}.

    python benchmarks/hardening_probe.py [--only AREA_SUBSTRING] [--no-write]
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks.hardening, tests.fixtures

from benchmarks import hardening  # noqa: E402
from benchmarks._common import write_results  # noqa: E402
from benchmarks.hardening import Case, Observed  # noqa: E402


def all_cases() -> list[Case]:
    cases: list[Case] = []
    for info in sorted(pkgutil.iter_modules(hardening.__path__), key=lambda m: m.name):
        cases += importlib.import_module(f"benchmarks.hardening.{info.name}").CASES
    return cases


def run_case(case: Case) -> tuple[Observed, float]:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dnnsplit-probe-") as work:
        try:
            observed = case.run(Path(work))
        except Exception as exc:  # noqa: BLE001 - a probe that crashes is a failed case, not a crashed run
            traceback.print_exc()
            observed = Observed(False, f"probe raised {type(exc).__name__}: {exc}")
    # The temporary directory's name changes every run: WORK keeps the results file diffable.
    observed = Observed(observed.ok, observed.text.replace(str(Path(work).resolve()), "WORK").replace(work, "WORK"))
    return observed, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run only the cases whose area or name contains this")
    parser.add_argument("--no-write", action="store_true", help="do not write docs/benchmarks/hardening.*")
    args = parser.parse_args()
    cases = [c for c in all_cases() if args.only in c.area or args.only in c.name]
    rows = []
    for case in cases:
        observed, seconds = run_case(case)
        mark = "pass" if observed.ok else "FAIL"
        print(f"[{mark}] {case.area} | {case.name} | {observed.text} ({seconds:.1f} s)", flush=True)
        rows.append(
            {
                "area": case.area,
                "case": case.name,
                "expected": case.expected,
                "observed": observed.text,
                "pass": observed.ok,
                "seconds": round(seconds, 2),
            }
        )
    failed = [r for r in rows if not r["pass"]]
    lines = [
        "# Hardening probe (issue 23)",
        "",
        "`python benchmarks/hardening_probe.py`: each case runs the real CLI, or a real server on loopback,",
        "in a fresh temporary directory.",
        "",
        f"**{len(rows) - len(failed)} of {len(rows)} cases pass.**",
        "",
        "| area | case | expected | observed | |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r["area"], r["case"], r["expected"], r["observed"], "pass" if r["pass"] else "**FAIL**"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if not args.no_write and not args.only:
        write_results("hardening", {"cases": rows}, "\n".join(lines) + "\n")
    else:
        print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
