"""The referee's evaluation: its own environments, its own seeds, one episode per environment.

Evaluation seeds are drawn by the referee from OS entropy at the start of each run (or from
`--eval-seed` for a reproduction) and written into the record only when the run is over; they
never cross into the agent's process.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bench.referee.agent_api import check_actions


class EvalSeeds:
  """Disjoint seed lists for every evaluation of a run, derived from one secret root."""
  def __init__(self, root: int):
    self.root = int(root)
    self._count = 0

  def next(self, n: int) -> list[int]:
    ss = np.random.SeedSequence(self.root, spawn_key=(self._count,))
    self._count += 1
    return [int(s) for s in ss.generate_state(n, dtype=np.uint32)]


def evaluate(task, policy: Callable[[np.ndarray], np.ndarray], seeds: list[int], info: dict | None = None) -> np.ndarray:
  """One episode per seed with `policy(obs_batch) -> actions`, every batch of actions checked against the interface
  (check_actions); the returns of the episodes (envs.Task.run_episodes). The episodes stop once their mean can no
  longer reach the task's threshold (where the task states the most a step pays): the pass or fail is the same as
  with every episode run out, the returns are then upper bounds and `info["curtailed_at"]` says at which step."""
  return task.run_episodes(policy, seeds, check=check_actions, give_up_below=task.threshold, info=info)
