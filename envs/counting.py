"""Env-step counting wrappers. The referee reads `STEPS.count` in the agent's process after each
yield; the agent is expected to build its training envs with Task.make_env / Task.make_vec."""
from __future__ import annotations

import gymnasium as gym
import numpy as np


class StepCount:
  """Process-wide count of environment transitions made through Task.make_env / make_vec."""
  def __init__(self): self.count = 0


STEPS = StepCount()


class CountEpisodeSteps(gym.Wrapper):
  def step(self, action):
    STEPS.count += 1
    return self.env.step(action)


class CountVectorSteps(gym.vector.VectorWrapper):
  """Counts real transitions of a vector env: with gymnasium's next-step autoreset, a sub-env that
  finished on the previous step is reset (not stepped) on this one, so it is not counted."""
  def __init__(self, env: gym.vector.VectorEnv):
    super().__init__(env)
    self._done = np.zeros(self.num_envs, dtype=bool)
    mode = self.env.metadata.get("autoreset_mode")
    self._next_step = mode is None or getattr(mode, "value", mode) == "NextStep"

  def reset(self, **kwargs):
    self._done[:] = False
    return self.env.reset(**kwargs)

  def step(self, actions):
    obs, rew, term, trunc, info = self.env.step(actions)
    STEPS.count += int(self.num_envs - self._done.sum()) if self._next_step else self.num_envs
    self._done = np.logical_or(term, trunc)
    return obs, rew, term, trunc, info
