"""Structural validation of executable processes."""

from __future__ import annotations

import pytest

from bpmnlite.errors import Problem
from bpmnlite.parser import BPMN_NS, parse
from bpmnlite.validation import validate

HEADER = (
    f'<?xml version="1.0" encoding="UTF-8"?>\n<definitions xmlns="{BPMN_NS}" id="d" targetNamespace="t">\n'
    '<message id="M" name="go"/><error id="E" errorCode="boom"/>\n'
)


def check(body: str, executable: str = 'isExecutable="true"') -> list[Problem]:
    source = f'{HEADER}<process id="p" {executable}>\n{body}\n</process>\n</definitions>\n'
    return validate(parse(source, source_name="v.bpmn"))


def messages(body: str) -> list[str]:
    return [p.message for p in check(body)]


def flow(source: str, target: str, flow_id: str | None = None, condition: str | None = None) -> str:
    flow_id = flow_id or f"{source}_{target}"
    cond = f"<conditionExpression>{condition}</conditionExpression>" if condition else ""
    return f'<sequenceFlow id="{flow_id}" sourceRef="{source}" targetRef="{target}">{cond}</sequenceFlow>'


LINEAR = '<startEvent id="s"/><task id="t"/><endEvent id="e"/>' + flow("s", "t") + flow("t", "e")


def test_a_sound_process_has_no_problems() -> None:
    assert check(LINEAR) == []


def test_problems_name_element_line_and_source() -> None:
    (problem,) = check('<startEvent id="s"/>\n<task id="lonely"/>')
    line = HEADER.count("\n") + 3  # after the header: <process>, the start event, then the task
    assert (problem.element_id, problem.line, problem.source) == ("lonely", line, "v.bpmn")
    assert problem.message == "unreachable: no incoming sequence flow"


@pytest.mark.parametrize(("attribute", "checked"), [('isExecutable="false"', False), ("", True)])
def test_only_executable_or_unmarked_processes_are_checked(attribute: str, checked: bool) -> None:
    assert bool(check('<task id="lonely"/>', attribute)) is checked


# --- start events and reachability ---------------------------------------------


def test_process_without_start_event() -> None:
    assert messages('<task id="t"/><endEvent id="e"/>' + flow("t", "e")) == [
        "process 'p' has no none, message, timer or signal start event",
        "unreachable: no incoming sequence flow",
    ]


def test_process_with_only_a_message_start_is_fine() -> None:
    body = '<startEvent id="s"><messageEventDefinition messageRef="M"/></startEvent><endEvent id="e"/>' + flow("s", "e")
    assert check(body) == []


def test_empty_process_needs_no_start_event() -> None:
    assert check("") == []


def test_sub_process_needs_a_none_start_event() -> None:
    body = '<startEvent id="s"/><subProcess id="sub"><task id="inner"/></subProcess>' + flow("s", "sub")
    assert messages(body) == ["sub-process 'sub' has no none start event", "unreachable: no incoming sequence flow"]


def test_compensation_handlers_boundary_and_event_sub_processes_need_no_incoming_flow() -> None:
    body = (
        LINEAR
        + '<task id="handler" isForCompensation="true"/>'
        + '<boundaryEvent id="b" attachedToRef="t"><timerEventDefinition><timeDuration>PT1M</timeDuration>'
        + '</timerEventDefinition></boundaryEvent><endEvent id="be"/>'
        + flow("b", "be")
        + '<subProcess id="ev" triggeredByEvent="true"><startEvent id="es">'
        + '<messageEventDefinition messageRef="M"/></startEvent><endEvent id="ee"/>'
        + flow("es", "ee")
        + "</subProcess>"
    )
    assert check(body) == []


def test_start_event_with_incoming_flow() -> None:
    assert messages(LINEAR + flow("t", "s", "back")) == ["start event 's' cannot have an incoming sequence flow"]


def test_sequence_flow_crossing_a_scope() -> None:
    body = (
        '<startEvent id="s"/><subProcess id="sub"><startEvent id="is"/><task id="inner"/>'
        + flow("is", "inner")
        + "</subProcess>"
        + flow("s", "sub")
        + flow("inner", "s2", "cross")
        + '<endEvent id="s2"/>'
    )
    assert messages(body) == ["sequence flow 'cross' crosses a scope boundary: 'inner' is in 'sub', 's2' is in 'p'"]


