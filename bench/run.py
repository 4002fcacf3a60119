"""Run the pytest-hokusai benchmarks, print a table and rewrite ``bench/RESULTS.md``.

Usage (from the repository root, with the project's venv)::

    python bench/run.py                     # all benchmarks, full size (~3-4 min on 2 cores)
    python bench/run.py --only proxy upload # a subset; other sections of RESULTS.md are kept
    python bench/run.py --quick             # small sizes, a smoke run (marked "quick" in RESULTS.md)
    python bench/run.py --no-write          # print only

Each benchmark is a module ``bench_<name>.py`` with ``run(quick) -> dict``. Ratios are always
against a baseline measured in the same run; nothing here asserts on time. After the run every
process the benchmarks started (stack children and subprocesses, tracked by pid + start time) is
checked to be gone.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import shlex
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import TRACKER, loadavg

ORDER = ["import", "proxy", "upload", "registration", "verdict", "notify", "install"]
RESULTS = HERE / "RESULTS.md"
_BEGIN = "<!-- bench:{} begin -->"
_END = "<!-- bench:{} end -->"


def _mark(ok: bool | None) -> str:
    return "info" if ok is None else ("PASS" if ok else "MISS")


def _machine() -> dict[str, str]:
    try:
        from importlib.metadata import version

        mlflow_version = version("mlflow")
    except Exception:  # noqa: BLE001 - report, do not fail
        mlflow_version = "?"
    cpu = "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpus": str(os.cpu_count()), "cpu": cpu, "python": platform.python_version(),
        "mlflow": mlflow_version, "os": f"{platform.system()} {platform.release()}",
    }


def run_one(name: str, quick: bool) -> dict[str, Any]:
    """Import ``bench_<name>`` and run it; a crash becomes an ERROR result, never an exception."""
    started = time.monotonic()
    try:
        module = importlib.import_module(f"bench_{name}")
        result: dict[str, Any] = module.run(quick=quick)
    except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others
        from pytest_hokusai.secret import redact

        result = {"name": name, "title": name, "method": [], "targets": [], "tables": [], "metrics": {},
                  "notes": [], "load": {"start": loadavg()},
                  "error": redact(f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}")}
    result["seconds"] = time.monotonic() - started
    result["load"]["end"] = loadavg()
    result["quick"] = quick
    result["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return result


def print_table(results: list[dict[str, Any]]) -> None:
    """One line per target: benchmark, what, target, measured, PASS/MISS, load at start/end."""
    rows = [("benchmark", "what", "target", "measured", "result", "load1 start/end")]
    for res in results:
        load = f"{res['load']['start'][0]:.2f}/{res['load']['end'][0]:.2f}"
        if res.get("error"):
            rows.append((res["name"], "ERROR", "-", res["error"].splitlines()[0][:60], "ERROR", load))
        for t in res["targets"]:
            rows.append((res["name"], t["what"], t["target"], t["measured"], _mark(t["pass"]), load))
    widths = [min(max(len(r[i]) for r in rows), 60) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(cell[:60].ljust(w) for cell, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def print_details(res: dict[str, Any]) -> None:
    """The benchmark's own tables, plain text."""
    for table in res["tables"]:
        rows = [[str(c) for c in table["columns"]]] + [[str(c) for c in row] for row in table["rows"]]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        print(f"   {table['title']}")
        for row in rows:
            print("     " + "  ".join(c.ljust(w) for c, w in zip(row, widths)))


def render_section(res: dict[str, Any]) -> str:
    """The Markdown section of one benchmark (between begin/end markers)."""
    out = [_BEGIN.format(res["name"]), f"## {res['name']}: {res['title']}", ""]
    quick = " **(quick run: reduced sizes, not comparable)**" if res.get("quick") else ""
    out.append(f"Measured {res['date']} in {res['seconds']:.0f} s; 1-min load average at start "
               f"{res['load']['start'][0]:.2f}, at end {res['load']['end'][0]:.2f} "
               f"(1/5/15 at end: {' / '.join(f'{x:.2f}' for x in res['load']['end'])}).{quick}")
    out.append("")
    if res["method"]:
        out += [f"- {line}" for line in res["method"]] + [""]
    if res.get("error"):
        out += ["**ERROR**: the benchmark did not complete:", "", "```", res["error"].rstrip(), "```", ""]
    if res["targets"]:
        out += ["| what | target | measured | result |", "|---|---|---|---|"]
        out += [f"| {t['what']} | {t['target']} | {t['measured']} | **{_mark(t['pass'])}** |"
                for t in res["targets"]]
        out.append("")
    for table in res["tables"]:
        out += [f"{table['title']}:", "", "| " + " | ".join(table["columns"]) + " |",
                "|" + "---|" * len(table["columns"])]
        out += ["| " + " | ".join(str(c) for c in row) + " |" for row in table["rows"]]
        out.append("")
    if res["notes"]:
        out += [f"Note: {n}" for n in res["notes"]] + [""]
    out.append(_END.format(res["name"]))
    return "\n".join(out)


