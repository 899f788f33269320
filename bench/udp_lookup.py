"""What the kernel charges for many UDP sockets on one address and port 3784.

An established session of ours reads from a receive socket of its own, bound to
the local address and 3784 and connected to the peer (docs/performance.md,
"Descriptors and source ports"). With thousands of sessions on one local
address, that is thousands of sockets on one (address, port), and two costs of
the kernel grow with their number:

* **a packet that no connected socket takes** (to the listener: a new session's
  first packets, a session without a socket of its own, a stranger) is looked up
  by a walk over every socket on that address and port;
* **binding one more socket** to that address and port checks every one already
  there.

Packets that a connected socket takes are found through a hash of their four
addresses and ports and cost the same whatever the number. This measures the
three over loopback, in a network namespace of its own (``unshare -n``; run as
root), IPv6 like ``scale.py`` above 250 sessions:

    python bench/udp_lookup.py                 # 0, 1,000, 3,000 and 9,000 idle sockets
    python bench/udp_lookup.py --idle 0,9000 --packets 100000

CPU time of this process (user + system) per packet sent and received, over
100 senders taken in turn; the receive softirq of loopback runs in the sender's
system call, so it is counted.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import time

PORT = 3784
SENDERS = 100
#: Idle connected sockets get peers' source ports from here up.
IDLE_PORT_BASE = 20_000


def receiver(family: int, local: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((local, PORT))
    return sock


def measure(family: int, idle: int, packets: int) -> dict[str, float]:
    """Per-packet CPU to a connected socket and to the listener, and the cost of
    one more bind, with ``idle`` connected sockets on the address and port."""
    local = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    listener = receiver(family, local)
    senders, own = [], []
    for _ in range(SENDERS):
        tx = socket.socket(family, socket.SOCK_DGRAM)
        tx.bind((local, 0))
        tx.connect((local, PORT))
        senders.append(tx)
    idles = []
    for i in range(idle):
        sock = receiver(family, local)
        sock.connect((local, IDLE_PORT_BASE + i))
        idles.append(sock)
    # One more bind on the crowded address and port (the next session's socket).
    t0 = time.perf_counter()
    for tx in senders:
        sock = receiver(family, local)
        sock.connect((local, tx.getsockname()[1]))
        own.append(sock)
    bind_us = (time.perf_counter() - t0) / SENDERS * 1e6
    out = {"bind_us": bind_us}
    for name, readers in (("connected_us", own), ("listener_us", [listener] * SENDERS)):
        if name == "listener_us":
            for sock in own:  # the senders' packets now go to the listener
                sock.close()
        t0 = time.process_time()
        for k in range(packets):
            senders[k % SENDERS].send(b"x" * 24)
            readers[k % SENDERS].recv(64)
        out[name] = (time.process_time() - t0) / packets * 1e6
    for sock in (listener, *senders, *idles):
        sock.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", default="0,1000,3000,9000", help="idle sockets, comma-separated")
    parser.add_argument("--packets", type=int, default=100_000, help="packets a measurement")
    parser.add_argument("-4", dest="family", action="store_const", const=4, default=6)
    opts = parser.parse_args(argv)
    if os.environ.get("UDP_LOOKUP_INNER") != "1":
        # A namespace of our own, with only a loopback.
        script = 'ip link set lo up && exec "$@"'
        cmd = ["unshare", "-n", "sh", "-c", script, "sh", sys.executable, *sys.argv]
        return subprocess.call(cmd, env={**os.environ, "UDP_LOOKUP_INNER": "1"})
    idle_counts = [int(x) for x in opts.idle.split(",") if x]
    need = max(idle_counts) + 2 * SENDERS + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, need)), hard))
    family = socket.AF_INET6 if opts.family == 6 else socket.AF_INET
    print(f"IPv{opts.family}, {opts.packets} packets a measurement, CPU us a packet sent and read")
    print("idle sockets  to a connected socket  to the listener  one more bind (us)")
    for idle in idle_counts:
        r = measure(family, idle, opts.packets)
        print(
            f"{idle:>12,}  {r['connected_us']:>20.2f}  {r['listener_us']:>15.2f}"
            f"  {r['bind_us']:>18.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
