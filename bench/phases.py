"""Where one in-process instance's time goes, by phase, with plain timers (no profiler).

``python bench/phases.py parallel 50 --instances 200`` starts that many
instances of the model (after a warm-up) a few times over, with a timer
around each phase of a command, and prints the best repetition's time per
instance:

* ``runner``: moving tokens and running scripts (``Runner.run``);
* ``build``: turning what the runner did into rows (``repository.write_effects``
  and ``save_instance``);
* ``flush``: sending the rows (``Batch.flush``);
* ``commit``: the database commit;
* ``rest``: everything else (begin, the latest-definition look-up, the
  engine's own set-up and the snapshot it returns).

The timers cost a little themselves; compare runs of this tool, not its
totals with ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import ``bench`` as a package, not its files as modules
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.inprocess import BACKENDS, START_VARIABLES, LiteRunner  # noqa: E402
from bench.models import ModelSet  # noqa: E402

PHASES = ("runner", "build", "flush", "commit")


class Timers:
    """Seconds spent in each phase; ``wrap`` puts a timer around a function or method."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, name: str, phase: str) -> None:
        original = getattr(owner, name)
        spent = self.spent

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[phase] += time.perf_counter() - began

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, original))

    def reset(self) -> None:
        for phase in self.spent:
            self.spent[phase] = 0.0

    def close(self) -> None:
        for undo in reversed(self._undo):
            undo()


def instrument() -> Timers:
    import sqlalchemy.engine.default as default

    from bpmnlite.runtime.runner import Runner
    from bpmnlite.store import repository, writer

    timers = Timers()
    timers.wrap(Runner, "run", "runner")
    timers.wrap(repository, "write_effects", "build")
    timers.wrap(repository, "save_instance", "build")
    timers.wrap(writer.Batch, "flush", "flush")
    timers.wrap(default.DefaultDialect, "do_commit", "commit")
    return timers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/phases.py", description=__doc__.splitlines()[0])
    parser.add_argument("shape", choices=("straight", "parallel"))
    parser.add_argument("n", type=int, help="tasks (straight) or branches (parallel)")
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5, help="repetitions; the fastest is shown (default 5)")
    parser.add_argument("--backend", choices=BACKENDS, default="sqlite-file")
    args = parser.parse_args(argv)

    with ModelSet() as models, tempfile.TemporaryDirectory(prefix="bpmnlite-bench-db-") as tmp:
        model = models.straight(args.n) if args.shape == "straight" else models.parallel(args.n)
        runner = LiteRunner(model, args.backend, Path(tmp))
        timers = instrument()
        try:
            for _ in range(50):
                runner.run(dict(START_VARIABLES))
            best: tuple[float, dict[str, float]] | None = None
            for _ in range(args.repeat):
                timers.reset()
                gc.collect()
                began = time.perf_counter()
                for _ in range(args.instances):
                    runner.run(dict(START_VARIABLES))
                total = time.perf_counter() - began
                if best is None or total < best[0]:
                    best = (total, dict(timers.spent))
        finally:
            timers.close()
            runner.close()
    assert best is not None
    total, spent = best
    per = 1e6 / args.instances
    print(f"{args.shape} {args.n}, {args.backend}: {args.instances / total:,.0f} instances/s "
          f"(best of {args.repeat} x {args.instances})")
    for phase in PHASES:
        print(f"  {phase:8s} {spent[phase] * per:8.1f} us")
    print(f"  {'rest':8s} {(total - sum(spent.values())) * per:8.1f} us")
    print(f"  {'total':8s} {total * per:8.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
