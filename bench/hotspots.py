"""Profile bpmnlite on one in-process scenario with cProfile.

``python bench/hotspots.py straight 10 --instances 300`` runs that many
instances of the model (after a warm-up) under cProfile and prints the top
functions by cumulative and by own time. ``--out FILE`` keeps the raw stats
for snakeviz or ``python -m pstats``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import ``bench`` as a package, not its files as modules
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.inprocess import BACKENDS, START_VARIABLES, LiteRunner  # noqa: E402
from bench.models import ModelSet  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/hotspots.py", description=__doc__.splitlines()[0])
    parser.add_argument("shape", choices=("straight", "parallel"))
    parser.add_argument("n", type=int, help="tasks (straight) or branches (parallel)")
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--backend", choices=BACKENDS, default="sqlite-file")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path, help="write the raw cProfile stats here")
    args = parser.parse_args(argv)

    with ModelSet() as models, tempfile.TemporaryDirectory(prefix="bpmnlite-bench-db-") as tmp:
        model = models.straight(args.n) if args.shape == "straight" else models.parallel(args.n)
        runner = LiteRunner(model, args.backend, Path(tmp))
        try:
            runner.run(dict(START_VARIABLES))
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.instances):
                runner.run(dict(START_VARIABLES))
            profiler.disable()
        finally:
            runner.close()
    if args.out:
        profiler.dump_stats(str(args.out))
    stats = pstats.Stats(profiler)
    for order in ("cumulative", "tottime"):
        print(f"\n=== {args.shape} {args.n}, {args.instances} instances, {args.backend}: by {order} ===")
        stats.sort_stats(order).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
