"""The session state machine of RFC 5880 §6.2 and §6.8.6, as one table.

Everything that decides a state transition lives here (after h11's rule 1);
the session applies what this module answers.
"""

from __future__ import annotations

from typing import Final

from .packet import Diag, State

#: (local state, state received from the remote) -> (new local state, new diag).
#: A pair that is missing means "no change".  AdminDown as the local state never
#: reaches this table: RFC 5880 §6.8.6 discards packets for such a session.
TRANSITIONS: Final[dict[tuple[State, State], tuple[State, Diag]]] = {
    # Received AdminDown: a session that is not Down goes Down (diag 3).
    (State.INIT, State.ADMIN_DOWN): (State.DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN),
    (State.UP, State.ADMIN_DOWN): (State.DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN),
    # Three-way handshake.
    (State.DOWN, State.DOWN): (State.INIT, Diag.NO_DIAGNOSTIC),
    (State.DOWN, State.INIT): (State.UP, Diag.NO_DIAGNOSTIC),
    (State.INIT, State.INIT): (State.UP, Diag.NO_DIAGNOSTIC),
    (State.INIT, State.UP): (State.UP, Diag.NO_DIAGNOSTIC),
    # The remote restarted or timed out: it says Down while we are Up.
    (State.UP, State.DOWN): (State.DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN),
}


def on_receive(local: State, remote: State) -> tuple[State, Diag] | None:
    """The transition a received packet causes, or None."""
    return TRANSITIONS.get((local, remote))


def on_detection_timeout(local: State) -> tuple[State, Diag] | None:
    """RFC 5880 §6.8.4: Init or Up with no packet for a Detection Time -> Down, diag 1."""
    if local in (State.INIT, State.UP):
        return State.DOWN, Diag.CONTROL_DETECTION_TIME_EXPIRED
    return None
