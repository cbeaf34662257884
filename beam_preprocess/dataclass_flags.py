"""Command-line flags made from a config dataclass, so each default and its help exist once.

    @dataclasses.dataclass
    class ExportConfig:
        \"\"\"Options of `export`.

        Attributes:
          top_k: candidates returned by the serving signature.
        \"\"\"
        top_k: int = 5

    parser = argparse.ArgumentParser(prog="hccr-export")
    dataclass_flags.add_flags(parser, ExportConfig)   # --top-k TOP_K (default: 5), that help
    config = dataclass_flags.from_args(ExportConfig, parser.parse_args(argv))

One `--field-name` flag per field, its value stored under the field's name. The flag's type
comes from the annotation: `int`, `float`, `str` as themselves; `bool` as `--x/--no-x`;
`X | None` as X (the default None means "not given"); tuples and sequences as comma-separated
values (repeating the flag adds more) of the annotation's element type (text for a bare
`tuple`). The help is the field's entry in the `Attributes:` section (Google style) of the
class docstring. `check_flags` lists where a parser and a dataclass disagree, for the tests of
every `hccr-*` command.
"""
from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping

_ENTRY = re.compile(r"(\w+)\s*(?:\([^)]*\))?:\s*(.*)")  # "name: text" or "name (type): text"


def field_help(cls: type) -> dict[str, str]:
    """Field name -> help text, from the `Attributes:` section of the class docstring."""
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    if "Attributes:" not in lines:
        return {}
    helps: dict[str, list[str]] = {}
    entry_indent, name = None, None
    for line in lines[lines.index("Attributes:") + 1:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if entry_indent is None:
            entry_indent = indent
        if indent < entry_indent or indent == 0:
            break  # the section ended
        match = _ENTRY.fullmatch(line.strip())
        if indent == entry_indent and match:
            name = match.group(1)
            helps[name] = [match.group(2)]
        elif name is not None:
            helps[name].append(line.strip())
    # Help is plain text: drop the docstring's code quotes.
    return {name: " ".join(words).replace("`", "") for name, words in helps.items()}


def field_default(field: dataclasses.Field):
    """The field's default value (a fresh one for a default_factory), or dataclasses.MISSING."""
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


class _SequenceAction(argparse.Action):
    """Comma-separated values; the first use replaces the default, a repeated flag adds more."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, values if current is self.default else current + values)


def _split(element: Callable[[str], object]) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        return tuple(element(item.strip()) for item in text.split(",") if item.strip())
    parse.__name__ = f"comma-separated {element.__name__}"  # argparse's "invalid ... value"
    return parse


def _flag_kwargs(owner: str, hint) -> dict:
    """argparse keywords for a field annotated `hint`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(rest) == 1:
            hint = rest[0]
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
        return {"type": type(choices[0]), "choices": choices}
    if hint in (int, float, str):
        return {"type": hint}
    origin = typing.get_origin(hint) or hint
    if isinstance(origin, type) and issubclass(origin, collections.abc.Sequence):
        elements = typing.get_args(hint) or (str,)  # a bare `tuple` holds text
        element = elements[0]
        if element not in (int, float, str):
            raise TypeError(f"{owner}: no command-line flag for a sequence of {element!r}")
        return {"type": _split(element), "action": _SequenceAction}
    raise TypeError(f"{owner}: no command-line flag for the type {hint!r}; give add_flags a "
                    f"converters= entry for it, or exclude it")


def _help(text: str, flag: str, action, default) -> str:
    """The docstring's words, how a sequence is written, and the default as one would type it.

    A default of None or an empty sequence means "not given": the docstring says what then.
    """
    notes = []
    if action is _SequenceAction:
        notes.append("comma-separated, or repeat the flag")
    if action is argparse.BooleanOptionalAction:
        notes.append(f"default: {flag if default else '--no-' + flag[2:]}")
    elif isinstance(default, (tuple, list)):
        if default:
            notes.append(f"default: {','.join(str(item) for item in default)}")
    elif default is not None and default is not dataclasses.MISSING:
        notes.append(f"default: {default}")
    words = text.rstrip(".") + "".join(f" ({note})" for note in notes)
    return words.replace("%", "%%")  # argparse %-formats help texts


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *,
              exclude: Iterable[str] = (), names: Mapping[str, str] | None = None,
              converters: Mapping[str, Callable[[str], object]] | None = None,
              help_overrides: Mapping[str, str] | None = None) -> None:
    """Adds one flag per field of the dataclass `cls` to a parser or argument group.

    Args:
      parser: an `argparse.ArgumentParser` or one of its argument groups.
      cls: the config dataclass.
      exclude: fields that get no flag (set by the caller in `from_args(..., **extra)`).
      names: field -> flag, where the flag is not `--field-name` (e.g. {"out_dir": "--out"}).
      converters: field -> argparse type, for a field whose text the caller converts itself
        (e.g. `str`, to parse it after argparse; the default stays the field's).
      help_overrides: field -> help, where the command line needs other words than the
        docstring.

    Raises:
      TypeError: a field's annotation has no flag type (give `converters` or `exclude` it).
      ValueError: a field has no help (neither in the docstring nor in `help_overrides`).
    """
    hints = typing.get_type_hints(cls)
    helps = {**field_help(cls), **(help_overrides or {})}
    for field in dataclasses.fields(cls):
        if field.name in exclude or not field.init:
            continue
        owner = f"{cls.__name__}.{field.name}"
        default = field_default(field)
        if converters and field.name in converters:
            kwargs = {"type": converters[field.name]}
        else:
            kwargs = _flag_kwargs(owner, hints[field.name])
        if field.name not in helps:
            raise ValueError(f"{owner} has no help: add it to the Attributes: section of "
                             f"{cls.__name__}'s docstring")
        if default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        flag = (names or {}).get(field.name, "--" + field.name.replace("_", "-"))
        if kwargs.get("action") is _SequenceAction:
            kwargs["metavar"] = flag[2:].upper().replace("-", "_") + ",..."
        elif kwargs.get("action") is None and "choices" not in kwargs:
            kwargs["metavar"] = flag[2:].upper().replace("-", "_")
        text = _help(helps[field.name], flag, kwargs.get("action"), default)
        parser.add_argument(flag, dest=field.name, help=text, **kwargs)


def from_args(cls: type, args: argparse.Namespace, **extra):
    """The dataclass from parsed flags (stored under the field names), `extra` overriding."""
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(cls)
              if field.init and hasattr(args, field.name)}
    return cls(**{**values, **extra})


def check_flags(parser: argparse.ArgumentParser, cls: type, *,
                exclude: Iterable[str] = ()) -> list[str]:
    """Where `parser` and the dataclass `cls` disagree: a field without a flag (stored under
    its name), or a flag whose default differs from the field's. Empty when they agree."""
    # argparse has no public list of its arguments; `_actions` (groups included) is it. The
    # first flag of a field is its own; later ones (a `--quiet` for `progress`) are aliases.
    flags: dict[str, argparse.Action] = {}
    for action in parser._actions:
        flags.setdefault(action.dest, action)
    problems = []
    for field in dataclasses.fields(cls):
        if field.name in exclude or not field.init:
            continue
        action = flags.get(field.name)
        default = field_default(field)
        if action is None:
            problems.append(f"{cls.__name__}.{field.name}: no flag")
        elif default is not dataclasses.MISSING and action.default != default:
            problems.append(f"{cls.__name__}.{field.name}: flag {action.option_strings[0]} "
                            f"defaults to {action.default!r}, the field to {default!r}")
    return problems
