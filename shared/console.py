"""Command-line edge helpers: progress display and the one place where project errors
become a one-line message and a non-zero exit.

Every command module imports this one, so it loads only Typer and rich: a command that needs
no bundle never pays for pandas (issue 23).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from shared.errors import RareGraphError

if TYPE_CHECKING:
    from shared.bundle import StudyBundle

#: Columns of a console that is not a terminal (a pipe, a log file, CI): wide enough that a
#: table is never cut to "…" and a line never wrapped, since nobody's screen sets the width
UNBOUNDED_WIDTH = 10_000
#: Lines a non-terminal progress display prints over a whole loop (one each tenth of the way)
LOG_LINES = 10

#: The ``-q/--quiet`` option every command takes.
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]
#: ``-q/--quiet`` on a command that shows no progress: accepted, so a script may pass it to every command
QuietAccepted = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display (this command shows none).")]


class _Console(Console):
    """A rich Console that keeps a terminal's width but is :data:`UNBOUNDED_WIDTH` wide when
    its output is not a terminal and no width was set (``COLUMNS``): rich would otherwise use
    80 columns, or the width of whatever terminal stdin belongs to, and cut table cells."""

    def _dimensions(self) -> ConsoleDimensions:
        size = Console.size.fget(self)  # type: ignore[attr-defined]
        if self.is_terminal or self._width is not None or "COLUMNS" in self._environ:
            return size
        return ConsoleDimensions(UNBOUNDED_WIDTH, size.height)

    size = property(_dimensions, Console.size.fset)  # type: ignore[assignment]


console = _Console()
err_console = _Console(stderr=True)


@contextmanager
def steps(title: str, *, quiet: bool = False) -> Iterator[Callable[[str], None]]:
    """Yield ``step(description)``; shows a spinner with the current stage and elapsed time
    on stderr (nothing when ``quiet`` or stderr is not a terminal, except a final line)."""
    started = time.perf_counter()
    if quiet:
        yield lambda _description: None
        return
    progress = Progress(
        SpinnerColumn(), TextColumn("[bold]{task.fields[title]}[/]: {task.description}"), TimeElapsedColumn(),
        console=err_console, transient=True,
    )
    with progress:
        task = progress.add_task("starting", title=title)

        def step(description: str) -> None:
            progress.update(task, description=description)
            if not err_console.is_terminal:
                err_console.print(f"{title}: {description}", highlight=False)

        yield step
    err_console.print(f"{title}: done in {time.perf_counter() - started:.1f} s", highlight=False)


@contextmanager
def step_progress(title: str, total: int, *, quiet: bool = False) -> Iterator[Callable[[int, float], None]]:
    """Yield ``advance(step, loss)`` for a loop of ``total`` steps (``step`` 0-based, as
    :func:`shared.model.training.train_steps` calls ``on_step``).

    On a terminal, stderr shows a bar with steps done, the latest loss, the time elapsed and
    the time left (gone at the end); otherwise a line at every tenth of the way
    (:data:`LOG_LINES`) with the same numbers; nothing when ``quiet``. Safe to call from
    another thread (the coordinator pretrains in Flower's ServerApp thread).
    """
    if quiet or total <= 0:
        yield lambda _step, _loss: None
        return
    started = time.perf_counter()
    terminal = err_console.is_terminal
    progress = Progress(
        TextColumn(f"[bold]{title}[/]"), BarColumn(),
        TextColumn("{task.completed}/{task.total} steps, loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=True, disable=not terminal,
    )
    logged = 0  # tenths of the way already printed (non-terminal)

    def advance(step: int, loss: float) -> None:
        nonlocal logged
        done = min(step + 1, total)
        progress.update(task, completed=done, loss=loss)
        if terminal or done * LOG_LINES < (logged + 1) * total:
            return
        logged = done * LOG_LINES // total
        elapsed = time.perf_counter() - started
        left = elapsed / done * (total - done)
        err_console.print(f"{title}: {done}/{total} steps, loss {loss:.3f}, {elapsed:.0f} s elapsed, "
                          f"about {left:.0f} s left", highlight=False)

    with progress:
        task = progress.add_task(title, total=total, loss=float("nan"))
        yield advance
    err_console.print(f"{title}: done in {time.perf_counter() - started:.1f} s", highlight=False)


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn project errors (and OS errors on user files) into ``error: ...`` and exit 1."""
    try:
        yield
    except RareGraphError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        err_console.print(f"[red]error:[/] {escape(f'{where}{exc.strerror or exc}')}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def load_bundle(folder: Path, pub: Path | None) -> StudyBundle:
    """Verify and load a bundle for a command; warn when the signer's key is not pinned."""
    from shared.bundle import StudyBundle  # pandas and scipy: loaded by the commands that read a bundle, when they run

    bundle = StudyBundle.load(folder, pub)
    if not bundle.manifest["signer_pinned"]:
        err_console.print(f"[yellow]warning:[/] bundle {folder} is intact and signed by key {bundle.signer}, but that "
                          "key was not checked against a pinned coordinator key (pass --pub)", highlight=False)
    return bundle


def print_json(data: Any) -> None:
    """Machine-readable output on stdout (sorted keys, no colour)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
