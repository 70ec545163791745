"""BPMN 2.0 XML -> the immutable model of :mod:`bpmnlite.model`.

One pass over the tree with dict dispatch on tag names: models of thousands
of elements parse in milliseconds. Every problem that makes the document
unusable (broken references, duplicate ids, bad attribute values) is collected
with its element id and line, and all of them are raised together in one
:class:`~bpmnlite.errors.ModelError`, so a modeler fixes a file in one round.
Whether a well-formed model can *run* is :mod:`bpmnlite.validation`'s job.
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Iterator, Mapping
from typing import Any, cast

from ._xml import (
    BPMN_NS,
    BPMNDI_NS,
    BPMNLITE_NS,
    ZEEBE_NS,
    Element,
    LineFinder,
    ParserLimits,
    child_elements,
    diagram,
    extension_element,
    load,
    local_name,
    namespaced_attributes,
    strip_ref,
    text_of,
)
from .errors import ModelError, Problem
from .model import (
    NO_ASYNC,
    AsyncConfig,
    Collaboration,
    DataElement,
    Definitions,
    Diagram,
    ErrorDef,
    EventDefinition,
    EventKind,
    ExtensionElement,
    FlowNode,
    Lane,
    Message,
    MessageFlow,
    MultiInstance,
    NodeKind,
    Participant,
    Process,
    SequenceFlow,
    Signal,
    TimerKind,
    TimerSpec,
    VariableMapping,
)

__all__ = ["BPMNLITE_NS", "BPMN_NS", "ParserLimits", "parse"]


def _b(local: str) -> str:
    return f"{{{BPMN_NS}}}{local}"


_NODE_TAGS = {_b(kind.value): kind for kind in NodeKind}
_EVENT_DEF_TAGS = {_b(f"{kind.value}EventDefinition"): kind for kind in EventKind if kind is not EventKind.NONE}
_TIMER_TAGS = {_b(kind.value): kind for kind in TimerKind}
_DATA_TAGS = {_b(k): k for k in ("dataObject", "dataObjectReference", "dataStoreReference", "dataInput", "dataOutput")}
_SCOPE_TAGS = frozenset({_b("subProcess"), _b("transaction"), _b("adHocSubProcess")})
# Tags compared once per child element: built once, not per comparison.
_SEQUENCE_FLOW = _b("sequenceFlow")
_IO_SPECIFICATION = _b("ioSpecification")
_TEXT_ANNOTATION = _b("textAnnotation")
_LANE_SET = _b("laneSet")
_DOCUMENTATION = _b("documentation")
_EXTENSION_ELEMENTS = _b("extensionElements")
_EVENT_DEFINITION_REF = _b("eventDefinitionRef")
_MULTI_INSTANCE = _b("multiInstanceLoopCharacteristics")
_STANDARD_LOOP = _b("standardLoopCharacteristics")
_SCRIPT = _b("script")
_CONDITION_EXPRESSION = _b("conditionExpression")
_EVENT_NODE_KINDS = frozenset(kind for kind in NodeKind if kind.value.endswith("Event"))
_NONE_EVENT = EventDefinition(EventKind.NONE)
_TASK_TYPE_KINDS = frozenset({NodeKind.SERVICE_TASK, NodeKind.SEND_TASK, NodeKind.BUSINESS_RULE_TASK})

_ASYNC_BEFORE: tuple[str, ...] = ("bpmnlite:async", "bpmnlite:asyncBefore", "camunda:async", "camunda:asyncBefore")
_ASYNC_BEFORE += ("flowable:async", "activiti:async")
_ASYNC_AFTER = ("bpmnlite:asyncAfter", "camunda:asyncAfter", "flowable:asyncLeave")
_EXCLUSIVE = ("bpmnlite:exclusive", "camunda:exclusive", "flowable:exclusive", "activiti:exclusive")
_ASYNC_KEYS = frozenset(
    _ASYNC_BEFORE
    + _ASYNC_AFTER
    + _EXCLUSIVE
    + ("bpmnlite:retries", "bpmnlite:retryBackoff", "bpmnlite:maxConcurrent", "bpmnlite:maxQueue")
    + ("bpmnlite:timeout", "bpmnlite:priority", "camunda:jobPriority")
)
_RETRY_CYCLE_TAGS: tuple[str, ...] = ("camunda:failedJobRetryTimeCycle", "flowable:failedJobRetryTimeCycle")
_RETRY_CYCLE_TAGS += ("activiti:failedJobRetryTimeCycle",)
_RETRIES_FORMAT = re.compile(r"\d+|R\d*/\S+")
_VENDORS = ("camunda", "flowable", "activiti")
_RESULT_VARIABLE_ATTRS = ("bpmnlite:resultVariable",) + tuple(f"{v}:resultVariable" for v in _VENDORS)
_TASK_TYPE_ATTRS = tuple(f"{v}:class" for v in _VENDORS) + tuple(f"{v}:delegateExpression" for v in _VENDORS)
_TASK_TYPE_ATTRS += tuple(f"{v}:expression" for v in _VENDORS) + ("flowable:type", "activiti:type")


def parse(
    source: str | bytes | os.PathLike[str],
    *,
    source_name: str | None = None,
    limits: ParserLimits = ParserLimits(),  # noqa: B008 - frozen, safe to share
) -> Definitions:
    """Parse a BPMN 2.0 document into :class:`~bpmnlite.model.Definitions`.

    Args:
        source: a file path (str or PathLike), XML text (a str starting with
            ``<``) or bytes.
        source_name: what problems name as their source; defaults to the file name.
        limits: size, depth and element-count limits.

    Raises:
        ModelError: with every problem found (each with element id and line).
            DOCTYPEs are refused outright, so no entity is ever expanded and no
            external DTD or resource is ever fetched.
    """
    root, name, lines = load(source, source_name, limits)
    return _Reader(name, lines).definitions(root)


class _ProcessDraft:
    """Mutable collections filled while one process is walked."""

    def __init__(self, process_id: str) -> None:
        self.process_id = process_id
        self.nodes: dict[str, dict[str, Any]] = {}
        self.flows: list[SequenceFlow] = []
        self.lanes: list[Lane] = []
        self.data: list[DataElement] = []


class _Reader:
    """Turns one parsed tree into a Definitions, collecting problems on the way."""

    def __init__(self, source_name: str | None, lines: LineFinder) -> None:
        self.source = source_name
        self.line = lines
        self.problems: list[Problem] = []
        self.ids: set[str] = set()
        self.messages: dict[str, Message] = {}
        self.signals: dict[str, Signal] = {}
        self.errors: dict[str, ErrorDef] = {}
        self.escalations: dict[str, ErrorDef] = {}
        self.shared_event_defs: dict[str, Element] = {}

    def problem(self, message: str, element_id: str | None, line: int | None) -> None:
        self.problems.append(Problem(message, element_id, line or None, self.source))

    # --- document ------------------------------------------------------

    def definitions(self, root: Element) -> Definitions:
        if root.tag != _b("definitions"):
            tag = str(root.tag)
            namespace = tag[1:].partition("}")[0] if tag.startswith("{") else "no namespace"
            self.problem(
                f"root element is {local_name(tag)!r} ({namespace}), not bpmn:definitions ({BPMN_NS})",
                None,
                self.line(root),
            )
            raise ModelError(self.problems)
        self._collect_ids(root)
        top = list(child_elements(root))
        for el in top:
            self._root_definition(el)
        processes: list[Process] = []
        collaborations: list[Collaboration] = []
        diagrams: list[Diagram] = []
        imports: list[Mapping[str, str]] = []
        for el in top:
            tag = el.tag
            if tag == _b("process"):
                processes.append(self._process(el))
            elif tag == _b("collaboration"):
                collaborations.append(self._collaboration(el))
            elif tag == f"{{{BPMNDI_NS}}}BPMNDiagram":
                diagrams.append(diagram(el))
            elif tag == _b("import"):
                imports.append({str(k): str(v) for k, v in el.attrib.items()})
        if self.problems:
            raise ModelError(self.problems)
        return Definitions(
            id=root.get("id"),
            target_namespace=root.get("targetNamespace"),
            processes=tuple(processes),
            messages=self.messages,
            signals=self.signals,
            errors=self.errors,
            escalations=self.escalations,
            collaborations=tuple(collaborations),
            diagrams=tuple(diagrams),
            exporter=root.get("exporter"),
            source_name=self.source,
            imports=tuple(imports),
        )

    def _collect_ids(self, root: Element) -> None:
        """Refuse duplicate ids among BPMN elements; vendor extensions may repeat theirs."""
        first: dict[str, Element] = {}
        for el in root.iter(f"{{{BPMN_NS}}}*"):
            el_id = el.get("id")
            if el_id is None:
                continue
            if el_id in first:
                where = self.line(first[el_id])
                self.problem(f"duplicate id {el_id!r} (first used on line {where})", el_id, self.line(el))
            else:
                first[el_id] = el
        self.ids = set(first)

    def _new_id(self, base: str) -> str:
        """An id for an element written without one (anonymous sequence flows are common)."""
        candidate, n = base, 2
        while candidate in self.ids:
            candidate, n = f"{base}_{n}", n + 1
        self.ids.add(candidate)
        return candidate

    def _root_definition(self, el: Element) -> None:
        tag, el_id, line = el.tag, el.get("id"), self.line(el)
        if el_id is None:
            return
        if tag == _b("message"):
            self.messages[el_id] = Message(el_id, el.get("name") or el_id, line)
        elif tag == _b("signal"):
            self.signals[el_id] = Signal(el_id, el.get("name") or el_id, line)
        elif tag == _b("error"):
            self.errors[el_id] = ErrorDef(el_id, el.get("name"), el.get("errorCode") or None, line)
        elif tag == _b("escalation"):
            self.escalations[el_id] = ErrorDef(el_id, el.get("name"), el.get("escalationCode") or None, line)
        elif tag in _EVENT_DEF_TAGS:
            self.shared_event_defs[el_id] = el

    # --- processes -----------------------------------------------------

    def _process(self, el: Element) -> Process:
        line = self.line(el)
        pid = el.get("id") or self._new_id(f"process_{line}")
        draft = _ProcessDraft(pid)
        docs: list[str] = []
        exts: list[ExtensionElement] = []
        self._scope(el, pid, draft, docs, exts)
        incoming: dict[str, list[str]] = {}
        outgoing: dict[str, list[str]] = {}
        for flow in draft.flows:
            for end, ref, table in (("sourceRef", flow.source, outgoing), ("targetRef", flow.target, incoming)):
                if not ref:
                    self.problem(f"sequence flow {flow.id!r} has no {end}", flow.id, flow.line)
                elif ref not in draft.nodes:
                    self.problem(
                        f"sequence flow {flow.id!r}: {end} {ref!r} names no flow node of process {pid!r}",
                        flow.id,
                        flow.line,
                    )
                else:
                    table.setdefault(ref, []).append(flow.id)
        nodes: dict[str, FlowNode] = {}
        for node_id, kw in draft.nodes.items():
            outs = tuple(outgoing.get(node_id, ()))
            default = kw.get("default_flow")
            if default is not None and default not in outs:
                self.problem(
                    f"default flow {default!r} is not an outgoing sequence flow of {node_id!r}", node_id, kw["line"]
                )
            attached = kw.get("attached_to")
            if kw["kind"] is NodeKind.BOUNDARY_EVENT and (attached is None or attached not in draft.nodes):
                what = f"attachedToRef {attached!r} names no activity" if attached else "has no attachedToRef"
                self.problem(f"boundary event {node_id!r} {what}", node_id, kw["line"])
            nodes[node_id] = FlowNode(**kw, incoming=tuple(incoming.get(node_id, ())), outgoing=outs)
        return Process(
            id=pid,
            name=el.get("name"),
            is_executable=None if el.get("isExecutable") is None else self._bool(el, "isExecutable", True, pid),
            line=line,
            nodes=nodes,
            flows={f.id: f for f in draft.flows},
            lanes=tuple(draft.lanes),
            data=tuple(draft.data),
            attributes=namespaced_attributes(el),
            extensions=tuple(exts),
            documentation="\n".join(docs) or None,
        )

    def _scope(
        self,
        el: Element,
        scope_id: str,
        draft: _ProcessDraft,
        docs: list[str] | None = None,
        exts: list[ExtensionElement] | None = None,
    ) -> None:
        """Walk the children of a process or sub-process (flow elements, lanes, data).

        ``docs`` and ``exts`` collect the process's own documentation and
        extensions; a sub-process's are read by :meth:`_node` instead.
        """
        for child in el:  # comments are stripped; a processing instruction matches no tag below
            tag = child.tag
            kind = _NODE_TAGS.get(tag)
            if kind is not None:
                self._node(child, kind, scope_id, draft)
            elif tag == _SEQUENCE_FLOW:
                draft.flows.append(self._flow(child, scope_id))
            elif tag in _DATA_TAGS:
                draft.data.append(self._data(child, _DATA_TAGS[tag], scope_id))
            elif tag == _IO_SPECIFICATION:
                self._io_specification(child, scope_id, draft)
            elif tag == _TEXT_ANNOTATION:
                draft.data.append(self._data(child, "textAnnotation", scope_id, text_of(child.find(_b("text")))))
            elif tag == _LANE_SET:
                draft.lanes.extend(self._lanes(child))
            elif tag == _DOCUMENTATION and docs is not None:
                if (doc := text_of(child)) is not None:
                    docs.append(doc)
            elif tag == _EXTENSION_ELEMENTS and exts is not None:
                exts.extend(extension_element(c, self.line) for c in child_elements(child))

    def _data(self, el: Element, kind: str, scope_id: str, name: str | None = None) -> DataElement:
        line = self.line(el)
        el_id = el.get("id") or self._new_id(f"{kind}_{line}")
        return DataElement(el_id, kind, name or el.get("name"), line, scope_id)

    def _io_specification(self, el: Element, scope_id: str, draft: _ProcessDraft) -> None:
        for child in child_elements(el):
            kind = _DATA_TAGS.get(child.tag)
            if kind is not None:
                draft.data.append(self._data(child, kind, scope_id))

    def _lanes(self, lane_set: Element) -> list[Lane]:
        lanes: list[Lane] = []
        for lane in lane_set.iterchildren(_b("lane")):
            refs = (strip_ref(text_of(r)) for r in lane.iterchildren(_b("flowNodeRef")))
            children: list[Lane] = []
            for child_set in lane.iterchildren(_b("childLaneSet")):
                children.extend(self._lanes(child_set))
            line = self.line(lane)
            lane_id = lane.get("id") or self._new_id(f"lane_{line}")
            lanes.append(Lane(lane_id, lane.get("name"), tuple(r for r in refs if r), line, tuple(children)))
        return lanes

    def _flow(self, el: Element, scope_id: str) -> SequenceFlow:
        line = self.line(el)
        source, target = strip_ref(el.get("sourceRef")), strip_ref(el.get("targetRef"))
        flow_id = el.get("id") or self._new_id(f"flow_{source}_{target}")
        cond_el = el.find(_CONDITION_EXPRESSION)
        condition = text_of(cond_el)
        language = cond_el.get("language") if cond_el is not None else None
        return SequenceFlow(
            id=flow_id,
            source=source or "",
            target=target or "",
            line=line,
            scope_id=scope_id,
            name=el.get("name"),
            condition=condition,
            condition_language=language if condition is not None else None,
        )

    # --- flow nodes ----------------------------------------------------

    def _node(self, el: Element, kind: NodeKind, scope_id: str, draft: _ProcessDraft) -> None:
        line = self.line(el)
        node_id = el.get("id") or self._new_id(f"{kind.value}_{line}")
        attrs = namespaced_attributes(el)
        kw: dict[str, Any] = {"id": node_id, "kind": kind, "scope_id": scope_id, "line": line, "name": el.get("name")}
        draft.nodes[node_id] = kw
        docs: list[str] = []
        exts: list[ExtensionElement] = []
        event_defs: list[Element] = []
        for child in el:
            tag = child.tag
            if tag in _EVENT_DEF_TAGS:
                event_defs.append(child)
            elif tag == _EVENT_DEFINITION_REF:
                shared = self.shared_event_defs.get(strip_ref(text_of(child)) or "")
                if shared is not None:
                    event_defs.append(shared)
            elif tag == _DOCUMENTATION:
                if (doc := text_of(child)) is not None:
                    docs.append(doc)
            elif tag == _EXTENSION_ELEMENTS:
                exts.extend(extension_element(c, self.line) for c in child_elements(child))
            elif tag == _MULTI_INSTANCE:
                kw["multi_instance"] = self._multi_instance(child, node_id)
            elif tag == _STANDARD_LOOP:
                attrs["bpmn:standardLoop"] = "true"
            elif tag == _SCRIPT:
                kw["script"] = _script_text(child)
            elif tag == _IO_SPECIFICATION:
                self._io_specification(child, node_id, draft)
        if event_defs:
            kw["event"] = self._event_definition(event_defs[0], node_id)
            if len(event_defs) > 1:
                attrs["bpmn:eventDefinitions"] = " ".join(_EVENT_DEF_TAGS[str(d.tag)].value for d in event_defs)
        elif kind in _EVENT_NODE_KINDS:
            kw["event"] = _NONE_EVENT
        self._kind_specifics(el, kind, node_id, line, kw, attrs, exts)
        kw["asynchronous"] = self._async(attrs, exts, node_id, line)
        kw["attributes"] = attrs
        kw["extensions"] = tuple(exts)
        kw["documentation"] = "\n".join(docs) or None
        if el.tag in _SCOPE_TAGS:
            self._scope(el, node_id, draft)

    def _kind_specifics(
        self,
        el: Element,
        kind: NodeKind,
        node_id: str,
        line: int,
        kw: dict[str, Any],
        attrs: dict[str, str],
        exts: list[ExtensionElement],
    ) -> None:
        """Fields that only some node kinds carry."""
        if (default := strip_ref(el.get("default"))) is not None:
            kw["default_flow"] = default
        if kind is NodeKind.BOUNDARY_EVENT:
            kw["attached_to"] = strip_ref(el.get("attachedToRef"))
            kw["cancel_activity"] = self._bool(el, "cancelActivity", True, node_id)
        elif kind is NodeKind.START_EVENT:
            kw["is_interrupting"] = self._bool(el, "isInterrupting", True, node_id)
        elif kind in (NodeKind.SUB_PROCESS, NodeKind.TRANSACTION, NodeKind.AD_HOC_SUB_PROCESS):
            kw["triggered_by_event"] = self._bool(el, "triggeredByEvent", False, node_id)
        elif kind in (NodeKind.RECEIVE_TASK, NodeKind.SEND_TASK) and el.get("messageRef"):
            ref = strip_ref(el.get("messageRef"))
            kw["event"] = EventDefinition(EventKind.MESSAGE, ref, self._message_name(ref, node_id, line))
        elif kind is NodeKind.SCRIPT_TASK:
            kw["script_format"] = el.get("scriptFormat")
        elif kind is NodeKind.CALL_ACTIVITY:
            self._call_activity(el, node_id, line, kw, attrs, exts)
        if self._bool(el, "isForCompensation", False, node_id):
            attrs["bpmn:isForCompensation"] = "true"
        if el.get("parallelMultiple") == "true":
            attrs["bpmn:parallelMultiple"] = "true"
        if kind in _TASK_TYPE_KINDS:
            kw["task_type"] = _task_type(el, attrs)
        for key in _RESULT_VARIABLE_ATTRS:
            if (result := attrs.get(key)) is not None:
                kw["result_variable"] = result
                break

    def _call_activity(
        self,
        el: Element,
        node_id: str,
        line: int,
        kw: dict[str, Any],
        attrs: dict[str, str],
        exts: list[ExtensionElement],
    ) -> None:
        called = (el.get("calledElement") or "").strip() or None
        inputs: list[VariableMapping] = []
        outputs: list[VariableMapping] = []
        for ext in exts:
            vendor, _, direction = ext.tag.partition(":")
            if vendor == "zeebe" and direction == "calledElement" and called is None:
                called = ext.attributes.get("processId") or None
            if vendor not in _VENDORS or direction not in ("in", "out"):
                continue
            a = ext.attributes
            if direction == "in" and "businessKey" in a:
                kw["call_business_key"] = a["businessKey"]
                if not ({"source", "sourceExpression", "variables"} & a.keys()):
                    continue
            mapping = self._mapping(ext, node_id)
            if mapping is not None:
                (inputs if direction == "in" else outputs).append(mapping)
        kw["called_element"] = called
        kw["call_inputs"] = tuple(inputs)
        kw["call_outputs"] = tuple(outputs)
        background = attrs.get("bpmnlite:background")
        kw["call_background"] = self._parse_bool(background, "bpmnlite:background", False, node_id, line)

    def _mapping(self, ext: ExtensionElement, node_id: str) -> VariableMapping | None:
        a = ext.attributes
        local = self._parse_bool(a.get("local"), f"{ext.tag} local", False, node_id, ext.line)
        if a.get("variables") == "all":
            return VariableMapping(all_variables=True, local=local)
        source, expression = a.get("source") or None, a.get("sourceExpression") or None
        if source is None and expression is None:
            self.problem(f'{ext.tag} mapping needs source, sourceExpression or variables="all"', node_id, ext.line)
            return None
        target = a.get("target") or source
        if target is None:
            self.problem(f"{ext.tag} mapping with a sourceExpression needs a target", node_id, ext.line)
            return None
        if source is not None:
            return VariableMapping(source=source, target=target, local=local)
        return VariableMapping(source_expression=expression, target=target, local=local)

    def _multi_instance(self, el: Element, node_id: str) -> MultiInstance:
        attrs = namespaced_attributes(el)
        collection = element_variable = None
        for vendor in _VENDORS:
            collection = collection or attrs.get(f"{vendor}:collection") or None
            element_variable = element_variable or attrs.get(f"{vendor}:elementVariable") or None
        if collection is None:
            collection = text_of(el.find(_b("loopDataInputRef")))
        if element_variable is None and (item := el.find(_b("inputDataItem"))) is not None:
            element_variable = item.get("name") or item.get("id")
        # Zeebe keeps the collection in an extension of the loop element itself.
        zeebe = el.find(f"{_b('extensionElements')}/{{{ZEEBE_NS}}}loopCharacteristics")
        if zeebe is not None:
            collection = collection or zeebe.get("inputCollection") or None
            element_variable = element_variable or zeebe.get("inputElement") or None
        return MultiInstance(
            sequential=self._bool(el, "isSequential", False, node_id),
            cardinality=text_of(el.find(_b("loopCardinality"))),
            collection=collection,
            element_variable=element_variable,
            completion_condition=text_of(el.find(_b("completionCondition"))),
        )

    # --- events --------------------------------------------------------

    def _event_definition(self, el: Element, node_id: str) -> EventDefinition:
        kind = _EVENT_DEF_TAGS[str(el.tag)]
        line = self.line(el)
        if kind is EventKind.MESSAGE:
            ref = strip_ref(el.get("messageRef"))
            return EventDefinition(kind, ref, self._message_name(ref, node_id, line))
        if kind is EventKind.SIGNAL:
            ref = strip_ref(el.get("signalRef"))
            signal = self.signals.get(ref) if ref else None
            if ref and signal is None:
                self.problem(f"signalRef {ref!r} names no signal", node_id, line)
            return EventDefinition(kind, ref, signal.name if signal else ref)
        if kind in (EventKind.ERROR, EventKind.ESCALATION):
            attr, table = ("errorRef", self.errors) if kind is EventKind.ERROR else ("escalationRef", self.escalations)
            ref = strip_ref(el.get(attr))
            found = table.get(ref) if ref else None
            if ref and found is None:
                self.problem(f"{attr} {ref!r} names no {kind.value}", node_id, line)
            return EventDefinition(kind, ref, (found.code if found else None) or ref)
        if kind is EventKind.TIMER:
            for child in child_elements(el):
                timer_kind = _TIMER_TAGS.get(child.tag)
                if timer_kind is not None:
                    return EventDefinition(kind, timer=TimerSpec(timer_kind, text_of(child) or ""))
            return EventDefinition(kind, timer=TimerSpec(TimerKind.DATE, ""))
        if kind is EventKind.CONDITIONAL:
            return EventDefinition(kind, condition=text_of(el.find(_b("condition"))))
        if kind is EventKind.LINK:
            return EventDefinition(kind, name=el.get("name"))
        if kind is EventKind.COMPENSATE:
            return EventDefinition(kind, ref=strip_ref(el.get("activityRef")))
        return EventDefinition(kind)

    def _message_name(self, ref: str | None, node_id: str, line: int) -> str | None:
        if ref is None:
            return None
        message = self.messages.get(ref)
        if message is None:
            self.problem(f"messageRef {ref!r} names no message", node_id, line)
            return ref
        return message.name

    # --- async ---------------------------------------------------------

    def _async(self, attrs: dict[str, str], exts: list[ExtensionElement], node_id: str, line: int) -> AsyncConfig:
        retry_cycle = next((e.text for e in exts if e.tag in _RETRY_CYCLE_TAGS and e.text), None)
        if retry_cycle is None and _ASYNC_KEYS.isdisjoint(attrs):
            return NO_ASYNC
        before = after = False
        exclusive: bool | None = None
        for key, value in attrs.items():
            if key in _ASYNC_BEFORE:
                before = self._parse_bool(value, key, False, node_id, line) or before
            elif key in _ASYNC_AFTER:
                after = self._parse_bool(value, key, False, node_id, line) or after
            elif key in _EXCLUSIVE and (exclusive is None or key.startswith("bpmnlite:")):
                exclusive = self._parse_bool(value, key, True, node_id, line)
        retries = attrs.get("bpmnlite:retries")
        if retries is not None and not _RETRIES_FORMAT.fullmatch(retries.strip()):
            self.problem(
                f"bpmnlite:retries must be a count like '5' or a repeating interval like 'R5/PT10S', not {retries!r}",
                node_id,
                line,
            )
        priority = self._int(attrs, "bpmnlite:priority", None, node_id, line)
        if priority is None and (job_priority := attrs.get("camunda:jobPriority", "").strip()):
            # Camunda allows an expression here; only a literal number is a priority.
            priority = int(job_priority) if re.fullmatch(r"-?\d+", job_priority) else None
        return AsyncConfig(
            before=before,
            after=after,
            exclusive=True if exclusive is None else exclusive,
            retries=(retries.strip() if retries is not None else None) or retry_cycle,
            retry_backoff=attrs.get("bpmnlite:retryBackoff") or None,
            max_concurrent=self._int(attrs, "bpmnlite:maxConcurrent", 1, node_id, line),
            max_queue=self._int(attrs, "bpmnlite:maxQueue", 0, node_id, line),
            timeout=attrs.get("bpmnlite:timeout") or None,
            priority=priority,
        )

    # --- values --------------------------------------------------------

    def _bool(self, el: Element, attr: str, default: bool, element_id: str) -> bool:
        """A BPMN boolean attribute of ``el``; the line is looked up only for a problem."""
        return self._parse_bool(el.get(attr), attr, default, element_id, el)

    def _parse_bool(self, value: str | None, attr: str, default: bool, element_id: str, where: Element | int) -> bool:
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        line = where if isinstance(where, int) else self.line(where)
        self.problem(f"{attr} must be true or false, not {value!r}", element_id, line)
        return default

    def _int(self, attrs: Mapping[str, str], key: str, minimum: int | None, element_id: str, line: int) -> int | None:
        value = attrs.get(key)
        if value is None:
            return None
        try:
            number = int(value.strip())
        except ValueError:
            self.problem(f"{key} must be an integer, not {value!r}", element_id, line)
            return None
        if minimum is not None and number < minimum:
            self.problem(f"{key} must be at least {minimum}, not {number}", element_id, line)
            return None
        return number

    # --- collaboration and diagrams -------------------------------------

    def _collaboration(self, el: Element) -> Collaboration:
        participants: list[Participant] = []
        flows: list[MessageFlow] = []
        for child in child_elements(el):
            line = self.line(child)
            if child.tag == _b("participant"):
                pid = child.get("id") or self._new_id(f"participant_{line}")
                participants.append(Participant(pid, child.get("name"), strip_ref(child.get("processRef")), line))
            elif child.tag == _b("messageFlow"):
                fid = child.get("id") or self._new_id(f"messageFlow_{line}")
                ref = strip_ref(child.get("messageRef"))
                if ref is not None and ref not in self.messages:
                    self.problem(f"messageRef {ref!r} names no message", fid, line)
                source, target = strip_ref(child.get("sourceRef")) or "", strip_ref(child.get("targetRef")) or ""
                flows.append(MessageFlow(fid, child.get("name"), source, target, ref, line))
        line = self.line(el)
        cid = el.get("id") or self._new_id(f"collaboration_{line}")
        return Collaboration(cid, el.get("name"), tuple(participants), tuple(flows), line)


# --- helpers without state ----------------------------------------------


def _script_text(el: Element) -> str | None:
    """Script text with common indentation removed: XML indentation breaks Python scripts."""
    text = "".join(cast("Iterator[str]", el.itertext()))
    return textwrap.dedent(text).strip() or None


def _task_type(el: Element, attrs: Mapping[str, str]) -> str | None:
    """Which plugin runs a service/send/business-rule task, in the order the contract fixes."""
    if own := attrs.get("bpmnlite:type"):
        return own
    if attrs.get("camunda:type") == "external" and (topic := attrs.get("camunda:topic")):
        return topic
    implementation = (el.get("implementation") or "").strip()
    if implementation and implementation not in ("##WebService", "##unspecified"):
        return implementation
    for key in _TASK_TYPE_ATTRS:
        if value := attrs.get(key):
            return value
    return None
