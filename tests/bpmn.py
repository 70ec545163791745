"""Write small BPMN models inline in tests."""

from __future__ import annotations

NS = (
    'xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL" '
    'xmlns:bpmnlite="http://bpmnlite.org/schema/bpmn" '
    'xmlns:camunda="http://camunda.org/schema/1.0/bpmn" '
    'xmlns:flowable="http://flowable.org/bpmn" '
    'xmlns:activiti="http://activiti.org/bpmn"'
)


def bpmn(body: str, process_id: str = "p", *, extra: str = "", executable: bool = True) -> str:
    """A definitions document with one process holding ``body``; ``extra`` goes beside the process."""
    flag = "true" if executable else "false"
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<definitions {NS} id="defs" targetNamespace="test">\n'
        f"{extra}\n"
        f'<process id="{process_id}" isExecutable="{flag}">\n{body}\n</process>\n</definitions>\n'
    )


def flow(source: str, target: str, condition: str | None = None, fid: str | None = None) -> str:
    fid = fid or f"f_{source}_{target}"
    if condition is None:
        return f'<sequenceFlow id="{fid}" sourceRef="{source}" targetRef="{target}"/>'
    return (
        f'<sequenceFlow id="{fid}" sourceRef="{source}" targetRef="{target}">'
        f"<conditionExpression>{condition}</conditionExpression></sequenceFlow>"
    )


def chain(*ids: str) -> str:
    """Flows linking ids in order."""
    return "\n".join(flow(a, b) for a, b in zip(ids, ids[1:], strict=False))
