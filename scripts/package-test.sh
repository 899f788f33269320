#!/usr/bin/env bash
# The release artifacts, built and checked as operators get them (issue 21):
#
#  1. Python: `python -m build` gives an sdist and a wheel (built from the sdist);
#     `twine check --strict` accepts them; their metadata and data files (man
#     pages, completions, py.typed, LICENSE) are there; the wheel installs with
#     pipx into an isolated environment and its three console scripts run.
#  2. Debian: `dpkg-buildpackage -b -us -uc` gives aiobfd_*.deb; lintian reports
#     no error; `apt-get install ./aiobfd_*.deb` installs the commands (compiled
#     core), the man pages, the completions, the unit (enabled, not started
#     while the configuration has no peers; systemd-analyze verify), the user,
#     the conffile, logrotate; the installed daemon runs and aiobfdctl's
#     completion offers its peers; `apt-get purge` leaves no file behind.
#  3. `aiobfd --version`, the wheel and the Debian package agree on
#     pyproject.toml's version.
#
# Run as root on Debian 12 with access to Debian's and PyPI's package
# repositories; installs what it needs with apt-get and pip.  Everything is
# built in a copy of the tree (the checkout is not touched) under a temporary
# directory removed at the end; an aiobfd package left installed by an earlier
# run is purged first, and the one installed here is purged on the way out.
# Exit status 0 when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if [ "$(id -u)" != 0 ]; then
    echo "package-test.sh: run as root (it installs and purges a Debian package)" >&2
    exit 2
fi

