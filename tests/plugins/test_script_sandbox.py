"""The python script language: write-back, the sandbox's refusals, budgets and trusted mode."""

from __future__ import annotations

import copy
import decimal
import sys
import threading
import time
from typing import Any

import pytest
from bpmnlite_script import Limits, PythonScript, budget, compiler
from bpmnlite_script.compiler import compile_script

from bpmnlite.errors import BpmnError, ScriptError

ELEMENT = "Task_1"


@pytest.fixture
def python() -> PythonScript:
    # Budgets small enough that the tests stopping endless loops stay fast.
    return PythonScript(limits=Limits(time=2.0, lines=20_000))


def run(python: PythonScript, script: str, trusted: bool = False, **variables: Any) -> dict[str, Any]:
    return dict(python.run(script, variables, trusted=trusted, element_id=ELEMENT))


# ---------------------------------------------------------------------- write-back
@pytest.mark.parametrize("trusted", [False, True], ids=["sandboxed", "trusted"])
@pytest.mark.parametrize(
    ("script", "variables", "expected"),
    [
        ("x = x + 1", {"x": 1}, {"x": 2}),
        ("y = [1, 2]", {}, {"y": [1, 2]}),
        ("x += 1", {"x": 1}, {"x": 2}),
        ("x -= 1\ny = x * 2", {"x": 1}, {"x": 0, "y": 0}),
        ("a, (b, c) = 1, (2, 3)", {}, {"a": 1, "b": 2, "c": 3}),
        (
            "total = 0\nfor k, v in pairs:\n    total += v",
            {"pairs": [("a", 1), ("b", 2)]},
            {"total": 3, "k": "b", "v": 2},
        ),
        ("n = 0\nwhile n < 5:\n    n = n + 1", {}, {"n": 5}),
        ("def double(v):\n    return v * factor\ny = double(21)", {"factor": 2}, {"y": 42}),
        ("squares = [i * i for i in range(4)]", {}, {"squares": [0, 1, 4, 9]}),
        ("import math\nroot = math.sqrt(x)", {"x": 16}, {"root": 4.0}),
        ("from math import floor\nf = floor(2.5)", {}, {"f": 2}),
        ("items.append(3)", {"items": [1, 2]}, {"items": [1, 2, 3]}),
        ("order['total'] += 5", {"order": {"total": 10}}, {"order": {"total": 15}}),
        ("label = f'{name!r:>8}|{n:03d}'", {"name": "ab", "n": 7}, {"label": "    'ab'|007"}),
        ("label = '%s=%d' % (name, n)", {"name": "a", "n": 1}, {"label": "a=1"}),
        ("y = x", {"x": 1}, {"y": 1}),
        ("x = 1.0", {"x": 1}, {"x": 1.0}),
        ("import json\ndata = json.loads(text)", {"text": '{"a": [1]}'}, {"data": {"a": [1]}}),
        ("import decimal\nd = decimal.Decimal('1.10') + decimal.Decimal('2.20')", {}, {"d": decimal.Decimal("3.30")}),
        (
            "import datetime\nday = datetime.date(2024, 2, 28) + datetime.timedelta(days=1)",
            {},
            {"day": __import__("datetime").date(2024, 2, 29)},
        ),
        ("ok = isinstance(x, str) and isinstance(x, (int, str))", {"x": "a"}, {"ok": True}),
        ("text = ', '.join(str(i) for i in range(3))", {}, {"text": "0, 1, 2"}),
        ("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    error = str(e)", {}, {"error": "division by zero"}),
    ],
)
def test_assigned_names_are_written_back(
    python: PythonScript, script: str, variables: dict[str, Any], expected: dict[str, Any], trusted: bool
) -> None:
    assert run(python, script, trusted, **variables) == expected


