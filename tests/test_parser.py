"""The BPMN parser: what lands in the model, and what is refused."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from bpmnlite._xml import hardened_parser
from bpmnlite.errors import ModelError, Problem
from bpmnlite.model import (
    NO_ASYNC,
    AsyncConfig,
    Bounds,
    Definitions,
    EventKind,
    FlowNode,
    MultiInstance,
    NodeKind,
    Process,
    TimerKind,
    TimerSpec,
    VariableMapping,
)
from bpmnlite.parser import BPMN_NS, BPMNLITE_NS, ParserLimits, parse

MODELS = Path(__file__).parent / "models" / "parser"
ALL_ELEMENTS = MODELS / "all_elements.bpmn"

NAMESPACES = (
    f'xmlns="{BPMN_NS}" xmlns:bpmnlite="{BPMNLITE_NS}" '
    'xmlns:camunda="http://camunda.org/schema/1.0/bpmn" xmlns:flowable="http://flowable.org/bpmn" '
    'xmlns:activiti="http://activiti.org/bpmn" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0"'
)


def model(body: str, *, root_extra: str = "", executable: str = 'isExecutable="true"') -> str:
    """A one-process document around ``body`` (the process's children)."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<definitions {NAMESPACES} id="d" targetNamespace="t">\n'
        f'{root_extra}\n<process id="p" {executable}>\n{body}\n</process>\n</definitions>\n'
    )


def node(source: str, node_id: str) -> FlowNode:
    return parse(model(source)).processes[0].nodes[node_id]


def problems_of(source: str | bytes | Path, limits: ParserLimits | None = None) -> list[Problem]:
    with pytest.raises(ModelError) as caught:
        parse(source, limits=limits or ParserLimits())
    return caught.value.problems


def line_containing(path: Path, needle: str) -> int:
    """The 1-based line of ``needle`` found by plain text search, independent of lxml."""
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in text:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


@pytest.fixture(scope="module")
def defs() -> Definitions:
    return parse(ALL_ELEMENTS)


@pytest.fixture(scope="module")
def main(defs: Definitions) -> Process:
    return defs.process("main")


# --- sources ---------------------------------------------------------------


def test_path_bytes_text_and_pathlike_give_the_same_model() -> None:
    raw = ALL_ELEMENTS.read_bytes()
    from_path = parse(ALL_ELEMENTS)
    assert from_path.source_name == "all_elements.bpmn"
    assert parse(str(ALL_ELEMENTS)).source_name == "all_elements.bpmn"
    from_bytes = parse(raw, source_name="mem")
    from_text = parse("\ufeff " + raw.decode("utf-8").split("?>", 1)[1])  # same line count
    assert from_bytes.source_name == "mem"
    assert from_text.source_name is None
    assert from_bytes.processes == from_path.processes == from_text.processes


def test_missing_file_is_a_model_error_naming_it(tmp_path: Path) -> None:
    problems = problems_of(tmp_path / "nope.bpmn")
    assert "nope.bpmn" in problems[0].message


def test_latin1_declaration_in_text_and_bytes() -> None:
    text = model('<task id="t" name="Café"/>').replace("UTF-8", "ISO-8859-1")
    assert parse(text).processes[0].nodes["t"].name == "Café"
    assert parse(text.encode("latin-1")).processes[0].nodes["t"].name == "Café"


# --- definitions-level elements ----------------------------------------------


def test_root_attributes_imports_and_definitions(defs: Definitions) -> None:
    assert (defs.id, defs.target_namespace, defs.exporter) == ("defs", "http://example.com/tns", "hand")
    assert defs.imports == (
        {
            "importType": "http://www.w3.org/2001/XMLSchema",
            "location": "types.xsd",
            "namespace": "http://example.com/types",
        },
    )
    assert defs.messages["Msg_Order"].name == "order-received"
    assert defs.messages["Msg_NoName"].name == "Msg_NoName"
    assert defs.signals["Sig_Stop"].name == "stop-all"
    assert (defs.errors["Err_Fail"].code, defs.errors["Err_Fail"].name) == ("E42", "Failure")
    assert defs.errors["Err_NoCode"].code is None
    assert defs.escalations["Esc_Late"].code == "LATE"


