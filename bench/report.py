"""Turning results into the printed JSON object and markdown tables."""

from __future__ import annotations

from dataclasses import asdict

from bench.registry import Result, Scenario

NOTES = (
    "bpmnlite persists every instance: Engine.start is one transaction, committed to SQLite before the next "
    "instance starts (sqlite-file: a file in WAL mode, synchronous=NORMAL; sqlite-memory: sqlite://).",
    "SpiffWorkflow runs in memory and persists nothing (backend none); it is the library's own default use.",
    "Scripts: bpmnlite runs them in the bpmnlite-script sandbox (its default); SpiffWorkflow in its default "
    "PythonScriptEngine (plain exec).",
    "ratio_vs_spiff is bpmnlite's speed-up over SpiffWorkflow in the same run: above 1 bpmnlite is faster "
    "(instances/s divided by SpiffWorkflow's, or SpiffWorkflow's ms divided by bpmnlite's).",
    "value is the median over the repetitions given under scenarios; engines take turns within a repetition.",
    "Worker scenarios (async-throughput, latency, growth, memory) run bpmnlite alone, on PostgreSQL and Redis "
    "through real `bpmnlite worker` processes (backend postgresql+redis) or in-process on a SQLite file "
    "(sqlite-file); each figure comes from one run of the sizes under scenarios, and the unit says what it is.",
)


def targets(scenarios: list[Scenario], results: list[Result]) -> list[dict[str, object]]:
    """Each target checked against every bpmnlite row it applies to.

    Every entry has the same keys: ``required``/``measured`` with ``comparison``
    and ``unit`` say what was checked; ``required_ratio``/``ratio`` repeat them
    for the targets relative to SpiffWorkflow and are null for the others.
    """
    out: list[dict[str, object]] = []
    for sc in scenarios:
        for target in sc.targets:
            for row in results:
                if row.scenario != target.scenario or (target.n is not None and row.n != target.n):
                    continue
                if target.backend is not None and row.backend != target.backend:
                    continue
                if target.unit is None:
                    if row.ratio_vs_spiff is None or target.min_ratio is None:
                        continue
                    required, measured, comparison, unit = target.min_ratio, row.ratio_vs_spiff, ">=", "x SpiffWorkflow"
                else:
                    if row.unit != target.unit:
                        continue
                    measured, unit = row.value, row.unit
                    if target.at_most is not None:
                        required, comparison = target.at_most, "<="
                    else:
                        assert target.at_least is not None, f"target {target.name!r} has no bound"
                        required, comparison = target.at_least, ">="
                met = measured <= required if comparison == "<=" else measured >= required
                spiff = target.unit is None
                out.append(
                    {
                        "target": target.name,
                        "scenario": row.scenario,
                        "n": row.n,
                        "backend": row.backend,
                        "unit": unit,
                        "comparison": comparison,
                        "required": required,
                        "measured": measured,
                        "required_ratio": required if spiff else None,
                        "ratio": measured if spiff else None,
                        "met": met,
                    }
                )
    return out


def document(
    mode: str,
    machine: dict[str, object],
    scenarios: list[Scenario],
    plans: dict[str, dict[str, object]],
    results: list[Result],
    skipped: list[dict[str, str]],
    elapsed: float,
) -> dict[str, object]:
    """The JSON object a run prints; the same keys in quick and full mode."""
    return {
        "mode": mode,
        "machine": machine,
        "notes": list(NOTES),
        "scenarios": {sc.name: {"summary": sc.summary, **plans[sc.name]} for sc in scenarios},
        "results": [asdict(r) for r in results],
        "targets": targets(scenarios, results),
        "skipped": skipped,
        "elapsed_s": round(elapsed, 1),
    }


def markdown(doc: dict[str, object]) -> str:
    """The short tables printed after the JSON."""
    lines: list[str] = []
    if doc["results"]:
        lines += [
            "| scenario | n | engine | backend | value | unit | vs SpiffWorkflow |",
            "|---|---:|---|---|---:|---|---:|",
        ]
    for row in doc["results"]:  # type: ignore[attr-defined]
        ratio = "—" if row["ratio_vs_spiff"] is None else f"{row['ratio_vs_spiff']:.2f}x"
        lines.append(
            f"| {row['scenario']} | {row['n']} | {row['engine']} | {row['backend']} | "
            f"{_figure(row['value'])} | {row['unit']} | {ratio} |"
        )
    checked = doc["targets"]
    if checked:
        lines += ["", "| target | n | backend | required | measured | met |", "|---|---:|---|---:|---:|---|"]
        for t in checked:  # type: ignore[attr-defined]
            lines.append(
                f"| {t['target']} | {t['n']} | {t['backend']} | {t['comparison']} {t['required']:g} {t['unit']} | "
                f"{_figure(t['measured'])} | {'yes' if t['met'] else 'no'} |"
            )
    if doc["skipped"]:
        lines.append("")
    for skip in doc["skipped"]:  # type: ignore[attr-defined]
        lines.append(f"skipped {skip['scenario']}: {skip['reason']}")
    machine = doc["machine"]
    assert isinstance(machine, dict)
    lines.append(
        f"\n{doc['mode']} run, {doc['elapsed_s']} s; {machine['cpu_model']}, {machine['cores']} cores, "
        f"load {machine['load_average_at_start']} at start; {machine['python']}"
    )
    return "\n".join(lines)


def _figure(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"
