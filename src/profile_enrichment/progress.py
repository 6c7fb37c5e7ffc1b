"""Progress display for long steps (rich), shown only when stdout is a terminal.

When stdout is not a terminal (CI, pipes, tests), nothing here prints, so captured output stays
exactly the plain lines the commands print. ``PE_NO_PROGRESS=1`` turns it off on a terminal too.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# dbt's own progress lines: "12:00:01  93 of 367 START sql table model main.x ...... [RUN]"
# and "12:00:02  93 of 367 OK created sql table model main.x ... [OK in 0.2s]".
_DBT_LINE = re.compile(r"\b(\d+) of (\d+) (START|OK|PASS|WARN|ERROR|FAIL|SKIP)\b\s*(.*)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def interactive() -> bool:
    """True when progress should be drawn: stdout is a terminal and not disabled."""
    if os.environ.get("PE_NO_PROGRESS"):
        return False
    return sys.stdout.isatty()


def _console() -> Any:
    from rich.console import Console

    return Console()


@contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner with elapsed time for a step without a natural count (export, upload)."""
    if not interactive():
        yield
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=_console(),
        transient=True,
    ) as bar:
        bar.add_task(message, total=None)
        yield


@contextmanager
def counter(message: str, unit: str) -> Iterator[Any]:
    """A bar for counted work; yields ``update(done, total)`` (a no-op when not interactive)."""
    if not interactive():
        yield lambda done, total: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=_console(),
        transient=True,
    ) as bar:
        task = bar.add_task(message, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


class DbtProgress:
    """Summarises dbt's "N of M" lines as one bar; warnings and errors are still printed.

    ``feed(line)`` returns True when the line was absorbed (not to be echoed).
    """

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.console = _console()
        self.bar = Progress(
            TextColumn("dbt build"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[current]}"),
            console=self.console,
            transient=True,
        )
        self.task = self.bar.add_task("dbt", total=None, current="")
        self.done = 0
        self.problems = 0

    def __enter__(self) -> DbtProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def feed(self, line: str) -> bool:
        plain = _ANSI.sub("", line).rstrip()
        match = _DBT_LINE.search(plain)
        if match is None:
            # Keep dbt's final tally and anything that reports a problem.
            keep = plain.lstrip().startswith(("Done.", "Completed")) or any(
                word in plain for word in ("Error", "ERROR", "Failure", "WARN")
            )
            if keep:
                self.console.print(plain, markup=False, highlight=False)
            return True
        _index, total, state, rest = match.groups()
        words = re.sub(r"\s*\[[^\]]*\]\s*$", "", rest).rstrip(". ").split()
        name = words[-1] if words else ""
        if state != "START":
            self.done += 1
        self.bar.update(self.task, completed=self.done, total=int(total), current=name[:60])
        if state in ("WARN", "ERROR", "FAIL"):
            self.problems += 1
            self.console.print(plain, markup=False, highlight=False)
        return True