# --- gateways ----------------------------------------------------------------------


@pytest.mark.parametrize("gateway", ["exclusiveGateway", "inclusiveGateway"])
def test_conditional_gateway_flow_without_condition(gateway: str) -> None:
    body = (
        f'<startEvent id="s"/><{gateway} id="g"/><endEvent id="a"/><endEvent id="b"/>'
        + flow("s", "g")
        + flow("g", "a", "fa", "x &gt; 1")
        + flow("g", "b", "fb")
    )
    (problem,) = check(body)
    assert problem.element_id == "fb"
    assert "outgoing flow 'fb' has no condition and is not the default flow" in problem.message


def test_default_flow_needs_no_condition_and_a_single_flow_is_unconditional() -> None:
    body = (
        '<startEvent id="s"/><exclusiveGateway id="g" default="fb"/><exclusiveGateway id="g2"/>'
        '<endEvent id="a"/><endEvent id="b"/>'
        + flow("s", "g")
        + flow("g", "a", "fa", "x")
        + flow("g", "g2", "fb")
        + flow("g2", "b")
    )
    assert check(body) == []


def test_parallel_gateway_conditions_are_ignored_not_reported() -> None:
    body = (
        '<startEvent id="s"/><parallelGateway id="g"/><endEvent id="a"/><endEvent id="b"/>'
        + flow("s", "g")
        + flow("g", "a", "fa", "x")
        + flow("g", "b", "fb")
    )
    assert check(body) == []


def test_event_based_gateway_targets() -> None:
    body = (
        '<startEvent id="s"/><eventBasedGateway id="g"/>'
        '<intermediateCatchEvent id="m"><messageEventDefinition messageRef="M"/></intermediateCatchEvent>'
        '<intermediateCatchEvent id="tm"><timerEventDefinition><timeDuration>PT1H</timeDuration>'
        "</timerEventDefinition></intermediateCatchEvent>"
        '<receiveTask id="r"/><task id="bad"/><endEvent id="e"/>'
        + flow("s", "g")
        + flow("g", "m")
        + flow("g", "tm")
        + flow("g", "r")
        + flow("g", "bad", "to_bad")
        + "".join(flow(x, "e") for x in ("m", "tm", "r", "bad"))
    )
    (problem,) = check(body)
    assert problem.element_id == "g"
    assert (
        "target 'bad' of flow 'to_bad' must be a message, timer or signal intermediate catch event" in problem.message
    )


# --- parallel join with a loop-back ---------------------------------------------------

LOOP_MESSAGE = (
    "parallel gateway 'join' joins the loop-back flow 'back': by the BPMN rule it waits for a token on every "
    "incoming flow, so the first token would wait forever; merge the loop with an exclusive gateway before it"
)


def test_parallel_join_with_loop_back() -> None:
    body = (
        '<startEvent id="s"/><parallelGateway id="join"/><task id="work"/>'
        '<exclusiveGateway id="again" default="out"/><endEvent id="e"/>'
        + flow("s", "join")
        + flow("join", "work")
        + flow("work", "again")
        + flow("again", "join", "back", "retry")
        + flow("again", "e", "out")
    )
    (problem,) = check(body)
    assert (problem.message, problem.element_id) == (LOOP_MESSAGE, "join")


def test_parallel_join_fed_by_a_boundary_event_of_the_loop() -> None:
    body = (
        '<startEvent id="s"/><parallelGateway id="join"/><userTask id="work"/><endEvent id="e"/>'
        '<boundaryEvent id="b" attachedToRef="work"><timerEventDefinition><timeDuration>PT1H</timeDuration>'
        "</timerEventDefinition></boundaryEvent>"
        + flow("s", "join")
        + flow("join", "work")
        + flow("work", "e")
        + flow("b", "join", "back")
    )
    assert messages(body) == [LOOP_MESSAGE]


def test_fork_and_join_without_loop_is_fine() -> None:
    body = (
        '<startEvent id="s"/><parallelGateway id="fork"/><task id="a"/><task id="b"/>'
        '<parallelGateway id="join"/><endEvent id="e"/>'
        + flow("s", "fork")
        + flow("fork", "a")
        + flow("fork", "b")
        + flow("a", "join")
        + flow("b", "join")
        + flow("join", "e")
    )
    assert check(body) == []


