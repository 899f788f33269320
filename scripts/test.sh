#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs, then runs
# ruff, mypy and pytest (unit, property, loopback and - as root - interop tests
# with FRR's bfdd and BIRD 2 in network namespaces), then most of it again on
# the core compiled by mypyc.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Real BFD peers for the interop tests come from Debian's packages, and so do
# promtool and the Prometheus server of the observability tests, and tshark
# (Wireshark's dissector checks what the echo sessions send).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    need=()
    [ -x /usr/lib/frr/bfdd ] || need+=(frr)
    command -v bird >/dev/null || need+=(bird2)
    command -v ip >/dev/null || need+=(iproute2)
    command -v nft >/dev/null || need+=(nftables)
    command -v exabgp >/dev/null || need+=(exabgp)
    command -v promtool >/dev/null || need+=(prometheus)
    command -v tshark >/dev/null || need+=(tshark)  # Wireshark's BFD dissector
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

# The same checks as .pre-commit-config.yaml.
echo "== ruff"
.venv/bin/ruff check src tests bench examples setup.py build_backend
.venv/bin/ruff format --check src tests bench examples setup.py build_backend
echo "== mypy (src and tests)"
.venv/bin/mypy
echo "== pytest"
AIOBFD_EXPECT_CORE=python .venv/bin/python -m pytest -q "$@"

# The tests that need no root, again on the core compiled by mypyc
# (AIOBFD_MYPYC=1, setup.py), built as an operator would build it.  Skipped
# when arguments pick tests, or with AIOBFD_TEST_COMPILED=0.
if [ $# -eq 0 ] && [ "${AIOBFD_TEST_COMPILED:-1}" = 1 ]; then
    echo "== pytest, core compiled with mypyc"
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    AIOBFD_MYPYC=1 .venv/bin/python -m pip wheel -q --disable-pip-version-check --no-deps -w "$build/wheel" .
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --target "$build/site" "$build"/wheel/aiobfd-*.whl
    # As root, the interop tests with FRR's bfdd and BIRD as well.
    interop=()
    if [ "$(id -u)" = 0 ]; then
        interop=(tests/integration/test_interop_frr.py tests/integration/test_interop_bird.py)
    fi
    AIOBFD_EXPECT_CORE=mypyc PYTHONPATH="$build/site" .venv/bin/python -m pytest -q -p no:cacheprovider \
        tests/unit tests/property tests/daemon tests/observability "${interop[@]}"
fi

# As root, the release artifacts as operators get them: the wheel (twine,
# pipx) and the Debian package (lintian, install, the unit, purge).  About two
# minutes; AIOBFD_TEST_PACKAGE=0 skips it.
if [ $# -eq 0 ] && [ "$(id -u)" = 0 ] && [ "${AIOBFD_TEST_PACKAGE:-1}" = 1 ]; then
    echo "== package"
    ./scripts/package-test.sh
fi