def test_every_node_kind_is_parsed(main: Process) -> None:
    assert {n.kind for n in main.nodes.values()} == set(NodeKind)


def test_process_fields(main: Process) -> None:
    assert (main.name, main.is_executable) == ("Main process", True)
    assert main.documentation == "The main process."
    assert main.attributes == {"camunda:historyTimeToLive": "P1D"}
    (meta,) = main.extensions
    assert (meta.tag, meta.attributes, meta.text) == ("{http://example.com/vendor}meta", {"key": "owner"}, "team-a")


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [('isExecutable="true"', True), ('isExecutable="False"', False), ("", None)],
)
def test_is_executable_true_false_or_unset(attribute: str, expected: bool | None) -> None:
    assert parse(model('<startEvent id="s"/>', executable=attribute)).processes[0].is_executable is expected


# --- events ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node_id", "kind", "ref", "name"),
    [
        ("start_msg", EventKind.MESSAGE, "Msg_Order", "order-received"),
        ("start_signal", EventKind.SIGNAL, "Sig_Stop", "stop-all"),
        ("start_none", EventKind.NONE, None, None),
        ("catch_msg", EventKind.MESSAGE, "Msg_NoName", "Msg_NoName"),  # QName prefix dropped, id as name
        ("catch_link", EventKind.LINK, None, "B"),
        ("throw_signal", EventKind.SIGNAL, "Sig_Stop", "stop-all"),
        ("throw_escalation", EventKind.ESCALATION, "Esc_Late", "LATE"),
        ("throw_compensate", EventKind.COMPENSATE, "svc", None),
        ("end_error", EventKind.ERROR, "Err_Fail", "E42"),
        ("end_error_nocode", EventKind.ERROR, "Err_NoCode", "Err_NoCode"),
        ("end_terminate", EventKind.TERMINATE, None, None),
        ("end_cancel", EventKind.CANCEL, None, None),
        ("b_error", EventKind.ERROR, None, None),  # catch-all
        ("evsub_start", EventKind.ESCALATION, "Esc_Late", "LATE"),
        ("send", EventKind.MESSAGE, "Msg_Order", "order-received"),
        ("receive", EventKind.MESSAGE, "Msg_NoName", "Msg_NoName"),
    ],
)
def test_event_definitions_and_resolved_names(
    main: Process, node_id: str, kind: EventKind, ref: str | None, name: str | None
) -> None:
    event = main.nodes[node_id].event
    assert event is not None
    assert (event.kind, event.ref, event.name) == (kind, ref, name)


def test_tasks_and_gateways_have_no_event(main: Process) -> None:
    assert main.nodes["user"].event is None
    assert main.nodes["xor"].event is None


@pytest.mark.parametrize(
    ("node_id", "timer"),
    [
        ("start_timer", TimerSpec(TimerKind.CYCLE, "R3/PT1H")),
        ("catch_timer", TimerSpec(TimerKind.DURATION, "PT5M")),
        ("catch_empty_timer", TimerSpec(TimerKind.DATE, "")),
        ("b_timer", TimerSpec(TimerKind.DURATION, "P1D")),
    ],
)
def test_timers(main: Process, node_id: str, timer: TimerSpec) -> None:
    event = main.nodes[node_id].event
    assert event is not None and event.timer == timer


def test_timer_definition_without_any_child_is_an_empty_timer() -> None:
    event = node('<intermediateCatchEvent id="c"><timerEventDefinition/></intermediateCatchEvent>', "c").event
    assert event is not None and event.timer == TimerSpec(TimerKind.DATE, "")


def test_conditional_event_keeps_its_condition(main: Process) -> None:
    event = main.nodes["catch_cond"].event
    assert event is not None and (event.kind, event.condition) == (EventKind.CONDITIONAL, "x > 3")


def test_several_event_definitions_keep_the_first_and_are_marked(main: Process) -> None:
    two = main.nodes["catch_two"]
    assert two.event is not None and two.event.kind is EventKind.MESSAGE
    assert two.attributes["bpmn:eventDefinitions"] == "message timer"
    assert "bpmn:eventDefinitions" not in main.nodes["catch_msg"].attributes