def test_loop_merged_by_an_exclusive_gateway_before_a_join_is_fine() -> None:
    body = (
        '<startEvent id="s"/><parallelGateway id="fork"/><exclusiveGateway id="merge"/><task id="a"/>'
        '<exclusiveGateway id="again" default="on"/><task id="b"/><parallelGateway id="join"/><endEvent id="e"/>'
        + flow("s", "fork")
        + flow("fork", "merge")
        + flow("fork", "b")
        + flow("merge", "a")
        + flow("a", "again")
        + flow("again", "merge", "back", "retry")
        + flow("again", "join", "on")
        + flow("b", "join")
        + flow("join", "e")
    )
    assert check(body) == []


# --- events ----------------------------------------------------------------------


def test_empty_timer() -> None:
    body = (
        '<startEvent id="s"/><intermediateCatchEvent id="wait"><timerEventDefinition><timeDate/>'
        '</timerEventDefinition></intermediateCatchEvent><endEvent id="e"/>' + flow("s", "wait") + flow("wait", "e")
    )
    assert messages(body) == ["timer event 'wait' has an empty timeDate"]


def test_message_catch_without_a_message() -> None:
    body = (
        '<startEvent id="s"/><intermediateCatchEvent id="c"><messageEventDefinition/></intermediateCatchEvent>'
        '<endEvent id="e"/>' + flow("s", "c") + flow("c", "e")
    )
    assert messages(body) == ["message event 'c' names no message to wait for"]


def test_message_start_without_a_message() -> None:
    body = '<startEvent id="s"><messageEventDefinition/></startEvent><endEvent id="e"/>' + flow("s", "e")
    assert messages(body) == ["message event 's' names no message to wait for"]


def test_error_end_and_error_boundary_without_error_ref_are_catch_all() -> None:
    body = (
        '<startEvent id="s"/><serviceTask id="t"/><endEvent id="e"><errorEventDefinition/></endEvent>'
        '<boundaryEvent id="b" attachedToRef="t"><errorEventDefinition/></boundaryEvent><endEvent id="be"/>'
        + flow("s", "t")
        + flow("t", "e")
        + flow("b", "be")
    )
    assert check(body) == []


def test_boundary_on_a_non_activity_and_non_interrupting_error_boundary() -> None:
    body = (
        '<startEvent id="s"/><exclusiveGateway id="g"/><endEvent id="e"/>'
        '<boundaryEvent id="b" attachedToRef="g"><timerEventDefinition><timeDuration>PT1M</timeDuration>'
        '</timerEventDefinition></boundaryEvent><task id="t"/>'
        '<boundaryEvent id="be" attachedToRef="t" cancelActivity="false"><errorEventDefinition errorRef="E"/>'
        "</boundaryEvent>"
        + flow("s", "g")
        + flow("g", "t")
        + flow("t", "e")
        + flow("b", "e", "fb")
        + flow("be", "e", "fe")
    )
    assert messages(body) == [
        "boundary event 'b' is attached to 'g', which is not an activity",
        "error boundary event 'be' must be interrupting",
    ]


def event_sub_process(start: str, extra: str = "") -> str:
    return (
        LINEAR
        + f'<subProcess id="ev" triggeredByEvent="true">{start}<endEvent id="ee"/>'
        + flow("es", "ee")
        + extra
        + "</subProcess>"
    )


@pytest.mark.parametrize(
    "start",
    [
        '<startEvent id="es" isInterrupting="false"><messageEventDefinition messageRef="M"/></startEvent>',
        '<startEvent id="es" isInterrupting="false"><timerEventDefinition><timeCycle>R/PT1H</timeCycle>'
        "</timerEventDefinition></startEvent>",
        '<startEvent id="es"><errorEventDefinition/></startEvent>',
        '<startEvent id="es" isInterrupting="false"><escalationEventDefinition/></startEvent>',
    ],
)
def test_valid_event_sub_process_starts(start: str) -> None:
    assert check(event_sub_process(start)) == []


