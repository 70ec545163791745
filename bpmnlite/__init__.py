"""bpmnlite: a BPMN 2.0 process engine for Python."""