def test_boundary_events(main: Process) -> None:
    timer, error = main.nodes["b_timer"], main.nodes["b_error"]
    assert (timer.attached_to, timer.cancel_activity) == ("user", False)
    assert (error.attached_to, error.cancel_activity) == ("svc", True)


def test_event_sub_process_and_interrupting_flag(main: Process) -> None:
    assert main.nodes["evsub"].triggered_by_event is True
    assert main.nodes["sub"].triggered_by_event is False
    assert main.nodes["evsub_start"].is_interrupting is False
    assert main.nodes["start_msg"].is_interrupting is True


# --- scopes, flows ---------------------------------------------------------


def test_nested_sub_processes_are_flattened_with_scope_ids(main: Process) -> None:
    scopes = {n.id: n.scope_id for n in main.nodes.values() if n.id.startswith(("sub", "evsub"))}
    assert scopes == {
        "sub": "main",
        "sub_start": "sub",
        "subsub": "sub",
        "subsub_start": "subsub",
        "subsub_end": "subsub",
        "evsub": "main",
        "evsub_start": "evsub",
        "evsub_end": "evsub",
    }
    assert main.flows["f_subsub"].scope_id == "subsub"
    assert main.flows["f_sub_1"].scope_id == "sub"
    assert main.flows["f_start"].scope_id == "main"


def test_incoming_and_outgoing_come_from_the_flows_in_document_order(main: Process) -> None:
    start = main.nodes["start_msg"]
    assert start.outgoing == ("f_start",)  # the <outgoing> tag names a flow that does not exist
    assert main.nodes["xor"].outgoing == ("f_xor_default", "f_xor_cond")
    end = main.nodes["end_none"]
    assert len(end.incoming) == 3 and end.incoming[-1] == "f_svc"
    assert len(set(end.incoming)) == 3  # the two anonymous flows got distinct ids
    assert main.nodes["user"].outgoing == end.incoming[:2]


def test_anonymous_flow_ids_do_not_clash_with_written_ids() -> None:
    body = (
        '<startEvent id="s"/><endEvent id="e"/>'
        '<sequenceFlow id="flow_s_e" sourceRef="s" targetRef="e"/><sequenceFlow sourceRef="s" targetRef="e"/>'
    )
    proc = parse(model(body)).processes[0]
    assert len(proc.flows) == 2 and "flow_s_e" in proc.flows


def test_sequence_flow_condition_and_language(main: Process) -> None:
    flow = main.flows["f_xor_cond"]
    assert (flow.source, flow.target, flow.condition, flow.condition_language) == (
        "xor",
        "svc",
        "amount > 100",
        "python",
    )
    assert main.flows["f_start"].name == "go"
    assert main.flows["f_start"].condition is None
    assert main.nodes["xor"].default_flow == "f_xor_default"


# --- activities --------------------------------------------------------------


def test_call_activity_mappings_business_key_and_background(main: Process) -> None:
    call = main.nodes["call"]
    assert call.called_element == "child"
    assert call.call_business_key == "#{execution.processBusinessKey}"
    assert call.call_background is True
    assert call.call_inputs == (
        VariableMapping(source="order", target="childOrder"),
        VariableMapping(source_expression="${amount * 2}", target="doubled", local=True),
        VariableMapping(all_variables=True),
    )
    assert call.call_outputs == (
        VariableMapping(source="result", target="childResult"),
        VariableMapping(all_variables=True, local=True),
    )


@pytest.mark.parametrize("vendor", ["flowable", "activiti"])
def test_call_activity_mappings_of_other_vendors(vendor: str) -> None:
    call = node(
        f'<callActivity id="c" calledElement="x"><extensionElements>'
        f'<{vendor}:in source="a" target="b"/><{vendor}:out variables="all"/>'
        f"</extensionElements></callActivity>",
        "c",
    )
    assert call.call_inputs == (VariableMapping(source="a", target="b"),)
    assert call.call_outputs == (VariableMapping(all_variables=True),)
    assert call.call_background is False


