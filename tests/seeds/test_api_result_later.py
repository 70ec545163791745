"""Seed 003, run on background versus run as asynchronous: processes/api_result_later.bpmn.

The checkout starts ``api_track`` in the background and forgets it: it never
waits and never sees its result. It starts ``api_quote`` in the background
with a completion message, goes on with its own work, and handles the quote
when the message brings it, in whichever order the two arrive. From Python,
a handle polls the checkout or awaits its result with a timeout. Runs on
SQLite and PostgreSQL, through the CLI, and with real workers.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bpmnlite import Engine

from .helpers_b import (
    PROCESSES,
    RealWorkers,
    cli,
    only_child,
    real_workers_fixture,  # noqa: F401  (the fixture real_workers)
)

MODEL = PROCESSES / "api_result_later.bpmn"
ORDER = {"destination": "DE", "weightKg": 2.5, "subtotal": 40.0, "items": ["mug", "tea"]}


def _checkout(engine: Engine, **changes: Any) -> tuple[Any, Any, Any]:
    """Start a checkout; returns (checkout, tracking child, quote child)."""
    engine.deploy(MODEL)
    parent = engine.start("api_result_later", {**ORDER, **changes})
    return parent, only_child(engine, parent.id, "api_track"), only_child(engine, parent.id, "api_quote")


def _run(engine: Engine, instance_id: str, element_id: str) -> None:
    (job,) = [j for j in engine.jobs(instance_id=instance_id) if j.element_id == element_id]
    assert engine.execute_job(job.id) == "done"


def test_the_parent_goes_on_at_once_and_never_sees_the_background_result(engine: Engine) -> None:
    parent, track, quote = _checkout(engine)
    # the first command returned with both children started and nothing of theirs done
    assert parent.state == "waiting"
    assert sorted(parent.active_elements) == ["prepare_order", "wait_quote"]
    assert track.variables == ORDER  # no mappings: a snapshot of all the checkout's variables
    assert quote.variables == {"destination": "DE", "weightKg": 2.5}  # mapped: only what the API needs

    handle = engine.handle(parent.id)
    assert handle.done() is False
    with pytest.raises(TimeoutError, match="wait_quote"):
        handle.result(timeout=0.2)  # nothing runs the jobs: the result is not there yet

    engine.run_jobs()
    result = handle.result(timeout=5)
    assert result["total"] == 53.5 and result["shippingPrice"] == 13.5
    assert result["quotedBy"] == result["childInstanceId"] == quote.id
    assert result["result"]["quote"] == {"price": 13.5, "currency": "EUR", "zone": "eu",
                                         "quoteId": f"Q-{quote.id[:8].upper()}"}
    # run on background: the tracking child finished with a result the checkout never received
    tracked = engine.handle(track.id).result(timeout=5)
    assert tracked["trackingId"].startswith("trk-")
    assert "trackingId" not in result and "tracked" not in result
    assert {c.name for c in engine.variable_history(parent.id)}.isdisjoint({"trackingId", "tracked"})
    assert engine.incidents() == []


@pytest.mark.parametrize("first", ["quote_start", "prepare_order"])
def test_the_result_is_handled_whenever_it_arrives(engine: Engine, first: str) -> None:
    parent, _track, quote = _checkout(engine)
    if first == "quote_start":  # the quote comes back before the checkout finished its own work
        _run(engine, quote.id, "quote_start")
        now = engine.instance(parent.id)
        assert sorted(now.active_elements) == ["join", "prepare_order"] and now.variables["shippingPrice"] == 13.5
        _run(engine, parent.id, "prepare_order")
    else:  # the checkout's own work is done first: it waits at the join and for the quote
        _run(engine, parent.id, "prepare_order")
        now = engine.instance(parent.id)
        assert sorted(now.active_elements) == ["join", "wait_quote"] and "shippingPrice" not in now.variables
        _run(engine, quote.id, "quote_start")
    assert engine.handle(parent.id).poll().state == "completed"
    assert engine.instance(parent.id).variables["total"] == 53.5
    assert engine.instance(quote.id).state == "completed"


def test_no_quote_is_a_result_too(engine: Engine) -> None:
    parent, _track, quote = _checkout(engine, destination="AQ")
    engine.run_jobs()
    assert [a.element_id for a in engine.history(quote.id)][-2:] == ["record_no_rate", "not_quoted"]
    result = engine.handle(parent.id).result(timeout=5)
    assert result["shippingPrice"] == 25.0 and result["total"] == 65.0 and result["quoteId"] is None
    assert result["shippingNote"] == "flat rate: no carrier serves 'AQ'"


def test_an_embedded_worker_and_a_handle_awaited_with_a_timeout(engine: Engine) -> None:
    parent, track, _quote = _checkout(engine, destination="NL", weightKg=1.0)
    with engine.worker(threads=2):
        result = engine.handle(parent.id).result(timeout=30)
        engine.handle(track.id).wait(timeout=30)
    assert result["shippingPrice"] == 6.05 and result["total"] == 46.05


def test_cli_runs_the_example(db_url: str, capsys: Any) -> None:
    code, out, err = cli(capsys, "--db", db_url, "--json", "run", str(MODEL), "--process", "api_result_later",
                         "--var", "destination=FR", "--var", "weightKg=3", "--var", "subtotal=20")
    assert code == 0, err
    data = json.loads(out)
    assert data["state"] == "completed" and data["jobs_run"] == 3
    assert data["variables"]["shippingPrice"] == 14.5 and data["variables"]["total"] == 34.5
    assert "trackingId" not in data["variables"]
    path = [step["element_id"] for step in data["path"]]
    assert path[:4] == ["checkout", "track_checkout", "ask_quote", "fork"] and path[-1] == "confirmed"
    code, out, err = cli(capsys, "--db", db_url, "--json", "instances", "--summary")
    assert code == 0
    assert {(r["process_key"], r["state"], r["count"]) for r in json.loads(out)} == {
        ("api_result_later", "completed", 1), ("api_track", "completed", 1), ("api_quote", "completed", 1)}


def test_real_workers_on_redis_and_postgresql(real_workers: RealWorkers) -> None:
    engine = real_workers.engine()
    try:
        engine.deploy(MODEL)
        real_workers.start_one(threads=4)
        parents = [engine.start("api_result_later", {**ORDER, "destination": country})
                   for country in ("NL", "DE", "US", "AQ")]
        results = [engine.handle(p.id).result(timeout=90) for p in parents]
        assert [r["shippingPrice"] for r in results] == [7.7, 13.5, 30.25, 25.0]
        for parent, result in zip(parents, results, strict=True):
            track = only_child(engine, parent.id, "api_track")
            assert engine.handle(track.id).result(timeout=90)["trackingId"].startswith("trk-")
            assert "trackingId" not in result
            assert result["quotedBy"] == only_child(engine, parent.id, "api_quote").id
        assert engine.incidents() == []
    finally:
        engine.close()
