"""The command line, called in-process through ``main(argv)`` and once as the installed script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bpmnlite import Engine
from bpmnlite.cli import main, parse_var

from .bpmn import bpmn, chain, flow

ORDER = Path(__file__).resolve().parents[1] / "processes" / "order.bpmn"
SCRIPT = Path(sys.executable).with_name("bpmnlite")

USER_TASK = bpmn(
    """
    <startEvent id="start" name="Request received"/>
    <userTask id="approve" name="Approve request"/>
    <endEvent id="done" name="Done"/>
    """ + chain("start", "approve", "done"),
    "approval",
)

WAITS = bpmn(
    """
    <startEvent id="start"/>
    <intermediateCatchEvent id="paid"><messageEventDefinition messageRef="m_paid"/></intermediateCatchEvent>
    <intermediateCatchEvent id="cool_down"><timerEventDefinition><timeDuration>PT1H</timeDuration>
    </timerEventDefinition></intermediateCatchEvent>
    <intermediateCatchEvent id="go"><signalEventDefinition signalRef="s_go"/></intermediateCatchEvent>
    <endEvent id="end"/>
    """ + chain("start", "paid", "cool_down", "go", "end"),
    "billing",
    extra='<message id="m_paid" name="paid"/><signal id="s_go" name="go"/>',
)

FAILING_SCRIPT = bpmn(
    """
    <startEvent id="start"/>
    <scriptTask id="divide" name="Divide" scriptFormat="python"><script>result = 1 / 0</script></scriptTask>
    <endEvent id="end"/>
    """ + chain("start", "divide", "end"),
    "failing",
)

# a condition on an unknown variable, behind an async continuation: the job fails, once, into an incident
INCIDENT = bpmn(
    """
    <startEvent id="start"/>
    <exclusiveGateway id="check" bpmnlite:asyncBefore="true" bpmnlite:retries="1"/>
    <endEvent id="big"/>
    <endEvent id="small"/>
    """ + flow("start", "check") + flow("check", "big", "${missing > 1}") + flow("check", "small", "${missing &lt;= 1}"),
    "incident",
)

# two problems the validator finds: an expression that does not parse and a task type nobody registered
INVALID = bpmn(
    """
    <startEvent id="start"/>
    <serviceTask id="charge" bpmnlite:type="no_such_type"/>
    <exclusiveGateway id="gw"/>
    <endEvent id="end"/>
    """ + chain("start", "charge", "gw") + flow("gw", "end", "${amount &gt;", fid="to_end"),
    "invalid",
)

XXE = """<?xml version="1.0"?>
<!DOCTYPE definitions [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL" id="d" targetNamespace="t">
  <process id="p" isExecutable="true"><startEvent id="s" name="&xxe;"/></process>
</definitions>
"""


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'x.db'}"


@pytest.fixture
def cli(db: str, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run ``bpmnlite --db <tmp> ARGS...``; returns (exit code, stdout, stderr)."""

    def run(*args: str | Path) -> tuple[int, str, str]:
        code = main(["--db", db, *map(str, args)])
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return run


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def run_json(cli: Any, *args: str | Path) -> dict[str, Any]:
    code, out, err = cli("--json", "run", *args)
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


# ------------------------------------------------------------------ --var
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("amount=120", ("amount", 120)),
        ("ok=true", ("ok", True)),
        ('names=["a"]', ("names", ["a"])),
        ("rate=0.5", ("rate", 0.5)),
        ("who=ann", ("who", "ann")),
        ('who="ann"', ("who", "ann")),
        ("note=a=b", ("note", "a=b")),
        ("empty=", ("empty", "")),
        ("x=NaN", ("x", "NaN")),
        ("none=null", ("none", None)),
    ],
)
def test_var_values_are_json_when_they_parse(text: str, expected: tuple[str, Any]) -> None:
    assert parse_var(text) == expected


def test_a_var_without_equals_sign_is_a_usage_error(cli: Any) -> None:
    code, _out, err = cli("start", "order", "--var", "amount")
    assert code == 2
    assert "expected NAME=VALUE" in err


def test_json_vars_must_be_an_object(cli: Any) -> None:
    code, _out, err = cli("start", "order", "--json-vars", "[1, 2]")
    assert code == 2
    assert "JSON object" in err


# ------------------------------------------------------------------ validate
def test_validate_ok_names_the_processes(cli: Any, tmp_path: Path) -> None:
    path = write(tmp_path, "approval.bpmn", USER_TASK)
    code, out, _err = cli("validate", path)
    assert code == 0
    assert out.strip() == f"{path}: ok (processes: approval)"


