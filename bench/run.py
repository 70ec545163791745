"""Run the benchmarks: ``python bench/run.py [--quick] [--only NAME] [--json-out FILE]``.

Prints one JSON object (machine, scenarios, results, targets) and then
markdown tables. Progress goes to stderr. Exit status: 0 when every selected
scenario ran, 1 when one was skipped or produced a wrong result, 2 on usage
errors. These are measurements, not tests: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import ``bench`` as a package, not its files as modules
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import machine, report  # noqa: E402
from bench.registry import SCENARIOS, BenchError, Result, Settings, Unavailable  # noqa: E402

# Modules whose @scenario functions register themselves, in the order they run.
SCENARIO_MODULES = ("bench.inprocess", "bench.async_throughput", "bench.latency", "bench.growth", "bench.memory")


def load() -> None:
    for name in SCENARIO_MODULES:
        importlib.import_module(name)


def main(argv: list[str] | None = None) -> int:
    load()
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repetitions (under a minute)")
    parser.add_argument(
        "--only", action="append", metavar="NAME", help=f"run only these scenarios ({', '.join(SCENARIOS)})"
    )
    parser.add_argument("--json-out", metavar="FILE", type=Path, help="also write the JSON object to FILE")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)

    if args.list:
        for sc in SCENARIOS.values():
            print(f"{sc.name}: {sc.summary}")
        return 0
    names = [n for item in args.only or [] for n in item.split(",") if n] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")

    settings = Settings(quick=args.quick)
    chosen = [SCENARIOS[n] for n in names]
    about = machine.describe()
    results: list[Result] = []
    skipped: list[dict[str, str]] = []
    began = time.perf_counter()
    for sc in chosen:
        print(f"bench: {sc.name} ...", file=sys.stderr, flush=True)
        step = time.perf_counter()
        try:
            results += sc.run(settings)
        except Unavailable as exc:
            skipped.append({"scenario": sc.name, "reason": str(exc)})
            print(f"bench: {sc.name} skipped: {exc}", file=sys.stderr)
            continue
        except BenchError as exc:
            print(f"bench: {sc.name} produced a wrong result, no figures reported: {exc}", file=sys.stderr)
            return 1
        print(f"bench: {sc.name} done in {time.perf_counter() - step:.1f} s", file=sys.stderr, flush=True)

    plans = {sc.name: sc.plan(settings) for sc in chosen}
    mode = "quick" if args.quick else "full"
    doc = report.document(mode, about, chosen, plans, results, skipped, time.perf_counter() - began)
    text = json.dumps(doc, indent=2)
    print(text)
    print()
    print(report.markdown(doc))
    if args.json_out:
        args.json_out.write_text(text + "\n", encoding="utf-8")
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
