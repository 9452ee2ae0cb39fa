"""The progress of `abadges backfill`: a rich progress bar on a terminal (users/s, granted so
far, ETA), a plain line at most once a second in a pipe."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Self

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .backfill import BackfillReport

#: Seconds between two plain lines in a pipe.
LINE_EVERY = 1.0


class BackfillProgress:
    """Shows the running report of a backfill; `update` is the `progress` callback. A context
    manager: the bar is on screen inside it. `report` is the last report shown."""

    def __init__(self, total: int | None, quiet: bool, console: Console | None = None) -> None:
        self.report = BackfillReport()
        self.total = total
        self._quiet = quiet
        self._console = console or Console(stderr=True)
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._line_at = 0.0

    def __enter__(self) -> Self:
        if not self._quiet and self._console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]backfill"),
                BarColumn(),
                MofNCompleteColumn(),  # "60/?" until the total is known.
                TextColumn("users"),
                TextColumn("{task.fields[speed]} users/s"),
                TextColumn("[green]{task.fields[granted]} granted"),
                TextColumn("{task.fields[others]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self._console,
            )
            self._bar.start()
            self._task = self._bar.add_task(
                "backfill", total=self.total, speed="-", granted=0, others=""
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif not self._quiet and self.report.users:
            self._line()  # The last counts, whenever the previous line was.

    def set_total(self, total: int) -> None:
        """The number of users, once known (the users function gave a sized result)."""
        self.total = total
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, total=total)

    def update(self, report: BackfillReport) -> None:
        self.report = report
        if self._bar is not None and self._task is not None:
            self._bar.update(
                self._task,
                completed=_done(report),
                speed=f"{_speed(report):,.0f}",
                granted=f"{report.granted:,}",
                others=_others(report),
            )
        elif not self._quiet and time.monotonic() - self._line_at >= LINE_EVERY:
            self._line()

    def _line(self) -> None:
        self._line_at = time.monotonic()
        report = self.report
        of = "" if self.total is None else f" of {self.total:,}"
        others = _others(report)
        would = "would be " if report.dry_run else ""
        click.echo(
            f"backfill: {_done(report):,}{of} users, {_speed(report):,.0f} users/s, "
            f"{report.granted:,} {would}granted{', ' + others if others else ''}",
            err=True,
        )


def _done(report: BackfillReport) -> int:
    """Users done, those an earlier run of the checkpoint did included: out of the total."""
    return report.resumed + report.users


def _speed(report: BackfillReport) -> float:
    return report.users / report.seconds if report.seconds else 0.0


def _others(report: BackfillReport) -> str:
    parts = []
    if report.revoked:
        parts.append(f"{report.revoked:,} revoked")
    if report.failed:
        parts.append(f"{report.failed:,} failed")
    return ", ".join(parts)
