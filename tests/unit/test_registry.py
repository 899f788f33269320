"""The session table: discriminator allocation and demultiplexing (RFC 5880 §6.3, §6.8.6)."""

from __future__ import annotations

import random

import pytest

from aiobfd.protocol.errors import DropReason, LocalProtocolError, PacketError
from aiobfd.protocol.packet import ControlPacket, Diag, State
from aiobfd.protocol.registry import PeerKey, SessionTable
from aiobfd.protocol.session import SessionConfig


class Rigged:
    """A RandomSource whose getrandbits() replays a script, then counts up."""

    def __init__(self, script: list[int]) -> None:
        self.script = list(script)
        self.calls = 0
        self.next = 1000

    def random(self) -> float:
        return 0.5

    def getrandbits(self, k: int, /) -> int:
        assert k == 32
        self.calls += 1
        if self.script:
            return self.script.pop(0)
        self.next += 1
        return self.next


A = PeerKey("192.0.2.1", "192.0.2.254")
B = PeerKey("192.0.2.2", "192.0.2.254")
LL = PeerKey("fe80::1", "fe80::2", 3)
CFG = SessionConfig()


def packet(state: State = State.UP, your: int = 0, my: int = 0x77) -> ControlPacket:
    return ControlPacket(state, Diag.NO_DIAGNOSTIC, 0, 3, my, your, 1_000_000, 1_000_000)


def test_discriminators_skip_zero_and_duplicates() -> None:
    rng = Rigged([0, 5, 0, 5, 5, 0, 7, 0xFFFF_FFFF])
    table = SessionTable(rng)
    a = table.add(A, CFG, now=0)
    b = table.add(B, CFG, now=0)
    c = table.add(LL, CFG, now=0)
    assert (a.local_discr, b.local_discr, c.local_discr) == (5, 7, 0xFFFF_FFFF)
    assert rng.calls == 8


def test_discriminators_nonzero_and_unique_at_scale() -> None:
    # A generator with only a few values forces many collisions.
    class Narrow(Rigged):
        def getrandbits(self, k: int, /) -> int:
            self.calls += 1
            return random.Random(self.calls).randrange(0, 300)

    table = SessionTable(Narrow([]))
    sessions = [table.add(PeerKey(f"10.0.0.{i}", "10.0.1.1"), CFG, now=0) for i in range(200)]
    discrs = [s.local_discr for s in sessions]
    assert 0 not in discrs
    assert len(set(discrs)) == 200
    assert len(table) == 200


def test_freed_discriminator_can_be_reused() -> None:
    table = SessionTable(Rigged([9, 9]))
    a = table.add(A, CFG, now=0)
    assert table.remove(A) is a
    assert table.by_discriminator(9) is None
    assert table.add(B, CFG, now=0).local_discr == 9


def test_lookup_helpers() -> None:
    table = SessionTable(Rigged([]))
    a = table.add(A, CFG, now=5)
    assert len(table) == 1
    assert A in table and B not in table
    assert table.get(A) is a and table.get(B) is None
    assert table.by_discriminator(a.local_discr) is a
    assert list(table) == [a]
    assert a.key == A
    assert a.created_at_us == 5
    assert str(A) == "192.0.2.1 from 192.0.2.254"
    assert str(LL) == "fe80::1%3 from fe80::2"


def test_duplicate_peer_is_refused() -> None:
    table = SessionTable(Rigged([]))
    table.add(A, CFG, now=0)
    with pytest.raises(LocalProtocolError):
        table.add(A, CFG, now=0)
    assert len(table) == 1


def test_remove_unknown_is_none() -> None:
    assert SessionTable(Rigged([])).remove(A) is None


def test_demux_by_your_discriminator() -> None:
    table = SessionTable(Rigged([11, 22]))
    a = table.add(A, CFG, now=0)
    b = table.add(B, CFG, now=0)
    assert table.demultiplex(packet(your=11), A.remote, A.local) is a
    assert table.demultiplex(packet(your=22), B.remote, B.local) is b
    # The discriminator decides even if the local address differs.
    assert table.demultiplex(packet(your=22), B.remote, "192.0.2.253") is b
    assert table.drops == {}


