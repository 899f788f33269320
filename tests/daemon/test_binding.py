"""Sessions bound to an interface, a VRF or a network namespace, over loopback
(issue 20, part 1): the listener's arrival check and the sockets' binding.

The namespace and forged-packet cases with FRR are tests/integration/test_binding.py.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from aiobfd.config import PeerSpec
from aiobfd.engine import Daemon
from aiobfd.io.netns import BindingError, bind_to_device, ifindex_of, socket_in
from aiobfd.io.sockets import open_receive_socket
from aiobfd.protocol.errors import DropReason
from aiobfd.protocol.packet import ControlPacket, Diag, State, encode
from aiobfd.protocol.session import SessionConfig
from tests.daemon.test_loopback import Recorder, entered

MS = 1000
FAST = SessionConfig(desired_min_tx_us=50 * MS, required_min_rx_us=50 * MS, detect_mult=3)
LO = socket.if_nametoindex("lo")


def spec(local: str, remote: str, **binding: str) -> PeerSpec:
    return PeerSpec(remote, local, socket.AF_INET, session=FAST, **binding)  # type: ignore[arg-type]


@pytest.fixture
async def bound() -> AsyncIterator[tuple[Daemon, Daemon, Recorder]]:
    """127.0.0.1 bound to lo, with an unbound peer at 127.0.0.2; both Up."""
    a = Daemon([spec("127.0.0.1", "127.0.0.2", interface="lo")])
    b = Daemon([spec("127.0.0.2", "127.0.0.1")])
    ra = Recorder(a)
    await a.start()
    await b.start()
    try:
        await ra.wait_for(entered(State.UP))
        yield a, b, ra
    finally:
        a.close()
        b.close()


def forged_down(a: Daemon, b: Daemon) -> bytes:
    """A packet with the right discriminators that would take a's session Down."""
    (pa,) = a.peers.values()
    (pb,) = b.peers.values()
    return encode(
        ControlPacket(
            State.DOWN,
            Diag.NEIGHBOR_SIGNALED_SESSION_DOWN,
            0,
            3,
            pb.session.local_discr,
            pa.session.local_discr,
            50 * MS,
            50 * MS,
        )
    )


async def test_a_session_bound_to_an_interface_comes_up_and_says_so(
    bound: tuple[Daemon, Daemon, Recorder],
) -> None:
    a, _b, _ra = bound
    (peer,) = a.peers.values()
    assert peer.ifindex == LO
    assert peer.spec.device == "lo"
    assert peer.sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0") == (
        b"lo"
    )


async def test_a_packet_from_another_interface_is_dropped_and_counted(
    bound: tuple[Daemon, Daemon, Recorder],
) -> None:
    a, b, _ra = bound
    (peer,) = a.peers.values()
    (pb,) = b.peers.values()
    data = forged_down(a, b)
    source = ("127.0.0.2", pb.source_port + 1)  # not the peer's own socket: the listener
    a.receive.deliver(data, source, "127.0.0.1", 255, ifindex=LO + 1000)
    a.receive.deliver(data, source, "127.0.0.1", 255, ifindex=LO, domain="netns other")
    assert peer.session.counters.drops.get(DropReason.WRONG_INTERFACE) == 2
    await asyncio.sleep(0.2)
    assert peer.session.state is State.UP
    # The same packet on the right interface is the peer's word: Down.
    a.receive.deliver(data, source, "127.0.0.1", 255, ifindex=LO)
    assert peer.session.state is State.DOWN


async def test_an_unbound_session_takes_any_interface_but_not_another_namespace() -> None:
    a = Daemon([spec("127.0.0.1", "127.0.0.2")])
    b = Daemon([spec("127.0.0.2", "127.0.0.1")])
    ra = Recorder(a)
    await a.start()
    await b.start()
    try:
        await ra.wait_for(entered(State.UP))
        (peer,) = a.peers.values()
        assert peer.ifindex == 0
        data = forged_down(a, b)
        a.receive.deliver(data, ("127.0.0.2", 1), "127.0.0.1", 255, domain="vrf blue")
        assert peer.session.counters.drops == {DropReason.WRONG_INTERFACE: 1}
        a.receive.deliver(data, ("127.0.0.2", 1), "127.0.0.1", 255, ifindex=LO + 1000)
        assert peer.session.state is State.DOWN
    finally:
        a.close()
        b.close()


async def test_same_addresses_in_another_namespace_are_another_session() -> None:
    ours = spec("127.0.0.1", "127.0.0.2")
    theirs = replace(ours, netns="blue")
    assert ours.key != theirs.key
    assert theirs.key.domain == "netns blue"
    assert replace(ours, vrf="red", netns="blue").domain == "netns blue vrf red"


def test_binding_to_a_missing_interface_says_so_in_one_line() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(BindingError, match="no interface named nosuchif0"):
            bind_to_device(sock, "nosuchif0")
        with pytest.raises(BindingError, match="no interface named nosuchif0"):
            ifindex_of(sock, "nosuchif0")
        assert ifindex_of(sock, "lo") == LO


def test_a_missing_namespace_says_so_in_one_line() -> None:
    with pytest.raises(BindingError, match=r"netns no-such-ns: /run/netns/no-such-ns: "):
        socket_in("no-such-ns", socket.AF_INET, socket.SOCK_DGRAM)


def test_a_listener_reports_the_arrival_interface() -> None:
    from aiobfd.io.sockets import LISTENER_ANCILLARY_SIZE, arrival

    rx = open_receive_socket(socket.AF_INET, "127.0.0.1", 0, 0, pktinfo=True)
    with rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
        tx.sendto(b"x", rx.getsockname())
        rx.settimeout(1)
        _data, ancdata, _flags, _addr = rx.recvmsg(16, LISTENER_ANCILLARY_SIZE)
    assert arrival(ancdata) == (255, LO)


def test_the_file_and_the_command_line_bind_peers(tmp_path: Path) -> None:
    from aiobfd.cli import parse
    from aiobfd.config import load_config

    path = tmp_path / "aiobfd.toml"
    path.write_text(
        '[[peers]]\nlocal = "127.0.0.1"\nremote = "127.0.0.2"\ninterface = "lo"\n'
        # Not an address of this namespace: another namespace's is not checked.
        '[[peers]]\nlocal = "203.0.113.1"\nremote = "203.0.113.2"\nnetns = "blue"\nvrf = "red"\n'
    )
    lo, blue = load_config(str(path), {}).peers
    assert (lo.interface, lo.vrf, lo.netns, lo.scope, lo.device) == ("lo", "", "", 0, "lo")
    assert lo.display_remote() == "127.0.0.2"
    assert (blue.netns, blue.vrf, blue.device, blue.key.domain) == (
        "blue",
        "red",
        "red",
        "netns blue vrf red",
    )
    _args, settings, _ = parse(
        ["203.0.113.1", "203.0.113.2", "--netns", "blue", "--interface", "e1"]
    )
    (cli,) = settings.peers
    assert (cli.netns, cli.interface, cli.vrf) == ("blue", "e1", "")
