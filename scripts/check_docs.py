"""Checks that the documentation stays true to the repository: README.md, CHANGELOG.md, CONTRIBUTING.md and
docs/*.md.

- Every relative link resolves: the file or folder exists, and a `#fragment` names a heading of the Markdown file
  it points into (GitHub's heading anchors).
- Every repository path written in code (`rules/suricata/README.md`, `samples/lab-quick/capture.pcap`, ...) exists.
- Every `packetclip` and `packetclip-train` command shown, in code blocks and in inline code, names commands the
  CLI has, options those commands take, and values their choices allow. Synopses are understood: `[--opt X]`,
  `a|b` alternatives, `PCAP...` placeholders.

Exit status 0 when everything holds, 1 otherwise (each problem printed as FILE:LINE: message). Run from anywhere:
`python scripts/check_docs.py`. It imports the two CLIs, so it needs the project installed with its extras.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import click

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "CHANGELOG.md", "CONTRIBUTING.md", "docs/*.md")
# Top-level folders whose paths, written in code, must exist.
REPO_DIRS = (
    "benchmarks",
    "docs",
    "reports",
    "rules",
    "samples",
    "scripts",
    "sidecar",
    "tests",
    "training",
    "zeek_scripts",
)
# Fenced blocks in these languages hold no shell commands.
NOT_SHELL = {"zeek", "json", "toml", "yaml", "python", "ini"}
# What was checked, for the closing line: a check that finds nothing to check must show it.
COUNTS = {"links": 0, "paths": 0, "commands": 0}
SHELL_OPERATORS = {"&&", "||", ";", "|", ">", ">>", "2>", "<", "&"}

LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^\s*```(\w*)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
COMMAND_START = re.compile(r"(?:^|(?<=\s)|(?<=&&)|(?<=;))(packetclip(?:-train)?)(?=\s)")
REPO_PATH = re.compile(rf"^(?:{'|'.join(REPO_DIRS)})/[\w./-]*$")


def documents() -> list[Path]:
    found: list[Path] = []
    for pattern in DOCUMENTS:
        found.extend(sorted(REPO_ROOT.glob(pattern)))
    return found


# --- Markdown ----------------------------------------------------------------------------------------------------


def split_code(text: str) -> Iterator[tuple[int, str, str | None]]:
    """(line number, line, fence language or None outside fenced blocks) for every line that is not a fence."""
    language: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        fence = FENCE.match(line)
        if fence:
            language = None if language is not None else fence.group(1).lower()
            continue
        yield number, line, language


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: inline markup and punctuation dropped, lower case, spaces to dashes."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for _, line, language in split_code(path.read_text()):
        match = HEADING.match(line) if language is None else None
        if not match:
            continue
        anchor = github_anchor(match.group(2))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        result.add(anchor if count == 0 else f"{anchor}-{count}")
    return result


def check_links(path: Path) -> list[str]:
    problems: list[str] = []
    for number, line, language in split_code(path.read_text()):
        if language is not None:
            continue
        prose = INLINE_CODE.sub("", line)
        for target in LINK.findall(prose):
            COUNTS["links"] += 1
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
                continue
            file_part, _, fragment = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(REPO_ROOT)}:{number}"
            if not resolved.exists():
                problems.append(f"{where}: link to {target}: {file_part} does not exist")
            elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
                problems.append(
                    f"{where}: link to {target}: no heading #{fragment} in {file_part or path.name}"
                )
    return problems


def check_paths(path: Path) -> list[str]:
    problems = []
    for number, line, language in split_code(path.read_text()):
        spans = INLINE_CODE.findall(line) if language is None else []
        for span in spans:
            candidate = span.strip()
            if not REPO_PATH.match(candidate):
                continue
            COUNTS["paths"] += 1
            if not (REPO_ROOT / candidate).exists():
                problems.append(f"{path.relative_to(REPO_ROOT)}:{number}: `{candidate}` does not exist")
    return problems


# --- commands ----------------------------------------------------------------------------------------------------


def command_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text from a `packetclip`/`packetclip-train` word on) for every command the file shows."""
    pending: tuple[int, str] | None = None
    for number, line, language in split_code(path.read_text()):
        if language is None:
            for span in INLINE_CODE.findall(line):
                for start in COMMAND_START.finditer(span):
                    yield number, span[start.start() :]
            continue
        if language in NOT_SHELL:
            continue
        code = re.sub(r"\s#.*$", "", line).rstrip()
        if pending is not None:  # a continued line
            code = f"{pending[1]} {code.strip()}"
            number = pending[0]
            pending = None
        if code.endswith("\\"):
            pending = (number, code[:-1])
            continue
        for start in COMMAND_START.finditer(code):
            yield number, code[start.start() :]


