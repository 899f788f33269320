#!/usr/bin/env bash
# Two aiobfd instances over loopback (127.0.0.1 <-> 127.0.0.2), no root and no
# router needed: installs into .venv, runs both for a few seconds, shows the
# sessions with aiobfdctl, then stops both (they say AdminDown on the way out).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DURATION=${DURATION:-4}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e . >/dev/null
RUN=$(mktemp -d)
trap 'kill $A $B 2>/dev/null || true; rm -rf "$RUN"' EXIT
echo "== starting aiobfd on 127.0.0.1 and 127.0.0.2 (100 ms x 3)"
.venv/bin/aiobfd 127.0.0.1 127.0.0.2 -r 100 -t 100 -m 3 --control-socket "$RUN/a.sock" --metrics-port 13784 \
    2>&1 | sed -u 's/^/[127.0.0.1] /' &
A=$!
.venv/bin/aiobfd 127.0.0.2 127.0.0.1 -r 100 -t 100 -m 3 --control-socket "$RUN/b.sock" --metrics-port 13785 \
    2>&1 | sed -u 's/^/[127.0.0.2] /' &
B=$!
sleep "$DURATION"
echo "== aiobfdctl show sessions (instance on 127.0.0.1)"
.venv/bin/aiobfdctl -s "$RUN/a.sock" show sessions
echo "== stopping 127.0.0.2 with SIGTERM: 127.0.0.1 sees AdminDown (diag 3), not a timeout"
pkill -TERM -f "aiobfd 127.0.0.2 127.0.0.1" || true
sleep 1
.venv/bin/aiobfdctl -s "$RUN/a.sock" show sessions
pkill -TERM -f "aiobfd 127.0.0.1 127.0.0.2" || true
wait || true
echo "== done"