def test_the_script_works_on_a_copy_of_the_variables(python: PythonScript) -> None:
    variables: dict[str, Any] = {"items": [1, [2]], "order": {"lines": [1]}}
    before = copy.deepcopy(variables)

    result = python.run("items[1].append(3)\norder['lines'].append(2)", variables, trusted=False, element_id=ELEMENT)

    assert variables == before
    assert result == {"items": [1, [2, 3]], "order": {"lines": [1, 2]}}


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("def add():\n    items.append(3)\nadd()", {"items": [1, 2, 3]}),
        ("def bump():\n    global n\n    n = n + 1\nbump()", {"n": 2}),
        ("small = [v for v in range(5) if v < n]", {"small": [0]}),
        ("f = lambda: n * 10\ny = f()", {"y": 10}),
        ("y = [[w + n for w in items] for _ in range(1)]", {"y": [[2, 3]]}),
        ("del n\ny = 1", {"y": 1}),
    ],
)
def test_names_used_only_in_nested_code_are_seen(python: PythonScript, script: str, expected: dict[str, Any]) -> None:
    # A sandboxed run copies in only the variables the code names; names
    # inside functions, lambdas and comprehensions count too.
    assert run(python, script, items=[1, 2], n=1, other=[5]) == expected


class _Opaque:
    """Copied by deepcopy, and a copy never equals its original (no ``__eq__``)."""


def test_variables_the_script_does_not_name_are_not_compared(python: PythonScript) -> None:
    # Comparing every variable would report this one as changed by every script.
    assert run(python, "y = 1", thing=_Opaque(), data=[1]) == {"y": 1}
    assert set(run(python, "y = 1\nz = thing", thing=_Opaque())) == {"y", "z", "thing"}


def test_the_names_of_a_sandboxed_script_include_nested_code() -> None:
    names = compile_script("def f():\n    return a + [b for _ in c]\ng = lambda: d\ndel e", False).names
    assert names is not None
    assert {"f", "a", "b", "c", "g", "d", "e"} <= names
    assert compile_script("x = 1", True).names is None  # trusted code can reach globals() itself


def test_modules_functions_and_classes_are_not_written_back(python: PythonScript) -> None:
    assert run(python, "import math\ndef f():\n    return 1\ng = lambda: 2\nh = f() + g()") == {"h": 3}
    assert run(python, "import os\nclass A:\n    pass\nsep = os.sep", trusted=True) == {"sep": "/"}


def test_names_starting_with_an_underscore_are_not_written_back(python: PythonScript) -> None:
    assert run(python, "_hidden = 1\nshown = 2", trusted=True) == {"shown": 2}
    with pytest.raises(ScriptError, match='"_hidden" is an invalid variable name'):
        run(python, "_hidden = 1")


def test_print_goes_to_the_log_and_to_printed(python: PythonScript) -> None:
    assert run(python, "print('total', 3)\nout = printed") == {"out": "total 3\n"}


def test_a_bpmn_error_raised_by_the_script_propagates_unchanged(python: PythonScript) -> None:
    for trusted in (False, True):
        with pytest.raises(BpmnError) as caught:
            run(python, "raise BpmnError('OUT_OF_STOCK', 'no stock', {'sku': sku})", trusted, sku="A1")
        assert caught.value.code == "OUT_OF_STOCK"
        assert caught.value.variables == {"sku": "A1"}


@pytest.mark.parametrize("trusted", [False, True], ids=["sandboxed", "trusted"])
def test_a_runtime_error_names_the_element_the_line_and_the_exception(python: PythonScript, trusted: bool) -> None:
    script = "def ratio(a, b):\n    return a / b\nr = ratio(1, 0)"

    with pytest.raises(ScriptError) as caught:
        run(python, script, trusted)

    assert str(caught.value) == f"element '{ELEMENT}': script failed: ZeroDivisionError: division by zero at line 2"
    assert caught.value.element_id == ELEMENT
    assert caught.value.line == 2
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


def test_a_syntax_error_names_the_line(python: PythonScript) -> None:
    with pytest.raises(ScriptError, match=r"element 'Task_1': script has a syntax error at line 2") as caught:
        run(python, "x = 1\nx = = 2")
    assert caught.value.line == 2


def test_scripts_are_compiled_once() -> None:
    assert compile_script("x = x + 1", False) is compile_script("x = x + 1", False)
    assert compile_script("x = x + 1", True) is not compile_script("x = x + 1", False)


