"""Hypothesis strategies for Control packets, shared by the property tests."""

from __future__ import annotations

from hypothesis import strategies as st

from aiobfd.protocol.packet import (
    FLAG_AUTH,
    FLAG_CPI,
    FLAG_DEMAND,
    FLAG_FINAL,
    FLAG_POLL,
    AuthSection,
    AuthType,
    ControlPacket,
    Diag,
    State,
)

U32 = 0xFFFF_FFFF

states = st.sampled_from(list(State))
diags = st.integers(0, 31).map(Diag)
discriminators = st.integers(1, U32)
u32 = st.integers(0, U32)
#: Interval fields: mostly values a session meets, sometimes anything 32-bit.
intervals = st.one_of(
    st.sampled_from([0, 1, 1_000, 10_000, 50_000, 300_000, 1_000_000, 2_000_000]),
    st.integers(0, 5_000_000),
    u32,
)
#: P and F never together (RFC 5880 §6.5); C and D freely.
flag_sets = st.builds(
    lambda pf, c, d: pf | (FLAG_CPI if c else 0) | (FLAG_DEMAND if d else 0),
    st.sampled_from([0, FLAG_POLL, FLAG_FINAL]),
    st.booleans(),
    st.booleans(),
)


def _keyed(auth_type: AuthType, digest_len: int) -> st.SearchStrategy[AuthSection]:
    return st.builds(
        lambda key, seq, digest: AuthSection(
            auth_type, key, b"\x00" + seq.to_bytes(4, "big") + digest
        ),
        st.integers(0, 255),
        u32,
        st.binary(min_size=digest_len, max_size=digest_len),
    )


auth_sections = st.one_of(
    st.builds(
        AuthSection,
        st.just(AuthType.SIMPLE_PASSWORD),
        st.integers(0, 255),
        st.binary(min_size=1, max_size=16),
    ),
    _keyed(AuthType.KEYED_MD5, 16),
    _keyed(AuthType.METICULOUS_KEYED_MD5, 16),
    _keyed(AuthType.KEYED_SHA1, 20),
    _keyed(AuthType.METICULOUS_KEYED_SHA1, 20),
    # Types without a fixed length: anything that fits the Length octet.
    st.builds(
        AuthSection,
        st.sampled_from([0, 6, 7, 128, 255]),
        st.integers(0, 255),
        st.binary(max_size=255 - 24 - 3),
    ),
)


@st.composite
def valid_packets(draw: st.DrawFn, *, with_auth: bool = True) -> ControlPacket:
    """Any packet that passes every packet-only check of RFC 5880 §6.8.6."""
    state = draw(states)
    your = draw(discriminators if state in (State.INIT, State.UP) else st.one_of(st.just(0), u32))
    auth = draw(st.one_of(st.none(), auth_sections)) if with_auth else None
    flags = draw(flag_sets) | (FLAG_AUTH if auth is not None else 0)
    return ControlPacket(
        state,
        draw(diags),
        flags,
        draw(st.integers(1, 255)),
        draw(discriminators),
        your,
        draw(intervals),
        draw(intervals),
        draw(u32),
        auth,
    )
