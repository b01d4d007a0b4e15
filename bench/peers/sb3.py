"""Stable-Baselines3 peers under the same referee: what a user would pick instead of a tinygrad agent.

Needs the optional extra: `pip install -e '.[peers]'` (stable-baselines3 and torch; install a CPU
build of torch first). Hyperparameters are rl-baselines3-zoo's tuned ones (hyperparams/ppo.yml).

    pytest bench/ --agent ppo --agent sb3-ppo --seeds 10      # side by side, same protocol
    python -m bench.peers.sb3 --seeds 10                      # the same, then a comparison table
"""
from __future__ import annotations

import queue
import threading

import numpy as np

try:  # imported before the clock starts, like tinygrad for the reference agents
  import torch  # noqa: F401
  from stable_baselines3 import PPO
  from stable_baselines3.common.callbacks import BaseCallback
  from stable_baselines3.common.monitor import Monitor
  from stable_baselines3.common.vec_env import DummyVecEnv
except ImportError as e:
  raise ImportError(f"the SB3 peers need the optional extra: pip install -e '.[peers]' ({e})") from e


def linear(start: float):
  return lambda progress_remaining: progress_remaining * start


# rl-baselines3-zoo hyperparams/ppo.yml ("# Tuned")
ZOO_PPO = {
  "CartPole-v1": dict(n_envs=8, n_timesteps=100_000, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98,
                      n_epochs=20, ent_coef=0.0, learning_rate=linear(0.001), clip_range=linear(0.2)),
}


class _YieldEachUpdate(BaseCallback):
  """Hands control back to the referee after every PPO update: SB3 calls on_rollout_start right
  after train(). The learner thread waits while the referee evaluates, so no training happens then."""
  def __init__(self, out: queue.Queue, resume: queue.Queue):
    super().__init__()
    self.out, self.resume, self.rollouts = out, resume, 0

  def _on_rollout_start(self) -> None:
    if self.rollouts:
      self.out.put(self.num_timesteps)
      self.resume.get()
    self.rollouts += 1

  def _on_step(self) -> bool: return True


class SB3PPO:
  def __init__(self, task, seed: int):
    if task.name not in ZOO_PPO: raise ValueError(f"no rl-zoo3 PPO hyperparameters for {task.name}")
    hp = dict(ZOO_PPO[task.name])
    self.n_envs, self.total = hp.pop("n_envs"), hp.pop("n_timesteps")
    env = DummyVecEnv([lambda: Monitor(task.make_env()) for _ in range(self.n_envs)])
    self.model = PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **hp)

  def train(self):
    out, resume = queue.Queue(), queue.Queue()
    done = object()

    def learn():
      try: self.model.learn(total_timesteps=self.total, callback=_YieldEachUpdate(out, resume))
      except BaseException as e: out.put(e)
      else: out.put(self.model.num_timesteps); out.put(done)

    threading.Thread(target=learn, daemon=True).start()
    while (item := out.get()) is not done:
      if isinstance(item, BaseException): raise item
      yield int(item)
      resume.put(None)

  def act(self, obs: np.ndarray) -> np.ndarray:
    return self.model.predict(obs, deterministic=True)[0]


def main(argv: list[str] | None = None) -> int:
  """Run the reference PPO and SB3's PPO side by side through `pytest bench/`, then compare."""
  import argparse
  import pytest
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--seeds", type=int, default=10)
  p.add_argument("--task", default="CartPole-v1")
  p.add_argument("--results-dir", default="results")
  args, rest = p.parse_known_args(argv)
  return int(pytest.main(["bench/", "--agent", "ppo", "--agent", "sb3-ppo", "--task", args.task, "--seeds", str(args.seeds),
                          "--results-dir", args.results_dir, "--benchmark-columns", "min,median,max,mean,rounds", *rest]))


if __name__ == "__main__":
  raise SystemExit(main())
