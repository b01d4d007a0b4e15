"""RLtools (https://rl.tools) SAC as a peer, through its Python package `tinyrl` (optional extra `peers-rltools`).

RLtools is a header-only C++ library; tinyrl renders the algorithm's compile-time parameters into a header and
compiles a Python module for them with the system's C++ compiler (~13 s here), cached under the temporary directory,
linking a BLAS where the machine has one (`scripts/setup.sh` installs OpenBLAS with this extra: SAC on Pendulum-v1
trained 6,000 steps in 3.7 s with it, 21.8 s without, one seed each; each run records `blas` in its agent profile).
That compile is the counterpart of the reference agents' warm kernel cache and of an RLtools user's second run: it
happens in the untimed start-up (`prepare_sac`, which the referee calls with the task before importing the peer), so
the timed construction finds the module built and loads it, and every run (cold start included) is a cached run. The
sandbox gives each run an empty temporary directory, so each run's start-up compiles it again (untimed, ~13 s).

Hyperparameters: tinyrl 0.4.3's defaults, which are RLtools' SAC loop defaults and what its README trains
Pendulum-v1 with (64x64x64 ReLU actor and critics, batch 100, lr 1e-3, gamma 0.99, adaptive alpha, 100 warm-up
steps), except the step limit, set to the task's step budget (its replay buffer is that large too). The environment
is the task's, with actions rescaled to [-1, 1] as tinyrl requires (act() maps them back).
"""
from __future__ import annotations

import os
import re

import numpy as np

try:  # imported before the clock starts, like tinygrad for the reference agents
  import gymnasium as gym
  import tinyrl
except ImportError as e:
  raise ImportError(f"the RLtools peer needs the optional extra: pip install -e '.[peers-rltools]' ({e})") from e


def sac_params(task) -> dict:
  return dict(enable_evaluation=False, STEP_LIMIT=int(task.step_budget), interface_name="rlspeedrun_" + re.sub(r"\W", "_", task.env_id))


def _factory(task, seed: int | None = None):
  def make():
    env = gym.wrappers.RescaleAction(task.make_env(), -1.0, 1.0)
    if seed is not None: env.reset(seed=seed)
    return env
  return make


def prepare_sac(task) -> None:
  """Untimed start-up: compile (or find cached) the SAC module for this task, so that construction only loads it."""
  if not isinstance(task.spaces()[1], gym.spaces.Box): return
  tinyrl.SAC(_factory(task), **sac_params(task))


def _linked_blas(module) -> bool:
  """Whether tinyrl linked a BLAS (OpenBLAS via -lblas, or MKL) into the module: 6x faster SAC updates on Pendulum here."""
  try:
    with open(os.path.join(os.path.dirname(module.__file__), "cmd.txt")) as f: cmd = f.read()
  except OSError: return False
  return "-lblas" in cmd or "mkl" in cmd


class RLtoolsSAC:
  """tinyrl's SAC training loop: one env step (and its updates) per `State.step()`, yielded to the referee each step."""

  def __init__(self, task, seed: int):
    _, space = task.spaces()
    if not isinstance(space, gym.spaces.Box): raise ValueError(f"RLtools SAC needs a continuous action space ({task.env_id} has {space})")
    self.low, self.high = space.low.astype(np.float32), space.high.astype(np.float32)
    self.module = tinyrl.SAC(_factory(task, seed), **sac_params(task))
    self.state = self.module.State(seed)
    self.profile = {"blas": float(_linked_blas(self.module))}

  def train(self):
    steps, finished = 0, False
    while not finished:
      finished = self.state.step()
      steps += 1
      yield steps

  def learn_plainly(self, on_update) -> None:
    """tinyrl's own step loop (train() is nothing more), `on_update(steps)` after every step (True stops it):
    bench/peers/plain.py."""
    for steps in self.train():
      if on_update(steps): return

  def act(self, obs: np.ndarray) -> np.ndarray:
    obs = np.ascontiguousarray(obs, dtype=np.float32)
    a = np.stack([np.asarray(self.state.action(o), dtype=np.float32) for o in obs])
    return self.low + (np.clip(a, -1.0, 1.0) + 1.0) * 0.5 * (self.high - self.low)
