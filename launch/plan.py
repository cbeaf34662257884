"""What every launcher renders: a `Plan` (a script or manifest the user can keep, and the one
command that runs or submits it), plus the helpers that write readable shell scripts and name
their jobs and files.

The same text is printed by `--dry-run`, written by `--out FILE`, and executed or submitted
otherwise: what a user reads is exactly what runs.
"""
from __future__ import annotations

import dataclasses
import re
import shlex
import textwrap
import unicodedata
from collections.abc import Iterable, Sequence

from launch.errors import LaunchError

FILE = "{file}"  # stands for the written script/manifest in `Plan.submit`
WIDTH = 92       # wrap rendered commands at about this many columns


class Raw(str):
    """A shell word written as is, not quoted: a `"$VARIABLE"` the script expands at run time."""


@dataclasses.dataclass(frozen=True)
class Requirement:
    """Something that must be present to run or submit a plan, checked before anything starts.

    kind: "program" (on PATH), "module" (importable by this Python), or "endpoint" (a
    host:port that accepts a TCP connection). `why` is shown when it is missing.
    """
    kind: str
    name: str
    why: str


@dataclasses.dataclass(frozen=True)
class Plan:
    """A rendered job.

    Attributes:
      launcher: which launcher rendered it ("local", "horovod", "slurm", ...).
      text: the script or manifest, complete and commented.
      filename: the name it gets when the user does not choose one with `--out`.
      submit: the command that runs or submits the file; `FILE` stands for its path.
      requires: what `submit` needs, checked before it starts.
    """
    launcher: str
    text: str
    filename: str
    submit: tuple[str, ...]
    requires: tuple[Requirement, ...] = ()

    def submit_argv(self, path: str) -> list[str]:
        return [path if word == FILE else word for word in self.submit]

    def dry_run_text(self, path: str | None = None) -> str:
        """The file's text, then (as a comment, so it stays a valid file) how it is run."""
        path = path or self.filename
        return (self.text.rstrip("\n") + "\n\n# hccr-launch would run: "
                + shlex.join(self.submit_argv(path)) + "\n")


# === Shell text ===


def check_printable(value, what: str = "a value") -> str:
    """`value` as text, refused when it holds a control or line-break character.

    Every value a launcher renders passes here (argv words, comment lines, #SBATCH options,
    YAML strings): a newline would otherwise end a comment or `#SBATCH` line and start a
    shell command, or a new YAML key. Quoting stays as it is for everything else.

    Raises:
      LaunchError: naming the value, the character and its position.
    """
    text = str(value)
    for position, char in enumerate(text):
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            raise LaunchError(f"{what} {text!r} contains the control character {char!r} at "
                              f"position {position}: values rendered into a script or manifest "
                              f"must be printable")
    return text


def quote(word: str) -> str:
    if isinstance(word, Raw):
        return str(word)  # written by the launchers (e.g. a multi-line `bash -c` body)
    return shlex.quote(check_printable(word, "argument"))


def _groups(words: Sequence[str]) -> list[str]:
    """Quoted words grouped so that a flag stays on the same line as its values."""
    groups: list[str] = []
    for word in words:
        text = quote(word)
        if groups and not str(word).startswith("-"):
            groups[-1] += " " + text
        else:
            groups.append(text)
    return groups


def format_command(*segments: Sequence[str], prefix: str = "", width: int = WIDTH,
                   indent: str = "    ") -> str:
    """A shell command as readable text: each segment starts a new line (the launcher, then
    the training command), long segments wrap before a flag; lines end with a backslash."""
    lines: list[str] = []
    for number, segment in enumerate(s for s in segments if s):
        current = prefix if number == 0 else indent
        fresh = True
        for group in _groups(segment):
            # A group may span lines (a quoted multi-line word): measure where it meets text.
            if not fresh and (len(current.rsplit("\n", 1)[-1]) + 1
                              + len(group.split("\n", 1)[0])) > width:
                lines.append(current)
                current, fresh = indent + group, False
                continue
            current = current + group if fresh else current + " " + group
            fresh = False
        lines.append(current)
    return " \\\n".join(lines)


def comments(text: str, indent: str = "") -> list[str]:
    """`# ` comment lines, each paragraph line wrapped at WIDTH."""
    lines = []
    for line in text.splitlines():
        wrapped = textwrap.wrap(line, WIDTH - len(indent) - 2, break_on_hyphens=False,
                                break_long_words=False)
        lines += [f"{indent}# {part}" for part in wrapped] or [f"{indent}#"]
    return lines


def header(summary: str, origin: str | None, usage: str,
           shebang: str = "#!/usr/bin/env bash") -> list[str]:
    """The first lines of a generated script: what it is, where it came from, how to use it."""
    lines = [shebang] if shebang else []
    lines += comments(summary)
    if origin:
        lines.append(f"# Generated by: {check_printable(origin, 'the command line')}")
    lines += comments(usage)
    return lines


def section(title: str, *notes: str) -> list[str]:
    """A blank line, a `# --- title ---` rule and the comment lines explaining the part."""
    rule = f"# --- {title} "
    lines = ["", rule + "-" * max(3, WIDTH - len(rule))]
    for text in notes:
        lines += comments(text)
    return lines


def setup_lines(setup: Iterable[str],
                note: str = "hccr-train, horovodrun and their libraries must be on PATH here "
                            "(and on every node).") -> list[str]:
    """The user's environment set-up (activate a venv, `module load ...`), or a note."""
    setup = [check_printable(line, "--setup line") for line in setup if line]
    lines = section("Python environment", note)
    if setup:
        lines += setup
    else:
        lines.append("# (none: the environment that runs this script is used as it is)")
    return lines


def script(lines: Iterable[str]) -> str:
    return "\n".join(lines).rstrip("\n") + "\n"


# === Names ===


def dns_name(*parts: str, limit: int = 63) -> str:
    """A Kubernetes object name (DNS-1123 label): lowercase letters, digits and '-'."""
    name = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
    return name[:limit].rstrip("-") or "hccr"


def file_stem(*parts: str) -> str:
    """A file name stem from parts: letters, digits, '.', '_' and '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts)).strip("-") or "hccr"


def image_build_command(tag: str = "REGISTRY/hccr:0.1.0") -> str:
    """How to build the image for cluster jobs (Kubernetes pods, Beam workers) from a checkout's
    root: launch/docker/Dockerfile."""
    return f"docker build -f launch/docker/Dockerfile -t {tag} ."
