"""How the command line reports what goes wrong: one line on stderr, and an exit code.

The library's own errors (:class:`~optuna_diffusion.errors.OptunaDiffusionError`, code 2, or the error's
``exit_code``) go through :func:`one_line_errors`, the option errors of Typer and Click (code 2) through
:class:`OneLineErrors`; ``--debug`` (:func:`show_tracebacks`) shows the traceback behind a library error.
A first Ctrl-C during ``optimize`` stops the search cleanly, a second exits at once; a library thread's
failure is one warning line.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import traceback
from typing import Any, Callable

import typer
from typer.core import TyperGroup

from .errors import OptunaDiffusionError, first_line

_debug = False


def show_tracebacks(debug: bool) -> None:
    """Whether :func:`one_line_errors` also prints the traceback behind a library error (``--debug``)."""
    global _debug
    _debug = debug


class OneLineErrors(TyperGroup):
    """Typer's group, with its usage errors (a bad option value, a missing argument) as one line."""

    def main(
        self, args: Any = None, prog_name: Any = None, complete_var: Any = None, standalone_mode: bool = True, **extra: Any
    ) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as error:  # Typer's (vendored Click's) usage and parameter errors
            message = " ".join(error.format_message().split())
            if message:  # empty after a help page shown for a command given without arguments
                typer.echo(f"error: {message}", err=True)
            if not standalone_mode:
                raise
            sys.exit(error.exit_code)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            if not standalone_mode:
                raise
            sys.exit(1)
        if standalone_mode:
            sys.exit(result if isinstance(result, int) else 0)
        return result


def one_line_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into ``error: ...`` on stderr and exit code 2 (or the error's ``exit_code``)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except OptunaDiffusionError as error:
            if _debug:
                traceback.print_exc()
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(code=getattr(error, "exit_code", 2)) from None

    return wrapper


def positive(name: str, value: float | None) -> None:
    """Refuse a non-positive ``value`` of option ``name`` as a usage error (one line, exit code 2)."""
    if value is not None and value <= 0:
        raise typer.BadParameter(f"{name} must be positive, got {value:g}")


def _exit_at_once(signum: int, frame: Any) -> None:
    os._exit(130)


def first_interrupt(signum: int, frame: Any) -> None:
    """A first Ctrl-C stops the search cleanly (KeyboardInterrupt); a second exits at once."""
    signal.signal(signal.SIGINT, _exit_at_once)
    raise KeyboardInterrupt


def thread_errors_in_one_line(arguments: threading.ExceptHookArgs) -> None:
    """A library thread's failure (Optuna's heartbeat while the database is away) as one line."""
    from .runner import root_cause

    if arguments.exc_value is not None and not isinstance(arguments.exc_value, SystemExit):
        name = arguments.thread.name if arguments.thread is not None else "a thread"
        typer.echo(f"warning: {name} stopped: {first_line(root_cause(arguments.exc_value))}", err=True)


def exit_interrupted() -> None:
    """Say what an interruption left, and exit with 130 -- also when a library thread would outlive us."""
    typer.echo(
        "interrupted: completed trials are stored and the interrupted trial is marked failed (it is retried); "
        "run the same command again to resume",
        err=True,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    if any(thread.is_alive() and not thread.daemon for thread in threading.enumerate() if thread is not threading.main_thread()):
        os._exit(130)  # e.g. Optuna's heartbeat thread, left running when the Ctrl-C hit its start or stop
    raise typer.Exit(code=130)
