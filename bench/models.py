"""The BPMN files every in-process scenario runs, written once into a temp dir.

Both engines read the very same file. The models stay within what both
understand: ``isExecutable="true"``, Python in ``<script>`` with
``scriptFormat="python"``, plain sequence flows, parallel gateways.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

_HEADER = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL" '
    'id="{pid}_definitions" targetNamespace="https://bpmnlite.org/bench">\n'
    '  <process id="{pid}" isExecutable="true">\n'
)
_FOOTER = "  </process>\n</definitions>\n"


@dataclass(frozen=True)
class Model:
    """A generated file: its process id, path and how many script tasks it runs."""

    process_id: str
    path: Path
    script_tasks: int
    flow_nodes: int


def _script_task(task_id: str, script: str) -> str:
    return f'    <scriptTask id="{task_id}" scriptFormat="python"><script>{escape(script)}</script></scriptTask>\n'


def _flow(flow_id: str, source: str, target: str) -> str:
    return f'    <sequenceFlow id="{flow_id}" sourceRef="{source}" targetRef="{target}"/>\n'


def straight_xml(process_id: str, tasks: int) -> str:
    """start -> ``tasks`` script tasks, each ``x = x + 1`` -> end."""
    ids = ["start"] + [f"t{i}" for i in range(1, tasks + 1)] + ["end"]
    parts = [_HEADER.format(pid=process_id), '    <startEvent id="start"/>\n']
    parts += [_script_task(task_id, "x = x + 1") for task_id in ids[1:-1]]
    parts.append('    <endEvent id="end"/>\n')
    parts += [_flow(f"f{i}", a, b) for i, (a, b) in enumerate(zip(ids, ids[1:], strict=False))]
    parts.append(_FOOTER)
    return "".join(parts)


def parallel_xml(process_id: str, branches: int) -> str:
    """start -> fork -> ``branches`` script tasks (branch i sets ``b<i> = x + 1``) -> join -> end.

    Each branch writes its own variable: the engines merge concurrent writes
    to one name differently (a shared process variable in bpmnlite, copies of
    task data merged at the join in SpiffWorkflow), while distinct names end
    up identical in both, so "every branch ran" can be checked the same way.
    """
    parts = [_HEADER.format(pid=process_id), '    <startEvent id="start"/>\n', '    <parallelGateway id="fork"/>\n']
    parts += [_script_task(f"b{i}", f"b{i} = x + 1") for i in range(1, branches + 1)]
    parts += ['    <parallelGateway id="join"/>\n', '    <endEvent id="end"/>\n']
    parts += [_flow("f_start", "start", "fork"), _flow("f_join", "join", "end")]
    for i in range(1, branches + 1):
        parts.append(_flow(f"f_fork_{i}", "fork", f"b{i}"))
        parts.append(_flow(f"f_join_{i}", f"b{i}", "join"))
    parts.append(_FOOTER)
    return "".join(parts)


class ModelSet:
    """Generates models on demand into one temp dir, each once; ``close()`` removes them."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="bpmnlite-bench-")
        self.root = Path(self._dir.name)
        self._made: dict[str, Model] = {}

    def straight(self, tasks: int) -> Model:
        """A straight-through model of ``tasks`` script tasks (``tasks + 2`` flow nodes)."""
        return self._write(f"straight_{tasks}", straight_xml, tasks, tasks, tasks + 2)

    def parallel(self, branches: int) -> Model:
        """A fork/join of ``branches`` branches, one script task each."""
        return self._write(f"parallel_{branches}", parallel_xml, branches, branches, branches + 4)

    def sequential_elements(self, elements: int) -> Model:
        """A sequential model of exactly ``elements`` flow nodes: start, script tasks, end."""
        return self._write(f"elements_{elements}", straight_xml, elements - 2, elements - 2, elements)

    def _write(self, pid: str, make: Callable[[str, int], str], size: int, scripts: int, nodes: int) -> Model:
        if pid not in self._made:
            path = self.root / f"{pid}.bpmn"
            path.write_text(make(pid, size), encoding="utf-8")
            self._made[pid] = Model(pid, path, scripts, nodes)
        return self._made[pid]

    def close(self) -> None:
        self._dir.cleanup()

    def __enter__(self) -> ModelSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
