"""The table of benchmarks/run_all.py: ratios against sandboxlib, and a peer
that cannot run says why in a footnote (pure formatting, no peers needed)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from table import Cell, Row, render


def test_latency_cells_show_percentiles_and_ratio_to_sandboxlib():
    rows = [Row("start", "ms", {"sandboxlib": Cell.latency([0.002] * 10), "crun": Cell.latency([0.006] * 10)})]
    out = render(rows)
    assert "| workload | unit | sandboxlib | crun |" in out
    assert "| start | ms | 2.00 / 2.00 / 2.00 | 6.00 / 6.00 / 6.00 (3.00x) |" in out


def test_unavailable_peer_gets_a_numbered_footnote_once():
    why = "docker: dockerd exited with status 1: no cgroups"
    rows = [
        Row("a", "ms", {"sandboxlib": Cell.rate(200), "docker": Cell.unavailable(why)}),
        Row("b", "ms", {"sandboxlib": Cell.rate(100), "docker": Cell.unavailable(why)}),
    ]
    out = render(rows)
    assert out.count("n/a [1]") == 2
    assert out.count(f"[1] {why}") == 1


def test_rates_and_sizes_compare_with_sandboxlib():
    out = render(
        [
            Row("tp", "sandboxes/s", {"sandboxlib": Cell.rate(200), "bwrap": Cell.rate(100)}),
            Row("mem", "MiB", {"sandboxlib": Cell.sizes([1.0] * 5), "podman": Cell.sizes([3.0] * 5)}),
        ]
    )
    assert "| tp | sandboxes/s | 200 | 100 (0.50x) |" in out
    assert "1.00 / 1.00 / 1.00" in out and "3.00 / 3.00 / 3.00 (3.00x)" in out
