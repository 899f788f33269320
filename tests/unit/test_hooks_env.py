"""The environment a hook starts from (aiobfd.hooks.base_environment)."""

from __future__ import annotations

import pytest

from aiobfd.hooks import HOOK_PATH, base_environment

DAEMON = {
    "PATH": "/opt/tools/bin:/usr/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "AUTH_KEY": "s3cret",
    "NOTIFY_SOCKET": "/run/systemd/notify",
    "TOKEN": "t",
}


def test_only_path_and_the_locale_by_default() -> None:
    assert base_environment((), DAEMON) == {"PATH": HOOK_PATH, "LANG": "C.UTF-8"}
    assert base_environment((), {}) == {"PATH": HOOK_PATH}


def test_passed_variables_come_through_and_a_passed_path_replaces_the_default() -> None:
    env = base_environment(("TOKEN", "PATH", "MISSING"), DAEMON)
    assert env == {"PATH": "/opt/tools/bin:/usr/bin", "LANG": "C.UTF-8", "TOKEN": "t"}


@pytest.mark.parametrize("name", ["", "A=B", "A\0B"])
def test_a_name_no_variable_can_have_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="environment variable name"):
        base_environment((name,), DAEMON)