def test_validate_lists_every_problem_with_line_and_element(cli: Any, tmp_path: Path) -> None:
    good = write(tmp_path, "approval.bpmn", USER_TASK)
    bad = write(tmp_path, "invalid.bpmn", INVALID)
    code, out, _err = cli("validate", good, bad)
    assert code == 1
    assert f"{good}: ok" in out
    lines = {line.split(": element ")[1].split(":")[0]: line for line in out.splitlines() if str(bad) in line}
    assert set(lines) == {"'charge'", "'to_end'"}
    charge_line = INVALID.splitlines().index(next(x for x in INVALID.splitlines() if 'id="charge"' in x)) + 1
    assert lines["'charge'"].startswith(f"{bad}:{charge_line}: element 'charge': ")
    assert "no_such_type" in lines["'charge'"]
    assert "invalid expression" in lines["'to_end'"]


def test_validate_json(cli: Any, tmp_path: Path) -> None:
    bad = write(tmp_path, "invalid.bpmn", INVALID)
    code, out, _err = cli("--json", "validate", bad)
    assert code == 1
    [result] = json.loads(out)
    assert result["ok"] is False
    assert {p["element"] for p in result["problems"]} == {"charge", "to_end"}
    assert all(isinstance(p["line"], int) for p in result["problems"])


def test_validate_refuses_an_xxe_document(cli: Any, tmp_path: Path) -> None:
    path = write(tmp_path, "xxe.bpmn", XXE)
    code, out, _err = cli("validate", path)
    assert code == 1
    assert out.count("\n") == 1
    assert out.startswith(f"{path}:") and "DOCTYPE is not allowed" in out
    assert "root:" not in out


def test_validate_a_malformed_file(cli: Any, tmp_path: Path) -> None:
    path = write(tmp_path, "broken.bpmn", "<definitions><process")
    code, out, _err = cli("validate", path)
    assert code == 1
    assert out.startswith(f"{path}:1: not well-formed XML")


def test_validate_a_missing_file(cli: Any, tmp_path: Path) -> None:
    code, out, _err = cli("validate", tmp_path / "nope.bpmn")
    assert code == 1
    assert out.strip() == f"{tmp_path / 'nope.bpmn'}: no such file"


def test_validate_a_directory(cli: Any, tmp_path: Path) -> None:
    code, out, _err = cli("validate", tmp_path)
    assert code == 1
    assert "is a directory" in out


# ------------------------------------------------------------------ deploy and run
def test_deploy_reports_versions_and_changes(cli: Any, tmp_path: Path) -> None:
    path = write(tmp_path, "approval.bpmn", USER_TASK)
    code, out, _err = cli("deploy", path)
    assert code == 0
    assert "approval" in out and "deployed" in out
    code, out, _err = cli("--json", "deploy", path)
    [row] = json.loads(out)
    assert (row["key"], row["version"], row["changed"]) == ("approval", 1, False)
    write(tmp_path, "approval.bpmn", USER_TASK.replace("Done", "Finished"))
    [row] = json.loads(cli("deploy", path, "--json")[1])
    assert (row["version"], row["changed"]) == (2, True)


def test_deploy_an_invalid_file_lists_the_problems(cli: Any, tmp_path: Path) -> None:
    code, out, err = cli("deploy", write(tmp_path, "invalid.bpmn", INVALID))
    assert code == 1
    assert out == ""
    assert "nothing was deployed" in err
    assert "element 'charge'" in err and "element 'to_end'" in err


def test_run_order_large_amount(cli: Any) -> None:
    code, out, _err = cli("run", ORDER, "--var", "amount=120")
    assert code == 0
    path = out.split("path:")[1].split("instance:")[0]
    visited = [line.split()[1] for line in path.strip().splitlines()[1:]]
    for element in ("received", "price", "review", "pack", "invoice", "shipped"):
        assert element in visited
    assert "auto_approve" not in visited
    assert visited.index("price") < visited.index("review") < visited.index("pack") < visited.index("shipped")
    assert "Price order" in path and "scriptTask" in path
    assert "state:        completed" in out
    variables = json.loads(out.split("variables:")[1])
    assert variables["total"] == 108.0
    assert variables["approved"] is True


def test_run_order_small_amount_json(cli: Any) -> None:
    data = run_json(cli, ORDER, "--var", "amount=50", "--business-key", "order-7")
    assert data["state"] == "completed"
    assert data["business_key"] == "order-7"
    visited = [step["element_id"] for step in data["path"]]
    assert "auto_approve" in visited and "review" not in visited
    assert data["variables"]["total"] == 50
    assert data["variables"]["approved"] is True


