#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs, then runs
# ruff and pytest (unit, property, loopback and - as root - interop tests with
# FRR's bfdd and BIRD 2 in network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Real BFD peers for the interop tests come from Debian's packages, and so do
# promtool and the Prometheus server of the observability tests.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    need=()
    [ -x /usr/lib/frr/bfdd ] || need+=(frr)
    command -v bird >/dev/null || need+=(bird2)
    command -v ip >/dev/null || need+=(iproute2)
    command -v nft >/dev/null || need+=(nftables)
    command -v exabgp >/dev/null || need+=(exabgp)
    command -v promtool >/dev/null || need+=(prometheus)
    if [ ${#need[@]} -gt 0 ]; then
        echo "== installing ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
    if [[ " ${need[*]} " == *" prometheus "* ]]; then
        # Debian's package enables and starts a server on :9090 (unless
        # policy-rc.d forbids it, as in containers); the tests start their own.
        if [ -d /run/systemd/system ]; then
            systemctl stop prometheus.service >/dev/null 2>&1 || true
        elif [ -x /etc/init.d/prometheus ]; then
            invoke-rc.d prometheus stop >/dev/null 2>&1 || /etc/init.d/prometheus stop >/dev/null 2>&1 || true
        fi
    fi
fi

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

echo "== ruff"
.venv/bin/ruff check src tests bench examples
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
exec .venv/bin/python -m pytest -q "$@"
