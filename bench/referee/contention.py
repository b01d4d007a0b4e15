"""Was the machine shared while a run trained? Measured, not guessed (PROTOCOL.md section 13, with the measurements).

Around every timed request (import, construction, train) the referee reads, for the agent's whole process tree, the
CPU time (bench/referee/accounting.py) and the kernel's per-thread scheduler statistics: how long its threads ran and
how long they were *ready to run with no free core* (run-queue wait). CPU share alone cannot tell a starved agent from
one waiting for its GPU, so it is recorded beside the wait, not judged; the hypervisor's steal time and the load
average before and after the run are recorded too. An agent's own threads also wait for each other (and a hostile
one may run burners to have its slowness blamed on the machine: tests/hostile_agents.py FeignsASharedMachine), so a
wait alone is not a shared machine: the machine's busy time (/proc/stat) minus the agent's and the referee's own is
what *other* processes used. A run is `contended` when other processes used more than OTHERS_CORES cores on average
during its timed sections *and* its threads waited for a core more than WAIT_SHARE of its training clock, or when the
hypervisor stole more than STEAL_SHARE of the machine's time.
"""
from __future__ import annotations

import os
import time

WAIT_SHARE = 0.10
OTHERS_CORES = 0.25
STEAL_SHARE = 0.10


TICK = os.sysconf("SC_CLK_TCK")


def _cpu_times(cores: tuple[int, ...] | None = None) -> tuple[int, int, int]:
  """(busy, steal, total) jiffies since boot of the whole machine (/proc/stat's `cpu` line), or of the given cores
  (their `cpuN` lines: a run pinned to them, bench/parallel.py) (busy: neither idle, nor waiting for I/O, nor stolen)."""
  want = None if cores is None else {f"cpu{c}" for c in cores}
  busy = steal = total = 0
  try:
    with open("/proc/stat") as f:
      for line in f:
        name, *rest = line.split()
        if not name.startswith("cpu"): break
        if (want is None and name != "cpu") or (want is not None and name not in want): continue
        v = [int(x) for x in rest[:8]] + [0] * 8
        busy, steal, total = busy + sum(v[:8]) - v[3] - v[4] - v[7], steal + v[7], total + sum(v[:8])
    return busy, steal, total
  except (OSError, ValueError): return 0, 0, 0


def host_steal(seconds: float = 1.0) -> float:
  """The share of `seconds` of work that the hypervisor stole (another VM on the same host), this process spinning
  meanwhile: steal accrues only while a core wants to run, so an idle probe would see none."""
  b0, s0, _ = _cpu_times()
  end = time.perf_counter() + seconds
  while time.perf_counter() < end: pass
  b1, s1, _ = _cpu_times()
  return (s1 - s0) / max(b1 - b0 + s1 - s0, 1)


def _loadavg() -> list[float]:
  try: return [round(x, 2) for x in os.getloadavg()]
  except OSError: return []


class Contention:
  """The agent's share of the machine during one run's timed sections; of its own cores when it is pinned to some (runs
  side by side, bench/parallel.py: what runs on the other cores is not its neighbour's business)."""
  def __init__(self, cores: tuple[int, ...] | None = None):
    self.cpu_s = self.run_s = self.wait_s = self.others_s = self.wall_s = 0.0
    self.pinned = tuple(cores) if cores else None
    self.loadavg_before, self.cores = _loadavg(), len(self.pinned) if self.pinned else os.cpu_count() or 1
    _, self._steal0, self._total0 = _cpu_times(self.pinned)
    self._at = None

  def enter(self, tree) -> None:
    """Before a timed request (outside the clock): the tree's counters and the machine's now. The tree is scanned
    first: a process read for the first time at `leave` would bring all the CPU it used before (the agent's start-up)."""
    self._at = (tree.scan(), *tree.sched(), _cpu_times(self.pinned)[0], time.process_time(), time.perf_counter())

  def leave(self, tree) -> None:
    """After it (outside the clock): what the tree used meanwhile. The tree is re-scanned first, so that processes the
    agent started during the request count (their threads' time from their start)."""
    if self._at is None: return
    cpu0, run0, wait0, busy0, ref0, t0 = self._at
    cpu = tree.scan()
    run, wait = tree.sched()
    self.wall_s += time.perf_counter() - t0
    # others: the machine's busy time less the agent's tree's and the referee's own (an agent that trickles its reply
    # byte by byte keeps the referee reading: its CPU is the run's business, not another process's)
    self.others_s += max((_cpu_times(self.pinned)[0] - busy0) / TICK - (cpu - cpu0) - (time.process_time() - ref0), 0.0)
    self.cpu_s += max(cpu - cpu0, 0.0)
    self.run_s += max(run - run0, 0.0)
    self.wait_s += max(wait - wait0, 0.0)
    self._at = None

  def summary(self, clock_s: float) -> dict:
    _, steal1, total1 = _cpu_times(self.pinned)
    dt = total1 - self._total0
    steal = (steal1 - self._steal0) / dt if dt > 0 else 0.0
    c = max(clock_s, 1e-9)
    wait_share, others, why = self.wait_s / c, self.others_s / max(self.wall_s, 1e-9), []
    if clock_s > 0 and wait_share > WAIT_SHARE and others > OTHERS_CORES:
      why.append(f"other processes used {others:.1f} of {'its' if self.pinned else 'the'} {self.cores} cores while it trained, "
                 f"and its threads waited for a free core {wait_share:.0%} of the training clock")
    if steal > STEAL_SHARE: why.append(f"the hypervisor took {steal:.0%} of the machine's time (steal)")
    if why and self.loadavg_before: why.append(f"load average {self.loadavg_before[0]:g} before, {_loadavg()[0]:g} after, {self.cores} cores")
    return {"contended": bool(why), "contended_why": "; ".join(why),
            "contention": {"cpu_s": round(self.cpu_s, 4), "cpu_share": round(self.cpu_s / c, 4), "run_s": round(self.run_s, 4),
                           "wait_s": round(self.wait_s, 4), "wait_share": round(wait_share, 4),
                           "others_cores": round(others, 3), "steal_share": round(steal, 4),
                           "loadavg_before": self.loadavg_before, "loadavg_after": _loadavg(), "cores": self.cores}}