# Debian's tools, not a Python on PATH that is not the system's (pyenv, a venv).
export PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive
PY=/usr/bin/python3
VERSION=$($PY -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
DEB_UPSTREAM=$($PY debian/upstream-version)

WORK=$(mktemp -d /tmp/aiobfd-package-test.XXXXXX)
INSTALLED=0
SECONDS=0
cleanup() {
    status=$?
    if [ "$INSTALLED" = 1 ]; then
        apt-get purge -y -qq aiobfd >/dev/null 2>&1 || true
    fi
    [ -n "${DAEMON_PID:-}" ] && kill "$DAEMON_PID" 2>/dev/null || true
    rm -rf "$WORK"
    if [ "$status" = 0 ]; then
        echo "== package test passed in ${SECONDS}s"
    else
        echo "== package test FAILED (status $status) after ${SECONDS}s" >&2
    fi
}
trap cleanup EXIT

step() { echo "== $* (${SECONDS}s)"; }
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
check() {  # check DESCRIPTION COMMAND...: the command must succeed
    local what=$1
    shift
    "$@" >"$WORK/check.out" 2>&1 || { cat "$WORK/check.out" >&2; fail "$what"; }
    echo "ok: $what"
}

step "a copy of the tree (tracked and new files)"
mkdir -p "$WORK/src"
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    tar --null -cf - -T - | tar -xf - -C "$WORK/src"

step "tools: apt-get build-dep (debian/control), lintian and what the checks run"
need=()
for pkg in lintian man-db systemd logrotate adduser zsh; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ] || ! (cd "$WORK/src" && dpkg-checkbuilddeps) 2>/dev/null; then
    echo "installing the build dependencies ${need[*]}"
    apt-get update -qq
    (cd "$WORK/src" && apt-get build-dep -y -qq . >/dev/null)
    [ ${#need[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if dpkg-query -W -f='${Status}' aiobfd 2>/dev/null | grep -q "install"; then
    echo "purging the aiobfd package an earlier run left"
    apt-get purge -y -qq aiobfd >/dev/null
fi

step "tools: pip (build, twine, pipx)"
$PY -m venv "$WORK/tools"
"$WORK/tools/bin/pip" install -q --disable-pip-version-check build twine pipx >"$WORK/pip.log" 2>&1 ||
    { cat "$WORK/pip.log" >&2; fail "pip install build twine pipx"; }

# ---------------------------------------------------------------- Python artifacts

step "python -m build: sdist and wheel"
"$WORK/tools/bin/python" -m build -q --outdir "$WORK/dist" "$WORK/src" >"$WORK/build.log" 2>&1 ||
    { tail -40 "$WORK/build.log" >&2; fail "python -m build"; }
SDIST="$WORK/dist/aiobfd-$VERSION.tar.gz"
WHEEL="$WORK/dist/aiobfd-$VERSION-py3-none-any.whl"
ls "$WORK/dist"
[ -f "$SDIST" ] || fail "no $SDIST: the sdist's version is not pyproject's $VERSION"
[ -f "$WHEEL" ] || fail "no $WHEEL: the wheel's version is not pyproject's $VERSION"
check "twine check --strict" "$WORK/tools/bin/twine" check --strict "$SDIST" "$WHEEL"

"$WORK/tools/bin/python" - "$WHEEL" "$SDIST" "$VERSION" <<'EOF' || fail "wheel and sdist contents"
import sys, tarfile, zipfile
from email.parser import Parser

wheel, sdist, version = sys.argv[1:]
names = set(zipfile.ZipFile(wheel).namelist())
data = f"aiobfd-{version}.data/data/"
want = [
    "aiobfd/py.typed",
    f"aiobfd-{version}.dist-info/licenses/LICENSE",
    *(data + f"share/man/man8/{p}.8" for p in ("aiobfd", "aiobfdctl", "aiobfd-exabgp")),
    data + "share/man/man5/aiobfd.toml.5",
    *(data + f"share/bash-completion/completions/{p}" for p in ("aiobfd", "aiobfdctl", "aiobfd-exabgp")),
    *(data + f"share/zsh/site-functions/_{p}" for p in ("aiobfd", "aiobfdctl", "aiobfd-exabgp")),
]
missing = [n for n in want if n not in names]
assert not missing, f"missing from the wheel: {missing}"
meta = Parser().parsestr(zipfile.ZipFile(wheel).read(f"aiobfd-{version}.dist-info/METADATA").decode())
assert meta["Version"] == version, meta["Version"]
assert meta["License-Expression"] == "MIT", meta["License-Expression"]
assert meta["Author-email"] or meta["Author"], "no author"
urls = meta.get_all("Project-URL") or []
assert any(u.startswith("Homepage, ") for u in urls) and len(urls) >= 3, urls
classifiers = meta.get_all("Classifier") or []
for c in ("Operating System :: POSIX :: Linux", "Typing :: Typed", "Programming Language :: Python :: 3.11"):
    assert c in classifiers, c
assert meta["Requires-Python"] == ">=3.11"
members = {m.split("/", 1)[1] for m in tarfile.open(sdist).getnames() if "/" in m}
for n in ("CHANGELOG.md", "LICENSE", "man/aiobfd.8", "man/aiobfd.toml.5",
          "completions/bash/aiobfdctl", "completions/zsh/_aiobfdctl", "contrib/aiobfd.service"):
    assert n in members, f"missing from the sdist: {n}"
print("ok: wheel and sdist contents, metadata", version)
EOF

step "pipx install of the wheel, isolated"
export PIPX_HOME="$WORK/pipx" PIPX_BIN_DIR="$WORK/pipx-bin" PIPX_MAN_DIR="$WORK/pipx-man"
"$WORK/tools/bin/pipx" install --python "$PY" "$WHEEL" >"$WORK/pipx.log" 2>&1 ||
    { cat "$WORK/pipx.log" >&2; fail "pipx install"; }
out=$("$PIPX_BIN_DIR/aiobfd" --version)
[ "$out" = "aiobfd $VERSION (core: python)" ] || fail "pipx: aiobfd --version said: $out"
echo "ok: pipx: $out"
[ "$("$PIPX_BIN_DIR/aiobfdctl" --version)" = "aiobfdctl $VERSION" ] || fail "pipx: aiobfdctl --version"
[ "$("$PIPX_BIN_DIR/aiobfd-exabgp" --version)" = "aiobfd-exabgp $VERSION" ] || fail "pipx: aiobfd-exabgp --version"
check "pipx: aiobfd --check-config" "$PIPX_BIN_DIR/aiobfd" 127.0.0.1 127.0.0.2 --check-config
check "pipx: aiobfdctl answers (exit 1: no daemon on the socket)" \
    bash -c '"$0" -s "$1/none.sock" show sessions; [ $? = 1 ]' "$PIPX_BIN_DIR/aiobfdctl" "$WORK"
check "pipx: the man pages are linked" test -e "$PIPX_MAN_DIR/man8/aiobfd.8" -a -e "$PIPX_MAN_DIR/man5/aiobfd.toml.5"
"$WORK/tools/bin/pipx" uninstall aiobfd >/dev/null
unset PIPX_HOME PIPX_BIN_DIR PIPX_MAN_DIR

# ---------------------------------------------------------------- Debian package

step "dpkg-buildpackage -b -us -uc"
(cd "$WORK/src" && env -i PATH="$PATH" HOME="$HOME" LC_ALL=C.UTF-8 \
    ${PIP_INDEX_URL:+PIP_INDEX_URL="$PIP_INDEX_URL"} ${PIP_CERT:+PIP_CERT="$PIP_CERT"} \
    dpkg-buildpackage -b -us -uc) >"$WORK/deb.log" 2>&1 ||
    { tail -60 "$WORK/deb.log" >&2; fail "dpkg-buildpackage"; }
DEB=$(ls "$WORK"/aiobfd_*.deb)
echo "built $(basename "$DEB") ($(du -k "$DEB" | cut -f1) KiB)"
deb_version=$(dpkg-deb -f "$DEB" Version)
[ "${deb_version%-*}" = "$DEB_UPSTREAM" ] || fail "the package's version $deb_version is not pyproject's $VERSION"

step "lintian"
lintian --display-info "$WORK"/aiobfd_*.changes >"$WORK/lintian.txt" 2>&1 || true
cat "$WORK/lintian.txt"
if grep -q '^E:' "$WORK/lintian.txt"; then fail "lintian reports errors"; fi
echo "ok: lintian: no error ($(grep -c '^W:' "$WORK/lintian.txt" || true) warnings)"

step "apt-get install ./$(basename "$DEB")"
# What is on the machine before: after the purge, nothing more may be.
snapshot() {
    find /etc /usr /var /opt /srv /lib /lib64 /bin /sbin -xdev \
        \( -path /var/lib/dpkg -o -path /var/lib/apt -o -path /var/cache -o -path /var/log/apt \
        -o -path /var/log/dpkg.log -o -path /var/log/alternatives.log -o -path /var/tmp \
        -o -path /var/lib/systemd/deb-systemd-helper-masked -o -path /var/lib/ucf \
        -o -path /var/mail -o -path /var/spool \) -prune -o -print 2>/dev/null | sort
}
snapshot >"$WORK/before.txt"
(cd "$WORK" && apt-get install -y -qq "./$(basename "$DEB")") >"$WORK/install.log" 2>&1 ||
    { cat "$WORK/install.log" >&2; fail "apt-get install"; }
INSTALLED=1
dpkg -L aiobfd >"$WORK/files.txt"

step "the installed package"
out=$(aiobfd --version)
[ "$out" = "aiobfd $VERSION (core: mypyc)" ] || fail "aiobfd --version said: $out"
echo "ok: $out; the package is $deb_version"
[ "$(aiobfdctl --version)" = "aiobfdctl $VERSION" ] || fail "aiobfdctl --version"
[ "$(aiobfd-exabgp --version)" = "aiobfd-exabgp $VERSION" ] || fail "aiobfd-exabgp --version"
for page in aiobfd aiobfdctl aiobfd-exabgp; do
    check "man -w $page: $(man -w "$page" 2>/dev/null)" man -w "$page"
done
check "man -w 5 aiobfd.toml" man -w 5 aiobfd.toml
for page in $(man -w aiobfd aiobfdctl aiobfd-exabgp) $(man -w 5 aiobfd.toml); do
    warnings=$(MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$page" 2>&1 >/dev/null)
    [ -z "$warnings" ] || fail "groff warns about $page: $warnings"
done
echo "ok: man pages render without warnings"
UNIT=/lib/systemd/system/aiobfd.service
check "systemd-analyze verify $UNIT" systemd-analyze verify "$UNIT"
[ -z "$(cat "$WORK/check.out")" ] || { cat "$WORK/check.out"; fail "systemd-analyze verify said something"; }
check "the unit is enabled" test -L /etc/systemd/system/multi-user.target.wants/aiobfd.service
check "the unit is not started (no aiobfd process)" bash -c '! pgrep -x -u aiobfd aiobfd'
condition=$(sed -n 's/^ExecCondition=//p' "$UNIT")
[ -n "$condition" ] || fail "the unit has no ExecCondition"
check "ExecCondition: the packaged configuration has no peers" \
    bash -c 'eval "$1"; [ $? = 1 ]' _ "$condition"
check "the user aiobfd" bash -c 'getent passwd aiobfd | grep -q ":/nonexistent:/usr/sbin/nologin$"'
check "/etc/aiobfd/aiobfd.toml is a conffile" \
    bash -c "dpkg-query -W -f='\${Conffiles}' aiobfd | grep -q ' /etc/aiobfd/aiobfd.toml '"
check "/etc/aiobfd/aiobfd.toml is root:aiobfd 0640" \
    bash -c '[ "$(stat -c "%U:%G %a" /etc/aiobfd/aiobfd.toml)" = "root:aiobfd 640" ]'
check "the packaged configuration is valid, as the user aiobfd" \
    runuser -u aiobfd -- aiobfd --config /etc/aiobfd/aiobfd.toml --check-config
grep -q "configuration valid, 0 peer(s)" "$WORK/check.out" || fail "$(cat "$WORK/check.out")"
check "logrotate -d /etc/logrotate.d/aiobfd" logrotate -d /etc/logrotate.d/aiobfd
check "bytecode compiled by postinst" \
    bash -c 'ls /usr/lib/aiobfd/lib/python3*/site-packages/aiobfd/__pycache__/*.pyc'
check "the examples and docs" test -f /usr/share/doc/aiobfd/examples/aiobfd.toml -a \
    -f /usr/share/doc/aiobfd/changelog.gz -a -f /usr/share/doc/aiobfd/copyright

step "the installed daemon, aiobfdctl and the completions"
cat >"$WORK/peers.toml" <<'EOF'
[[peers]]
remote = "127.0.21.2"
local = "127.0.21.1"

[[peers]]
remote = "127.0.21.3"
local = "127.0.21.1"
EOF
check "ExecCondition: a configuration with peers" \
    bash -c 'eval "$1"' _ "${condition//\/etc\/aiobfd\/aiobfd.toml/$WORK/peers.toml}"
aiobfd --config "$WORK/peers.toml" --control-socket "$WORK/ctl.sock" --metrics-port 0 \
    >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 50); do [ -S "$WORK/ctl.sock" ] && break; sleep 0.1; done
check "aiobfdctl show sessions" aiobfdctl -s "$WORK/ctl.sock" show sessions
grep -q "127.0.21.3" "$WORK/check.out" || fail "aiobfdctl: $(cat "$WORK/check.out")"
# bash: the installed completion, as bash-completion loads it.
bash_complete() {
    bash -c '
        source /usr/share/bash-completion/completions/aiobfdctl
        COMP_LINE=$1 COMP_POINT=${#1} COMP_WORDS=() COMP_CWORD=0
        _aiobfdctl_complete
        printf "%s\n" "${COMPREPLY[@]}"' _ "$1"
}
got=$(bash_complete "aiobfdctl -s $WORK/ctl.sock show session 127.0.21." | sort | tr '\n' ' ')
[ "$got" = "127.0.21.2 127.0.21.3 " ] || fail "bash completion of a PEER gave: $got"
got=$(bash_complete "aiobfdctl -s $WORK/ctl.sock pe" | tr '\n' ' ')
[ "$got" = "peer " ] || fail "bash completion of a subcommand gave: $got"
echo "ok: bash completes aiobfdctl's subcommands and the daemon's peers"
# zsh: the installed function, with compadd showing what it was given.
got=$(zsh -f -c '
    fpath=(/usr/share/zsh/vendor-completions $fpath)
    autoload -Uz compinit && compinit -u -d "$2/zcompdump"
    eval "$(</usr/share/zsh/vendor-completions/_aiobfdctl)"
    compadd() { print -l -- ${(P)${@[-1]}}; }
    words=(aiobfdctl -s "$1" show session ""); CURRENT=5
    _aiobfdctl_peers' _ "$WORK/ctl.sock" "$WORK" | sort | tr '\n' ' ')
[ "$got" = "127.0.21.2 127.0.21.3 " ] || fail "zsh completion of a PEER gave: $got"
echo "ok: zsh completes the daemon's peers"
kill -TERM "$DAEMON_PID"
wait "$DAEMON_PID" || fail "the daemon did not exit with status 0 on SIGTERM: $(tail -5 "$WORK/daemon.log")"
DAEMON_PID=
echo "ok: the daemon stopped with status 0"

step "apt-get purge aiobfd"
apt-get purge -y -qq aiobfd >"$WORK/purge.log" 2>&1 || { cat "$WORK/purge.log" >&2; fail "apt-get purge"; }
INSTALLED=0
snapshot >"$WORK/after.txt"
if ! diff "$WORK/before.txt" "$WORK/after.txt" >"$WORK/left.txt"; then
    cat "$WORK/left.txt" >&2
    fail "the purge left files behind (or removed others)"
fi
left=$(while read -r f; do [ -e "$f" ] && [ ! -d "$f" ] && echo "$f"; done <"$WORK/files.txt" || true)
[ -z "$left" ] || fail "files of the package left: $left"
check "no user or group aiobfd" bash -c '! getent passwd aiobfd && ! getent group aiobfd'
echo "ok: the purge left nothing behind"
