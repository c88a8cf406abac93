"""The one table of run_all.py: a row per workload, a column per tool; each
cell holds p50 / p90 / p99 (or a rate, or a size) and the ratio of the peer's
p50 to sandboxlib's; a peer that cannot run says why in a footnote."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import _common
import attrs

TOOLS = ("sandboxlib", "bwrap", "crun", "runc", "podman", "docker", "subprocess.run", "os.posix_spawn")


@attrs.frozen
class Cell:
    text: str
    value: Optional[float] = None  # what the ratio compares (p50, rate or size)
    reason: Optional[str] = None  # why the tool cannot run

    @classmethod
    def latency(cls, seconds: Sequence[float]) -> Cell:
        p50, p90, p99 = _common.percentiles(seconds)
        return cls(f"{_fmt(p50)} / {_fmt(p90)} / {_fmt(p99)}", p50)

    @classmethod
    def sizes(cls, mib: Sequence[float]) -> Cell:
        p50, p90, p99 = (v / 1e3 for v in _common.percentiles(mib))  # percentiles() scales by 1e3
        return cls(f"{p50:.2f} / {p90:.2f} / {p99:.2f}", p50)

    @classmethod
    def rate(cls, per_second: float) -> Cell:
        return cls(f"{per_second:.0f}", per_second)

    @classmethod
    def unavailable(cls, reason: str) -> Cell:
        return cls("n/a", None, reason)

    @classmethod
    def note(cls, text: str) -> Cell:
        return cls(text)


def _fmt(ms: float) -> str:
    return f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


@attrs.frozen
class Row:
    workload: str
    unit: str
    cells: Dict[str, Cell]


def render(rows: List[Row]) -> str:
    """Markdown: the table, then the footnotes saying why a peer could not run."""
    tools = [t for t in TOOLS if any(t in r.cells for r in rows)]
    notes: List[str] = []
    lines = ["| workload | unit | " + " | ".join(tools) + " |", "|---|---|" + "---|" * len(tools)]
    for row in rows:
        base = row.cells.get("sandboxlib")
        cells = [_cell(row.cells.get(t), base, t, notes) for t in tools]
        lines.append(f"| {row.workload} | {row.unit} | " + " | ".join(cells) + " |")
    legend = (
        "Cells: p50 / p90 / p99 and, in brackets, the ratio peer/sandboxlib of the p50 "
        "(of the rate for throughput: there, higher is better)."
    )
    foot = [f"[{i}] {text}" for i, text in enumerate(notes, 1)]
    return "\n".join(lines + ["", legend] + (["", *foot] if foot else []))


def _cell(cell: Optional[Cell], base: Optional[Cell], tool: str, notes: List[str]) -> str:
    if cell is None:
        return ""
    if cell.reason is not None:
        if cell.reason not in notes:
            notes.append(cell.reason)
        return f"n/a [{notes.index(cell.reason) + 1}]"
    if tool == "sandboxlib" or cell.value is None or not base or not base.value:
        return cell.text
    return f"{cell.text} ({cell.value / base.value:.2f}x)"
