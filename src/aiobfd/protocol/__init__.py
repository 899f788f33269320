"""The BFD protocol core, sans-IO (RFC 5880, RFC 5881, RFC 5883, RFC 9747).

Everything a packet runs through, and nothing that waits: no sockets, no
asyncio, no clock, no file or environment access.  Time comes in as integer
microseconds from a monotonic clock; sessions answer with packets to send,
events and their next deadline.  mypyc compiles this folder (setup.py).

* :mod:`.constants` - numbers named after the RFCs.
* :mod:`.errors` - :class:`~.errors.DropReason`, :class:`~.errors.PacketError`
  (the peer misbehaved: count and drop) and
  :class:`~.errors.LocalProtocolError` (misuse: a bug of ours).
* :mod:`.packet` - the Control packet codec and its reception checks.
* :mod:`.auth` - authentication (RFC 5880 §6.7): sign and verify.
* :mod:`.fsm` - the state transition table, and nothing else.
* :mod:`.timers` - interval negotiation, jitter, Detection Time.
* :mod:`.events` - what a session reports.
* :mod:`.session` - one session: :class:`~.session.SessionConfig`, its
  counters and :class:`~.session.Session`.
* :mod:`.echo` - an RFC 9747 unaffiliated echo session toward a gateway
  that runs no BFD, with a Session's surface.
* :mod:`.registry` - discriminators and demultiplexing (RFC 5880 §6.3).
* :mod:`.schedule` - deadlines grouped by instant, shared by many sessions.
* :mod:`.stats` - timer lateness histograms, plain integers.

Importing this package pulls in no asyncio, socket or file I/O
(tests/unit/test_layout.py checks it).
"""