def test_run_a_user_task_then_complete_it(cli: Any, db: str, tmp_path: Path) -> None:
    model = write(tmp_path, "approval.bpmn", USER_TASK)
    code, out, _err = cli("run", model, "--var", "who=ann")
    assert code == 0
    assert "state:        waiting" in out
    with Engine(db, load_entry_points=False) as engine:
        [task] = engine.tasks()
    assert f"user task 'Approve request' (approve): task id {task.id}" in out
    assert f"bpmnlite complete {task.id}" in out

    code, out, _err = cli("tasks")
    assert task.id in out and "Approve request" in out

    code, out, _err = cli("complete", task.id, "--var", "ok=true")
    assert code == 0
    assert "state:        completed" in out
    assert json.loads(out.split("variables:")[1]) == {"who": "ann", "ok": True}

    code, out, _err = cli("history", task.instance_id)
    assert code == 0
    assert [line.split()[1] for line in out.splitlines()[2:]] == ["start", "approve", "done"]

    code, _out, err = cli("complete", task.id)
    assert code == 1
    assert err.startswith("error: ") and task.id in err


def test_run_shows_messages_timers_then_signal_moves_on(cli: Any, tmp_path: Path) -> None:
    model = write(tmp_path, "billing.bpmn", WAITS)
    data = run_json(cli, model, "--business-key", "b-1")
    [sub] = data["waits"]["subscriptions"]
    assert (sub["kind"], sub["name"], sub["element_id"]) == ("message", "paid", "paid")
    code, out, _err = cli("message", "paid", "--business-key", "b-1", "--var", "paid_at=\"today\"")
    assert code == 0
    assert "timer at 'cool_down' due " in out and "UTC" in out
    assert '"paid_at": "today"' in out

    data = run_json(cli, model)  # a second instance, still at its message catch event
    code, _out, err = cli("message", "paid", "--business-key", "nobody")
    assert code == 1
    assert "no instance or start event waits for message 'paid'" in err
    code, out, _err = cli("signal", "go")
    assert (code, out.strip()) == (0, "signal 'go' delivered to 0 waiting element(s)")

    code, out, _err = cli("cancel", data["id"])
    assert code == 0 and "state:        cancelled" in out
    code, _out, err = cli("cancel", data["id"])
    assert code == 1 and "already ended" in err


def test_run_a_failing_script_names_the_element(cli: Any, db: str, tmp_path: Path) -> None:
    model = write(tmp_path, "failing.bpmn", FAILING_SCRIPT)
    code, out, err = cli("run", model)
    assert code == 1
    assert out.strip() == f"{model}: failing v1 (deployed)"  # deployed, then the start failed
    assert err.startswith("error: element 'divide'") and err.count("\n") == 1
    with Engine(db, load_entry_points=False) as engine:
        assert engine.instances() == []  # the failed start was rolled back


def test_trusted_scripts_lifts_the_sandbox(cli: Any, tmp_path: Path) -> None:
    model = write(tmp_path, "pid.bpmn", bpmn(
        '<startEvent id="start"/><scriptTask id="pid"><script>import os\nknown = os.getpid() > 0</script>'
        '</scriptTask><endEvent id="end"/>' + chain("start", "pid", "end"), "trusted"))
    code, _out, err = cli("run", model)
    assert code == 1
    assert err.startswith("error: element 'pid': ") and "'os'" in err
    data = run_json(cli, model, "--trusted-scripts")
    assert (data["state"], data["variables"]) == ("completed", {"known": True})


def test_run_shows_an_incident_and_exits_1(cli: Any, tmp_path: Path) -> None:
    code, out, err = cli("run", write(tmp_path, "incident.bpmn", INCIDENT))
    assert code == 1
    assert "running jobs... 1 done" in err
    assert "incident at 'check'" in out and "unknown variable 'missing'" in out
    [job_id] = [w.split()[-1] for w in out.splitlines() if "bpmnlite retry" in w]
    code, out, _err = cli("jobs", "--incidents")
    assert job_id in out and "deadletter" in out
    code, out, _err = cli("retry", job_id)
    assert code == 0 and "executable" in out


def test_run_a_file_with_two_processes_needs_process(cli: Any, tmp_path: Path) -> None:
    two = USER_TASK.replace("</definitions>", '<process id="other" isExecutable="true"><startEvent id="s"/>'
                            "</process>\n</definitions>")
    model = write(tmp_path, "two.bpmn", two)
    code, _out, err = cli("run", model)
    assert code == 2 and "--process" in err and "approval, other" in err
    data = run_json(cli, model, "--process", "other")
    assert (data["process_key"], data["state"]) == ("other", "completed")


