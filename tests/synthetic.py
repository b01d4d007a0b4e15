"""Synthetic run records with known times, for testing the statistics and the report."""
from __future__ import annotations

import numpy as np

from agents import REFERENCE_AGENTS
from bench.referee.agent_api import AgentSpec
from bench.referee.records import RecordWriter, RunRecord
from envs import get_task


def runs_of(agent: str, times, *, task: str = "CartPole-v1", cpu: str | None = None, start_seed: int = 0,
            kind: str | None = None) -> list[RunRecord]:
  """One timed record per time; a time of None (or over the budget) is an unsolved run, censored at the budget.
  The learning curve rises linearly from 20 to the threshold at the run's time. The agent is a reference if its
  name is one (unless `kind` says otherwise)."""
  t_ = get_task(task)
  kind = kind or ("reference" if agent in REFERENCE_AGENTS else "entry")
  spec = AgentSpec(name=agent, target=f"synthetic:{agent}", source=__file__, kind=kind)
  out = []
  for i, t in enumerate(times):
    rec = RunRecord.start(spec, t_, start_seed + i, role="timed", kernel_cache="warm", device="CPU")
    rec.sandbox = "bwrap"
    if cpu is not None: rec.fingerprint = {**rec.fingerprint, "cpu": cpu}
    solved = t is not None and t <= t_.time_budget_s
    end = float(t) if solved else t_.time_budget_s
    for k in range(6):
      rec.add_eval(end * k / 5, 1000 * k, 20 + (t_.threshold - 20) * k / 5 * (1.0 if solved else 0.5))
    if solved: rec.finish_solved(end, 5000, t_.threshold + 10)
    else: rec.finish_unsolved("unsolved", "time budget spent", end)
    out.append(rec)
  return out


def lognormal_times(median: float, n: int, seed: int, sigma: float = 0.35) -> list[float]:
  return list(np.exp(np.random.default_rng(seed).normal(np.log(median), sigma, n)))


def write(path: str, *groups: list[RunRecord]) -> str:
  w = RecordWriter(path)
  for g in groups:
    for r in g: w.write(r)
  return path