def options_of(command: click.Command) -> dict[str, click.Option]:
    found: dict[str, click.Option] = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for name in (*param.opts, *param.secondary_opts):
                found[name] = param
    return found


def takes_value(option: click.Option) -> bool:
    return not (option.is_flag or option.count)


def alternatives(token: str) -> list[str]:
    return [part for part in token.replace("\\|", "|").split("|") if part]


def is_placeholder(token: str) -> bool:
    """FILE, PCAP..., DIR|TAR, <name>, $VAR, ...: stands for a value, not a command name."""
    bare = token.strip("[]")
    return (
        bare in ("...", "…")
        or bare.endswith("...")
        or bare.startswith(("<", "$"))
        or bool(re.fullmatch(r"[A-Z][A-Z0-9_|\\]*", bare))
    )


def check_command(text: str, roots: dict[str, click.Group]) -> list[str]:
    """Problems with one command line (empty when it is one the CLI accepts)."""
    tokens = text.split()
    command: click.Command = roots[tokens[0]]
    path = [tokens[0]]
    problems = []
    index = 1
    while index < len(tokens):
        raw = tokens[index]
        if raw in SHELL_OPERATORS or raw.startswith(("2>", ">", "$(", "`")):
            break
        token = raw.strip("[]")
        index += 1
        if not token:
            continue
        options = options_of(command)
        if token.startswith("-") and token not in ("-", "--"):
            name = token.split("=", 1)[0]
            if name in ("-h", "--help"):
                continue
            option = options.get(name)
            if option is None:
                problems.append(f"`{' '.join(path)}` has no option {name}")
                continue
            if takes_value(option) and "=" not in token and index < len(tokens):
                value = tokens[index].strip("[]")
                index += 1
                if isinstance(option.type, click.Choice) and not is_placeholder(value):
                    for choice in alternatives(value):
                        if choice not in option.type.choices:
                            problems.append(f"`{' '.join(path)} {name}` does not take {choice!r}")
            continue
        if isinstance(command, click.Group):
            if is_placeholder(token):
                break
            names = alternatives(token)
            ctx = click.Context(command)
            unknown = [name for name in names if command.get_command(ctx, name) is None]
            if unknown:
                problems.append(f"`{' '.join(path)}` has no command {', '.join(unknown)}")
                break
            if len(names) > 1:
                break  # several commands named at once: each exists, their options cannot be told apart
            found = command.get_command(ctx, names[0])
            assert found is not None
            command = found
            path.append(names[0])
            continue
        # a positional argument of a command
    return problems


def check_commands(path: Path, roots: dict[str, click.Group]) -> list[str]:
    problems = []
    for number, text in command_lines(path):
        COUNTS["commands"] += 1
        for problem in check_command(text, roots):
            problems.append(f"{path.relative_to(REPO_ROOT)}:{number}: {problem}  [{text}]")
    return problems


def main() -> int:
    from packetclip.cli import cli
    from packetclip_training.cli import cli as train_cli

    roots: dict[str, click.Group] = {"packetclip": cli, "packetclip-train": train_cli}
    problems = []
    checked = documents()
    for path in checked:
        problems += check_links(path) + check_paths(path) + check_commands(path, roots)
    for problem in problems:
        print(problem)
    checks = ", ".join(f"{count} {what}" for what, count in COUNTS.items())
    print(
        f"check_docs: {len(checked)} documents, {checks} checked: {len(problems)} problems", file=sys.stderr
    )
    return 1 if problems or not all(COUNTS.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
