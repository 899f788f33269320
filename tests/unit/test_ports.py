"""The daemon-wide source port account (RFC 5881 §4: unique among all sessions)."""

from __future__ import annotations

import errno
import random
import socket
import time
from collections import Counter
from collections.abc import Callable

import pytest

from aiobfd.io.ports import SourcePorts
from aiobfd.io.sockets import close_transmit_socket, open_transmit_socket
from aiobfd.protocol.constants import SOURCE_PORT_MAX, SOURCE_PORT_MIN


class FakeKernel:
    """Binds as the kernel does: a port twice on one address is EADDRINUSE.

    ``foreign`` ports are held by another process on every address."""

    def __init__(self, foreign: set[int] | None = None) -> None:
        self.bound: set[tuple[str, int]] = set()
        self.foreign = foreign or set()
        self.tries = 0

    def binder(self, local: str) -> Callable[[int], None]:
        def bind(port: int) -> None:
            self.tries += 1
            if port in self.foreign or (local, port) in self.bound:
                raise OSError(errno.EADDRINUSE, "Address already in use")
            self.bound.add((local, port))

        return bind

    def unbind(self, local: str, port: int) -> None:
        self.bound.remove((local, port))


def test_ports_are_unique_across_local_addresses_until_the_range_is_used() -> None:
    ports = SourcePorts(random.Random(1))
    kernel = FakeKernel()
    locals_ = [f"127.0.0.{i}" for i in range(1, 9)]
    taken = [ports.bind(kernel.binder(locals_[i % 8])) for i in range(len(ports))]
    assert len(ports) == SOURCE_PORT_MAX - SOURCE_PORT_MIN + 1 == 16384
    assert len(set(taken)) == len(taken) == 16384
    assert all(SOURCE_PORT_MIN <= p <= SOURCE_PORT_MAX for p in taken)
    assert ports.held == 16384 and ports.sessions == 16384 and ports.least_used == 1


def test_beyond_the_range_ports_are_shared_as_evenly_as_possible() -> None:
    ports = SourcePorts(random.Random(2), 50000, 50007)
    kernel = FakeKernel()
    held: list[tuple[str, int]] = []
    for i in range(8 * 5 + 3):
        local = f"127.0.0.{i % 50 + 1}"
        least = ports.least_used
        port = ports.bind(kernel.binder(local))
        # Each choice is a port of the lowest use at that moment.
        assert ports.uses(port) == least + 1
        held.append((local, port))
        uses = [ports.uses(p) for p in range(50000, 50008)]
        assert max(uses) - min(uses) <= 1
    assert sorted(Counter(p for _, p in held).values()) == [5] * 5 + [6] * 3


def test_a_released_port_is_the_next_one_taken_when_it_is_the_least_used() -> None:
    ports = SourcePorts(random.Random(3), 50000, 50003)
    kernel = FakeKernel()
    taken = [ports.bind(kernel.binder("127.0.0.1")) for _ in range(3)]
    free = ({50000, 50001, 50002, 50003} - set(taken)).pop()
    assert ports.bind(kernel.binder("127.0.0.2")) == free
    ports.release(taken[1])
    kernel.unbind("127.0.0.1", taken[1])
    assert ports.uses(taken[1]) == 0 and ports.least_used == 0 and ports.sessions == 3
    assert ports.bind(kernel.binder("127.0.0.3")) == taken[1]
    assert ports.least_used == 1
    with pytest.raises(ValueError, match="not held"):
        SourcePorts(random.Random(0), 50000, 50003).release(50000)
    with pytest.raises(ValueError, match="outside"):
        ports.release(49999)


def test_a_port_another_process_holds_is_skipped() -> None:
    foreign = set(range(50000, 50006))
    ports = SourcePorts(random.Random(4), 50000, 50007)
    kernel = FakeKernel(foreign)
    got = {ports.bind(kernel.binder("127.0.0.1")) for _ in range(2)}
    assert got == {50006, 50007}
    assert all(ports.uses(p) == 0 for p in foreign)
    # Every port of the lowest use refused: the next use of the others.
    assert ports.bind(kernel.binder("127.0.0.2")) in {50006, 50007}


def test_no_port_left_on_an_address_is_eaddrinuse_and_counts_nothing() -> None:
    ports = SourcePorts(random.Random(5), 50000, 50003)
    kernel = FakeKernel()
    for _ in range(4):
        ports.bind(kernel.binder("127.0.0.1"))
    with pytest.raises(OSError) as info:
        ports.bind(kernel.binder("127.0.0.1"))
    assert info.value.errno == errno.EADDRINUSE
    assert ports.sessions == 4 and ports.least_used == 1
    # Another address shares them.
    assert ports.bind(kernel.binder("127.0.0.2")) in range(50000, 50004)


def test_another_bind_error_is_raised_at_once_and_counts_nothing() -> None:
    ports = SourcePorts(random.Random(6), 50000, 50003)
    tries = []

    def bind(port: int) -> None:
        tries.append(port)
        raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")

    with pytest.raises(OSError) as info:
        ports.bind(bind)
    assert info.value.errno == errno.EADDRNOTAVAIL
    assert len(tries) == 1 and ports.sessions == 0 and ports.held == 0


def test_random_binds_and_releases_keep_the_account_right() -> None:
    rng = random.Random(7)
    ports = SourcePorts(random.Random(8), 50000, 50015)
    kernel = FakeKernel()
    held: list[tuple[str, int]] = []
    for _ in range(3000):
        if held and rng.random() < 0.45:
            local, port = held.pop(rng.randrange(len(held)))
            ports.release(port)
            kernel.unbind(local, port)
        else:
            local = f"127.0.0.{rng.randrange(1, 200)}"
            # The lowest use among the ports this address can still bind.
            least = min(
                ports.uses(p) for p in range(50000, 50016) if (local, p) not in kernel.bound
            )
            port = ports.bind(kernel.binder(local))
            assert ports.uses(port) == least + 1
            held.append((local, port))
        counts = Counter(p for _, p in held)
        assert all(ports.uses(p) == counts[p] for p in range(50000, 50016))
        assert ports.sessions == len(held)
        assert ports.least_used == min(counts[p] for p in range(50000, 50016))


def test_ten_thousand_binds_take_milliseconds() -> None:
    ports = SourcePorts(random.SystemRandom())
    kernel = FakeKernel(foreign=set(range(SOURCE_PORT_MIN, SOURCE_PORT_MIN + 2000)))
    binders = [kernel.binder(f"127.0.0.{i}") for i in range(1, 11)]
    started = time.perf_counter()
    taken = [ports.bind(binders[i % 10]) for i in range(10_000)]
    spent = time.perf_counter() - started
    assert len(set(taken)) == 10_000
    assert spent < 1.0, spent  # about 20 ms here; a scan of the range each time took seconds


def test_real_sockets_get_distinct_ports_and_give_them_back_once() -> None:
    ports = SourcePorts(random.SystemRandom())
    socks = [
        open_transmit_socket(socket.AF_INET, f"127.0.0.{1 + i % 3}", 0, ports) for i in range(30)
    ]
    try:
        got = [s.getsockname()[1] for s in socks]
        assert len(set(got)) == 30 and ports.sessions == 30
        assert all(ports.uses(p) == 1 for p in got)
    finally:
        for s in socks:
            close_transmit_socket(s, ports)
    assert ports.sessions == 0 and ports.held == 0
    close_transmit_socket(socks[0], ports)  # closed already: nothing given back twice
    assert ports.sessions == 0
