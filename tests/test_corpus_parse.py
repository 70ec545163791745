"""Every model of the shared conformance corpus parses, and keeps what matters.

The corpus lives in ``shared/corpus`` beside the checkout. Its MANIFEST.md
(public models) and README.md (MIWG models) say which processes each file holds
and whether they are executable; these tests read those tables rather than
repeating them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from bpmnlite.parser import parse
from bpmnlite.validation import validate

SHARED = Path(__file__).resolve().parents[2] / "shared"
CORPUS = SHARED / "corpus"
MISSING = f"conformance corpus not found at {CORPUS}: the shared/ folder must sit beside the checkout"

LOOP_PROBLEM = (
    "parallel gateway 'parallel' joins the loop-back flow 'Flow_0r5ndy6': by the BPMN rule it waits for a token "
    "on every incoming flow, so the first token would wait forever; merge the loop with an exclusive gateway before it"
)


def corpus_files() -> list[Any]:
    files = sorted(
        path
        for folder in ("miwg", "public")
        if (CORPUS / folder).is_dir()
        for path in (CORPUS / folder).rglob("*")
        if path.name.endswith((".bpmn", ".bpmn20.xml"))
    )
    if not files:
        return [pytest.param(None, id="corpus-missing")]
    return [pytest.param(path, id=path.relative_to(CORPUS).as_posix()) for path in files]


def public_manifest() -> dict[str, dict[str, bool | None]]:
    """``folder/file`` -> {process id: isExecutable} from the public MANIFEST.md."""
    manifest = CORPUS / "public" / "MANIFEST.md"
    if not manifest.is_file():
        return {}
    expected: dict[str, dict[str, bool | None]] = {}
    current: str | None = None
    flags = {"false": False, "unset": None, "true": True}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if heading := re.fullmatch(r"### `(.+)`", line):
            current = heading.group(1)
        elif current and line.startswith("- **Process(es):**"):
            expected[current] = {
                pid: flags[flag] if flag else True
                for pid, flag in re.findall(r"`([^`]+)`(?: \(isExecutable=(\w+)\))?", line)
            }
    return expected


def miwg_table() -> dict[str, tuple[int, int, int]]:
    """file -> (executable=true, false, unset) counts from the MIWG README."""
    readme = CORPUS / "miwg" / "README.md"
    if not readme.is_file():
        return {}
    pattern = r"\| `([^`]+\.bpmn)` .*?(\d+) executable=true, (\d+) false, (\d+) unset"
    return {
        name: (int(true), int(false), int(unset))
        for name, true, false, unset in re.findall(pattern, readme.read_text(encoding="utf-8"))
    }


PUBLIC = public_manifest()
MIWG = miwg_table()


@pytest.mark.parametrize("path", corpus_files())
def test_corpus_model(path: Path | None) -> None:
    if path is None:
        pytest.fail(MISSING)
    defs = parse(path)
    assert defs.source_name == path.name
    assert defs.processes, "every corpus file holds at least one process"
    for process in defs.processes:
        for flow in process.flows.values():
            assert flow.id in process.nodes[flow.source].outgoing
            assert flow.id in process.nodes[flow.target].incoming
    flags = [p.is_executable for p in defs.processes]
    relative = path.relative_to(CORPUS)
    problems = validate(defs)
    if relative.parts[0] == "public":
        key = relative.relative_to("public").as_posix()
        assert key in PUBLIC, f"{key} is not described in MANIFEST.md"
        assert {p.id: p.is_executable for p in defs.processes} == PUBLIC[key]
        expected = [LOOP_PROBLEM] if path.name == "gateway_loop_input.bpmn" else []
        assert [p.message for p in problems] == expected
    else:
        assert path.name in MIWG, f"{path.name} is not described in the MIWG README"
        assert (flags.count(True), flags.count(False), flags.count(None)) == MIWG[path.name]
        assert all(p.line and p.element_id for p in problems)


def test_manifest_lists_exactly_the_public_files() -> None:
    if not CORPUS.is_dir():
        pytest.fail(MISSING)
    on_disk = {
        p.relative_to(CORPUS / "public").as_posix()
        for p in (CORPUS / "public").rglob("*")
        if p.name.endswith((".bpmn", ".bpmn20.xml"))
    }
    assert on_disk == set(PUBLIC) and len(on_disk) == 11


def test_gateway_loop_input_reports_the_loop_back_join() -> None:
    path = CORPUS / "public" / "spiffworkflow" / "gateway_loop_input.bpmn"
    if not path.is_file():
        pytest.fail(MISSING)
    (problem,) = validate(parse(path))
    assert (problem.message, problem.element_id) == (LOOP_PROBLEM, "parallel")
    assert problem.line == 14 and problem.source == "gateway_loop_input.bpmn"


def test_pizza_collaboration_keeps_pools_lanes_and_message_flows() -> None:
    path = CORPUS / "public" / "bpmn-js-examples" / "pizza-collaboration.bpmn"
    if not path.is_file():
        pytest.fail(MISSING)
    defs = parse(path)
    (collaboration,) = defs.collaborations
    assert {(p.id, p.process_ref) for p in collaboration.participants} == {("_6-53", "_6-2"), ("_6-438", "_6-1")}
    assert len(collaboration.message_flows) == 6
    assert [lane.name for lane in defs.process("_6-1").lanes] == ["clerk", "pizza chef", "delivery boy"]
    assert defs.process("_6-1").lanes[2].node_ids == ("_6-514", "_6-565", "_6-616")
    assert all(p.is_executable is False for p in defs.processes)
    timer = defs.process("_6-2").nodes["_6-219"].event
    assert timer is not None and timer.timer is not None and timer.timer.expression == ""
    assert validate(defs) == []  # not executable: nothing to run, nothing to report

    flipped = parse(path.read_bytes().replace(b'isExecutable="false"', b'isExecutable="true"'), source_name=path.name)
    assert all(p.is_executable for p in flipped.processes)
    (problem,) = validate(flipped)
    assert (problem.message, problem.element_id) == ("timer event '_6-219' has an empty timeDate", "_6-219")
