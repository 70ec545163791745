"""Task types for the worker benchmarks; loaded into workers with ``--plugin bench.bench_plugin``.

``bench-step`` does nothing: the figure is the engine's own cost per job.
With ``BPMNLITE_BENCH_PICKUPS`` set to a file path, it first appends one line
``<idempotency key>\\t<instance id>\\t<element id>\\t<time.time()>`` to that file,
so the latency scenario can tell when each job's handler started. Each line
is one ``write`` to a file opened with ``O_APPEND``, so lines from several
worker threads and processes do not interleave.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bpmnlite import TaskContext, hookimpl

TASK_TYPE = "bench-step"
PICKUPS_ENV = "BPMNLITE_BENCH_PICKUPS"

_pickups_path = os.environ.get(PICKUPS_ENV) or None
_fd: int | None = None


def _step(ctx: TaskContext) -> None:
    if _pickups_path is None:
        return
    at = time.time()  # first thing the handler does
    global _fd
    if _fd is None:
        _fd = os.open(_pickups_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, f"{ctx.idempotency_key}\t{ctx.instance_id}\t{ctx.element_id}\t{at:.6f}\n".encode())


@hookimpl
def bpmnlite_task_types() -> dict[str, Any]:
    return {TASK_TYPE: _step}
