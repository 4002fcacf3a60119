"""What runs on this machine, read from /proc: for tests asserting that nothing outlived a stack.

Zombies count as gone: an exited grandchild reparented to PID 1 stays a zombie until PID 1 reaps it,
which some container inits do late.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["alive", "descendants", "process_table"]


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, cmdline) of every live, non-zombie process (from /proc)."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2:].split()
        if fields[0] != "Z":
            table[int(entry.name)] = (int(fields[1]), cmdline)
    return table


def descendants(pid: int) -> set[int]:
    table = process_table()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = {p for p, (ppid, _) in table.items() if ppid in frontier and p not in found}
        found |= children
        frontier = children
    return found


def alive(pids: set[int] | list[int]) -> set[int]:
    table = process_table()
    return {p for p in pids if p in table}