def test_start_a_deployed_process(cli: Any, tmp_path: Path) -> None:
    cli("deploy", write(tmp_path, "approval.bpmn", USER_TASK))
    code, out, _err = cli("start", "approval", "--json-vars", '{"a": 1, "b": [2]}', "--var", "a=3")
    assert code == 0
    assert "state:        waiting" in out and "user task 'Approve request'" in out
    assert json.loads(out.split("variables:")[1]) == {"a": 3, "b": [2]}
    code, _out, err = cli("start", "nope")
    assert (code, err.strip()) == (1, "error: no deployed process 'nope'")


# ------------------------------------------------------------------ listings
def test_instances_table_summary_and_json(cli: Any, tmp_path: Path) -> None:
    model = write(tmp_path, "approval.bpmn", USER_TASK)
    run_json(cli, model, "--business-key", "bk-1")
    run_json(cli, model)
    [task, _] = json.loads(cli("--json", "tasks")[1])
    cli("complete", task["id"])

    code, out, _err = cli("instances", "--summary")
    assert code == 0
    rows = [line.split() for line in out.splitlines()]
    assert rows == [["PROCESS", "STATE", "COUNT"], ["approval", "completed", "1"], ["approval", "waiting", "1"]]
    summary = json.loads(cli("instances", "--summary", "--json")[1])
    assert {(r["process_key"], r["state"], r["count"]) for r in summary} == {
        ("approval", "completed", 1), ("approval", "waiting", 1)}

    code, out, _err = cli("instances", "--state", "waiting")
    header, *lines = out.splitlines()
    assert header.split() == ["ID", "KEY", "STATE", "BUSINESS", "KEY", "WAITING", "AT", "STARTED"]
    assert len(lines) == 1 and "approve" in lines[0]
    listed = json.loads(cli("--json", "instances", "--key", "approval")[1])
    assert sorted(i["state"] for i in listed) == ["completed", "waiting"]
    assert {i["business_key"] for i in listed} == {"bk-1", None}
    history = json.loads(cli("--json", "history", listed[0]["id"])[1])
    assert history["path"][0]["element_id"] == "start"
    assert json.loads(cli("--json", "jobs")[1]) == []


def test_empty_listings(cli: Any) -> None:
    assert cli("instances")[1].strip() == "(none)"
    assert cli("tasks")[1].strip() == "(none)"
    assert json.loads(cli("tasks", "--json")[1]) == []


def test_history_of_an_unknown_instance(cli: Any) -> None:
    code, _out, err = cli("history", "nope")
    assert (code, err.strip()) == (1, "error: no process instance 'nope'")


# ------------------------------------------------------------------ errors and environment
def test_a_bad_database_url_is_one_line(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--db", "no-such-scheme", "instances"])
    _out, err = capsys.readouterr()
    assert code == 1
    assert err.startswith("error: database no-such-scheme: ") and err.count("\n") == 1


def test_an_unexpected_error_is_one_line_unless_debug(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> object:
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setattr(Engine, "count_instances", broken)
    assert main(["--db", db, "instances", "--summary"]) == 1
    _out, err = capsys.readouterr()
    assert err.splitlines() == ["internal error: RuntimeError: something broke", "re-run with --debug to see the traceback"]
    assert main(["instances", "--summary", "--db", db, "--debug"]) == 1
    _out, err = capsys.readouterr()
    assert "Traceback" in err and err.rstrip().endswith("internal error: RuntimeError: something broke")


def test_database_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BPMNLITE_DB", f"sqlite:///{tmp_path / 'env.db'}")
    monkeypatch.chdir(tmp_path)
    assert main(["deploy", str(write(tmp_path, "approval.bpmn", USER_TASK))]) == 0
    assert (tmp_path / "env.db").exists() and not (tmp_path / "bpmnlite.db").exists()
    capsys.readouterr()


def test_console_script(db: str, tmp_path: Path) -> None:
    model = write(tmp_path, "approval.bpmn", USER_TASK)
    proc = subprocess.run([str(SCRIPT), "--db", db, "run", str(model), "--var", "amount=120"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "user task 'Approve request'" in proc.stdout and '"amount": 120' in proc.stdout
    proc = subprocess.run([str(SCRIPT), "--db", db, "validate", str(tmp_path / "missing.bpmn")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert (proc.returncode, proc.stderr) == (1, "")
    assert proc.stdout.strip().endswith("missing.bpmn: no such file")
