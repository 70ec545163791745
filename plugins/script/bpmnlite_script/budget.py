"""The budgets of one sandboxed run: wall-clock time, executed lines and memory growth.

Time and lines are counted by a ``sys.settrace`` function installed only while
the script runs, in its own thread; it stops ``while True: pass``. It counts
the lines of script code and of the Python library code scripts call
(``statistics.mean`` loops in Python), not those of this plugin's guards,
which run on every operator and are bounded by construction.

Memory is bounded twice: guarded operations refuse to build one oversized
object before allocating it (see ``guards``), and the growth of the process's
resident memory is checked every few thousand lines and whenever guarded
operations built many large objects.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

import RestrictedPython

SCRIPT_FILENAME = "<bpmnlite script>"
"""The file name of every compiled script (tracebacks name script lines by it)."""

# Code the tracer leaves alone: this plugin's guards and RestrictedPython's helpers.
_UNTRACED = (os.path.dirname(__file__) + os.sep, os.path.dirname(RestrictedPython.__file__) + os.sep)

_TIME_CHECK_MASK = 0xFF  # look at the clock every 256 lines
_MEMORY_CHECK_MASK = 0xFFF  # and at the resident memory every 4096 lines
CHARGE_THRESHOLD = 64 * 1024
"""Objects smaller than this (bytes) are not charged: the line checks cover them."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one sandboxed run may use; the defaults suit business scripts, not number crunching.

    Attributes:
        time: wall-clock seconds.
        lines: executed lines (loop iterations count once per line).
        memory: bytes the process's resident memory may grow by.
        size: items (or characters, or bytes) of one object built by a
            guarded operation such as ``*``, ``+``, ``range`` or ``str.join``.
        int_bits: bits of one integer built by ``*``, ``**``, ``<<`` or ``pow``.
    """

    time: float = 5.0
    lines: int = 10_000_000
    memory: int = 256 * 1024 * 1024
    size: int = 10_000_000
    int_bits: int = 100_000


DEFAULT_LIMITS = Limits()


class Refusal(BaseException):
    """The sandbox refused an operation or stopped the script.

    A ``BaseException``, so ``except Exception`` in a script does not catch
    it; handlers that catch it anyway re-raise it on their first line (the
    compiler puts a ``_check_()`` there).
    """

    def __init__(self, reason: str, *, stopped: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stopped = stopped


class _Tracer(Protocol):
    def __call__(self, frame: FrameType, event: str, arg: Any) -> _Tracer | None: ...


class Budget:
    """The state of one sandboxed run: what it used so far and the first refusal."""

    __slots__ = (
        "limits",
        "element_id",
        "allowed_modules",
        "lines",
        "deadline",
        "refusal",
        "charged",
        "unchecked",
        "baseline",
        "tracer",
        "_line_tracer",
    )

    limits: Limits
    element_id: str
    allowed_modules: frozenset[str]
    lines: int
    deadline: float
    refusal: Refusal | None
    charged: int
    unchecked: int
    baseline: int | None

    def __init__(self, limits: Limits, element_id: str, allowed_modules: frozenset[str]) -> None:
        # The one object passed to sys.settrace, so check() can tell whether it is still installed.
        self.tracer: _Tracer = self.trace_call
        self._line_tracer: _Tracer = self.trace_line
        self.restart(limits, element_id, allowed_modules)

    def restart(self, limits: Limits, element_id: str, allowed_modules: frozenset[str]) -> None:
        """Start a new run on this object: all it counted and recorded before is forgotten."""
        self.limits = limits
        self.element_id = element_id
        self.allowed_modules = allowed_modules
        self.lines = 0
        self.deadline = time.monotonic() + limits.time
        self.refusal = None
        self.charged = 0
        self.unchecked = 0
        self.baseline = None

    def refuse(self, reason: str, *, stopped: bool = False) -> Refusal:
        """Record and return the refusal; later ``check()`` calls re-raise it."""
        refusal = Refusal(reason, stopped=stopped)
        if self.refusal is None:
            self.refusal = refusal
        return refusal

    def check(self) -> None:
        """Re-raise the run's refusal (called first in every except and finally block).

        Also refuses when the tracer is gone: CPython drops it when it raises,
        which a script can provoke (a RecursionError when the tracer is called
        at the recursion limit) and then catch, to run on without a budget.
        """
        if self.refusal is not None:
            raise self.refusal
        if sys.gettrace() is not self.tracer:
            raise self.refuse("it lost its time budget (the tracer failed, e.g. at the recursion limit)", stopped=True)

    def trace_call(self, frame: FrameType, event: str, arg: Any) -> _Tracer | None:
        """Global trace function: count lines everywhere but in the guards, so they stay cheap."""
        filename = frame.f_code.co_filename
        if filename == SCRIPT_FILENAME or not filename.startswith(_UNTRACED):
            return self._line_tracer
        return None

    def trace_line(self, frame: FrameType, event: str, arg: Any) -> _Tracer | None:
        """Local trace function of script frames.

        CPython turns tracing off after a trace function raised, which is why
        the refusal is also recorded for ``check()``.
        """
        if event == "line":
            lines = self.lines = self.lines + 1
            if not lines & _TIME_CHECK_MASK:
                self._periodic()
        return self._line_tracer

    def tick(self) -> None:
        """Count a step of a guard's own loop, as a line."""
        self.lines += 1
        if not self.lines & _TIME_CHECK_MASK:
            self._periodic()

    def _periodic(self) -> None:
        if self.lines > self.limits.lines:
            raise self.refuse(f"it executed more than {self.limits.lines:,} lines", stopped=True)
        if time.monotonic() > self.deadline:
            raise self.refuse(f"it ran longer than its time budget of {self.limits.time:g} s", stopped=True)
        if not self.lines & _MEMORY_CHECK_MASK:
            self.check_memory()

    def charge(self, nbytes: int) -> None:
        """Account for a large object a guarded operation just built."""
        self.charged += nbytes
        self.unchecked += nbytes
        if self.unchecked > self.limits.memory // 8:
            self.check_memory()

    def check_memory(self) -> None:
        """Refuse when resident memory grew by more than the budget since the run started.

        The baseline is taken lazily (reading it costs microseconds, more
        than a short script's whole run), minus what was charged before.
        Without ``/proc`` the charged bytes stand in for the growth.
        """
        self.unchecked = 0
        rss = resident_memory()
        if rss is None:
            growth = self.charged
        else:
            if self.baseline is None:
                self.baseline = rss - self.charged
            growth = rss - self.baseline
        if growth > self.limits.memory:
            raise self.refuse(
                f"it grew memory by {growth // 2**20:,} MiB; the budget is {self.limits.memory // 2**20:,} MiB"
            )


