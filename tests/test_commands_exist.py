"""Every `instruct-course ...` command that a lesson, an exercise or a README shows exists: `--help` on its command
path (`instruct-course experiment judge --help`, `instruct-course bench peak --help`, ...) exits 0. Run in-process
(one import of the CLI), with the file and the text of each command that does not."""

import contextlib
import io
import re
from pathlib import Path

import nbformat
import pytest

from instruct_course.cli import main

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["nbs/**/*.ipynb", "exercises/*.ipynb", "README.md", "exercises/README.md", "bench/README.md"]
# `instruct-course` where a command starts: line start (in code), after `$ `, `!`, `bin/`, a backtick, a quote, `(`,
# `&&`, `;` or `|`; prose ("the instruct-course command", "# instruct-course") is not a command.
COMMAND = re.compile(r"(?:^[ \t]*|[$!`\"'(|;&/][ \t]*|bin/)instruct-course((?:[ \t]+[^\s`\"']+)*)", re.M)
WORD = re.compile(r"[a-z][a-z0-9-]*")


def _texts():
    "(where, text, is_code) for each notebook cell and markdown file to scan (notebook outputs are not scanned)."
    for pattern in SOURCES:
        for f in sorted(ROOT.glob(pattern)):
            rel = f.relative_to(ROOT)
            if "runs" in rel.parts or any(p.startswith((".", "_")) for p in rel.parts):
                continue
            if f.suffix == ".ipynb":
                for i, cell in enumerate(nbformat.read(f, as_version=4).cells):
                    yield f"{rel} cell {i}", cell.source, cell.cell_type == "code"
            else:
                yield str(rel), f.read_text(), False


def _code_spans(text: str) -> list[str]:
    "The fenced code blocks and the `inline code` of a markdown text."
    fenced = re.findall(r"```[^\n]*\n(.*?)```", text, re.S)
    rest = re.sub(r"```.*?```", "", text, flags=re.S)
    return fenced + re.findall(r"`([^`\n]+)`", rest)


def command_words(text: str, code: bool = False) -> list[tuple[str, ...]]:
    """The words after each `instruct-course` in a command position (in markdown, only in code): up to the first
    option, path or placeholder."""
    found = []
    for span in [text] if code else _code_spans(text):
        for m in COMMAND.finditer(span):
            words = []
            for tok in m.group(1).split():
                w = tok.rstrip("),.;:")
                if not WORD.fullmatch(w):
                    break
                words.append(w)
                if w != tok:  # "demo)" ends the command
                    break
            found.append(tuple(words))
    return found


def test_command_words_are_found_in_code_only():
    md = "The `instruct-course` command; `instruct-course bench peak --json`.\n```bash\ninstruct-course grade NB\n```"
    assert sorted(command_words(md)) == [(), ("bench", "peak"), ("grade",)]
    assert command_words("# instruct-course\nthe instruct-course developers") == []
    assert command_words("the instruct-course command: instruct-course demo", code=True) == []
    code = '!instruct-course self-instruct --n 5\nrun(["x"])  # see "instruct-course demo)"'
    assert command_words(code, code=True) == [
        ("self-instruct",),
        ("demo",),
    ]


def _mentions() -> dict[tuple[str, ...], list[str]]:
    "Command path -> where it is mentioned (file, and the text)."
    seen = {}
    for where, text, code in _texts():
        for words in command_words(text, code):
            seen.setdefault(words, []).append(f"{where}: instruct-course {' '.join(words)}")
    return seen


def _help_exit(words: tuple[str, ...]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([*words, "--help"])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, (err.getvalue() or out.getvalue()).strip().splitlines()[-1:]


def test_the_scan_finds_the_commands():
    mentions = _mentions()
    assert ("demo",) in mentions and ("grade",) in mentions, sorted(mentions)
    assert len(mentions) >= 5, sorted(mentions)


def test_every_mentioned_command_exists():
    bad = []
    for words, where in sorted(_mentions().items()):
        code, last = _help_exit(words)
        if code != 0:
            bad.append(
                f"instruct-course {' '.join(words)} --help exits {code} ({' '.join(last)}); mentioned in:\n  "
                + "\n  ".join(where[:5])
            )
    assert not bad, "commands mentioned in the course that do not exist:\n" + "\n".join(bad)


@pytest.mark.parametrize("words", [("self-instruct",), ("bench", "nope"), ("experiment", "nope")])
def test_a_missing_command_is_caught(words):
    assert _help_exit(words)[0] != 0
