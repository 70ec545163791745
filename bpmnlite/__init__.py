"""bpmnlite: a BPMN 2.0 process engine for Python.

The public surface is what ``__all__`` lists; everything else is internal.
"""

from bpmnlite.context import TaskContext
from bpmnlite.engine import Engine
from bpmnlite.errors import (
    BpmnError,
    BpmnliteError,
    Conflict,
    ExecutionError,
    ExpressionError,
    ModelError,
    NotFound,
    Problem,
    ScriptError,
)
from bpmnlite.hookspecs import hookimpl
from bpmnlite.records import (
    ActivityInfo,
    DefinitionInfo,
    Deployment,
    InstanceInfo,
    JobInfo,
    TaskInfo,
    VariableChange,
)

__version__ = "0.1.0"

__all__ = [
    "ActivityInfo",
    "BpmnError",
    "BpmnliteError",
    "Conflict",
    "DefinitionInfo",
    "Deployment",
    "Engine",
    "ExecutionError",
    "ExpressionError",
    "InstanceInfo",
    "JobInfo",
    "ModelError",
    "NotFound",
    "Problem",
    "ScriptError",
    "TaskContext",
    "TaskInfo",
    "VariableChange",
    "hookimpl",
]
