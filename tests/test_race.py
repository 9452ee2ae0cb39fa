"""Invariant 1: concurrent events from several processes never record a level twice."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from abadges import BadgeRegistry
from tests.support import Rows
from tests.support.race_child import RaceBadge

CHILD = Path(__file__).parent / "support" / "race_child.py"
PROCESSES = 3
CALLS = 10  # per process: 30 calls, 10 for each of the three levels


async def read_line(stream: BufferedByteReceiveStream) -> str:
    return (await stream.receive_until(b"\n", 1 << 16)).decode()


async def test_concurrent_processes_record_each_level_once(
    registry: BadgeRegistry, database_url: str, stored_rows: Rows
) -> None:
    registry.register(RaceBadge)
    processes: list[Process] = []
    try:
        for _ in range(PROCESSES):
            processes.append(
                await anyio.open_process([sys.executable, str(CHILD), database_url, str(CALLS)])
            )
        outputs = [BufferedByteReceiveStream(p.stdout) for p in processes]  # type: ignore[arg-type]
        with anyio.fail_after(60):
            for output in outputs:
                assert await read_line(output) == "ready"
            for process in processes:
                assert process.stdin is not None
                await process.stdin.send(b"go\n")
            recorded = [json.loads(await read_line(output)) for output in outputs]
            assert [await process.wait() for process in processes] == [0] * PROCESSES
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()

    assert sorted(await stored_rows()) == [
        ("racer", "race", 1),
        ("racer", "race", 2),
        ("racer", "race", 3),
    ]
    ids = [award_id for ids in recorded for award_id in ids]
    assert len(ids) == 3, f"each level must be reported recorded by exactly one call: {recorded}"
    assert sorted(ids) == sorted(a.id for a in await registry.holders("race"))