@pytest.mark.parametrize("state", [State.DOWN, State.ADMIN_DOWN])
def test_demux_by_peer_when_your_discriminator_is_zero(state: State) -> None:
    table = SessionTable(Rigged([11, 22, 33]))
    a = table.add(A, CFG, now=0)
    b = table.add(B, CFG, now=0)
    ll = table.add(LL, CFG, now=0)
    assert table.demultiplex(packet(state), A.remote, A.local) is a
    assert table.demultiplex(packet(state), B.remote, B.local) is b
    assert table.demultiplex(packet(state), LL.remote, LL.local, LL.scope) is ll
    assert table.drops == {}


def drop_reason(table: SessionTable, pkt: ControlPacket, *where: object) -> DropReason:
    with pytest.raises(PacketError) as info:
        table.demultiplex(pkt, *where)  # type: ignore[arg-type]
    return info.value.reason


def test_unknown_discriminator() -> None:
    table = SessionTable(Rigged([11]))
    table.add(A, CFG, now=0)
    assert drop_reason(table, packet(your=12), A.remote, A.local) is DropReason.UNKNOWN_DISCR
    assert drop_reason(table, packet(your=12), A.remote, A.local) is DropReason.UNKNOWN_DISCR
    assert table.drops == {DropReason.UNKNOWN_DISCR: 2}


def test_unknown_peer() -> None:
    table = SessionTable(Rigged([11]))
    table.add(A, CFG, now=0)
    down = packet(State.DOWN)
    assert drop_reason(table, down, "192.0.2.9", A.local) is DropReason.UNKNOWN_PEER
    # Same remote, other local address or scope: another session key.
    assert drop_reason(table, down, A.remote, "192.0.2.253") is DropReason.UNKNOWN_PEER
    assert drop_reason(table, down, A.remote, A.local, 2) is DropReason.UNKNOWN_PEER
    assert table.drops == {DropReason.UNKNOWN_PEER: 3}
    assert len(table) == 1


def test_wrong_peer() -> None:
    table = SessionTable(Rigged([11, 22]))
    table.add(A, CFG, now=0)
    table.add(LL, CFG, now=0)
    # Our discriminator 11 belongs to A, but the packet comes from B's address.
    assert drop_reason(table, packet(your=11), B.remote, B.local) is DropReason.WRONG_PEER
    # The right address with the wrong scope is another peer too.
    assert drop_reason(table, packet(your=22), LL.remote, LL.local, 4) is DropReason.WRONG_PEER
    assert table.drops == {DropReason.WRONG_PEER: 2}


def test_drops_are_counted_by_reason() -> None:
    table = SessionTable(Rigged([11]))
    table.add(A, CFG, now=0)
    for _ in range(3):
        drop_reason(table, packet(your=99), A.remote, A.local)
    drop_reason(table, packet(State.DOWN), "192.0.2.9", A.local)
    drop_reason(table, packet(your=11), "192.0.2.9", A.local)
    assert table.drops == {
        DropReason.UNKNOWN_DISCR: 3,
        DropReason.UNKNOWN_PEER: 1,
        DropReason.WRONG_PEER: 1,
    }
    table.count_drop(DropReason.TTL)
    assert table.drops[DropReason.TTL] == 1


def test_demuxed_session_completes_handshake() -> None:
    table = SessionTable(random.Random(3))
    a = table.add(A, SessionConfig(300_000, 300_000, 3), now=0)
    first = packet(State.DOWN, my=0x99)
    table.demultiplex(first, A.remote, A.local).receive(first, 10)
    assert a.state is State.INIT
    second = packet(State.UP, your=a.local_discr, my=0x99)
    table.demultiplex(second, A.remote, A.local).receive(second, 20)
    assert a.state is State.UP
    assert a.remote_discr == 0x99
    assert len(table) == 1
