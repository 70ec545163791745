"""A handle on a running instance: poll it, or wait for its result (seed 003).

``engine.start()`` returns at the first wait state; when the rest runs in
workers, the caller holds a handle and comes back for the result later, or
blocks on it with a timeout. Commands of the same engine wake waiters at
once; changes made by other processes are seen by polling every
``poll_interval`` seconds.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from bpmnlite.errors import ExecutionError
from bpmnlite.records import InstanceInfo

if TYPE_CHECKING:
    from bpmnlite.engine import Engine


class InstanceHandle:
    """Returned by ``engine.handle(instance_id)``."""

    def __init__(self, engine: Engine, instance_id: str, poll_interval: float = 0.5) -> None:
        self.engine = engine
        self.id = instance_id
        self.poll_interval = poll_interval

    def poll(self) -> InstanceInfo:
        """The instance as stored now."""
        return self.engine.instance(self.id)

    def done(self) -> bool:
        return self.poll().ended

    def wait(self, timeout: float | None = None) -> InstanceInfo:
        """Block until the instance ended; returns it. Raises TimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.engine.changed:
                info = self.poll()
                if info.ended:
                    return info
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"instance {self.id} has not ended after {timeout} s (it waits at "
                                       f"{', '.join(info.active_elements) or 'nothing'})")
                self.engine.changed.wait(self.poll_interval if left is None else min(left, self.poll_interval))

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """The final variables of a completed instance.

        Raises:
            TimeoutError: it did not end within ``timeout`` seconds.
            ExecutionError: it ended cancelled or failed.
        """
        info = self.wait(timeout)
        if info.state != "completed":
            raise ExecutionError(f"instance {self.id} ended {info.state}", instance_id=self.id)
        return dict(info.variables)
