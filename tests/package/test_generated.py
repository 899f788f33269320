"""The man pages and completions are what scripts/gen-man-completions.py makes
of the current code, and the configuration reference they come from names
exactly the keys the configuration file accepts.

When a parser or docs/configuration.md changes, regenerate with
``.venv/bin/python scripts/gen-man-completions.py`` and commit man/ and
completions/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from aiobfd.config import ConfigError, tomlfile

from .generator import ROOT, load

REFERENCE = ROOT / "docs" / "configuration.md"


#: The Python the committed files are made with, CI's: argparse words usage and
#: help a little differently from one version to the next.
PYTHON = (3, 11)


def generated() -> dict[Path, str]:
    if sys.version_info[:2] != PYTHON:
        pytest.skip(
            f"the man pages and completions are generated with Python {PYTHON[0]}.{PYTHON[1]}"
        )
    pytest.importorskip("argparse_manpage")
    pytest.importorskip("shtab")
    files: dict[Path, str] = load().generate()
    return files


def test_man_pages_and_completions_are_current() -> None:
    files = generated()
    stale = [
        str(p.relative_to(ROOT))
        for p, text in files.items()
        if not p.exists() or p.read_text() != text
    ]
    assert not stale, f"stale: {stale}; run .venv/bin/python scripts/gen-man-completions.py"


def test_generation_does_not_depend_on_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another user, terminal width or runtime directory gives the same files."""
    first = generated()
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/nonexistent")
    assert load().generate() == first


def test_the_generated_files_are_the_ones_installed() -> None:
    """The wheel's data files and the Debian package's lists name each generated file."""
    files = {str(p.relative_to(ROOT)) for p in generated()}
    with open(ROOT / "pyproject.toml", "rb") as f:
        data_files = tomllib.load(f)["tool"]["setuptools"]["data-files"]
    assert {name for names in data_files.values() for name in names} == files
    for target, names in data_files.items():
        for name in names:
            section = re.search(r"\.(\d)$", name)
            if section:
                assert target == f"share/man/man{section.group(1)}"
    debian = (ROOT / "debian" / "aiobfd.manpages").read_text().split()
    debian += [
        line.split()[0] for line in (ROOT / "debian" / "aiobfd.install").read_text().splitlines()
    ]
    assert files <= set(debian)


def test_every_option_is_in_its_man_page() -> None:
    generated()
    gen = load()
    for prog, parser in gen.build_parsers().items():
        page = (ROOT / "man" / f"{prog}.8").read_text()
        for each in gen.walk(parser):
            for action in each._actions:
                for option in action.option_strings:
                    if option not in ("-h", "--help"):
                        assert "\\fB" + option.replace("-", "\\-") + "\\fR" in page, (prog, option)


def test_man_pages_render_without_warnings() -> None:
    if shutil.which("man") is None:
        pytest.skip("no man(1)")
    for page in sorted((ROOT / "man").glob("*.[58]")):
        result = subprocess.run(
            ["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", str(page)],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "MANWIDTH": "80"},
            check=True,
        )
        assert result.stderr == "", (page.name, result.stderr)
        assert page.read_text().isascii(), page.name


def test_completion_scripts_parse_and_define_what_they_call() -> None:
    for script in sorted((ROOT / "completions" / "bash").iterdir()):
        subprocess.run(["bash", "-n", str(script)], check=True)
        text = script.read_text()
        for function in set(re.findall(r"_COMPGEN=(\w+)", text)):
            assert re.search(rf"^{function}\(\) \{{", text, re.M), (script.name, function)
        assert re.search(rf"^complete .* {re.escape(script.name)}$", text, re.M)
    for script in sorted((ROOT / "completions" / "zsh").iterdir()):
        if shutil.which("zsh"):
            subprocess.run(["zsh", "-n", str(script)], check=True)
        text = script.read_text()
        assert text.startswith(f"#compdef {script.name[1:]}\n")
        for function in set(re.findall(r":(_aiobfd\w*)\"$", text, re.M)):
            assert re.search(rf"^{function}\(\) \{{", text, re.M), (script.name, function)


# ------------------------------------------------------------------ the reference


def reference_keys() -> dict[str, set[str]]:
    """The keys in the tables of each section of docs/configuration.md."""
    keys: dict[str, set[str]] = {}
    section = ""
    for line in REFERENCE.read_text().splitlines():
        heading = re.match(r"^#{2,3} (.*)", line)
        if heading:
            section = heading.group(1)
        elif line.startswith("| `"):
            keys.setdefault(section, set()).add(line.split("|")[1].strip().strip("`"))
    return keys


def section(keys: dict[str, set[str]], start: str) -> set[str]:
    found = [v for k, v in keys.items() if k.startswith(start)]
    assert len(found) == 1, f"docs/configuration.md: no one section '{start}...' with a table"
    return found[0]


def test_the_reference_names_the_keys_the_file_accepts() -> None:
    """aiobfd.toml(5) is docs/configuration.md: its tables must list every key the
    loader accepts, and no other."""
    keys = reference_keys()
    assert section(keys, "`[daemon]`") == tomlfile.DAEMON_KEYS
    assert section(keys, "Session settings") == tomlfile.SESSION_KEYS
    assert section(keys, "Peers only") == tomlfile.PEER_KEYS - tomlfile.SESSION_KEYS
    assert section(keys, "`[dampening]`") == tomlfile.DAMPENING_KEYS
    assert section(keys, "`[unsolicited]`") == tomlfile.UNSOLICITED_KEYS
    auth = section(keys, "Authentication")
    assert {k for k in auth if "." not in k} == {"type", "keys", "transmit_key_id"}
    assert {k.split(".")[1] for k in auth if "." in k} == {"id", "file", "env"}


def test_the_documented_authentication_keys_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "bfd.key").write_text("secret\n")
    auth = {
        "type": "keyed-sha1",
        "keys": [{"id": 1, "file": "bfd.key"}, {"id": 2, "env": "BFD_KEY"}],
        "transmit_key_id": 2,
    }
    settings = tomlfile.parse_config(
        {"defaults": {"auth": auth}}, str(tmp_path / "aiobfd.toml"), {"BFD_KEY": "other"}
    )
    assert settings.peers == ()
    with pytest.raises(ConfigError, match="unknown"):
        tomlfile.parse_config({"defaults": {"auth": {**auth, "typo": 1}}}, "x", {"BFD_KEY": "k"})
