"""The benchmarks' one measuring core (benchmarks/timing.py) and one report writer (benchmarks/report.py)."""
import io
import math
import time

import pytest

from benchmarks.report import Report, Table
from benchmarks.timing import Timing, runs_per_round, time_call, time_in_rounds


def test_timing_figures_are_those_of_its_runs_in_milliseconds():
    timing = Timing((0.001, 0.002, 0.003, 0.004, 0.010))
    assert timing.runs == 5 and timing.total_s == pytest.approx(0.020)
    assert timing.median_ms == pytest.approx(3.0)
    assert timing.mean_ms == pytest.approx(4.0)
    assert timing.p90_ms == pytest.approx(7.6)               # linear between the 4th (4 ms) and 5th (10 ms) run
    assert timing.percentile_ms(100) == pytest.approx(10.0)
    assert timing.per_second(8) == pytest.approx(8 * 5 / 0.020)
    merged = Timing.merge([Timing((0.001,)), Timing((0.003, 0.005))])
    assert merged.seconds == (0.001, 0.003, 0.005) and merged.median_ms == pytest.approx(3.0)
    empty = Timing()
    assert math.isnan(empty.median_ms) and math.isnan(empty.mean_ms) and math.isnan(empty.per_second())


def test_time_call_times_only_the_runs_after_the_warmup():
    calls = []

    def call():
        calls.append(len(calls))
        time.sleep(0.002 if len(calls) > 2 else 0.05)      # the two warm-up calls are slow: not in the figures

    timing = time_call(call, runs=3, warmup=2)
    assert len(calls) == 5 and timing.runs == 3
    assert all(0.002 <= seconds < 0.05 for seconds in timing.seconds)
    assert 2.0 <= timing.median_ms < 50.0


def test_time_in_rounds_takes_the_calls_in_turn_round_by_round():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in ("a", "b")}
    lines = []
    timings = time_in_rounds(calls, rounds=3, runs_per_round=2, warmup=1, settle=1, log=lines.append)
    assert order == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    assert {name: timing.runs for name, timing in timings.items()} == {"a": 6, "b": 6}   # settle runs untimed
    assert lines[0] == "timing round 1/3: 2 runs of each of 2 calls" and len(lines) == 3
    assert (runs_per_round(200, 4), runs_per_round(5, 4)) == (50, 2)


def sample_report():
    table = Table(("name", "ms"), [("keras", "12.5"), ("tflite_int8", "3.0")], ["What ran."], ["Note: one."],
                  right=("ms",))
    return Report("Benchmark of m.keras", [table])


def test_report_renders_markdown_for_files_and_aligned_text_for_a_terminal():
    report = sample_report()
    assert report.markdown() == ("# Benchmark of m.keras\n\nWhat ran.\n\n| name | ms |\n|---|---:|\n"
                                 "| keras | 12.5 |\n| tflite_int8 | 3.0 |\n\nNote: one.\n")
    lines = report.text().splitlines()
    assert lines[:2] == ["Benchmark of m.keras", "===================="]
    assert lines[5:9] == ["name           ms", "-----------  ----", "keras        12.5", "tflite_int8   3.0"]


def test_report_show_prints_text_on_a_terminal_and_markdown_elsewhere(tmp_path):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    piped, terminal = io.StringIO(), Terminal()
    report = sample_report()
    report.show(piped)
    report.show(terminal)
    assert piped.getvalue() == report.markdown() and terminal.getvalue() == report.text()
    path = tmp_path / "new" / "report.md"
    report.write(str(path))
    assert path.read_text() == report.markdown()
    assert [item.name for item in path.parent.iterdir()] == ["report.md"]     # no temporary left beside it


def test_a_short_row_gets_empty_cells():
    table = Table(("a", "b", "c"), [("1",)])
    assert table.markdown_lines()[-1] == "| 1 |  |  |"
