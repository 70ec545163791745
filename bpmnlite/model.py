"""The process graph as frozen dataclasses.

This is what the parser produces and what the runtime walks. It performs no
I/O and imports nothing from the database or the executor, so a model can be
built, inspected and tested on its own. Everything here is immutable: a
deployed definition is shared by every instance that runs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class NodeKind(StrEnum):
    """Kinds of flow node; the values are the BPMN tag names."""

    START_EVENT = "startEvent"
    END_EVENT = "endEvent"
    INTERMEDIATE_CATCH_EVENT = "intermediateCatchEvent"
    INTERMEDIATE_THROW_EVENT = "intermediateThrowEvent"
    BOUNDARY_EVENT = "boundaryEvent"
    TASK = "task"
    USER_TASK = "userTask"
    MANUAL_TASK = "manualTask"
    SERVICE_TASK = "serviceTask"
    SCRIPT_TASK = "scriptTask"
    SEND_TASK = "sendTask"
    RECEIVE_TASK = "receiveTask"
    BUSINESS_RULE_TASK = "businessRuleTask"
    SUB_PROCESS = "subProcess"
    TRANSACTION = "transaction"
    AD_HOC_SUB_PROCESS = "adHocSubProcess"
    CALL_ACTIVITY = "callActivity"
    EXCLUSIVE_GATEWAY = "exclusiveGateway"
    PARALLEL_GATEWAY = "parallelGateway"
    INCLUSIVE_GATEWAY = "inclusiveGateway"
    EVENT_BASED_GATEWAY = "eventBasedGateway"
    COMPLEX_GATEWAY = "complexGateway"


ACTIVITY_KINDS = frozenset(
    {
        NodeKind.TASK,
        NodeKind.USER_TASK,
        NodeKind.MANUAL_TASK,
        NodeKind.SERVICE_TASK,
        NodeKind.SCRIPT_TASK,
        NodeKind.SEND_TASK,
        NodeKind.RECEIVE_TASK,
        NodeKind.BUSINESS_RULE_TASK,
        NodeKind.SUB_PROCESS,
        NodeKind.TRANSACTION,
        NodeKind.AD_HOC_SUB_PROCESS,
        NodeKind.CALL_ACTIVITY,
    }
)
GATEWAY_KINDS = frozenset(
    {
        NodeKind.EXCLUSIVE_GATEWAY,
        NodeKind.PARALLEL_GATEWAY,
        NodeKind.INCLUSIVE_GATEWAY,
        NodeKind.EVENT_BASED_GATEWAY,
        NodeKind.COMPLEX_GATEWAY,
    }
)
SCOPE_KINDS = frozenset({NodeKind.SUB_PROCESS, NodeKind.TRANSACTION, NodeKind.AD_HOC_SUB_PROCESS})


class EventKind(StrEnum):
    """Event definition kinds; NONE for an event without a definition."""

    NONE = "none"
    MESSAGE = "message"
    TIMER = "timer"
    SIGNAL = "signal"
    ERROR = "error"
    TERMINATE = "terminate"
    ESCALATION = "escalation"
    CONDITIONAL = "conditional"
    LINK = "link"
    COMPENSATE = "compensate"
    CANCEL = "cancel"


class TimerKind(StrEnum):
    DATE = "timeDate"
    DURATION = "timeDuration"
    CYCLE = "timeCycle"


@dataclass(frozen=True, slots=True)
class TimerSpec:
    """A timer definition as written; evaluated when the timer is armed."""

    kind: TimerKind
    expression: str


@dataclass(frozen=True, slots=True)
class EventDefinition:
    """What an event waits for or throws.

    ``name`` is the resolved *name* used for correlation: the message name,
    the signal name, the error code or the escalation code. ``ref`` is the id
    the XML referenced (``messageRef``, ``signalRef``, ``errorRef``...).
    ``name`` is None for a catch-all error/escalation event.
    """

    kind: EventKind
    ref: str | None = None
    name: str | None = None
    timer: TimerSpec | None = None
    condition: str | None = None


@dataclass(frozen=True, slots=True)
class AsyncConfig:
    """The asynchronous flag and the job settings of one flow node.

    ``retries`` keeps the text as written: a plain count (``"5"``) or a
    repeating interval (``"R5/PT10S"``); None means the engine default.
    """

    before: bool = False
    after: bool = False
    exclusive: bool = True
    retries: str | None = None
    retry_backoff: str | None = None
    max_concurrent: int | None = None
    max_queue: int | None = None
    timeout: str | None = None
    priority: int | None = None


NO_ASYNC = AsyncConfig()


@dataclass(frozen=True, slots=True)
class VariableMapping:
    """One in/out mapping of a call activity (Camunda/Flowable ``in``/``out``).

    Exactly one of ``source``, ``source_expression`` or ``all_variables`` is
    set. ``target`` is None only when ``all_variables`` is true.
    """

    source: str | None = None
    source_expression: str | None = None
    target: str | None = None
    all_variables: bool = False
    local: bool = False


@dataclass(frozen=True, slots=True)
class MultiInstance:
    """``multiInstanceLoopCharacteristics`` of an activity.

    ``cardinality``, ``collection`` and ``completion_condition`` are
    expressions (a bare variable name is a valid expression).
    """

    sequential: bool
    cardinality: str | None = None
    collection: str | None = None
    element_variable: str | None = None
    completion_condition: str | None = None


@dataclass(frozen=True, slots=True)
class ExtensionElement:
    """An element under ``extensionElements``, kept for plugins.

    ``tag`` is ``prefix:localName`` with the canonical prefix of known
    namespaces (``bpmnlite``, ``camunda``, ``flowable``, ``activiti``,
    ``zeebe``) and ``{namespace}localName`` for any other namespace.
    """

    tag: str
    attributes: Mapping[str, str]
    text: str | None
    children: tuple[ExtensionElement, ...] = ()
    line: int = 0


@dataclass(frozen=True, slots=True)
class FlowNode:
    """One flow node of a process (event, activity or gateway).

    ``scope_id`` is the id of the process or of the sub-process that directly
    contains the node. Kind-specific fields are None/empty when they do not
    apply. ``attributes`` holds every namespaced (extension) attribute of the
    node under ``prefix:localName`` (canonical prefixes, see
    :class:`ExtensionElement`).
    """

    id: str
    kind: NodeKind
    scope_id: str
    line: int
    name: str | None = None
    incoming: tuple[str, ...] = ()
    outgoing: tuple[str, ...] = ()
    default_flow: str | None = None
    # events
    event: EventDefinition | None = None
    attached_to: str | None = None
    cancel_activity: bool = True
    is_interrupting: bool = True
    # sub-processes
    triggered_by_event: bool = False
    # jobs
    asynchronous: AsyncConfig = NO_ASYNC
    # tasks
    script: str | None = None
    script_format: str | None = None
    result_variable: str | None = None
    task_type: str | None = None
    # call activity
    called_element: str | None = None
    call_inputs: tuple[VariableMapping, ...] = ()
    call_outputs: tuple[VariableMapping, ...] = ()
    call_business_key: str | None = None
    call_background: bool = False
    # loops
    multi_instance: MultiInstance | None = None
    # everything else, for plugins and listeners
    attributes: Mapping[str, str] = field(default_factory=dict)
    extensions: tuple[ExtensionElement, ...] = ()
    documentation: str | None = None


@dataclass(frozen=True, slots=True)
class SequenceFlow:
    id: str
    source: str
    target: str
    line: int
    scope_id: str
    name: str | None = None
    condition: str | None = None
    condition_language: str | None = None


@dataclass(frozen=True, slots=True)
class Lane:
    id: str
    name: str | None
    node_ids: tuple[str, ...]
    line: int
    child_lanes: tuple[Lane, ...] = ()


@dataclass(frozen=True, slots=True)
class DataElement:
    """A data object, data object reference, data store (reference), or data input/output."""

    id: str
    kind: str
    name: str | None
    line: int
    scope_id: str | None = None


@dataclass(frozen=True, slots=True)
class Process:
    """One ``bpmn:process``: its nodes, flows and lanes, all scopes flattened.

    Nodes of embedded sub-processes live in the same ``nodes`` mapping; their
    ``scope_id`` names the sub-process.
    """

    id: str
    name: str | None
    is_executable: bool | None
    line: int
    nodes: Mapping[str, FlowNode]
    flows: Mapping[str, SequenceFlow]
    lanes: tuple[Lane, ...] = ()
    data: tuple[DataElement, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)
    extensions: tuple[ExtensionElement, ...] = ()
    documentation: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    name: str
    line: int


@dataclass(frozen=True, slots=True)
class Signal:
    id: str
    name: str
    line: int


@dataclass(frozen=True, slots=True)
class ErrorDef:
    """``bpmn:error`` (and ``bpmn:escalation``): ``code`` is what catchers match."""

    id: str
    name: str | None
    code: str | None
    line: int


@dataclass(frozen=True, slots=True)
class Participant:
    id: str
    name: str | None
    process_ref: str | None
    line: int


@dataclass(frozen=True, slots=True)
class MessageFlow:
    id: str
    name: str | None
    source: str
    target: str
    message_ref: str | None
    line: int


@dataclass(frozen=True, slots=True)
class Collaboration:
    id: str
    name: str | None
    participants: tuple[Participant, ...]
    message_flows: tuple[MessageFlow, ...]
    line: int


@dataclass(frozen=True, slots=True)
class Bounds:
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True, slots=True)
class Shape:
    """A BPMNShape: which element, where; kept so a dashboard can draw it."""

    id: str
    element_id: str
    bounds: Bounds
    is_expanded: bool | None = None
    is_horizontal: bool | None = None


@dataclass(frozen=True, slots=True)
class Edge:
    id: str
    element_id: str
    waypoints: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class Diagram:
    id: str
    name: str | None
    plane_element: str | None
    shapes: tuple[Shape, ...]
    edges: tuple[Edge, ...]


@dataclass(frozen=True, slots=True)
class Definitions:
    """A whole parsed BPMN file."""

    id: str | None
    target_namespace: str | None
    processes: tuple[Process, ...]
    messages: Mapping[str, Message] = field(default_factory=dict)
    signals: Mapping[str, Signal] = field(default_factory=dict)
    errors: Mapping[str, ErrorDef] = field(default_factory=dict)
    escalations: Mapping[str, ErrorDef] = field(default_factory=dict)
    collaborations: tuple[Collaboration, ...] = ()
    diagrams: tuple[Diagram, ...] = ()
    exporter: str | None = None
    source_name: str | None = None
    #: each ``bpmn:import`` as its attributes (namespace, location, importType);
    #: kept as data, never loaded
    imports: tuple[Mapping[str, str], ...] = ()

    def process(self, process_id: str) -> Process:
        """Return the process with this id; raise KeyError naming the known ones."""
        for proc in self.processes:
            if proc.id == process_id:
                return proc
        known = ", ".join(p.id for p in self.processes) or "none"
        raise KeyError(f"no process {process_id!r} in this file (processes: {known})")
