"""The runtime state of one process instance: its tokens and variables.

Plain data, loaded at the start of a command and saved at its end (the store
keeps it as JSON on the instance row). Nothing here touches a database.
"""

from __future__ import annotations

import itertools
import os
from collections import ChainMap
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


def new_id() -> str:
    """A new 32-character hex id, unique across processes and machines.

    A 48-bit counter from a random start, then a random 80-bit suffix per
    process; both are drawn again in a forked child. Ids made by one process
    follow each other, so the primary-key index takes them at a few spots
    rather than all over its pages: with the random ``uuid4`` a SQLite commit
    of a 50-branch instance wrote nearly three times the pages. A fraction of
    the cost of ``uuid4`` too, paid for every token and activity. Nothing may
    rely on their order.
    """
    return (next(_id_counter) & _ID_MASK).to_bytes(6, "big").hex() + _id_suffix  # faster than a format spec


_ID_MASK = (1 << 48) - 1
_id_counter = itertools.count()
_id_suffix = ""


def _reseed_ids() -> None:
    global _id_suffix, _id_counter
    seed = os.urandom(16)
    _id_suffix = seed[:10].hex()
    # a random start too: the first characters alone still tell processes apart
    _id_counter = itertools.count(int.from_bytes(seed[10:], "big"))


_reseed_ids()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed_ids)


class Phase(StrEnum):
    """Where a token is in the life of its current element."""

    ARRIVE = "arrive"  # on the incoming flow; async-before is checked here
    EXECUTE = "execute"  # running the element's behaviour
    LEAVE = "leave"  # finished; async-after is checked, then outgoing flows are taken


class Wait(StrEnum):
    """Why a token is not moving."""

    NONE = ""
    ASYNC_BEFORE = "async-before"
    ASYNC_AFTER = "async-after"
    USER_TASK = "user-task"
    RECEIVE = "receive"  # receive task or message catch event
    SIGNAL = "signal"
    TIMER = "timer"
    EVENT_GATEWAY = "event-gateway"
    CALL = "call-activity"
    JOIN = "join"
    SCOPE = "scope"  # a sub-process whose inner tokens are running
    MULTI_INSTANCE = "multi-instance"  # the body of a multi-instance activity
    MANUAL = "manual"


class InstanceState(StrEnum):
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


FINAL_STATES = frozenset({InstanceState.COMPLETED, InstanceState.CANCELLED, InstanceState.FAILED})


@dataclass(slots=True)
class Token:
    """A position in the process: which element, which phase, why it waits.

    ``parent_id`` is the token of the enclosing scope (a sub-process or a
    multi-instance body); None for the process scope. ``local`` holds the
    variables local to this token's scope (multi-instance element variables,
    ``loopCounter``...). ``data`` keeps behaviour-specific values (the user task
    id, the job id, multi-instance counters, the flow a forking gateway's
    async-after job will take).
    """

    id: str
    node_id: str
    phase: Phase = Phase.ARRIVE
    wait: Wait = Wait.NONE
    parent_id: str | None = None
    flow_id: str | None = None
    local: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)
    activity_id: str | None = None  # id of its current activity-history row

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "node": self.node_id, "phase": self.phase.value}
        if self.wait is not Wait.NONE:
            out["wait"] = self.wait.value
        if self.parent_id:
            out["parent"] = self.parent_id
        if self.flow_id:
            out["flow"] = self.flow_id
        if self.local:
            out["local"] = self.local
        if self.data:
            out["data"] = self.data
        if self.activity_id:
            out["act"] = self.activity_id
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Token:
        return cls(
            id=raw["id"],
            node_id=raw["node"],
            phase=Phase(raw["phase"]),
            wait=Wait(raw.get("wait", "")),
            parent_id=raw.get("parent"),
            flow_id=raw.get("flow"),
            local=raw.get("local"),
            data=raw.get("data") or {},
            activity_id=raw.get("act"),
        )


@dataclass(slots=True)
class Instance:
    """A process instance as the runtime sees it during one command."""

    id: str
    definition_id: str
    process_key: str
    business_key: str | None
    variables: dict[str, Any]
    tokens: dict[str, Token] = field(default_factory=dict)
    state: InstanceState = InstanceState.RUNNING
    parent_instance_id: str | None = None
    parent_token_id: str | None = None
    root_instance_id: str | None = None
    version: int = 0
    error: str | None = None
    # scopes that are active (process scope = the instance id); owner of event sub-process subscriptions
    is_new: bool = False
    suspended: bool = False
    # a background child's completion message to its parent (seed 003: handle the result later)
    callback_message: str | None = None

    def children(self, parent_id: str | None) -> Iterator[Token]:
        for token in self.tokens.values():
            if token.parent_id == parent_id:
                yield token

    def scope_chain(self, token: Token) -> Iterator[Token]:
        """The token's enclosing scope tokens, innermost first."""
        parent = token.parent_id
        while parent is not None:
            scope = self.tokens.get(parent)
            if scope is None:
                return
            yield scope
            parent = scope.parent_id

    def view(self, token: Token | None) -> MutableMapping[str, Any]:
        """The variables visible at ``token``: its local scopes first, then the instance's."""
        if token is None or token.local is None and token.parent_id is None:
            return self.variables
        maps: list[dict[str, Any]] = []
        if token.local is not None:
            maps.append(token.local)
        for scope in self.scope_chain(token):
            if scope.local is not None:
                maps.append(scope.local)
        if not maps:
            return self.variables
        return ChainMap(*maps, self.variables)

    def owner_of(self, token: Token, name: str) -> dict[str, Any]:
        """The variable map a write of ``name`` at ``token`` goes to (Camunda's rule).

        The innermost scope that already defines the name, else the instance.
        """
        if token.local is not None and name in token.local:
            return token.local
        if token.parent_id is None:
            return self.variables
        for scope in self.scope_chain(token):
            if scope.local is not None and name in scope.local:
                return scope.local
        return self.variables

    @property
    def active_elements(self) -> list[str]:
        """Element ids where a token waits (innermost positions only)."""
        parents = {t.parent_id for t in self.tokens.values()}
        return sorted(t.node_id for t in self.tokens.values() if t.id not in parents)

    def tokens_json(self) -> list[dict[str, Any]]:
        return [t.to_json() for t in self.tokens.values()]