def test_zeebe_called_element_is_a_fallback() -> None:
    call = node(
        '<callActivity id="c"><extensionElements><zeebe:calledElement processId="child"/>'
        "</extensionElements></callActivity>",
        "c",
    )
    assert call.called_element == "child"


@pytest.mark.parametrize(
    ("node_id", "expected"),
    [
        ("mi_standard", MultiInstance(True, "3", None, None, "${nrOfCompletedInstances >= 2}")),
        ("mi_data", MultiInstance(False, None, "orders", "order", None)),
        ("mi_camunda", MultiInstance(False, None, "${customers}", "customer", None)),
        ("mi_flowable", MultiInstance(False, None, "people", "person", None)),
    ],
)
def test_multi_instance_forms(main: Process, node_id: str, expected: MultiInstance) -> None:
    assert main.nodes[node_id].multi_instance == expected


def test_multi_instance_activiti_and_zeebe_forms() -> None:
    activiti = node(
        '<task id="t"><multiInstanceLoopCharacteristics activiti:collection="xs" activiti:elementVariable="x"/></task>',
        "t",
    )
    assert activiti.multi_instance == MultiInstance(False, None, "xs", "x", None)
    zeebe = node(
        '<task id="t"><multiInstanceLoopCharacteristics isSequential="true"><extensionElements>'
        '<zeebe:loopCharacteristics inputCollection="=docs" inputElement="doc"/>'
        "</extensionElements></multiInstanceLoopCharacteristics></task>",
        "t",
    )
    assert zeebe.multi_instance == MultiInstance(True, None, "=docs", "doc", None)


def test_standard_loop_is_kept_as_a_marker(main: Process) -> None:
    assert main.nodes["loop_standard"].attributes.get("bpmn:standardLoop") == "true"
    assert main.nodes["loop_standard"].multi_instance is None
    assert main.nodes["compensation_handler"].attributes.get("bpmn:isForCompensation") == "true"


def test_script_task(main: Process) -> None:
    script = main.nodes["script"]
    assert script.script == "total = 0\nfor item in items:\n    total += item"
    assert (script.script_format, script.result_variable) == ("python", "total")


def test_service_and_user_task_attributes(main: Process) -> None:
    svc = main.nodes["svc"]
    assert svc.attributes == {
        "bpmnlite:type": "http",
        "bpmnlite:url": "https://example.com",
        "camunda:resultVariable": "answer",
    }
    assert (svc.task_type, svc.result_variable) == ("http", "answer")
    user = main.nodes["user"]
    assert user.attributes == {"camunda:assignee": "demo", "camunda:formKey": "form:check"}
    assert (user.name, user.documentation) == ("Check", "Look at it.")
    assert main.nodes["send"].task_type == "com.example.Send"
    assert main.nodes["rules"].task_type == "dmn"


@pytest.mark.parametrize(
    ("attributes", "task_type"),
    [
        ('bpmnlite:type="mail" camunda:class="X"', "mail"),
        ('camunda:type="external" camunda:topic="invoices" camunda:class="X"', "invoices"),
        ('implementation="##WebService" camunda:class="com.X"', "com.X"),
        ('implementation="##unspecified" flowable:class="org.Y"', "org.Y"),
        ('implementation="myImpl" camunda:class="com.X"', "myImpl"),
        ('activiti:class="a.Z"', "a.Z"),
        ('camunda:delegateExpression="${sayHelloDelegate}"', "${sayHelloDelegate}"),
        ('flowable:delegateExpression="${d}"', "${d}"),
        ('camunda:expression="${bean.run()}"', "${bean.run()}"),
        ('flowable:expression="${x}"', "${x}"),
        ('flowable:type="mail"', "mail"),
        ('activiti:type="http"', "http"),
        ("", None),
    ],
)
def test_task_type_precedence(attributes: str, task_type: str | None) -> None:
    assert node(f'<serviceTask id="t" {attributes}/>', "t").task_type == task_type


def test_task_type_only_for_service_send_and_business_rule_tasks() -> None:
    assert node('<userTask id="t" camunda:class="X"/>', "t").task_type is None
    assert node('<sendTask id="t" camunda:class="X"/>', "t").task_type == "X"
    assert node('<businessRuleTask id="t" flowable:type="dmn"/>', "t").task_type == "dmn"


