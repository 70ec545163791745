"""processes/pizza_order.bpmn (seed 001, the async flag), with a simulated unreliable shop and a real SMTP server.

With the async flag on "Store order", completing the order form only commits
the order and a job: the customer neither waits for the shop nor sees its
failures, and the job's retries absorb them. The same model without the flag
hands the shop's failure (and its slowness) to the customer, and rolls the
instance back to the open form. The shop fails according to a pattern or a
seed, so every run of these tests sees the same failures.
"""

# ruff: noqa: F811 - the fixtures are imported from helpers_a, and tests name them as arguments
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from bpmnlite_seeds.pizza import OrderBook, OrderingSystemDown, attempt_fails

from bpmnlite import Engine, ExecutionError
from tests.conftest import Clock
from tests.seeds.helpers_a import (  # noqa: F401 - fixtures are used by name
    PROCESSES,
    Cli,
    SeedWorkers,
    SmtpServer,
    model_variant,
    pg_db,
    redis_db,
    smtp,
    wait_for,
    workers,
)

MODEL = PROCESSES / "pizza_order.bpmn"
FLAG = 'bpmnlite:async="true" bpmnlite:retryBackoff="PT2S"'
# the same model with the flag off (and its own key, so both can be deployed side by side)
WITHOUT_FLAG = model_variant(
    "pizza_order.bpmn", FLAG, 'bpmnlite:retryBackoff="PT2S"'
).replace('<process id="pizza_order"', '<process id="pizza_order_sync"')


@pytest.fixture
def book(tmp_path: Path) -> OrderBook:
    return OrderBook(tmp_path / "shop.jsonl")


def open_form(engine: Engine, key: str, order_id: str, smtp: SmtpServer, book: OrderBook, **shop: Any) -> str:
    """Start an order; returns the id of its open order form."""
    variables = {"smtp_port": smtp.port, "shop_book": str(book.path), "shop_delay": 0, **shop}
    inst = engine.start(key, variables, business_key=order_id)
    assert inst.active_elements == ("order_form",)
    (form,) = engine.tasks(instance_id=inst.id)
    return form.id


FORM = {"pizza": "margherita", "email": "luigi@example.com"}


def test_with_the_flag_the_customer_never_sees_the_failure(engine: Engine, clock: Clock, smtp: SmtpServer,
                                                           book: OrderBook) -> None:
    engine.deploy(MODEL)
    form = open_form(engine, "pizza_order", "order-1", smtp, book, shop_failures="F.")

    done = engine.complete_task(form, FORM)  # returns at once: the order and a job are committed

    assert done.state == "waiting" and done.active_elements == ("store_order",)
    assert done.variables["pizza"] == "margherita" and "order_number" not in done.variables
    assert book.requests("order-1") == []  # the shop has not even been called yet

    engine.run_jobs()  # a worker: the shop fails, the job's transaction rolls back, one attempt is spent
    (job,) = engine.jobs(instance_id=done.id)
    assert (job.attempts, job.retries, job.state) == (1, 2, "executable")
    assert job.error_message == "step 'store_order' failed"  # neutral, for people
    assert "OrderingSystemDown" in (job.error_detail or "")  # the whole story, for operators
    assert engine.instance(done.id).active_elements == ("store_order",)
    assert smtp.mailbox.delivered == []

    clock.advance(seconds=2)  # the back-off of bpmnlite:retryBackoff="PT2S"
    engine.run_jobs()

    final = engine.instance(done.id)
    assert final.state == "completed" and final.error is None
    number = final.variables["order_number"]
    assert [e["attempt"] for e in book.requests("order-1")] == [1, 2]
    assert [e["number"] for e in book.stored()] == [number]
    (mail,) = smtp.mailbox.delivered
    assert mail.recipients == ("luigi@example.com",)
    assert mail.subject == f"Your pizza is on its way (order {number})"
    assert engine.incidents() == []


def test_without_the_flag_the_failure_reaches_the_customer_and_rolls_back(engine: Engine, smtp: SmtpServer,
                                                                          book: OrderBook) -> None:
    engine.deploy(WITHOUT_FLAG)
    form = open_form(engine, "pizza_order_sync", "order-2", smtp, book, shop_failures="F.")
    (instance_id,) = [t.instance_id for t in engine.tasks()]
    before = engine.instance(instance_id)

    with pytest.raises(ExecutionError) as failure:
        engine.complete_task(form, FORM)

    assert failure.value.element_id == "store_order"
    assert isinstance(failure.value.__cause__, OrderingSystemDown)
    after = engine.instance(instance_id)  # exactly as before the click: the form is still open
    assert after.variables == before.variables and after.active_elements == ("order_form",)
    assert [t.id for t in engine.tasks(instance_id=instance_id)] == [form]
    assert "store_order" not in {a.element_id for a in engine.history(instance_id)}
    assert engine.jobs() == [] and smtp.mailbox.delivered == []
    assert len(book.requests("order-2")) == 1  # the shop did see the request

    done = engine.complete_task(form, FORM)  # the customer decides to click again

    assert done.state == "completed" and "order_number" in done.variables
    assert len(smtp.mailbox.delivered) == 1


