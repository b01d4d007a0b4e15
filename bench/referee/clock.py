"""The training clock. It lives in the referee process and runs only while agent code runs
(import, construction and training); the referee stops it before every evaluation."""
from __future__ import annotations

import time

DEFAULT_TIMER = "bench.clock.training_timer"   # pytest-benchmark's timer under `pytest bench/`


class TrainingClock:
  def __init__(self):
    self.elapsed = 0.0
    self._since: float | None = None

  def start(self) -> None:
    assert self._since is None, "clock already running"
    self._since = time.perf_counter()

  def stop(self) -> float:
    assert self._since is not None, "clock not running"
    self.elapsed += time.perf_counter() - self._since
    self._since = None
    return self.elapsed

  def charge(self, seconds: float) -> None:
    """Add work the agent did while the clock was stopped (act() time beyond its allowance)."""
    assert self._since is None, "clock running"
    self.elapsed += max(float(seconds), 0.0)


class SessionTimer:
  """A monotonic total of the time-to-threshold of every run in this process (censored at the time
  budget for runs that did not solve). pytest-benchmark's timer reads it (`training_timer`), so that the
  difference across one benchmark round is that round's time-to-threshold."""
  def __init__(self): self.total = 0.0

  def add(self, seconds: float) -> None: self.total += seconds


SESSION = SessionTimer()


def training_timer() -> float:
  """`--benchmark-timer bench.clock.training_timer` (the default under `pytest bench/`)."""
  return SESSION.total