# --- async -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ('bpmnlite:async="true"', AsyncConfig(before=True)),
        ('bpmnlite:asyncBefore="TRUE"', AsyncConfig(before=True)),
        ('bpmnlite:asyncAfter="true"', AsyncConfig(after=True)),
        ('bpmnlite:exclusive="false"', AsyncConfig(exclusive=False)),
        ('bpmnlite:retries="5"', AsyncConfig(retries="5")),
        ('bpmnlite:retries="R5/PT10S"', AsyncConfig(retries="R5/PT10S")),
        ('bpmnlite:retryBackoff="PT30S"', AsyncConfig(retry_backoff="PT30S")),
        ('bpmnlite:maxConcurrent="4"', AsyncConfig(max_concurrent=4)),
        ('bpmnlite:maxQueue="0"', AsyncConfig(max_queue=0)),
        ('bpmnlite:timeout="PT5M"', AsyncConfig(timeout="PT5M")),
        ('bpmnlite:priority="-3"', AsyncConfig(priority=-3)),
        ('camunda:async="true"', AsyncConfig(before=True)),
        ('camunda:asyncBefore="true"', AsyncConfig(before=True)),
        ('camunda:asyncAfter="true"', AsyncConfig(after=True)),
        ('camunda:exclusive="false"', AsyncConfig(exclusive=False)),
        ('camunda:jobPriority="12"', AsyncConfig(priority=12)),
        ('camunda:jobPriority="${prio}"', AsyncConfig()),
        ('flowable:async="true"', AsyncConfig(before=True)),
        ('flowable:asyncLeave="true"', AsyncConfig(after=True)),
        ('flowable:exclusive="False"', AsyncConfig(exclusive=False)),
        ('activiti:async="true"', AsyncConfig(before=True)),
        ('activiti:exclusive="false"', AsyncConfig(exclusive=False)),
        ('camunda:async="false" camunda:asyncAfter="true"', AsyncConfig(after=True)),
    ],
)
def test_async_attribute_aliases(attribute: str, expected: AsyncConfig) -> None:
    assert node(f'<serviceTask id="t" {attribute}/>', "t").asynchronous == expected


def test_nodes_without_async_settings_share_the_default() -> None:
    assert node('<task id="t"/>', "t").asynchronous is NO_ASYNC


@pytest.mark.parametrize("vendor", ["camunda", "flowable", "activiti"])
def test_failed_job_retry_time_cycle_sets_retries(vendor: str) -> None:
    task = node(
        f'<serviceTask id="t" {vendor}:async="true"><extensionElements>'
        f"<{vendor}:failedJobRetryTimeCycle> R5/PT10S </{vendor}:failedJobRetryTimeCycle>"
        f"</extensionElements></serviceTask>",
        "t",
    )
    assert task.asynchronous == AsyncConfig(before=True, retries="R5/PT10S")


@pytest.mark.parametrize(
    ("attribute", "fragment"),
    [
        ('bpmnlite:async="yes"', "bpmnlite:async must be true or false, not 'yes'"),
        ('flowable:exclusive="1"', "flowable:exclusive must be true or false"),
        ('bpmnlite:maxConcurrent="lots"', "bpmnlite:maxConcurrent must be an integer"),
        ('bpmnlite:maxConcurrent="0"', "bpmnlite:maxConcurrent must be at least 1"),
        ('bpmnlite:maxQueue="-1"', "bpmnlite:maxQueue must be at least 0"),
        ('bpmnlite:priority="high"', "bpmnlite:priority must be an integer"),
        ('bpmnlite:retries="often"', "bpmnlite:retries must be a count"),
        ('bpmnlite:background="sure"', "bpmnlite:background must be true or false"),
    ],
)
def test_bad_async_values_are_problems_with_element_and_line(attribute: str, fragment: str) -> None:
    source = model(f'<callActivity id="bad" calledElement="x"\n  {attribute}/>')
    (problem,) = problems_of(source)
    assert fragment in problem.message
    assert problem.element_id == "bad"
    assert problem.line == source.splitlines().index('<callActivity id="bad" calledElement="x"') + 1