def test_a_seeded_unreliable_shop_with_and_without_the_flag(engine: Engine, clock: Clock, smtp: SmtpServer,
                                                            book: OrderBook) -> None:
    seed, orders = 5, [f"order-{n}" for n in range(20)]
    fails = {o: [attempt_fails(seed, o, a) for a in (1, 2, 3)] for o in orders}
    failing_first = [o for o in orders if fails[o][0]]
    assert len(failing_first) == 4 and sum(1 for o in orders if fails[o][1] and fails[o][0]) == 2
    engine.deploy(MODEL)
    engine.deploy(WITHOUT_FLAG)

    # with the flag: no customer sees an error; up to three attempts absorb every failure
    forms = {o: open_form(engine, "pizza_order", o, smtp, book, shop_seed=seed) for o in orders}
    for o in orders:
        assert engine.complete_task(forms[o], FORM).active_elements == ("store_order",)
    for _ in range(3):
        engine.run_jobs()
        clock.advance(seconds=2)
    assert {i.state for i in engine.instances(process_key="pizza_order")} == {"completed"}
    for o in orders:
        expected = 1 + (fails[o][0]) + (fails[o][0] and fails[o][1])
        assert len(book.requests(o)) == expected, o
    assert engine.incidents() == []

    # without it: the same shop, the same seed; the customers of the failing first attempts see the error
    seen_errors = []
    forms = {o: open_form(engine, "pizza_order_sync", f"{o}", smtp, book, shop_seed=seed,
                          shop_book=str(book.path) + ".sync") for o in orders}
    for o in orders:
        try:
            engine.complete_task(forms[o], FORM)
        except ExecutionError:
            seen_errors.append(o)
    assert seen_errors == failing_first
    assert len(smtp.mailbox.delivered) == 2 * len(orders) - len(failing_first)


def test_every_attempt_fails_an_operator_sees_an_incident(engine: Engine, clock: Clock, smtp: SmtpServer,
                                                          book: OrderBook) -> None:
    engine.deploy(MODEL)
    form = open_form(engine, "pizza_order", "order-3", smtp, book, shop_failures="FFF.")
    done = engine.complete_task(form, FORM)
    for _ in range(3):
        engine.run_jobs()
        clock.advance(seconds=2)

    (incident,) = engine.incidents(instance_id=done.id)
    assert incident.attempts == 3 and "attempt 3" in (incident.error_detail or "")
    assert engine.instance(done.id).state == "waiting"  # nothing was dropped: the order waits

    engine.retry(incident.id, retries=1)  # the operator, once the shop is back
    engine.run_jobs()
    assert engine.instance(done.id).state == "completed"
    assert len(book.requests("order-3")) == 4 and len(smtp.mailbox.delivered) == 1


def test_a_slow_shop(db_url: str, smtp: SmtpServer, book: OrderBook) -> None:
    """A real delay: without the flag the click lasts as long as the shop; with it, the click is over first."""
    delay = 1.5
    engine = Engine(db_url)
    engine.deploy(MODEL)
    engine.deploy(WITHOUT_FLAG)

    form = open_form(engine, "pizza_order_sync", "slow-1", smtp, book, shop_delay=delay, shop_failures=".")
    clicked = time.monotonic()
    engine.complete_task(form, FORM)
    assert time.monotonic() - clicked >= delay  # the customer waited for the shop

    form = open_form(engine, "pizza_order", "slow-2", smtp, book, shop_delay=delay, shop_failures=".")
    with engine.worker(threads=1):
        done = engine.complete_task(form, FORM)
        returned_at = time.time()
        assert done.active_elements == ("store_order",)
        wait_for(lambda: engine.instance(done.id).state == "completed", 30, "the worker to store the order")
    (stored,) = [e for e in book.stored() if e["order_id"] == "slow-2"]
    (received,) = book.requests("slow-2")
    assert stored["at"] - received["at"] >= delay  # the worker was busy that long with the shop...
    assert returned_at < stored["at"]  # ...and the customer had the answer before the shop was done
    engine.close()


def test_bpmnlite_run(tmp_path: Path, smtp: SmtpServer, book: OrderBook) -> None:
    bpmnlite = Cli(f"sqlite:///{tmp_path / 'pizza.db'}")

    code, out = bpmnlite("run", MODEL, "--var", f"smtp_port={smtp.port}", "--var", f"shop_book={book.path}",
                         "--var", "shop_delay=0", "--var", "shop_failures=.")
    assert code == 0, out
    assert "state:        waiting" in out and "Order form" in out

    (form,) = bpmnlite.json("tasks")
    code, out = bpmnlite("complete", form["id"], "--var", "pizza=diavola", "--var", "email=mario@example.com")
    assert code == 0, out
    assert "store_order" in out and "order_number" not in out

    code, out = bpmnlite("run-jobs")
    assert code == 0 and out.strip() == "ran 1 job(s)"
    (order,) = bpmnlite.json("instances")
    assert order["state"] == "completed" and order["variables"]["order_number"].startswith("P-")
    assert smtp.mailbox.delivered[0].text.startswith(f"We have your order {order['variables']['order_number']}")


def test_worker_processes_on_redis_and_postgresql(workers: SeedWorkers, pg_db: str, redis_db: str, smtp: SmtpServer,
                                                  book: OrderBook) -> None:
    engine = workers.engine()
    engine.deploy(MODEL)
    workers.start(processes=2, threads=2)
    orders = [f"order-{n}" for n in range(4)]
    forms = [open_form(engine, "pizza_order", o, smtp, book, shop_failures="F.") for o in orders]

    done = [engine.complete_task(f, FORM) for f in forms]  # none of them raises or waits for the shop

    assert {d.active_elements for d in done} == {("store_order",)}
    wait_for(lambda: all(engine.instance(d.id).state == "completed" for d in done), 60, "four stored orders")
    for o in orders:
        assert [e["attempt"] for e in book.requests(o)] == [1, 2]
    assert len(book.stored()) == 4 and len(smtp.mailbox.delivered) == 4
    assert engine.incidents() == [] and engine.jobs() == []
    engine.close()