def test_a_script_compiled_by_several_threads_at_once_is_one_object() -> None:
    script = f"x = {time.monotonic_ns()}  # not compiled before"
    start = threading.Barrier(8)
    results: list[Any] = []

    def compile_it(trusted: bool) -> None:
        start.wait()
        results.append((trusted, compile_script(script, trusted)))

    threads = [threading.Thread(target=compile_it, args=(i % 2 == 0,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for trusted in (False, True):
        assert {id(c) for t, c in results if t is trusted} == {id(compile_script(script, trusted))}
    assert compile_script(script, False).names is not None and compile_script(script, True).names is None


def test_the_compile_cache_keeps_the_scripts_compiled_last(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiler, "COMPILE_CACHE_SIZE", 3)
    scripts = [f"v = {i}  # eviction {time.monotonic_ns()}" for i in range(5)]

    first = [compile_script(s, False) for s in scripts]

    assert len(compiler.compiled_sandboxed) == 3
    assert all(compile_script(s, False) is c for s, c in zip(scripts[2:], first[2:], strict=True))
    assert compile_script(scripts[0], False) is not first[0]  # evicted, compiled again
    assert PythonScript().run(scripts[0], {}, trusted=False, element_id=ELEMENT) == {"v": 0}


# ---------------------------------------------------------------------- refusals
REFUSED = [
    ("import os", "import of 'os' is not allowed"),
    ("from os import path", "import of 'os' is not allowed"),
    ("import os.path", "import of 'os.path' is not allowed"),
    ("__import__('os')", '"__import__" is an invalid variable name'),
    ("open('/etc/passwd')", "open() is not allowed"),
    ("eval('1')", "Eval calls are not allowed"),
    ("exec('x=1')", "Exec calls are not allowed"),
    ("run = eval\nrun('1')", "eval() is not allowed"),
    ("compile('1', '', 'eval')", "compile() is not allowed"),
    ("().__class__.__bases__[0].__subclasses__()", '"__class__" is an invalid attribute name'),
    ('getattr(x, "__globals__")', "access to attribute '__globals__' is not allowed"),
    ("def gen():\n    yield 1\nf = gen().gi_frame.f_back", '"gi_frame" is a restricted name'),
    ("code = (lambda: 0).__code__", '"__code__" is an invalid attribute name'),
    ("x = 'a' * 10**10", "'*' on a str would have 10,000,000,000 items"),
    ("x = [0] * 10**10", "'*' on a list would have 10,000,000,000 items"),
    ("x = 10**10 * [0]", "'*' on a list would have 10,000,000,000 items"),
    ("x = list(range(10**10))", "range() would have 10,000,000,000 items"),
    ("x = bytearray(10**10)", "bytearray() would have 10,000,000,000 items"),
    ("x = 2 ** 10**10", "'**' would make an integer of about 20,000,000,000 bits"),
    ("x = 1 << 10**10", "'<<' would make an integer"),
    ("s = 'ab'\nfor i in range(40):\n    s = s + s", "'+' on a str would have"),
    ("s = [1]\nfor i in range(40):\n    s += s", "'+=' on a list would have"),
    ("s = 'ab' * 1000000\nt = str([s] * 1000)", "converting a list to text would make more than"),
    ("s = f'{x:>10000000000}'", "format width or precision 10000000000 exceeds"),
    ("s = '%10000000000d' % x", "format width or precision 10000000000 exceeds"),
    ("s = 'x'.ljust(10**10)", "ljust() would have"),
    ("s = ','.join(['ab' * 1000000] * 1000)", "join() would have"),
    ("import math\nf = math.factorial(10**6)", "factorial() would make an integer"),
    ("import decimal\nn = int(decimal.Decimal('1e999999'))", "Decimal exponent 999,999 exceeds"),
    ("import random\nr = random.choices([1], k=10**10)", "choices() would have"),
    ("t = type(x)", "type() is not allowed in sandboxed scripts; use isinstance()"),
    ("g = globals()", "globals() is not allowed"),
    ("v = vars()", "vars() is not allowed"),
    ("class A:\n    pass", "class definitions are not allowed"),
    ("s = '{0.__class__}'.format(1)", "str.format() is not allowed"),
    ("s = sum(iter(int, 1))", "iter(callable, sentinel) is not allowed"),
    ("import datetime\nd = datetime.date(2020, 1, 1)\nd.year = 3", "changing attributes or items of a date object"),
    ("import math\nmath.pi = 3", "changing attributes or items of a ModuleView object"),
    ("try:\n    import os\nexcept BaseException:\n    pass", "import of 'os' is not allowed"),
]


@pytest.mark.parametrize(("script", "reason"), REFUSED, ids=[s for s, _ in REFUSED])
def test_the_sandbox_refuses(python: PythonScript, script: str, reason: str) -> None:
    variables: dict[str, Any] = {"x": 1, "items": [1, [2]]}
    before = copy.deepcopy(variables)

    with pytest.raises(ScriptError) as caught:
        python.run(script, variables, trusted=False, element_id=ELEMENT)

    message = str(caught.value)
    assert message.startswith(f"element '{ELEMENT}': script refused")
    assert reason in message
    assert caught.value.line is not None
    assert variables == before


@pytest.mark.parametrize(
    ("script", "denied"),
    [
        ("import json\nc = json.codecs", "codecs"),
        ("import uuid\no = uuid.os", "os"),
        ("import statistics\ns = statistics.sys", "sys"),
        ("import random\nrandom.seed(1)", "seed"),
        ("import string\nf = string.Formatter", "Formatter"),
        ("import decimal\nc = decimal.getcontext()", "getcontext"),
    ],
)
def test_allowed_modules_show_only_their_safe_public_names(python: PythonScript, script: str, denied: str) -> None:
    with pytest.raises(ScriptError, match=f"has no attribute '{denied}' that scripts may use"):
        run(python, script)


def test_the_module_allow_list_is_configurable() -> None:
    only_math = PythonScript(allowed_modules={"math"})

    assert only_math.run("import math\nx = math.floor(1.5)", {}, trusted=False, element_id=ELEMENT) == {"x": 1}
    with pytest.raises(ScriptError, match=r"import of 'json' is not allowed \(allowed: math\)"):
        only_math.run("import json", {}, trusted=False, element_id=ELEMENT)
    with pytest.raises(ValueError, match="only top-level modules"):
        PythonScript(allowed_modules={"os.path"})


# ---------------------------------------------------------------------- budgets
STOPPED = [
    "while True: pass",
    "while True:\n    pass",
    "def spin():\n    while True:\n        pass\nspin()",
    "n = sum(1 for _ in range(10**6))",
    "while True:\n    try:\n        while True: pass\n    except BaseException:\n        pass",
    "try:\n    while True: pass\nfinally:\n    while True: pass",
    "import statistics\nm = statistics.mean(range(10**6))",  # library code counts too
    "import math\nm = math.lcm(*range(1, 10**6))",
]


@pytest.mark.parametrize("script", STOPPED)
def test_a_line_budget_stops_endless_loops(script: str) -> None:
    python = PythonScript(limits=Limits(lines=10_000))

    with pytest.raises(ScriptError, match=r"script stopped at line \d+: it executed more than 10,000 lines"):
        python.run(script, {}, trusted=False, element_id=ELEMENT)


def test_a_time_budget_stops_a_script_that_runs_too_long() -> None:
    python = PythonScript(limits=Limits(time=0.05))

    with pytest.raises(ScriptError, match=r"script stopped at line 1: it ran longer than its time budget of 0.05 s"):
        python.run("while True: pass", {}, trusted=False, element_id=ELEMENT)


def test_catching_the_recursion_error_of_the_tracer_does_not_escape_the_budget() -> None:
    # At the recursion limit the tracer itself fails, and CPython then stops tracing.
    script = (
        "def deep(n):\n    try:\n        return deep(n + 1)\n    except RecursionError:\n        return n\nd = deep(0)"
    )
    python = PythonScript(limits=Limits(time=0.5))

    with pytest.raises(ScriptError, match="script stopped .*lost its time budget"):
        python.run(script + "\nwhile True: pass", {}, trusted=False, element_id=ELEMENT)


def test_a_memory_budget_stops_a_script_that_piles_up_objects() -> None:
    python = PythonScript(limits=Limits(memory=32 * 2**20))
    script = "chunks = []\nwhile True:\n    chunks.append('a' * 1000000)"

    with pytest.raises(ScriptError, match=r"script refused at line 3: it grew memory by \d+ MiB; the budget is 32 MiB"):
        python.run(script, {}, trusted=False, element_id=ELEMENT)


def test_the_run_restores_the_tracer_and_the_decimal_context(python: PythonScript) -> None:
    context = decimal.getcontext()
    trace = sys.gettrace()

    with pytest.raises(ScriptError):
        run(python, "import decimal\nd = decimal.Decimal(1) / 3\nwhile True: pass")

    assert decimal.getcontext() is context
    assert sys.gettrace() is trace


def test_decimal_arithmetic_cannot_reach_huge_exponents(python: PythonScript) -> None:
    with pytest.raises(ScriptError, match=r"script failed: Overflow"):
        run(python, "import decimal\nd = decimal.Decimal('1e30000') ** 2")


# ---------------------------------------------------------------------- trusted
def test_trusted_scripts_run_as_plain_python(python: PythonScript) -> None:
    result = run(python, "import os\ncwd = os.getcwd()\nkind = type(x).__name__\nbig = 'a' * 20000000", True, x=1)

    assert result["kind"] == "int"
    assert isinstance(result["cwd"], str)
    assert len(result["big"]) == 20_000_000


def test_runs_in_other_threads_keep_their_own_budget() -> None:
    looping = PythonScript(limits=Limits(time=0.3))
    quick = PythonScript()
    errors: list[BaseException] = []

    def endless() -> None:
        try:
            looping.run("while True: pass", {}, trusted=False, element_id="Loop")
        except ScriptError as exc:
            errors.append(exc)

    thread = threading.Thread(target=endless)
    thread.start()
    results = [quick.run("x = x + 1", {"x": i}, trusted=False, element_id="Quick") for i in range(200)]
    thread.join()

    assert results == [{"x": i + 1} for i in range(200)]
    assert len(errors) == 1 and "element 'Loop': script stopped" in str(errors[0])


# A run reuses its thread's Budget object and decimal context: these show that each run
# still starts with a fresh budget, per thread, also after a refusal and inside another run.
COUNT_6000_LINES = "n = 0\nwhile n < 3000:\n    n = n + 1"  # fits a budget of 10,000 lines once, not twice


def test_a_run_after_a_stopped_or_refused_run_starts_with_a_fresh_budget() -> None:
    python = PythonScript(limits=Limits(lines=10_000, time=0.3))
    refused = [
        ("while True: pass", "stopped at line 1: it executed more than 10,000 lines"),
        ("import time\nwhile True: time.sleep(0.001)", "import of 'time' is not allowed"),
        ("n = 0\nwhile True:\n    n = n + 1\n    s = 'ab' * 10**10", "'*' on a str would have"),
        ("while True:\n    try:\n        while True: pass\n    except BaseException:\n        pass", "stopped"),
    ]
    slow = "xs = list(range(1000000))\nwhile True:\n    total = sum(xs)"  # few lines, much time

    for script, reason in [*refused, (slow, "ran longer than its time budget of 0.3 s")]:
        with pytest.raises(ScriptError, match="script (stopped|refused)") as caught:
            python.run(script, {}, trusted=False, element_id="Bad")
        assert reason in str(caught.value)

        # Lines, deadline and refusal are new: a finally block re-checks the refusal.
        script = COUNT_6000_LINES + "\ntry:\n    ok = 1\nfinally:\n    done = 2"
        assert python.run(script, {}, trusted=False, element_id=ELEMENT) == {"n": 3000, "ok": 1, "done": 2}
        assert python.run(COUNT_6000_LINES, {}, trusted=False, element_id=ELEMENT) == {"n": 3000}

    runs = budget.local.runs
    assert runs.budget is None
    assert runs.spare is not None and runs.spare.refusal is None  # a refusal's traceback is not kept alive


def test_a_restarted_budget_is_like_a_new_one() -> None:
    runs = budget.ThreadRuns()
    first, previous = runs.start(Limits(), "A", frozenset({"math"}))
    assert previous is None and runs.budget is first
    for name in ("lines", "charged", "unchecked", "baseline"):
        setattr(first, name, 123_456_789)
    first.refuse("no", stopped=True)
    first.deadline = 0.0
    runs.finish(first, previous)
    assert runs.budget is None and runs.spare is first

    limits = Limits(time=1.5)
    second, previous = runs.start(limits, "B", frozenset())
    fresh = budget.Budget(limits, "B", frozenset())

    assert second is first and previous is None and runs.spare is None
    for name in budget.Budget.__slots__:
        if name not in ("deadline", "tracer", "_line_tracer"):
            assert getattr(second, name) == getattr(fresh, name), name
    assert abs(second.deadline - fresh.deadline) < 0.5
    assert second.tracer == first.trace_call

    # A nested run gets its own Budget object; the outer one is current again after it.
    inner, outer = runs.start(Limits(), "C", frozenset())
    assert inner is not second and outer is second and runs.budget is inner
    runs.finish(inner, outer)
    assert runs.budget is second
    runs.finish(second, None)
    assert runs.budget is None


def test_runs_in_several_threads_at_once_get_fresh_budgets_and_their_own_decimal_limits() -> None:
    tight = PythonScript(limits=Limits(lines=10_000, int_bits=1_000))  # Decimal exponents up to 301
    loose = PythonScript()
    overflow = "import decimal\nd = decimal.Decimal('1e200') * decimal.Decimal('1e200')"
    start = threading.Barrier(4)
    failures: list[BaseException] = []
    spares: list[budget.Budget | None] = []

    def work(k: int) -> None:
        try:
            start.wait()
            for _ in range(15):
                with pytest.raises(ScriptError, match=f"element 'Loop{k}': script stopped at line 1"):
                    tight.run("while True: pass", {}, trusted=False, element_id=f"Loop{k}")
                assert tight.run(COUNT_6000_LINES, {}, trusted=False, element_id=f"Count{k}") == {"n": 3000}
                with pytest.raises(ScriptError, match=f"element 'Big{k}': script failed: Overflow"):
                    tight.run(overflow, {}, trusted=False, element_id=f"Big{k}")
                assert loose.run(overflow, {}, trusted=False, element_id=f"Big{k}") == {"d": decimal.Decimal("1e400")}
            spares.append(budget.local.runs.spare)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not failures, failures
    assert len({id(spare) for spare in spares}) == 4 and None not in spares


def test_a_run_nested_in_a_run_has_its_own_budget() -> None:
    python = PythonScript(limits=Limits(lines=10_000))

    class Runner:
        """Runs another script task from inside a script, as an object's method could."""

        def run(self, script: str) -> Any:
            try:
                return dict(python.run(script, {}, trusted=False, element_id="Inner"))
            except ScriptError as exc:
                return str(exc)

    trace = sys.gettrace()
    script = "a = runner.run('while True: pass')\nb = runner.run('y = 2')\n" + COUNT_6000_LINES
    result = python.run(script, {"runner": Runner()}, trusted=False, element_id="Outer")

    assert result["a"] == "element 'Inner': script stopped at line 1: it executed more than 10,000 lines"
    assert result["b"] == {"y": 2} and result["n"] == 3000
    with pytest.raises(ScriptError, match="element 'Outer': script stopped at line 2: it executed more than"):
        python.run("b = runner.run('y = 2')\nwhile True: pass", {"runner": Runner()}, trusted=False, element_id="Outer")
    assert budget.current() is None and sys.gettrace() is trace


def test_generators_cannot_hold_blocks_that_would_run_after_the_run(python: PythonScript) -> None:
    # A suspended generator's finally runs when the garbage collector frees it, outside any budget.
    script = "def gen():\n    try:\n        yield 1\n    finally:\n        while True: pass\ng = gen()\nfirst = next(g)"

    with pytest.raises(ScriptError, match="try statements are not allowed in generator functions"):
        run(python, script)
    assert run(
        python,
        "def gen():\n    def f():\n        try:\n            return 1\n        finally:\n            pass\n    yield f()\nx = list(gen())",
    ) == {"x": [1]}