# --- extensions, lanes, data, collaboration, DI --------------------------------


def test_namespaced_attributes_and_extension_elements_keep_tags_and_lines() -> None:
    source = model(
        '<serviceTask id="t" camunda:topic="x" zeebe:foo="1" xmlns:v="urn:v" v:color="red" name="n">\n'
        "  <extensionElements>\n"
        '    <camunda:field name="url"><camunda:string>https://x</camunda:string></camunda:field>\n'
        '    <v:thing a="1"/>\n'
        "  </extensionElements>\n"
        "</serviceTask>"
    )
    task = parse(source).processes[0].nodes["t"]
    assert task.attributes == {"camunda:topic": "x", "zeebe:foo": "1", "{urn:v}color": "red"}
    field, thing = task.extensions
    assert (field.tag, field.attributes, field.text) == ("camunda:field", {"name": "url"}, None)
    assert field.children[0].tag == "camunda:string" and field.children[0].text == "https://x"
    assert (thing.tag, thing.attributes) == ("{urn:v}thing", {"a": "1"})
    lines = source.splitlines()
    assert field.line == next(i for i, text in enumerate(lines, 1) if "<camunda:field" in text)
    assert field.children[0].line == field.line
    assert thing.line == field.line + 1


def test_lanes_nested(main: Process) -> None:
    (clerk,) = main.lanes
    assert (clerk.id, clerk.name, clerk.node_ids) == ("Lane_Clerk", "Clerk", ("start_msg",))
    (junior,) = clerk.child_lanes
    assert (junior.id, junior.node_ids) == ("Lane_Junior", ("user",))


def test_data_elements_and_text_annotations(main: Process) -> None:
    data = {(d.id, d.kind, d.name, d.scope_id) for d in main.data}
    assert data == {
        ("DI_Order", "dataInput", "order", "main"),
        ("DO_Result", "dataOutput", "result", "main"),
        ("DObj_1", "dataObject", "Invoice", "main"),
        ("DRef_1", "dataObjectReference", "Invoice ref", "main"),
        ("DStore_1", "dataStoreReference", "ERP", "main"),
        ("Note_1", "textAnnotation", "Remember the invoice", "main"),
        ("DObj_Sub", "dataObject", "Scratch", "sub"),
    }


def test_collaboration(defs: Definitions) -> None:
    (collab,) = defs.collaborations
    assert [(p.id, p.name, p.process_ref) for p in collab.participants] == [
        ("Pool_Main", "Main", "main"),
        ("Pool_Customer", "Customer", None),
    ]
    (flow,) = collab.message_flows
    assert (flow.id, flow.name, flow.source, flow.target, flow.message_ref) == (
        "MF_1",
        "order",
        "Pool_Customer",
        "start_msg",
        "Msg_Order",
    )


def test_diagrams_shapes_and_edges(defs: Definitions) -> None:
    first, second = defs.diagrams
    assert (first.id, first.name, first.plane_element) == ("Diagram_1", "Overview", "Collab")
    pool, sub = first.shapes
    assert (pool.element_id, pool.bounds, pool.is_horizontal, pool.is_expanded) == (
        "Pool_Main",
        Bounds(10, 20, 600, 250.5),
        True,
        None,
    )
    assert sub.is_expanded is False
    (edge,) = first.edges
    assert (edge.id, edge.element_id, edge.waypoints) == ("f_start_di", "f_start", ((50.0, 60.0), (80.5, 60.0)))
    assert (second.id, second.name, second.plane_element, len(second.shapes)) == ("Diagram_2", None, "sub", 1)


@pytest.mark.parametrize("element_id", ["start_msg", "user", "b_timer", "subsub_end", "call", "mi_flowable"])
def test_node_line_numbers(main: Process, element_id: str) -> None:
    assert main.nodes[element_id].line == line_containing(ALL_ELEMENTS, f'id="{element_id}"')


