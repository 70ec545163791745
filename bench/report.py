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
)


def targets(scenarios: list[Scenario], results: list[Result]) -> list[dict[str, object]]:
    """Each target checked against every bpmnlite row it applies to."""
    out: list[dict[str, object]] = []
    for sc in scenarios:
        for target in sc.targets:
            for row in results:
                if row.scenario != target.scenario or row.ratio_vs_spiff is None:
                    continue
                if target.n is not None and row.n != target.n:
                    continue
                out.append(
                    {
                        "target": target.name,
                        "scenario": row.scenario,
                        "n": row.n,
                        "backend": row.backend,
                        "required_ratio": target.min_ratio,
                        "ratio": row.ratio_vs_spiff,
                        "met": row.ratio_vs_spiff >= target.min_ratio,
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
                f"| {t['target']} | {t['n']} | {t['backend']} | {t['required_ratio']:g}x | "
                f"{t['ratio']:.2f}x | {'yes' if t['met'] else 'no'} |"
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