def _old_sections(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in ORDER:
        m = re.search(re.escape(_BEGIN.format(name)) + r".*?" + re.escape(_END.format(name)), text, re.DOTALL)
        if m:
            found[name] = m.group(0)
    return found


def write_results(results: list[dict[str, Any]], command: str, leftovers: list[str]) -> None:
    """Rewrite RESULTS.md: header for this run, new sections, older sections of benchmarks not run kept."""
    old = _old_sections(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}
    new = {res["name"]: render_section(res) for res in results}
    m = _machine()
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        "# Benchmark results",
        "",
        "Written by `bench/run.py` (see `bench/README.md`); do not edit by hand.",
        "",
        f"- Last run: {now}, command: `{command}`"
        + (f" (this run: {', '.join(new)}; other sections are from earlier runs)" if old.keys() - new.keys()
           else ""),
        f"- Machine: {m['cpus']} CPUs ({m['cpu']}), {m['os']}, Python {m['python']}, MLflow {m['mlflow']}",
        "- All traffic is on loopback; every ratio is against a baseline measured in the same run.",
        ("- The machine has 2 cores and was shared with other jobs (test runs) while this ran: the load "
        "average is recorded with every section. Numbers taken under load are pessimistic, absolute "
        "times most of all; ratios less so, since both sides of each comparison are interleaved."),
        (f"- Processes started by the benchmarks still alive after the run: "
        f"{'none' if not leftovers else ', '.join(leftovers)}."),
        "",
        "| benchmark | what | target | measured | result |",
        "|---|---|---|---|---|",
    ]
    all_results = {**{name: None for name in old}, **{r["name"]: r for r in results}}
    for name in ORDER:
        if name in new:
            res = all_results[name]
            assert res is not None
            if res.get("error"):
                head.append(f"| {name} | did not complete | - | - | **ERROR** |")
            for t in res["targets"]:
                head.append(f"| {name} | {t['what']} | {t['target']} | {t['measured']} | **{_mark(t['pass'])}** |")
        elif name in old:
            head.append(f"| {name} | (see section, earlier run) | | | |")
    body = [new.get(name) or old[name] for name in ORDER if name in new or name in old]
    RESULTS.write_text("\n".join(head) + "\n\n" + "\n\n".join(body) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmarks, print, write RESULTS.md; exit 1 on leftovers or errors."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=ORDER, metavar="NAME",
                        help=f"run only these benchmarks ({', '.join(ORDER)})")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite bench/RESULTS.md")
    args = parser.parse_args(argv)
    names = [n for n in ORDER if not args.only or n in args.only]
    command = "python bench/run.py" + (" " + shlex.join(argv if argv is not None else sys.argv[1:])
                                       if (argv if argv is not None else sys.argv[1:]) else "")
    results = []
    for name in names:
        print(f"== {name} (load {loadavg()[0]:.2f}) ...", flush=True)
        res = run_one(name, args.quick)
        print(f"   done in {res['seconds']:.1f} s" + ("  ERROR: " + res["error"].splitlines()[0]
                                                        if res.get("error") else ""), flush=True)
        print_details(res)
        results.append(res)
    time.sleep(0.5)
    leftovers = TRACKER.alive()
    print()
    print_table(results)
    print(f"\ntracked {TRACKER.count()} started processes; still alive: {leftovers or 'none'}")
    if not args.no_write:
        write_results(results, command, leftovers)
        print(f"wrote {RESULTS}")
    return 1 if leftovers or any(r.get("error") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
