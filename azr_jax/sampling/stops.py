"""Stop strings checked on device, token by token, inside the decode loop.

`StopString.end` reads text left to right through phases (inside a skip span: only its close counts;
outside: the chain's first element or the span's opening, whichever starts first; chain position k: only
element k). Each phase is an Aho-Corasick byte automaton over its patterns; completing a pattern jumps to
the next phase's root (the host search restarts right after the match too). So one small byte DFA per
stop string reproduces `end` exactly, and a decode loop can mark a row done in the step that writes the
stop instead of generating to `max_new_tokens`.

Streaming sees matches in end order, `end` picks by start order. The two agree when no pattern of a
phase is a substring of another; a stop where they may not (e.g. `skip=("<a>", "a")` with `after=("<a>",)`)
is left out (`StopAutomaton.unsupported`), and the host cut (`cut_at_stop`) stays authoritative anyway.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from azr_jax import distributed
from azr_jax.sampling.core import StopString, TokenBytes


class StopTables(NamedTuple):
    """The device arrays (a pytree: pass it into the jitted decode as an argument, not a constant)."""

    token_bytes: jax.Array  # [V, M] uint8; row V-1 is empty and stands for every id outside the vocabulary
    token_len: jax.Array  # [V] int32
    trans: jax.Array  # [S, 256] int32: every stop's DFA, stacked; state ids are global
    accept: jax.Array  # [S] bool
    init: jax.Array  # [K] int32: each stop's start state


def _phase(patterns: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Aho-Corasick over `patterns`: (delta [nodes, 256], term [nodes]: the pattern a node completes or -1)."""
    children: list[dict[int, int]] = [{}]
    term = [-1]
    for j, p in enumerate(patterns):
        s = 0
        for c in p:
            if c not in children[s]:
                children[s][c] = len(children)
                children.append({})
                term.append(-1)
            s = children[s][c]
        term[s] = j
    delta = np.zeros((len(children), 256), np.int64)
    fail = [0] * len(children)
    order = [0]
    for s in order:  # breadth first: a node's failure target is shallower, so its row is already final
        if s:
            delta[s] = delta[fail[s]]
        for c, t in children[s].items():
            fail[t] = delta[fail[s], c] if s else 0
            delta[s, c] = t
            order.append(t)
    return delta, np.asarray(term)


def stop_dfa(stop: StopString) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(trans [S, 256], accept [S], start) of one stop's byte DFA, or None where streaming cannot match `end`."""
    chain, skip = stop._utf8
    # phase -> (patterns, the phase each pattern leads to); "accept" ends the response
    phases: dict[object, tuple[list[bytes], list[object]]] = {}
    first_next = 1 if len(chain) > 1 else "accept"
    if skip is None:
        phases["out"] = ([chain[0]], [first_next])
    else:
        phases["in"] = ([skip[1]], ["out"])
        if skip[0] == chain[0]:  # equal starts: `end` takes the chain's element
            phases["out"] = ([chain[0]], [first_next])
        elif skip[0] in chain[0] or chain[0] in skip[0]:
            return None  # start order and end order can differ
        else:
            phases["out"] = ([chain[0], skip[0]], [first_next, "in"])
    for k in range(1, len(chain)):
        phases[k] = ([chain[k]], [k + 1 if k + 1 < len(chain) else "accept"])
    built = {name: _phase(pats) for name, (pats, _) in phases.items()}
    ids, n = {}, 0  # (phase, node) -> global state; nodes that complete a pattern are never states
    for name, (delta, term) in built.items():
        for node in np.flatnonzero(term < 0):
            ids[name, int(node)] = n
            n += 1
    accept_id = n
    trans = np.full((n + 1, 256), accept_id, np.int32)
    for name, (delta, term) in built.items():
        nxt = [accept_id if p == "accept" else ids[p, 0] for p in phases[name][1]]
        local = np.full(len(term), -1, np.int64)
        for (ph, node), g in ids.items():
            if ph == name:
                local[node] = g
        dest = np.where(term >= 0, np.asarray(nxt)[np.maximum(term, 0)], local)  # per destination node
        rows = np.flatnonzero(term < 0)
        trans[local[rows]] = dest[delta[rows]]
    accept = np.zeros(n + 1, bool)
    accept[accept_id] = True
    start = ids["in" if skip is not None and stop.skip_open_at_start else "out", 0]
    return trans, accept, start


@dataclasses.dataclass(frozen=True, eq=False)
class StopAutomaton:
    """All stop strings of a sampling call as stacked byte DFAs plus the token -> bytes table (numpy, host)."""

    stops: tuple[StopString, ...]  # the stops encoded, in `init` order
    unsupported: tuple[StopString, ...]  # left to the host cut
    token_bytes: np.ndarray
    token_len: np.ndarray
    trans: np.ndarray
    accept: np.ndarray
    init: np.ndarray

    @classmethod
    def build(cls, stops: Sequence[str | StopString], token_bytes: TokenBytes) -> "StopAutomaton":
        stops = tuple(s if isinstance(s, StopString) else StopString(s) for s in stops)
        kept, left, trans, accept, init, offset = [], [], [], [], [], 0
        for s in stops:
            dfa = stop_dfa(s)
            if dfa is None:
                left.append(s)
                continue
            kept.append(s)
            trans.append(dfa[0] + offset)
            accept.append(dfa[1])
            init.append(dfa[2] + offset)
            offset += len(dfa[1])
        table, lens = token_bytes.table, token_bytes.lengths
        width = max(1, int(lens.max()))
        tb = np.zeros((len(table), width), np.uint8)
        flat = np.frombuffer(b"".join(table), np.uint8)
        rows = np.repeat(np.arange(len(table)), lens)
        tb[rows, np.arange(len(flat)) - np.repeat(np.cumsum(lens) - lens, lens)] = flat
        return cls(
            tuple(kept),
            tuple(left),
            tb,
            lens.astype(np.int32),
            np.concatenate(trans) if trans else np.zeros((1, 256), np.int32),
            np.concatenate(accept) if accept else np.zeros(1, bool),
            np.asarray(init, np.int32),
        )

    def arrays(self, device=None) -> StopTables:
        """The tables on `device` (a device or sharding; None: the default device)."""
        return StopTables(
            *(
                jax.device_put(x) if device is None else distributed.put(x, device)
                for x in (self.token_bytes, self.token_len, self.trans, self.accept, self.init)
            )
        )

    def initial_state(self, rows: int) -> jax.Array:
        return jnp.broadcast_to(jnp.asarray(self.init), (rows, len(self.init)))


def initial_state(tables: StopTables, rows: int) -> jax.Array:
    """[rows, K] int32: every row at every stop's start state (usable inside jit)."""
    return jnp.broadcast_to(tables.init, (rows, tables.init.shape[0]))


def advance(tables: StopTables, state: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Feed one new token per row ([R] int32) through every stop's DFA: (state [R, K], stopped [R] bool).

    `stopped` is sticky: True from the token in which some stop completes on (an accepting state is
    absorbing). The byte loop runs to the longest token of this step, not the table's width M."""
    v = tables.token_len.shape[0]
    ids = jnp.where((tokens >= 0) & (tokens < v), tokens, v - 1)
    lens = tables.token_len[ids]

    def step(m, state):
        byte = tables.token_bytes[ids, m].astype(jnp.int32)
        return jnp.where((m < lens)[:, None], tables.trans[state, byte[:, None]], state)

    state = jax.lax.fori_loop(0, jnp.max(lens, initial=0), step, state)
    return state, jnp.any(tables.accept[state], axis=-1)
