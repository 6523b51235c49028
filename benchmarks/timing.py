"""The one measuring core of the benchmarks: time a no-argument call after untimed warm-up calls, or several
calls in turn, round by round, so that a change of load on the machine hits them all alike. Every benchmark
reads its figures from a :class:`Timing` (median, p90, mean in milliseconds; rates per second)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterable, Mapping
    from typing import Any, TypeVar

    Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True)
class Timing:
    """The seconds of each timed run of one call; [runs] (an empty Timing has NaN figures)."""
    seconds: tuple[float, ...] = ()

    @classmethod
    def merge(cls, timings: Iterable[Timing]) -> Timing:
        """One Timing of the runs of all ``timings`` together."""
        return cls(tuple(value for timing in timings for value in timing.seconds))

    @property
    def runs(self) -> int:
        return len(self.seconds)

    @property
    def total_s(self) -> float:
        """Seconds of all the timed runs."""
        return float(sum(self.seconds))

    def percentile_ms(self, percent: float) -> float:
        """The ``percent`` percentile of one run in milliseconds (linear interpolation; NaN without runs)."""
        return 1000.0 * float(np.percentile(self.seconds, percent)) if self.seconds else float("nan")

    @property
    def median_ms(self) -> float:
        return self.percentile_ms(50)

    @property
    def p90_ms(self) -> float:
        return self.percentile_ms(90)

    @property
    def mean_ms(self) -> float:
        return 1000.0 * self.total_s / self.runs if self.seconds else float("nan")

    def per_second(self, items_per_run: float = 1.0) -> float:
        """Items per second over all the timed runs (``items_per_run`` items each: images of a batch, ...)."""
        return items_per_run * self.runs / self.total_s if self.seconds else float("nan")


def time_call(call: Callable[[], Any], runs: int, warmup: int = 0) -> Timing:
    """Timing of ``runs`` calls of ``call()`` after ``warmup`` untimed calls (wall clock, ``perf_counter``)."""
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return Timing(tuple(seconds))


def time_in_rounds(calls: Mapping[Key, Callable[[], Any]], rounds: int, runs_per_round: int, warmup: int = 0,
                   settle: int = 0, log: Callable[[str], Any] | None = None) -> dict[Key, Timing]:
    """{key: Timing} of each no-argument call of ``calls`` ({key: call}): ``warmup`` untimed calls of each, then
    ``rounds`` rounds taking the calls in turn, each ``settle`` untimed calls and ``runs_per_round`` timed ones.
    ``log`` gets one line per round."""
    for call in calls.values():
        time_call(call, 0, warmup)
    timings: dict[Key, list[Timing]] = {key: [] for key in calls}
    for round_index in range(rounds):
        if log is not None:
            log(f"timing round {round_index + 1}/{rounds}: {runs_per_round} runs of each of {len(calls)} calls")
        for key, call in calls.items():
            timings[key].append(time_call(call, runs_per_round, settle))
    return {key: Timing.merge(parts) for key, parts in timings.items()}


def runs_per_round(runs: int, rounds: int) -> int:
    """Timed runs of each call per round so that ``rounds`` rounds give at least ``runs`` (rounded up)."""
    return -(-runs // rounds)


def load_average() -> str:
    """The machine's load average over 1, 5 and 15 minutes, '1.00 / 0.80 / 0.50' ('n/a' where unknown)."""
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "n/a"
