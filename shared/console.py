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
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from shared.errors import RareGraphError

if TYPE_CHECKING:
    from shared.bundle import StudyBundle

console = Console()
err_console = Console(stderr=True)


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
def cli_errors() -> Iterator[None]:
    """Turn project errors (and OS errors on user files) into ``error: ...`` and exit 1."""
    try:
        yield
    except RareGraphError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        err_console.print(f"[red]error:[/] {where}{exc.strerror or exc}", highlight=False, soft_wrap=True)
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