def test_flow_lane_and_data_line_numbers(main: Process, defs: Definitions) -> None:
    assert main.flows["f_xor_cond"].line == line_containing(ALL_ELEMENTS, 'id="f_xor_cond"')
    assert main.lanes[0].line == line_containing(ALL_ELEMENTS, 'id="Lane_Clerk"')
    assert main.line == line_containing(ALL_ELEMENTS, 'id="main"')
    assert defs.messages["Msg_Order"].line == line_containing(ALL_ELEMENTS, 'id="Msg_Order"')


def test_a_start_tag_written_over_several_lines_reports_its_first_line() -> None:
    """libxml2 reports where a start tag ends; readers look where it begins."""
    source = model('<task id="one"/><userTask\n  id="multi"\n  name="x"\r\n  /><task id="after"\n/>')
    nodes = parse(source).processes[0].nodes
    first = source.splitlines().index('<task id="one"/><userTask') + 1
    assert (nodes["one"].line, nodes["multi"].line, nodes["after"].line) == (first, first, first + 3)


# --- problems ----------------------------------------------------------------


def test_every_problem_of_a_broken_model_is_reported_at_once() -> None:
    path = MODELS / "broken_refs.bpmn"
    problems = problems_of(path)
    found = {(p.element_id, p.line) for p in problems}

    def at(element_id: str, needle: str | None = None) -> tuple[str, int]:
        return element_id, line_containing(path, needle or f'id="{element_id}"')

    assert found == {
        ("task_a", line_containing(path, 'id="task_a"') + 1),  # the second one is the duplicate
        at("f_bad_source"),
        at("f_bad_target"),
        at("b_ghost"),
        at("xor"),
        at("c_msg"),
        at("c_sig"),
        at("e_err"),
        at("e_esc"),
        at("svc"),
        at("b_bool"),
        at("mf"),
    }
    messages = "\n".join(p.message for p in problems)
    for fragment in (
        "duplicate id 'task_a'",
        "sourceRef 'nowhere' names no flow node",
        "targetRef 'nothere' names no flow node",
        "attachedToRef 'ghost'",
        "default flow 'f_not_mine' is not an outgoing sequence flow of 'xor'",
        "messageRef 'Msg_Missing' names no message",
        "signalRef 'Sig_Missing' names no signal",
        "errorRef 'Err_Missing' names no error",
        "escalationRef 'Esc_Missing' names no escalation",
        "camunda:async must be true or false, not 'yes'",
        "bpmnlite:maxConcurrent must be an integer",
        "cancelActivity must be true or false",
        "messageRef 'Msg_Gone' names no message",
    ):
        assert fragment in messages
    assert all(p.source == "broken_refs.bpmn" for p in problems)


def test_call_activity_mapping_without_source_is_a_problem() -> None:
    (problem,) = problems_of(
        model('<callActivity id="c"><extensionElements><camunda:in target="x"/></extensionElements></callActivity>')
    )
    assert problem.element_id == "c" and "camunda:in mapping needs source" in problem.message


def test_root_must_be_bpmn_definitions() -> None:
    (problem,) = problems_of('<definitions xmlns="urn:not-bpmn"/>')
    assert "not bpmn:definitions" in problem.message and "urn:not-bpmn" in problem.message


def test_not_well_formed_xml_reports_lxml_line() -> None:
    (problem,) = problems_of(model('<task id="t">\n<task id="u"/>\n'))
    assert problem.message.startswith("not well-formed XML:")
    assert problem.line is not None and problem.line > 3


# --- hostile input -------------------------------------------------------------

SECRET = "TOP-SECRET-9f1c"
DOCTYPE_MESSAGE = "DOCTYPE is not allowed (entity expansion and external DTDs are refused)"


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET)
    return path


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A local port that records any connection attempt, to prove nothing was fetched."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


