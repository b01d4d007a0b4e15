"""The referee's evaluation: its own environments, its own seeds, one episode per environment.

Evaluation seeds are drawn by the referee from OS entropy at the start of each run (or from
`--eval-seed` for a reproduction) and written into the record only when the run is over; they
never cross into the agent's process.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bench.agent_api import check_actions


class EvalSeeds:
  """Disjoint seed lists for every evaluation of a run, derived from one secret root."""
  def __init__(self, root: int):
    self.root = int(root)
    self._count = 0

  def next(self, n: int) -> list[int]:
    ss = np.random.SeedSequence(self.root, spawn_key=(self._count,))
    self._count += 1
    return [int(s) for s in ss.generate_state(n, dtype=np.uint32)]


def evaluate(task, policy: Callable[[np.ndarray], np.ndarray], seeds: list[int]) -> np.ndarray:
  """Run one episode per seed, all at once in a vector env, with `policy(obs_batch) -> actions`.

  The policy always receives the full batch (len(seeds) observations, finished envs included) so that
  an agent sees one fixed batch size per evaluation kind; actions of finished envs are ignored.
  Returns the undiscounted return of each episode."""
  n = len(seeds)
  envs = task.gym_make_vec(n, vectorization_mode="sync")
  try:
    max_steps = envs.spec.max_episode_steps if envs.spec and envs.spec.max_episode_steps else 100_000
    obs, _ = envs.reset(seed=seeds)
    returns, done = np.zeros(n), np.zeros(n, dtype=bool)
    for _ in range(max_steps):
      actions = check_actions(policy(obs), envs.single_action_space, n)
      obs, rew, term, trunc, _ = envs.step(actions)
      returns += np.where(done, 0.0, rew)
      done |= term | trunc
      if done.all(): break
    return returns
  finally:
    envs.close()
