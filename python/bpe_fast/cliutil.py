"""What every bpe-fast command line shares (`bpe-fast`, `python -m gpt.*`, `python -m lora.*`): a user's
mistake gets one line on stderr that names the problem and the fix, exit status 2, never a traceback.

    from bpe_fast.cliutil import ArgumentParser, UserError, run_main, positive_int, finite_float

    def main(argv=None) -> int:
        parser = ArgumentParser(prog="python -m gpt.prepare", description=...)
        parser.add_argument("--lr", type=positive_float, default=6e-4, help=...)
        args = parser.parse_args(argv)
        ...
        raise UserError("--data shards/: no shards there; run python -m gpt.prepare first")

    if __name__ == "__main__":
        run_main(main, "python -m gpt.prepare")

Numeric argument types refuse NaN, infinities and out-of-range values while parsing, before any work.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, NoReturn, Optional, Sequence

from .files import DiskFullError, OverwriteRefused

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem with what the user gave (a path, a value, a missing prerequisite). Its message is one
    line that says what is wrong and how to fix it; entry points print it without a traceback."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, DiskFullError, OverwriteRefused)
"""Exceptions `run_main` reports in one line. Anything else is a bug and keeps its traceback."""


def one_line(error: BaseException) -> str:
    """The first line of an error's message, with the file name an OSError carries."""
    text = str(error).strip()
    message = text.splitlines()[0] if text else type(error).__name__
    filename = getattr(error, "filename", None)
    if isinstance(error, OSError) and filename is not None and str(filename) not in message:
        message = f"{filename}: {message}"
    return message


def fail(prog: str, message: str) -> NoReturn:
    """Prints `prog: error: message` and exits with status 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USER_ERROR)


def run_main(
    main: Callable[[Optional[Sequence[str]]], Optional[int]],
    prog: str,
    argv: Optional[Sequence[str]] = None,
    user_errors: tuple[type[BaseException], ...] = (),
) -> NoReturn:
    """Runs `main(argv)` and exits with its status; `USER_ERRORS` (plus `user_errors`) become one line
    and status 2, Ctrl-C a short notice and status 130."""
    try:
        status = main(argv)
    except USER_ERRORS + tuple(user_errors) as error:
        fail(prog, one_line(error))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    raise SystemExit(status or 0)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: `prog: error: message (see --help)` and status 2, without the
    usage block argparse prints first."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)


# ----------------------------------------------------------------------------------------------------
# numeric argument types (argparse `type=`): each refuses NaN, infinities and out-of-range values
# ----------------------------------------------------------------------------------------------------


def _number(text: str, kind: type) -> float:
    try:
        value = kind(text)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def bounded(
    kind: type = float,
    minimum: Optional[float] = None,
    maximum: Optional[float] = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> Callable[[str], float]:
    """An argparse type for a finite `kind` (int or float) within the given bounds."""

    def parse(text: str):
        value = _number(text, kind)
        low_ok = minimum is None or (value >= minimum if min_inclusive else value > minimum)
        high_ok = maximum is None or (value <= maximum if max_inclusive else value < maximum)
        if not (low_ok and high_ok):
            low = "" if minimum is None else ("[" if min_inclusive else "(") + f"{minimum}"
            high = "" if maximum is None else f"{maximum}" + ("]" if max_inclusive else ")")
            if minimum is not None and maximum is not None:
                rule = f"in {low}, {high}"
            elif minimum is not None:
                rule = f"{'>=' if min_inclusive else '>'} {minimum}"
            else:
                rule = f"{'<=' if max_inclusive else '<'} {maximum}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {rule}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


positive_int = bounded(int, minimum=1)
"""An integer >= 1."""
non_negative_int = bounded(int, minimum=0)
"""An integer >= 0."""
positive_float = bounded(float, minimum=0, min_inclusive=False)
"""A finite number > 0."""
non_negative_float = bounded(float, minimum=0)
"""A finite number >= 0."""
finite_float = bounded(float)
"""Any finite number."""
fraction = bounded(float, minimum=0, maximum=1, max_inclusive=False)
"""A finite number in [0, 1)."""
probability = bounded(float, minimum=0, maximum=1)
"""A finite number in [0, 1]."""


__all__ = [
    "EXIT_USER_ERROR",
    "USER_ERRORS",
    "ArgumentParser",
    "UserError",
    "bounded",
    "fail",
    "finite_float",
    "fraction",
    "non_negative_float",
    "non_negative_int",
    "one_line",
    "positive_float",
    "positive_int",
    "probability",
    "run_main",
]
