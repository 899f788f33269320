#!/usr/bin/env python3
"""The man pages and shell completions, generated from what they describe.

    .venv/bin/python scripts/gen-man-completions.py           # rewrite man/ and completions/
    .venv/bin/python scripts/gen-man-completions.py --check   # exit 1 naming what is stale

* aiobfd(8), aiobfdctl(8), aiobfd-exabgp(8): from the argument parsers
  (``build_parser()`` of aiobfd.cli, aiobfd.ctl, aiobfd.exabgp) by argparse-manpage,
  with the hand-written sections of man/include/PROG.8.inc (EXIT STATUS, FILES,
  EXAMPLES, SEE ALSO, ...) in argparse-manpage's include format;
* aiobfd.toml(5): from docs/configuration.md, the configuration reference, converted
  here (it uses headings, paragraphs, lists, code blocks and tables, nothing more),
  with man/include/aiobfd.toml.5.inc;
* completions/bash/PROG and completions/zsh/_PROG: from the same parsers by shtab.
  An option whose value is a file (metavar FILE or PATH) completes file names, one
  naming an environment variable completes variables, and aiobfdctl's PEER completes
  the peers of the running daemon (the hints are in aiobfd/ctl.py, the shell
  functions they name here).

The files are committed so that a wheel or a Debian package is built without these
tools; tests/package/test_generated.py fails when they differ from what this script
makes.  The output depends on the sources only: the date and version are the
release's (CHANGELOG.md, pyproject.toml), the parsers are built as root sees them
(default control socket /run/aiobfd/aiobfd.sock) and help is wrapped at 80 columns.
Needs the runtime dependencies, argparse-manpage and shtab (the ``test`` extra,
which pins their versions) and Python 3.11, CI's: argparse words usage and help a
little differently in later versions.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
MAN = ROOT / "man"
INCLUDE = MAN / "include"
COMPLETIONS = ROOT / "completions"
REFERENCE = ROOT / "docs" / "configuration.md"

#: program, module with build_parser(), man page section
PROGRAMS = (
    ("aiobfd", "aiobfd.cli"),
    ("aiobfdctl", "aiobfd.ctl"),
    ("aiobfd-exabgp", "aiobfd.exabgp"),
)
MANUAL = "System Manager's Manual"
FILE_MANUAL = "File Formats Manual"

#: Completion of values that are files, and of environment variable names.
FILE = {"bash": "_shtab_compgen_files", "zsh": "_files"}
VARIABLE = {"bash": "_aiobfd_variables", "zsh": "_aiobfd_variables"}
FILE_METAVARS = {"FILE", "PATH"}
#: Options that take a file without saying so in their metavar.
FILE_DESTS = {"log_file", "log_sock"}
VARIABLE_METAVARS = {"NAME"}

BASH_PREAMBLE = r"""
# Environment variable names (--auth-key-env, --hook-pass-env).
_aiobfd_variables() {
  compgen -e -- "$1"
}