def test_event_sub_process_start_rules() -> None:
    assert messages(
        event_sub_process('<startEvent id="es" isInterrupting="false"><errorEventDefinition/></startEvent>')
    ) == ["error start event 'es' of an event sub-process must be interrupting"]
    assert messages(event_sub_process('<startEvent id="es"/>')) == [
        "event sub-process start event 'es' has no event definition"
    ]
    two = event_sub_process(
        '<startEvent id="es"><messageEventDefinition messageRef="M"/></startEvent>',
        '<startEvent id="es2"><messageEventDefinition messageRef="M"/></startEvent>' + flow("es2", "ee"),
    )
    assert messages(two) == ["event sub-process 'ev' must have exactly one start event, it has 2"]


def test_event_definitions_in_the_wrong_place() -> None:
    body = (
        '<startEvent id="s"><errorEventDefinition/></startEvent><endEvent id="e"/>'
        + flow("s", "e")
        + '<startEvent id="s2"/><intermediateCatchEvent id="c"/><endEvent id="e2"/>'
        + flow("s2", "c")
        + flow("c", "e2")
    )
    assert messages(body) == [
        "process start event 's' cannot have a error definition",
        "intermediate catch event 'c' has no event definition",
    ]


# --- not supported for execution -------------------------------------------------------


@pytest.mark.parametrize(
    ("element", "expected"),
    [
        ('<complexGateway id="x"/>', "not supported for execution: complex gateway 'x'"),
        ('<transaction id="x"/>', "not supported for execution: transaction 'x'"),
        (
            '<adHocSubProcess id="x"><task id="in"/></adHocSubProcess>',
            "not supported for execution: ad-hoc sub-process 'x'",
        ),
        (
            '<task id="x"><standardLoopCharacteristics/></task>',
            "not supported for execution: standard loop on 'x' (use multi-instance instead)",
        ),
        (
            '<intermediateCatchEvent id="x"><conditionalEventDefinition><condition>a</condition>'
            "</conditionalEventDefinition></intermediateCatchEvent>",
            "not supported for execution: conditional event 'x'",
        ),
        (
            '<intermediateThrowEvent id="x"><compensateEventDefinition/></intermediateThrowEvent>',
            "not supported for execution: compensation event 'x'",
        ),
        (
            '<intermediateThrowEvent id="x"><linkEventDefinition name="L"/></intermediateThrowEvent>',
            "not supported for execution: link event 'x' has no matching catch event named 'L' in its scope",
        ),
        (
            '<intermediateCatchEvent id="x"><messageEventDefinition messageRef="M"/><timerEventDefinition>'
            "<timeDuration>PT1M</timeDuration></timerEventDefinition></intermediateCatchEvent>",
            "not supported for execution: event 'x' has several event definitions (message timer); "
            "only the first would be used",
        ),
    ],
)
def test_unsupported_elements(element: str, expected: str) -> None:
    body = '<startEvent id="s"/>' + element + '<endEvent id="e"/>' + flow("s", "x") + flow("x", "e")
    assert messages(body) == [expected]


def test_link_events_with_a_matching_catch_are_fine() -> None:
    body = (
        '<startEvent id="s"/><intermediateThrowEvent id="go"><linkEventDefinition name="L"/></intermediateThrowEvent>'
        '<intermediateCatchEvent id="land"><linkEventDefinition name="L"/></intermediateCatchEvent><endEvent id="e"/>'
        + flow("s", "go")
        + flow("land", "e")
    )
    assert check(body) == []


# --- activities ------------------------------------------------------------------------


def test_call_activity_without_called_element() -> None:
    body = '<startEvent id="s"/><callActivity id="c"/><endEvent id="e"/>' + flow("s", "c") + flow("c", "e")
    assert messages(body) == ["call activity 'c' has no calledElement"]


@pytest.mark.parametrize(
    ("loop", "ok"),
    [
        ("<multiInstanceLoopCharacteristics/>", False),
        (
            "<multiInstanceLoopCharacteristics><loopCardinality>3</loopCardinality></multiInstanceLoopCharacteristics>",
            True,
        ),
        (
            "<multiInstanceLoopCharacteristics><loopDataInputRef>items</loopDataInputRef>"
            "</multiInstanceLoopCharacteristics>",
            True,
        ),
    ],
)
def test_multi_instance_needs_cardinality_or_collection(loop: str, ok: bool) -> None:
    body = f'<startEvent id="s"/><task id="t">{loop}</task><endEvent id="e"/>' + flow("s", "t") + flow("t", "e")
    expected = [] if ok else ["multi-instance 't' has neither a loopCardinality nor a collection"]
    assert messages(body) == expected
