"""Where the control socket lives by default, and which directories may hold it.

No other user may be able to put a socket where aiobfdctl and aiobfd-exabgp look
(issue 18: ``/tmp/aiobfd-UID.sock`` could be created first by anyone).  As root,
the tests play a user of their own (uid 4242) and chown directories to it or to
a stranger (uid 4343); the cases that need chown are skipped otherwise.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from aiobfd import paths
from aiobfd.paths import UnsafeDirectory, check_socket_directory, default_socket_path

ROOT = os.geteuid() == 0
STRANGER = 4343
needs_root = pytest.mark.skipif(not ROOT, reason="chown needs root")


@pytest.fixture
def user(monkeypatch: pytest.MonkeyPatch) -> int:
    """The uid these tests run as: 4242 when really root (so not root), else our own."""
    if not ROOT:
        return os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    monkeypatch.setattr(os, "getuid", lambda: 4242)
    return 4242


def private_dir(path: Path, uid: int, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    if ROOT:
        os.chown(path, uid, uid)
    return path


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """/run/user and /tmp of the tests: under tmp_path."""
    monkeypatch.setattr(paths, "RUN_USER_DIR", str(tmp_path / "run-user"))
    monkeypatch.setattr(paths, "TMP_DIR", str(tmp_path / "tmp"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    return tmp_path


# -- the default path ----------------------------------------------------------------


def test_root_uses_run_aiobfd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_socket_path() == "/run/aiobfd/aiobfd.sock"


def test_the_users_runtime_directory_comes_first(
    places: Path, user: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = private_dir(places / "xdg", user)
    private_dir(places / "run-user" / str(user), user)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert default_socket_path() == str(runtime / "aiobfd.sock")


@needs_root
def test_a_runtime_directory_of_another_user_is_not_used(
    places: Path, user: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After su, XDG_RUNTIME_DIR may still name the first user's directory."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(private_dir(places / "xdg", STRANGER)))
    assert default_socket_path() == str(places / "tmp" / f"aiobfd-{user}" / "aiobfd.sock")


def test_a_writable_runtime_directory_is_not_used(
    places: Path, user: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(private_dir(places / "xdg", user, 0o777)))
    assert default_socket_path() == str(places / "tmp" / f"aiobfd-{user}" / "aiobfd.sock")


def test_without_xdg_runtime_dir_run_user_uid_when_it_is_ours(places: Path, user: int) -> None:
    run_user = private_dir(places / "run-user" / str(user), user)
    assert default_socket_path() == str(run_user / "aiobfd.sock")


def test_without_either_a_private_directory_in_tmp_never_a_name_in_tmp(
    places: Path, user: int
) -> None:
    path = default_socket_path()
    assert path == str(places / "tmp" / f"aiobfd-{user}" / "aiobfd.sock")
    assert not (places / "tmp").exists()  # looking creates nothing: clients call it too


def test_the_real_fallback_is_a_directory_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(paths, "RUN_USER_DIR", "/nonexistent")
    assert default_socket_path() == "/tmp/aiobfd-4242/aiobfd.sock"


# -- the directory the daemon binds in --------------------------------------------------


def test_a_missing_directory_is_made_private(tmp_path: Path, user: int) -> None:
    directory = tmp_path / "aiobfd-x"
    check_socket_directory(str(directory))
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    check_socket_directory(str(directory))  # and found good again


@needs_root
def test_a_directory_of_another_user_is_refused(tmp_path: Path, user: int) -> None:
    """Another user made /tmp/aiobfd-UID first: the daemon will not bind there."""
    directory = private_dir(tmp_path / "aiobfd-4242", STRANGER)
    with pytest.raises(UnsafeDirectory, match=rf"belongs to uid {STRANGER}, not to this user"):
        check_socket_directory(str(directory))


def test_our_directory_and_roots_are_fine(tmp_path: Path, user: int) -> None:
    check_socket_directory(str(private_dir(tmp_path / "ours", user, 0o755)))
    if ROOT:
        check_socket_directory(str(private_dir(tmp_path / "roots", 0, 0o755)))


def test_a_directory_others_may_write_in_is_refused(tmp_path: Path, user: int) -> None:
    directory = private_dir(tmp_path / "open", user, 0o777)
    with pytest.raises(UnsafeDirectory, match=r"may be written by other users \(mode 0777"):
        check_socket_directory(str(directory))
    directory.chmod(0o770)
    with pytest.raises(UnsafeDirectory, match="may be written by other users"):
        check_socket_directory(str(directory))


@needs_root
def test_a_sticky_directory_of_root_is_fine(tmp_path: Path, user: int) -> None:
    """/tmp itself: an explicit --control-socket /tmp/x.sock still works."""
    check_socket_directory(str(private_dir(tmp_path / "like-tmp", 0, 0o1777)))


def test_a_file_is_not_a_directory(tmp_path: Path, user: int) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(UnsafeDirectory, match="is not a directory"):
        check_socket_directory(str(tmp_path / "file"))


@needs_root
def test_a_symbolic_link_of_another_user_is_refused(tmp_path: Path, user: int) -> None:
    target = private_dir(tmp_path / "target", user)
    link = tmp_path / "link"
    link.symlink_to(target)
    os.lchown(link, STRANGER, STRANGER)
    with pytest.raises(UnsafeDirectory, match=rf"symbolic link of uid {STRANGER}"):
        check_socket_directory(str(link))
    os.lchown(link, user, user)
    check_socket_directory(str(link))  # ours: followed