def assert_no_connection(server: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        server.accept()


def hostile_documents(secret: Path, port: int) -> dict[str, str]:
    body = f'<definitions xmlns="{BPMN_NS}"><process id="p" name="&x;"/></definitions>'
    laughs = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    return {
        "xxe-file": f'<!DOCTYPE d [<!ENTITY x SYSTEM "{secret.as_uri()}">]>{body}',
        "xxe-network": f'<!DOCTYPE d [<!ENTITY x SYSTEM "http://127.0.0.1:{port}/x">]>{body}',
        "parameter-entity": f'<!DOCTYPE d [<!ENTITY % p SYSTEM "http://127.0.0.1:{port}/p"> %p;]>{body}',
        "billion-laughs": f'<!DOCTYPE d [<!ENTITY l0 "lol">{laughs}<!ENTITY x "&l9;">]>{body}',
        "external-dtd": f'<!DOCTYPE definitions SYSTEM "http://127.0.0.1:{port}/bpmn.dtd">{body}',
    }


@pytest.mark.parametrize("name", ["xxe-file", "xxe-network", "parameter-entity", "billion-laughs", "external-dtd"])
@pytest.mark.parametrize("prolog", ["", '<?xml version="1.0"?>\n', "<!--" + "x" * 70_000 + "-->\n"])
def test_doctype_is_refused_and_nothing_is_expanded_or_fetched(
    name: str, prolog: str, secret_file: Path, listener: socket.socket
) -> None:
    document = prolog + hostile_documents(secret_file, listener.getsockname()[1])[name]
    with pytest.raises(ModelError) as caught:
        parse(document)
    assert [p.message for p in caught.value.problems] == [DOCTYPE_MESSAGE]
    assert SECRET not in str(caught.value) and "lollol" not in str(caught.value)
    assert_no_connection(listener)


def test_doctype_in_utf16_is_refused() -> None:
    document = f'<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE d [<!ENTITY x "y">]><definitions xmlns="{BPMN_NS}"/>'
    assert [p.message for p in problems_of(document.encode("utf-16"))] == [DOCTYPE_MESSAGE]


@pytest.mark.parametrize("name", ["xxe-file", "xxe-network", "billion-laughs"])
def test_hardened_lxml_parser_itself_never_expands(name: str, secret_file: Path, listener: socket.socket) -> None:
    """Defence in depth: the raw parser settings alone leave entities unexpanded (or fail)."""
    document = hostile_documents(secret_file, listener.getsockname()[1])[name]
    document = document.replace('<process id="p" name="&x;"/>', "<documentation>&x;</documentation>")
    try:
        serialized = etree.tostring(etree.fromstring(document.encode(), hardened_parser())).decode()
    except etree.XMLSyntaxError as exc:  # libxml2's own amplification guard
        serialized = str(exc)
    assert SECRET not in serialized and "lollol" not in serialized
    assert_no_connection(listener)


def test_oversized_document_is_refused_before_parsing(tmp_path: Path) -> None:
    source = model('<task id="t"/>')
    limits = ParserLimits(max_bytes=len(source) - 1)
    (problem,) = problems_of(source, limits=limits)
    assert problem.message.startswith("document too large")
    path = tmp_path / "big.bpmn"
    path.write_text(source + "<!-- never read as XML: " + "<" * 100 + "-->")  # not well-formed on purpose
    (problem,) = problems_of(path, limits=limits)
    assert problem.message.startswith("document too large") and problem.source == "big.bpmn"
    parse(source, limits=ParserLimits(max_bytes=len(source)))


def test_too_deep_is_refused() -> None:
    nested = "<extensionElements>" + "<x>" * 20 + "</x>" * 20 + "</extensionElements>"
    source = model(f'<task id="t">{nested}</task>')
    (problem,) = problems_of(source, limits=ParserLimits(max_depth=10))
    assert problem.message == "document too deep: more than 10 levels"
    parse(source, limits=ParserLimits(max_depth=30))


def test_deeper_than_libxml2_allows_is_refused_as_too_deep() -> None:
    source = model('<task id="t"><extensionElements>' + "<x>" * 400 + "</x>" * 400 + "</extensionElements></task>")
    (problem,) = problems_of(source)
    assert re.fullmatch(r"document too deep: more than \d+ levels", problem.message)


def test_too_many_elements_is_refused() -> None:
    source = model("".join(f'<task id="t{i}"/>' for i in range(50)))
    (problem,) = problems_of(source, limits=ParserLimits(max_elements=40))
    assert problem.message == "too many elements: more than 40"
    assert len(parse(source, limits=ParserLimits(max_elements=60)).processes[0].nodes) == 50
