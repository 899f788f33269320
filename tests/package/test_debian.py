"""What the Debian package and the release take from the tree: one version, the
pinned dependencies, the packaged configuration file and the unit's condition.
scripts/package-test.sh builds, installs and purges the package itself."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import tomllib
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType

import pytest

from aiobfd.config import tomlfile

from .generator import ROOT

DEBIAN = ROOT / "debian"
EXAMPLE = ROOT / "contrib" / "aiobfd.toml"
UNIT = ROOT / "contrib" / "aiobfd.service"


def project() -> dict[str, object]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        table: dict[str, object] = tomllib.load(f)["project"]
    return table


def test_one_version_for_the_wheel_the_changelog_and_the_debian_package() -> None:
    version = str(project()["version"])
    upstream = subprocess.run(
        ["python3", str(DEBIAN / "upstream-version")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    match = re.match(r"^aiobfd \(([^)]+)-(\d+)\) ", first)
    assert match is not None, first
    assert match.group(1) == upstream, "debian/changelog's upstream version is not pyproject's"
    entry = re.search(r"^## (\S+) - \d{4}-\d\d-\d\d$", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert entry is not None and entry.group(1) == version, "CHANGELOG.md's last entry"
    for page in (ROOT / "man").glob("*.[58]"):
        assert f'"aiobfd {version}"' in page.read_text().splitlines()[0], page.name


@pytest.mark.parametrize(
    ("pep440", "debian"),
    [
        ("1.0.0", "1.0.0"),
        ("1.1.0rc1", "1.1.0~rc1"),
        ("1.1.0.dev0", "1.1.0~dev0"),
        ("2.0.0b2", "2.0.0~b2"),
    ],
)
def test_pre_releases_sort_first_in_debian(tmp_path: Path, pep440: str, debian: str) -> None:
    (tmp_path / "pyproject.toml").write_text(f'[project]\nversion = "{pep440}"\n')
    out = subprocess.run(
        ["python3", str(DEBIAN / "upstream-version")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == debian


def test_the_pinned_dependencies_satisfy_the_project() -> None:
    requirements = pytest.importorskip("packaging.requirements")
    pins = dict(re.findall(r"^([\w.-]+)==(\S+)", (DEBIAN / "requirements.txt").read_text(), re.M))
    dependencies = project()["dependencies"]
    assert isinstance(dependencies, list)
    wanted = {}
    for text in dependencies:
        req = requirements.Requirement(text)
        wanted[req.name] = req.specifier
    assert set(pins) == set(wanted), "debian/requirements.txt pins exactly the dependencies"
    for name, version in pins.items():
        assert wanted[name].contains(version), f"{name}=={version} is not {wanted[name]}"
    hashed = re.findall(
        r"^[\w.-]+==\S+ \\\n +--hash=sha256:[0-9a-f]{64}$",
        (DEBIAN / "requirements.txt").read_text(),
        re.M,
    )
    assert len(hashed) == len(pins), "each pin with its hash"


def conffile_script() -> ModuleType:
    """debian/aiobfd-conffile (a script: no .py to import it by)."""
    loader = SourceFileLoader("aiobfd_conffile", str(DEBIAN / "aiobfd-conffile"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def conffile() -> str:
    """/etc/aiobfd/aiobfd.toml as the package installs it."""
    text: str = conffile_script().conffile(EXAMPLE.read_text())
    return text


def test_the_packaged_configuration_is_valid_and_runs_no_session(tmp_path: Path) -> None:
    """/etc/aiobfd/aiobfd.toml as installed: the example with its peers and key files
    commented out, valid without any file or address of this host."""
    path = tmp_path / "aiobfd.toml"
    path.write_text(conffile())
    settings = tomlfile.load_config(str(path))
    assert settings.peers == () and settings.unsolicited is None
    example = tomllib.loads(EXAMPLE.read_text())
    packaged = tomllib.loads(path.read_text())
    assert packaged["daemon"] == example["daemon"] and packaged["defaults"] == example["defaults"]
    assert set(packaged["profiles"]) == set(example["profiles"])


def test_the_packaged_configuration_is_the_example_commented() -> None:
    """Taking '# ' off its commented tables gives the example back, line for line."""
    header: str = conffile_script().HEADER
    text = conffile()
    assert text.startswith(header)
    body = text.removeprefix(header).splitlines()
    example = EXAMPLE.read_text().splitlines()
    assert len(body) == len(example)
    for packaged, original in zip(body, example, strict=True):
        assert packaged in (original, "# " + original)
    assert (
        sum(line == "# [[peers]]" for line in body)
        == sum(line == "[[peers]]" for line in example)
        > 0
    )


def condition(config: Path) -> int:
    """The exit status of the unit's ExecCondition= for ``config``."""
    line = next(x for x in UNIT.read_text().splitlines() if x.startswith("ExecCondition="))
    argv = [
        a.replace("/etc/aiobfd/aiobfd.toml", str(config))
        for a in shlex.split(line.partition("=")[2])
    ]
    return subprocess.run(argv, check=False).returncode


@pytest.mark.parametrize(
    ("text", "starts"),
    [
        ("", False),
        ("[daemon]\nlog_level = 'INFO'\n# [[peers]]\n", False),
        ("[[peers]]\nremote = '192.0.2.1'\nlocal = '192.0.2.2'\n", True),
        ("  [[ peers ]]\n", True),
        ("[unsolicited]\nprefixes = ['192.0.2.0/24']\n", True),
        ("peers = [{remote = '192.0.2.1', local = '192.0.2.2'}]\n", True),
        ("[profiles.peers]\n", False),
    ],
)
def test_the_unit_starts_only_with_sessions_to_run(tmp_path: Path, text: str, starts: bool) -> None:
    path = tmp_path / "aiobfd.toml"
    path.write_text(text)
    assert condition(path) == (0 if starts else 1)


def test_the_unit_does_not_start_on_the_packaged_file_nor_without_one(tmp_path: Path) -> None:
    (tmp_path / "aiobfd.toml").write_text(conffile())
    assert condition(tmp_path / "aiobfd.toml") == 1
    assert condition(tmp_path / "missing.toml") != 0
    assert condition(EXAMPLE) == 0