class ThreadRuns:
    """The sandboxed runs of one thread: the current one's budget, and what the runs reuse.

    One object per thread, reached with one thread-local lookup per run (such
    lookups cost about as much as the rest of starting a run). Only its own
    thread uses it, so it needs no lock.

    Attributes:
        budget: the budget of the run in progress in this thread, or None.
        spare: a Budget object of a finished run, for the next run to restart
            instead of allocating one; None while a run uses it.
        decimal: this thread's decimal context for scripts and the limits it
            was made for, kept by ``modules.decimal_context``.
    """

    __slots__ = ("budget", "spare", "decimal")

    def __init__(self) -> None:
        self.budget: Budget | None = None
        self.spare: Budget | None = None
        self.decimal: tuple[Limits, Any] | None = None

    def start(self, limits: Limits, element_id: str, allowed_modules: frozenset[str]) -> tuple[Budget, Budget | None]:
        """Begin a run with a fresh budget, made the current one; returns it and the previous one, for ``finish``.

        The run takes the spare Budget object and restarts it; a run nested in
        another one (the spare is taken then) gets a new one.
        """
        previous = self.budget
        run = self.spare
        if run is None:
            run = Budget(limits, element_id, allowed_modules)
        else:
            self.spare = None
            run.restart(limits, element_id, allowed_modules)
        self.budget = run
        return run, previous

    def finish(self, run: Budget, previous: Budget | None) -> None:
        """End the run ``start`` began: ``previous`` is the current budget again, ``run`` the spare."""
        self.budget = previous
        # A refusal holds its traceback, and so the script's frames: the spare must not keep them alive.
        run.refusal = None
        self.spare = run


class _Local(threading.local):
    runs: ThreadRuns

    def __init__(self) -> None:
        # Called in each thread the first time it reads local.runs.
        self.runs = ThreadRuns()


local = _Local()
"""``local.runs`` is this thread's ThreadRuns (read it once per run: each read is a thread-local lookup)."""


def current() -> Budget | None:
    """The budget of the sandboxed run in this thread, or None outside one."""
    return local.runs.budget


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATM = "/proc/self/statm"


def resident_memory() -> int | None:
    """The process's resident memory in bytes, or None where ``/proc`` is missing."""
    try:
        with open(_STATM, "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None
