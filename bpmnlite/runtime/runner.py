"""The token loop: run every token of a command until each waits or has ended.

One :class:`Runner` serves one command. It holds the instances the command
touched (a call activity touches its parent or child too), a queue of tokens
ready to move, and the :class:`Effects` the engine will write in the same
transaction. Behaviour per element family lives in ``activities``,
``gateways`` and ``events``; this module owns token movement, scopes,
completion and cancellation.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from bpmnlite.errors import (
    BpmnError,
    BpmnliteError,
    Conflict,
    ExecutionError,
    ExpressionError,
    TaskStopped,
    UncaughtBpmnError,
)
from bpmnlite.expressions import evaluate
from bpmnlite.hookspecs import ScriptLanguage
from bpmnlite.model import ACTIVITY_KINDS, EventKind, FlowNode, NodeKind, SequenceFlow
from bpmnlite.runtime import activities, events, gateways, io_mapping, listeners
from bpmnlite.runtime.effects import ActivityRecord, Effects, JobKind, JobRecord, VariableRecord
from bpmnlite.runtime.environment import Environment
from bpmnlite.runtime.graph import ExecutionGraph
from bpmnlite.runtime.state import FINAL_STATES, Instance, InstanceState, Phase, Token, Wait, new_id


class ExecutionView:
    """What ``execution.`` reaches in JUEL-style expressions."""

    def __init__(self, runner: Runner, inst: Instance, token: Token | None) -> None:
        self._runner = runner
        self._inst = inst
        self._token = token

    def getVariable(self, name: str) -> Any:  # noqa: N802 - JUEL's spelling
        return self._inst.view(self._token).get(name)

    def setVariable(self, name: str, value: Any) -> None:  # noqa: N802
        self._runner.set_variable(self._inst, self._token, name, value)

    def hasVariable(self, name: str) -> bool:  # noqa: N802
        return name in self._inst.view(self._token)

    @property
    def processBusinessKey(self) -> str | None:  # noqa: N802
        return self._inst.business_key

    @property
    def processInstanceId(self) -> str:  # noqa: N802
        return self._inst.id

    @property
    def currentActivityId(self) -> str | None:  # noqa: N802
        return self._token.node_id if self._token else None


class Runner:
    """Moves tokens for one command; see the module docstring."""

    def __init__(self, env: Environment, effects: Effects | None = None) -> None:
        self.env = env
        self.effects = effects or Effects()
        self.instances: dict[str, Instance] = {}
        self.graphs: dict[str, ExecutionGraph] = {}
        self.queue: deque[tuple[Instance, Token]] = deque()
        self.steps = 0
        self.visits: dict[str, int] = {}
        self.now = env.now()
        self.created_jobs: list[str] = []
        # set by the engine for a job's command (see activities.child_completed)
        self.in_job = False
        # owners (tokens, scopes, instances) that may have rows in the database
        self.stored_owners: set[str] = set()
        self.seq = time.time_ns() // 1000 * 1000
        # answers that cannot change during one command, asked on every step
        listening = getattr(env, "has_listeners", None)
        self._report_started = bool(listening and listening("bpmnlite_activity_started"))
        self._report_ended = bool(listening and listening("bpmnlite_activity_ended"))
        self._languages: dict[str | None, ScriptLanguage] = {}  # by script format
        # (instance id, parallel join id, scope token id) -> (instance, incoming flows no token waits on yet)
        self.join_missing: dict[tuple[str, str, str | None], tuple[Instance, set[str]]] = {}
        # (instance id, join id, scope token id) -> the token holding the join's open history row
        self.join_holders: dict[tuple[str, str, str | None], Token] = {}

    # ----------------------------------------------------------------- basics
    def graph_of(self, inst: Instance) -> ExecutionGraph:
        graph = self.graphs.get(inst.definition_id)
        if graph is None:
            graph = self.env.graph(inst.definition_id)
            self.graphs[inst.definition_id] = graph
        return graph

    def script_language(self, node: FlowNode) -> ScriptLanguage:
        language = self._languages.get(node.script_format)
        if language is None:
            language = self._languages[node.script_format] = self.env.script_language(node)
        return language

    def adopt(self, inst: Instance) -> Instance:
        """Make an instance loaded by the engine part of this command."""
        self.instances[inst.id] = inst
        if not inst.is_new:
            self.stored_owners.add(inst.id)
            self.stored_owners.update(t.id for t in inst.tokens.values() if t.data.get("rows"))
        return inst

    def instance(self, instance_id: str) -> Instance:
        inst = self.instances.get(instance_id)
        if inst is None:
            inst = self.adopt(self.env.load_instance(instance_id))
        return inst

    def enqueue(self, inst: Instance, token: Token) -> None:
        self.queue.append((inst, token))

    def evaluate(self, inst: Instance, token: Token | None, text: str, node: FlowNode | SequenceFlow) -> Any:
        try:
            return evaluate(
                text, inst.view(token), functions=self.env.functions, execution=ExecutionView(self, inst, token)
            )
        except ExpressionError as exc:
            raise exc.at(node.id, node.line) from None

    def set_variable(
        self, inst: Instance, token: Token | None, name: str, value: Any, element_id: str | None = None
    ) -> None:
        if not _storable(value):
            where = element_id or (token.node_id if token else None)
            raise ExecutionError(
                f"variable {name!r} cannot be stored: {type(value).__name__} is not a JSON value "
                "(use str, int, float, bool, None, lists and dicts with string keys)",
                element_id=where, instance_id=inst.id,
            )
        target = inst.variables if token is None else inst.owner_of(token, name)
        target[name] = value
        self.effects.variables.append(
            VariableRecord(inst.id, name, value, element_id or (token.node_id if token else None), self.now, self.seq)
        )
        self.seq += 1

    def set_variables(
        self, inst: Instance, token: Token | None, values: dict[str, Any] | None, element_id: str | None = None
    ) -> None:
        for name, value in (values or {}).items():
            self.set_variable(inst, token, name, value, element_id)

    def new_token(
        self,
        inst: Instance,
        node_id: str,
        *,
        parent_id: str | None,
        phase: Phase = Phase.ARRIVE,
        flow_id: str | None = None,
    ) -> Token:
        token = Token(id=new_id(), node_id=node_id, phase=phase, parent_id=parent_id, flow_id=flow_id)
        inst.tokens[token.id] = token
        return token

    # ------------------------------------------------------------ history
    def begin_activity(self, inst: Instance, token: Token, node: FlowNode) -> None:
        if token.activity_id is not None:
            return
        # id, instance, token, element id, kind and name, start: positional, as keywords
        # cost nearly half of building the record, once per element visited
        record = ActivityRecord(
            new_id(), inst.id, token.id, node.id, _KIND_VALUES[node.kind], node.name, self.now, seq=self.seq
        )
        self.seq += 1
        token.activity_id = record.id
        self.effects.activities[record.id] = record
        if self._report_started:
            self.effects.events.append(
                (
                    "bpmnlite_activity_started",
                    {"instance_id": inst.id, "element_id": node.id, "element_kind": node.kind.value},
                )
            )

    def end_activity(self, inst: Instance, token: Token, outcome: str = "completed") -> None:
        act = token.activity_id
        if act is None:
            return
        token.activity_id = None
        record = self.effects.activities.get(act)
        if record is not None:
            record.ended_at = self.now
            record.outcome = outcome
        else:
            self.effects.ended_activities[act] = (inst.id, self.now, outcome)
        if self._report_ended:
            self.effects.events.append(
                (
                    "bpmnlite_activity_ended",
                    {
                        "instance_id": inst.id,
                        "element_id": token.node_id,
                        "element_kind": self.graph_of(inst).nodes[token.node_id].kind.value,
                    },
                )
            )

    # ------------------------------------------------------------ rows owned by tokens
    def clear_rows(self, token: Token) -> None:
        """Forget the tasks, subscriptions and jobs the token owned (it moved on)."""
        if not token.data:
            return
        kinds = token.data.pop("rows", None)
        if kinds:
            self.forget_rows(token.id, kinds if isinstance(kinds, str) else ALL_ROWS)

    def forget_rows(self, owner_id: str, kinds: str = "tsj") -> None:
        """Drop the rows an owner (token, scope or instance id) has, stored or still pending.

        ``kinds`` says which tables can hold them: ``t`` tasks, ``s``
        subscriptions, ``j`` jobs; only those are touched.
        """
        effects = self.effects
        if owner_id in self.stored_owners:  # a new instance or token has nothing stored to delete
            before = effects.cleared_tokens.get(owner_id, "")
            effects.cleared_tokens[owner_id] = "".join(sorted(set(before + kinds)))
        # rows created earlier in this same command never reach the database
        if effects.tasks:
            kept = [task for task in effects.tasks if task.token_id != owner_id]
            if len(kept) != len(effects.tasks):
                effects.tasks = kept
                effects.closed_tasks.pop(owner_id, None)
        if effects.subscriptions:
            effects.subscriptions = [s for s in effects.subscriptions if s.token_id != owner_id]
        if effects.jobs:
            effects.jobs = [j for j in effects.jobs if j.token_id != owner_id]

    def mark_rows(self, token: Token, kinds: str) -> None:
        """Note that ``token`` owns rows of these kinds (``t`` tasks, ``s`` subscriptions, ``j`` jobs)."""
        before = token.data.get("rows")
        before = before if isinstance(before, str) else (ALL_ROWS if before else "")
        token.data["rows"] = "".join(sorted(set(before + kinds)))

    def _check_queue(self, inst: Instance, node: FlowNode, max_queue: int) -> None:
        """An element's queue is full: a catchable QueueFull error instead of one more job (seed 004)."""
        waiting = self.env.queued_jobs(inst.definition_id, node.id)
        waiting += sum(1 for j in self.effects.jobs if j.element_id == node.id and j.definition_id == inst.definition_id)
        if waiting >= max_queue:
            raise BpmnError("QueueFull", f"the queue of '{node.id}' is full ({waiting} of {max_queue} waiting)")

    def add_job(
        self,
        inst: Instance,
        token: Token | None,
        node: FlowNode,
        kind: JobKind,
        *,
        due_at: Any = None,
        payload: dict[str, Any] | None = None,
    ) -> JobRecord:
        cfg = node.asynchronous
        payload = dict(payload or {})
        if kind in (JobKind.ASYNC_BEFORE, JobKind.ASYNC_AFTER):
            if cfg.retry_backoff:
                payload["backoff"] = cfg.retry_backoff
            if cfg.max_queue is not None and kind is JobKind.ASYNC_BEFORE:
                self._check_queue(inst, node, cfg.max_queue)
        job = JobRecord(
            id=new_id(),
            kind=kind,
            instance_id=inst.id,
            token_id=token.id if token else inst.id,
            element_id=node.id,
            definition_id=inst.definition_id,
            due_at=due_at,
            exclusive=cfg.exclusive,
            retries=cfg.retries,
            priority=cfg.priority or 0,
            payload=payload,
        )
        self.effects.jobs.append(job)
        if token is not None:
            self.mark_rows(token, "j")
        return job

    # ------------------------------------------------------------ the loop
    def run(self) -> None:
        """Move queued tokens until every one waits or has ended."""
        limit = self.env.max_steps
        # only the last steps before the limit are counted per element: enough to name the loop
        # that ran into it, without a dict update on every step of every command
        watched = limit - _WATCHED_STEPS
        queue = self.queue
        visits = self.visits
        while True:
            while queue:
                inst, token = queue.popleft()
                if inst.tokens.get(token.id) is not token or inst.state in FINAL_STATES:
                    continue  # cancelled or moved while queued
                self.steps += 1
                if self.steps > watched:
                    node_id = token.node_id
                    visits[node_id] = visits.get(node_id, 0) + 1
                    if self.steps > limit:
                        self._step_limit(inst)
                try:
                    self.step(inst, token)
                except BpmnError as err:
                    self.throw_error(inst, token, err.code, err.message, err.variables)
                except (ExecutionError, Conflict, TaskStopped):
                    raise
                except BpmnliteError as exc:  # scripts, expressions: report as a failure at the element
                    node_id = token.node_id
                    text = str(exc).removeprefix(f"element '{node_id}': ")
                    raise ExecutionError(text, element_id=node_id, instance_id=inst.id) from exc
                except Exception as exc:
                    node = self.graph_of(inst).nodes.get(token.node_id)
                    raise ExecutionError(
                        f"{type(exc).__name__}: {exc}",
                        element_id=node.id if node else token.node_id,
                        instance_id=inst.id,
                    ) from exc
            # an inclusive join may fire once the tokens that could reach it are gone
            if not gateways.recheck_inclusive_joins(self):
                break
        for inst in self.instances.values():
            if inst.state not in FINAL_STATES:
                inst.state = InstanceState.WAITING if inst.tokens else inst.state

    def _step_limit(self, inst: Instance) -> None:
        hot = sorted(self.visits, key=self.visits.__getitem__, reverse=True)[:3]
        raise ExecutionError(
            f"more than {self.env.max_steps} steps without reaching a wait state: a loop without a wait state "
            f"through {', '.join(repr(h) for h in hot)}",
            element_id=hot[0] if hot else None,
            instance_id=inst.id,
        )

    def step(self, inst: Instance, token: Token) -> None:
        graph = self.graph_of(inst)
        node = graph.nodes[token.node_id]
        data = token.data  # empty on most steps: skip its lookups then
        resumed = data.pop("resumed", False) if data else False
        if token.phase is Phase.ARRIVE:
            if node.id not in graph.joins:
                self.begin_activity(inst, token, node)
            elif node.asynchronous.before:  # else the row is opened when the token waits at the join
                gateways.begin_join_record(self, inst, token, node)
            if node.asynchronous.before and not resumed and not (data and data.get("mi_inner")):
                token.wait = Wait.ASYNC_BEFORE
                self.add_job(inst, token, node, JobKind.ASYNC_BEFORE, due_at=self.now)
                return
            resumed = False
            token.phase = Phase.EXECUTE
            if node.extensions and not (data and data.get("mi_inner")):
                listeners.fire(self, inst, token, node, "start")
        if token.phase is Phase.EXECUTE:
            if node.multi_instance is not None and not (data and data.get("mi_inner")):
                activities.start_multi_instance(self, inst, token, node)
            else:
                activities.execute(self, inst, token, node)
            if token.wait is not Wait.NONE and token.phase is Phase.EXECUTE and inst.tokens.get(token.id) is token:
                if node.kind in ACTIVITY_KINDS and not token.data.get("mi_inner"):
                    events.arm_boundaries(self, inst, token, node)
            return
        # Phase.LEAVE
        mi_inner = bool(data and data.get("mi_inner"))
        if (
            node.extensions
            and not resumed
            and io_mapping.has_mapping(node)
            and (node.multi_instance is None or mi_inner)
        ):
            io_mapping.apply_outputs(self, inst, token, node)
        if mi_inner:
            activities.complete_multi_instance_inner(self, inst, token, node)
            return
        self.leave(inst, token, node, resumed=resumed)

    # ------------------------------------------------------------ leaving an element
    def complete(self, inst: Instance, token: Token) -> None:
        """The element's work is done: leave it (now, or after an async-after job)."""
        token.phase = Phase.LEAVE
        token.wait = Wait.NONE
        self.enqueue(inst, token)

    def leave(self, inst: Instance, token: Token, node: FlowNode, *, resumed: bool = False) -> None:
        if node.extensions and not resumed:
            listeners.fire(self, inst, token, node, "end")
        take = token.data.pop("take", None) if token.data else None
        if take is not None:
            flows = [self.graph_of(inst).flows[take]]
        else:
            flows = gateways.select_outgoing(self, inst, token, node)
        if node.asynchronous.after and not resumed:
            self.clear_rows(token)
            # Camunda's rule: one job per outgoing flow taken; a model written for Flowable
            # (flowable:asyncLeave) keeps Flowable's: one job that then takes every flow
            if len(flows) > 1 and "flowable:asyncLeave" not in node.attributes:
                for flow in flows[1:]:
                    twin = self.new_token(inst, node.id, parent_id=token.parent_id, phase=Phase.LEAVE)
                    twin.wait = Wait.ASYNC_AFTER
                    twin.data["take"] = flow.id
                    self.add_job(inst, twin, node, JobKind.ASYNC_AFTER, due_at=self.now)
                token.data["take"] = flows[0].id
            token.wait = Wait.ASYNC_AFTER
            self.add_job(inst, token, node, JobKind.ASYNC_AFTER, due_at=self.now)
            return
        self.take(inst, token, flows)

    def take(self, inst: Instance, token: Token, flows: list[SequenceFlow]) -> None:
        """Move the token along ``flows`` (forking copies for the second flow on)."""
        self.end_activity(inst, token)
        self.clear_rows(token)
        token.data.clear()
        token.local = None
        token.wait = Wait.NONE
        if not flows:
            self.end_token(inst, token)
            return
        for flow in flows[1:]:
            twin = self.new_token(inst, flow.target, parent_id=token.parent_id, flow_id=flow.id)
            self.enqueue(inst, twin)
        first = flows[0]
        token.node_id = first.target
        token.flow_id = first.id
        token.phase = Phase.ARRIVE
        self.enqueue(inst, token)

    # ------------------------------------------------------------ ending and scopes
    def end_token(self, inst: Instance, token: Token) -> None:
        """Remove a token that reached the end of its path; complete its scope if it was the last."""
        self.end_activity(inst, token)
        self.clear_rows(token)
        inst.tokens.pop(token.id, None)
        self.scope_maybe_done(inst, token.parent_id)

    def scope_maybe_done(self, inst: Instance, scope_id: str | None) -> None:
        if scope_id is None:
            if not any(t.parent_id is None for t in inst.tokens.values()):
                self.finish_instance(inst, InstanceState.COMPLETED)
            return
        if any(t.parent_id == scope_id for t in inst.tokens.values()):
            return
        scope = inst.tokens.get(scope_id)
        if scope is None or scope.wait is not Wait.SCOPE:
            return
        self.complete(inst, scope)

    def finish_instance(self, inst: Instance, state: InstanceState) -> None:
        """Bring the instance to a final state and tell a waiting parent."""
        for token in list(inst.tokens.values()):
            self.end_activity(inst, token, "cancelled")
            self.clear_rows(token)
        inst.tokens.clear()
        inst.state = state
        self.forget_rows(inst.id)  # root-scope subscriptions and timers
        self.effects.events.append(
            ("bpmnlite_instance_ended", {"instance_id": inst.id, "process_key": inst.process_key, "state": state.value})
        )
        if state is InstanceState.COMPLETED:
            activities.child_completed(self, inst)
            if inst.callback_message and inst.parent_instance_id:
                result = {"result": dict(inst.variables), "childInstanceId": inst.id}
                self.effects.messages.append((inst.callback_message, None, result, inst.parent_instance_id))

    def cancel_token(self, inst: Instance, token: Token, outcome: str = "cancelled") -> None:
        """Remove a token and everything below it, closing their rows and history."""
        for child in [t for t in inst.tokens.values() if t.parent_id == token.id]:
            self.cancel_token(inst, child, outcome)
        if token.wait is Wait.CALL and "child" in token.data:
            child_inst = self.instance(token.data["child"])
            if child_inst.state not in FINAL_STATES:
                self.cancel_instance(child_inst)
        if token.wait is Wait.USER_TASK:
            self.effects.closed_tasks[token.id] = outcome
        if not gateways.pass_on_join_record(self, inst, token):
            self.end_activity(inst, token, outcome)
        self.clear_rows(token)
        inst.tokens.pop(token.id, None)

    def cancel_scope(self, inst: Instance, scope_id: str | None, *, keep: Iterable[str] = ()) -> None:
        """Cancel every token directly in a scope (and below), except those in ``keep``."""
        kept = set(keep)
        for token in [t for t in inst.tokens.values() if t.parent_id == scope_id and t.id not in kept]:
            if inst.tokens.get(token.id) is token:
                self.cancel_token(inst, token)

    def cancel_instance(self, inst: Instance) -> None:
        self.cancel_scope(inst, None)
        inst.tokens.clear()
        inst.state = InstanceState.CANCELLED
        self.forget_rows(inst.id)
        self.effects.events.append(
            ("bpmnlite_instance_ended", {"instance_id": inst.id, "process_key": inst.process_key, "state": "cancelled"})
        )

    # ------------------------------------------------------------ errors and escalations
    def throw_error(
        self,
        inst: Instance,
        token: Token,
        code: str,
        message: str | None = None,
        variables: dict[str, Any] | None = None,
    ) -> None:
        """Route a BPMN error to the nearest catcher; raise if nothing catches it."""
        if events.route_thrown(self, inst, token, EventKind.ERROR, code, variables):
            return
        if inst.parent_instance_id and inst.parent_token_id:
            parent = self.instance(inst.parent_instance_id)
            parent_token = parent.tokens.get(inst.parent_token_id)
            if parent_token is not None and parent_token.wait is Wait.CALL:
                self.finish_instance_quietly(inst)
                self.throw_error(parent, parent_token, code, message, variables)
                return
        raise UncaughtBpmnError(code, message or code, element_id=token.node_id, instance_id=inst.id)

    def finish_instance_quietly(self, inst: Instance) -> None:
        """End an instance whose error propagated to its parent (no completion callback)."""
        self.cancel_scope(inst, None)
        inst.state = InstanceState.CANCELLED
        self.forget_rows(inst.id)
        self.effects.events.append(
            ("bpmnlite_instance_ended", {"instance_id": inst.id, "process_key": inst.process_key, "state": "cancelled"})
        )


ALL_ROWS = "jst"
_WATCHED_STEPS = 1_000
_KIND_VALUES = {kind: kind.value for kind in NodeKind}  # a plain str for the history row, without the enum lookup
_SCALARS = (str, int, float, bool, type(None))


def _storable(value: Any, depth: int = 0) -> bool:
    """Whether a value survives the JSON column unchanged (checked on every write, so kept cheap)."""
    if isinstance(value, _SCALARS):
        return True
    if depth > 64:
        return False
    if isinstance(value, (list, tuple)):  # a tuple is stored as a JSON array (read back as a list)
        return all(_storable(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _storable(v, depth + 1) for k, v in value.items())
    return False


def scope_node_id(inst: Instance, graph: ExecutionGraph, scope_token_id: str | None) -> str:
    if scope_token_id is None:
        return graph.id
    return inst.tokens[scope_token_id].node_id


def is_activity(node: FlowNode) -> bool:
    return node.kind in ACTIVITY_KINDS


__all__ = ["Runner", "ExecutionView", "NodeKind"]
