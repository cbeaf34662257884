"""Errors for people, tracebacks for bugs: the wrapper around every `hccr-*` entry point.

    @cli_errors.entry_point("hccr-eval")
    def main(argv=None) -> int:
        ...

A user error (a bad flag or config value, a missing file or split, data that does not match
its metadata) ends the command with one line, `PROG: error: MESSAGE`, and exit status 2. An
unexpected exception is a bug: its full traceback is printed, then one line asking for a
report, and the exit status is 70. `--debug` (anywhere before a `--`) or `HCCR_DEBUG=1` shows
the traceback of user errors too; a command that reports some errors itself (with its own
exit status) calls `show_traceback(error)` first.

Exit statuses shared by every command (each command's --help and README section list its own
extra ones, e.g. hccr-train's 3 for a NaN loss, hccr-preprocess's 1 for unaccounted records):

    0    success
    2    user error (one line)
    70   internal error, a bug (traceback)
    130  interrupted (Ctrl-C)
"""
from __future__ import annotations

import contextvars
import functools
import os
import sys
import traceback
from collections.abc import Callable

EXIT_USAGE = 2
EXIT_INTERNAL = 70  # EX_SOFTWARE in sysexits.h
EXIT_INTERRUPTED = 130
DEBUG_FLAG = "--debug"
DEBUG_ENV = "HCCR_DEBUG"


_DEBUG = contextvars.ContextVar("hccr_cli_debug", default=False)


class UserError(Exception):
    """An error the user can fix (its message says how); never a bug."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that report a user's mistake: our own, ValueError (the project's convention
    for invalid arguments, configs and data: `ValueError("... Received: ...")`), missing or
    forbidden files, and TensorFlow's file errors when TensorFlow is loaded."""
    types: list[type[BaseException]] = [UserError, ValueError, FileNotFoundError,
                                        FileExistsError, PermissionError, IsADirectoryError,
                                        NotADirectoryError]
    tf = sys.modules.get("tensorflow")
    errors = getattr(tf, "errors", None)
    if errors is not None:
        types += [errors.NotFoundError, errors.PermissionDeniedError]
    return tuple(types)


def debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """Whether `--debug` (before any `--`) or HCCR_DEBUG asks for tracebacks; argv without
    the flag."""
    end = argv.index("--") if "--" in argv else len(argv)
    debug = DEBUG_FLAG in argv[:end]
    kept = [word for word in argv[:end] if word != DEBUG_FLAG] + argv[end:]
    return debug or os.environ.get(DEBUG_ENV, "") not in ("", "0"), kept


def one_line(error: BaseException) -> str:
    """The error's message on one line (a KeyError's quotes dropped)."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    text = " ".join(str(text).split()) or type(error).__name__
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{error.filename}: {text}"
    return text


def show_traceback(error: BaseException, stream=None) -> None:
    """For a command that reports an error itself: its traceback, when --debug/HCCR_DEBUG
    asked for tracebacks (call it before printing the one line)."""
    if _DEBUG.get() or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        traceback.print_exception(error, file=stream or sys.stderr)


def report(prog: str, error: BaseException, debug: bool, stream=None) -> int:
    """Prints a caught exception for people (or for developers) and returns the exit status."""
    stream = stream or sys.stderr
    if isinstance(error, KeyboardInterrupt):
        print(f"{prog}: interrupted", file=stream, flush=True)
        return EXIT_INTERRUPTED
    if isinstance(error, user_error_types()):
        if debug:
            traceback.print_exception(error, file=stream)
        print(f"{prog}: error: {one_line(error)}", file=stream, flush=True)
        return EXIT_USAGE
    traceback.print_exception(error, file=stream)
    print(f"{prog}: internal error (a bug, not your input): {type(error).__name__}; please "
          f"report it with the traceback above", file=stream, flush=True)
    return EXIT_INTERNAL


def entry_point(prog: str) -> Callable:
    """Decorates a `main(argv=None) -> int`: user errors become one line and exit status 2,
    bugs keep their traceback (exit 70); `--debug` is taken out of argv before `main` sees it.
    """
    def decorate(main: Callable) -> Callable:
        @functools.wraps(main)
        def wrapped(argv=None) -> int:
            argv = list(sys.argv[1:] if argv is None else argv)
            debug, argv = debug_requested(argv)
            token = _DEBUG.set(debug)
            try:
                return main(argv)
            except SystemExit:
                raise  # argparse's usage errors and --help, and explicit exits
            except BaseException as error:  # noqa: BLE001 - sorted into user error or bug
                if isinstance(error, (GeneratorExit,)):
                    raise
                return report(prog, error, debug)
            finally:
                _DEBUG.reset(token)
        return wrapped
    return decorate