# The peers of the running daemon, for aiobfdctl's PEER: asked with
# `aiobfdctl --json show sessions`, on the -s/--socket given on the line.
_aiobfdctl_peers() {
  local i socket=() peers
  for ((i = 1; i < COMP_CWORD; i++)); do
    case ${COMP_WORDS[i]} in
      -s | --socket) socket=(--socket "${COMP_WORDS[i + 1]}") ;;
      --socket=*) socket=("${COMP_WORDS[i]}") ;;
    esac
  done
  peers=$(timeout 2 "${COMP_WORDS[0]}" "${socket[@]}" --json show sessions 2>/dev/null |
    sed -n 's/^ *"peer": "\([^"]*\)".*/\1/p')
  compgen -W "$peers" -- "$1"
}
""".strip("\n")

#: Bash splits the words of a line at the characters of COMP_WORDBREAKS, ':' and
#: '=' among them, which cuts IPv6 addresses apart: shtab's parser then counts the
#: pieces as arguments.  The function registered for PROG hands it the words as
#: typed (split at blanks) and trims what bash keeps before a ':' off the answers.
BASH_WRAPPER = r"""
# Words as typed: COMP_WORDBREAKS (':' and '=') would cut IPv6 addresses apart.
_{name}_complete() {{
  local line=${{COMP_LINE:0:COMP_POINT}}
  local -a COMP_WORDS
  read -r -a COMP_WORDS <<<"$line"
  [[ $line == *[[:blank:]] || ${{#COMP_WORDS[@]}} -eq 0 ]] && COMP_WORDS+=("")
  local COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))
  {function}
  local cur=${{COMP_WORDS[COMP_CWORD]}} i
  if [[ $cur == *:* && $COMP_WORDBREAKS == *:* ]]; then
    local keep=${{cur%"${{cur##*:}}"}}
    for i in "${{!COMPREPLY[@]}}"; do COMPREPLY[i]=${{COMPREPLY[i]#"$keep"}}; done
  fi
}}
complete -o bashdefault -F _{name}_complete {prog}
""".strip("\n")

ZSH_PREAMBLE = r"""
# Environment variable names (--auth-key-env, --hook-pass-env).
_aiobfd_variables() {
  _parameters -g '*export*'
}

# The peers of the running daemon, for aiobfdctl's PEER: asked with
# `aiobfdctl --json show sessions`, on the -s/--socket given on the line.
_aiobfdctl_peers() {
  local -a socket peers
  local i
  for ((i = 2; i < CURRENT; i++)); do
    case $words[i] in
      (-s|--socket) socket=(--socket "${(Q)words[i+1]}") ;;
      (--socket=*) socket=("${(Q)words[i]}") ;;
    esac
  done
  peers=(${(f)"$(timeout 2 $words[1] $socket --json show sessions 2>/dev/null |
    sed -n 's/^ *"peer": "\([^"]*\)".*/\1/p')"})
  compadd -a peers
}
""".strip("\n")


def project() -> dict[str, object]:
    """pyproject.toml's [project] table."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        table: dict[str, object] = tomllib.load(f)["project"]
    return table


def release_date(version: str) -> str:
    """The date of ``version``'s entry in CHANGELOG.md (``## 1.0.0 - 2026-12-07``)."""
    text = (ROOT / "CHANGELOG.md").read_text()
    match = re.search(rf"^## \[?{re.escape(version)}\]? - (\d{{4}}-\d\d-\d\d)$", text, re.M)
    if match is None:
        raise SystemExit(f"CHANGELOG.md has no entry '## {version} - YYYY-MM-DD'")
    return match.group(1)


def build_parsers() -> dict[str, argparse.ArgumentParser]:
    """Each program's parser as root sees it."""
    sys.path.insert(0, str(ROOT / "src"))
    parsers = {}
    with mock.patch("os.geteuid", return_value=0):
        for prog, module in PROGRAMS:
            parser: argparse.ArgumentParser = importlib.import_module(module).build_parser()
            parser.prog = prog
            parsers[prog] = parser
    return parsers


def walk(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parser and its subcommands' parsers, depth first."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from walk(sub)


def with_value_hints(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Completion hints for values that are files or variable names, where the code
    has none."""
    for each in walk(parser):
        for action in each._actions:
            if hasattr(action, "complete") or not action.option_strings or action.nargs == 0:
                continue
            if action.metavar in FILE_METAVARS or action.dest in FILE_DESTS:
                action.complete = FILE  # type: ignore[attr-defined]
            elif action.metavar in VARIABLE_METAVARS:
                action.complete = VARIABLE  # type: ignore[attr-defined]
    return parser


# ------------------------------------------------------------------ roff


def ascii_roff(text: str) -> str:
    """Non-ASCII characters as roff escapes (man pages stay ASCII)."""
    return "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in text)


def tidy(page: str) -> str:
    """Roff as man(7) wants it: outside no-fill blocks a blank line becomes .PP
    (where it is not redundant) and leading blanks go (argparse's wrapped usage
    would break lines there); ASCII only; one trailing newline."""
    out: list[str] = []
    literal = False
    for line in page.splitlines():
        if literal:
            literal = line != ".fi"
            out.append(line)
            continue
        line = line.strip()
        if line == ".nf":
            literal = True
        if not line:
            line = ".PP"
        if line in (".PP", ".TP", ".SH", ".SS") or line.startswith((".SH ", ".SS ")):
            while out and out[-1] == ".PP":  # a paragraph that is ended at once
                out.pop()
        if line == ".PP" and out and out[-1].startswith((".SH", ".SS", ".TP", ".IP")):
            continue
        out.append(line)
    while out and out[-1] == ".PP":
        out.pop()
    return ascii_roff("\n".join(out)) + "\n"


def program_page(
    prog: str, parser: argparse.ArgumentParser, meta: dict[str, object], date: str
) -> str:
    from argparse_manpage.manpage import Manpage  # type: ignore[import-untyped]

    # NAME takes the parser's description; DESCRIPTION is the include file's.
    summary = (parser.description or "").strip().rstrip(".")
    first_word = summary.split(" ", 1)[0]
    if first_word[1:].islower():  # "Show" -> "show", "ExaBGP" stays
        summary = summary[:1].lower() + summary[1:]
    parser.description = None
    for group in parser._action_groups:
        if group is parser._positionals:
            has_commands = any(
                isinstance(a, argparse._SubParsersAction) for a in group._group_actions
            )
            group.title = "commands" if has_commands else "arguments"
    urls = meta.get("urls")
    data = {
        "prog": prog,
        "description": summary,
        "project_name": "aiobfd",
        "version": meta["version"],
        "date": date,
        "manual_section": 8,
        "manual_title": MANUAL,
        "include": str(INCLUDE / f"{prog}.8.inc"),
        "authors": [author["name"] for author in meta.get("authors", [])],  # type: ignore[attr-defined]
        "url": urls.get("Homepage") if isinstance(urls, dict) else None,
    }
    page = str(Manpage(parser, data, format="single-commands-section"))
    # argparse-manpage writes an empty ".SH" line before the commands' title.
    page = page.replace(".SH\nCOMMANDS", ".SH COMMANDS")
    return tidy(page)


# ------------------------------------------------------------------ markdown to roff


def _inline(text: str) -> str:
    """Markdown's inline marks in roff: `code` and **strong** bold, links as text."""
    out = []
    # **strong** first: it may hold a code span (\x01 and \x02 mark it for now).
    text = re.sub(r"\*\*(.+?)\*\*", "\x01\\1\x02", text)
    for i, part in enumerate(re.split(r"(`[^`]*`)", text)):
        if i % 2:  # a code span: literal
            code = part[1:-1].replace("\\", "\\e").replace("-", r"\-")
            if len(code) > 40:  # a long path list: may break after ':' (or fill fails)
                code = code.replace(":", r":\:")
            out.append(r"\fB" + code + r"\fR")
            continue
        part = part.replace("\\|", "|").replace("\\", "\\e")
        part = re.sub(r"\[([^\]]+)\]\((https?://[^)]+)\)", r"\1 (\2)", part)
        part = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", part)
        out.append(part)
    return "".join(out).replace("\x01", r"\fB").replace("\x02", r"\fR")


def _text_lines(text: str) -> list[str]:
    """A paragraph's text as roff lines: none may start with '.' or "'"; one with a
    long literal (a path list) is not justified, which would fail around it."""
    line = _inline(text)
    lines = [("\\&" + line) if line[:1] in (".", "'") else line]
    if any(len(code) > 40 for code in re.findall(r"`([^`]*)`", text)):
        lines = [".na", *lines, ".ad"]
    return lines


def _heading(text: str) -> str:
    """A section title in capitals, except the literal parts (table names)."""
    parts = re.split(r"(`[^`]*`)", text)
    title = "".join(p[1:-1] if i % 2 else p.upper() for i, p in enumerate(parts))
    return '"' + title.replace('"', "") + '"'


def _cells(row: str) -> list[str]:
    row = row.strip()
    return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip("|"))]


def _table(rows: list[str]) -> list[str]:
    """A table of keys as a list of tagged paragraphs: the key, then its type,
    unit and default, then what it means."""
    header = [h.lower() for h in _cells(rows[0])]
    out = []
    for row in rows[2:]:
        cells = _cells(row)
        out += [".TP", _inline(cells[0])]
        facts = []
        for name, cell in zip(header[1:-1], cells[1:-1], strict=True):
            if cell:
                facts.append(
                    _inline(cell) if name in ("type", "unit") else f"{name}: {_inline(cell)}"
                )
        if facts:
            out += [", ".join(facts), ".br"]
        out += _text_lines(cells[-1])
    return out


def markdown_to_roff(markdown: str) -> tuple[str, list[str]]:
    """docs/configuration.md as roff: its first paragraph(s) (before the first
    section) and the lines of the rest."""
    lines = markdown.splitlines()
    out: list[str] = []
    paragraph: list[str] = []
    in_list = False

    def flush() -> None:
        nonlocal paragraph
        if paragraph:
            out.extend(_text_lines(" ".join(paragraph)))
            paragraph = []

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if line.startswith("```"):
            flush()
            block = []
            i += 1
            while not lines[i].startswith("```"):
                block.append(lines[i])
                i += 1
            out += [".PP" if not in_list else ".IP", ".RS 4" if not in_list else ".RS 2", ".nf"]
            for code in block:
                code = code.replace("\\", "\\e").replace("-", r"\-")
                out.append(("\\&" + code) if code[:1] in (".", "'") else code)
            out += [".fi", ".RE"]
        elif line.startswith("# "):
            flush()
        elif line.startswith("## "):
            flush()
            in_list = False
            out.append(".SH " + _heading(line[3:]))
        elif line.startswith("### "):
            flush()
            in_list = False
            out.append(".SS " + _heading(line[4:]))
        elif stripped.startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(lines[i])
                i += 1
            out += _table(rows)
            in_list = False
            continue
        elif re.match(r"^[*-] ", line) or re.match(r"^\d+\. ", line):
            flush()
            marker, _, rest = line.partition(" ")
            out.append(r".IP \(bu 2" if marker in ("*", "-") else f".IP {marker} 4")
            paragraph = [rest]
            in_list = True
        elif not stripped:
            flush()
            if i + 1 < len(lines) and lines[i + 1].strip() and not lines[i + 1].startswith("#"):
                nxt = lines[i + 1]
                if not (re.match(r"^([*-]|\d+\.) ", nxt) or nxt.lstrip().startswith("|")):
                    out.append(".PP")
                    in_list = False
        else:
            paragraph.append(stripped)
        i += 1
    flush()
    # The description: what precedes the first section.
    first = next(n for n, line in enumerate(out) if line.startswith(".SH "))
    return "\n".join(out[:first]), out[first:]


def config_page(meta: dict[str, object], date: str) -> str:
    description, body = markdown_to_roff(REFERENCE.read_text())
    include = (INCLUDE / "aiobfd.toml.5.inc").read_text()
    sections = dict(re.findall(r"^\[([A-Z ]+)\]\n(.*?)(?=^\[|\Z)", include, re.M | re.S))
    head = [
        f'.TH AIOBFD.TOML "5" "{date}" "aiobfd {meta["version"]}" "{FILE_MANUAL}"',
        ".SH NAME",
        r"aiobfd.toml \- configuration file of aiobfd(8)",
        ".SH SYNOPSIS",
        sections.pop("SYNOPSIS").strip(),
        ".SH DESCRIPTION",
        description.removeprefix(".PP\n"),
    ]
    tail = [f".SH {name}\n{content.strip()}" for name, content in sections.items()]
    return tidy("\n".join([*head, *body, *tail]))


# ------------------------------------------------------------------ completions


def bash_completion(prog: str, parser: argparse.ArgumentParser) -> str:
    import shtab

    name = prog.replace("-", "_")
    script: str = shtab.complete(parser, "bash", preamble=BASH_PREAMBLE)
    registration = f"complete -o bashdefault -F _shtab_{name} {prog}"
    assert script.rstrip().endswith(registration), "shtab's registration line moved"
    wrapper = BASH_WRAPPER.format(name=name, prog=prog, function=f"_shtab_{name}")
    return script.rstrip()[: -len(registration)] + wrapper + "\n"


def zsh_completion(prog: str, parser: argparse.ArgumentParser) -> str:
    import shtab

    script: str = shtab.complete(parser, "zsh", preamble=ZSH_PREAMBLE)
    return script.rstrip() + "\n"


# ------------------------------------------------------------------ all of it


def generate() -> dict[Path, str]:
    """Every generated file and its content, whatever the terminal's width."""
    with mock.patch.dict(os.environ, {"COLUMNS": "80"}):
        return _generate()


def _generate() -> dict[Path, str]:
    meta = project()
    version = str(meta["version"])
    date = release_date(version)
    files: dict[Path, str] = {}
    for prog, parser in build_parsers().items():
        with_value_hints(parser)
        files[COMPLETIONS / "bash" / prog] = bash_completion(prog, parser)
        files[COMPLETIONS / "zsh" / f"_{prog}"] = zsh_completion(prog, parser)
    # The man pages change the parsers (titles, descriptions): after the completions.
    for prog, parser in build_parsers().items():
        files[MAN / f"{prog}.8"] = program_page(prog, parser, meta, date)
    files[MAN / "aiobfd.toml.5"] = config_page(meta, date)
    return files


def stale(files: dict[Path, str]) -> list[Path]:
    return [p for p, text in files.items() if not p.exists() or p.read_text() != text]


def main(argv: list[str] | None = None, write: Callable[[Path, str], object] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say which files are stale")
    args = parser.parse_args(argv)
    files = generate()
    old = stale(files)
    if args.check:
        for path in old:
            print(f"{path.relative_to(ROOT)} is stale: run scripts/gen-man-completions.py")
        return 1 if old else 0
    for path in old:
        path.parent.mkdir(parents=True, exist_ok=True)
        (write or Path.write_text)(path, files[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
