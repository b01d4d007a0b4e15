"""Stable-Baselines3 peers under the same referee: what a user would pick instead of a tinygrad agent.

Needs the optional extra: `pip install -e '.[peers]'` (stable-baselines3 and torch; install a CPU
build of torch first). Hyperparameters are rl-baselines3-zoo's tuned ones (rl_zoo3 2.9.2,
hyperparams/{ppo,dqn,sac}.yml), copied below as data, keyed by env id.

    pytest bench/ --agent ppo --agent sb3-ppo --seeds 10      # side by side, same protocol
    python -m bench.peers.sb3 --seeds 10                      # the same, then a comparison report
"""
from __future__ import annotations

import os

import numpy as np

try:  # imported before the clock starts, like tinygrad for the reference agents
  import greenlet
  import torch
  from stable_baselines3 import DQN, PPO, SAC
  from stable_baselines3.common.callbacks import BaseCallback
  from stable_baselines3.common.monitor import Monitor
  from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
except ImportError as e:
  raise ImportError(f"the SB3 peers need the optional extra: pip install -e '.[peers]' ({e})") from e


def linear(start: float):
  return lambda progress_remaining: progress_remaining * start


# rl-baselines3-zoo, "# Tuned" entries. n_envs / n_timesteps / normalize are the zoo's, the rest go to the
# SB3 constructor. Keys absent here take SB3's defaults, as in the zoo.
ZOO: dict[str, dict[str, dict]] = {
  "ppo": {
    "CartPole-v1": dict(n_envs=8, n_timesteps=100_000, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98,
                        n_epochs=20, ent_coef=0.0, learning_rate=linear(0.001), clip_range=linear(0.2)),
    "Acrobot-v1": dict(normalize=True, n_envs=16, n_timesteps=1_000_000, n_steps=256, gae_lambda=0.94, gamma=0.99,
                       n_epochs=4, ent_coef=0.0),
    "Pendulum-v1": dict(n_envs=4, n_timesteps=100_000, n_steps=1024, gae_lambda=0.95, gamma=0.9, n_epochs=10,
                        ent_coef=0.0, learning_rate=1e-3, clip_range=0.2, use_sde=True, sde_sample_freq=4),
    "MountainCar-v0": dict(normalize=True, n_envs=16, n_timesteps=1_000_000, n_steps=16, gae_lambda=0.98, gamma=0.99,
                           n_epochs=4, ent_coef=0.0),
    "LunarLander-v3": dict(n_envs=16, n_timesteps=1_000_000, n_steps=1024, batch_size=64, gae_lambda=0.98, gamma=0.999,
                           n_epochs=4, ent_coef=0.01),
  },
  "dqn": {
    "CartPole-v1": dict(n_timesteps=50_000, learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000,
                        gamma=0.99, target_update_interval=10, train_freq=256, gradient_steps=128,
                        exploration_fraction=0.16, exploration_final_eps=0.04, policy_kwargs=dict(net_arch=[256, 256])),
    "Acrobot-v1": dict(n_timesteps=100_000, learning_rate=6.3e-4, batch_size=128, buffer_size=50_000, learning_starts=0,
                       gamma=0.99, target_update_interval=250, train_freq=4, gradient_steps=-1,
                       exploration_fraction=0.12, exploration_final_eps=0.1, policy_kwargs=dict(net_arch=[256, 256])),
    "MountainCar-v0": dict(n_timesteps=120_000, learning_rate=4e-3, batch_size=128, buffer_size=10_000, learning_starts=1000,
                           gamma=0.98, target_update_interval=600, train_freq=16, gradient_steps=8,
                           exploration_fraction=0.2, exploration_final_eps=0.07, policy_kwargs=dict(net_arch=[256, 256])),
    "LunarLander-v3": dict(n_timesteps=100_000, learning_rate=6.3e-4, batch_size=128, buffer_size=50_000, learning_starts=0,
                           gamma=0.99, target_update_interval=250, train_freq=4, gradient_steps=-1,
                           exploration_fraction=0.12, exploration_final_eps=0.1, policy_kwargs=dict(net_arch=[256, 256])),
  },
  "sac": {
    "Pendulum-v1": dict(n_timesteps=20_000, learning_rate=1e-3),
    "MountainCarContinuous-v0": dict(n_timesteps=50_000, learning_rate=3e-4, buffer_size=50_000, batch_size=512, ent_coef=0.1,
                                     train_freq=32, gradient_steps=32, gamma=0.9999, tau=0.01, learning_starts=0, use_sde=True,
                                     policy_kwargs=dict(log_std_init=-3.67, net_arch=[64, 64], use_expln=True)),
  },
}


class _BetweenUpdates(BaseCallback):
  """Calls `fn(steps)` between updates: SB3 calls on_rollout_start right after each train() (on- and off-policy
  alike; the first call comes before any update and is skipped). `fn` returning True stops learn()."""
  def __init__(self, fn):
    super().__init__()
    self.fn, self.stop, self.rollouts = fn, False, 0

  def _on_rollout_start(self) -> None:
    self.rollouts += 1
    if self.rollouts > 1: self.stop = bool(self.fn(self.num_timesteps))

  def _on_step(self) -> bool: return not self.stop


class SB3Agent:
  """One SB3 algorithm with the zoo's hyperparameters for the task's env id, as a referee agent."""
  algo = "ppo"
  algos = {"ppo": PPO, "dqn": DQN, "sac": SAC}   # the library's classes (bench/peers/sbx.py: SB3's API in JAX)
  # torch.set_num_threads in construction (env PEER_TORCH_THREADS overrides; recorded in the run's agent profile). 1, by
  # measurement: PPO CartPole in SB3's plain loop, 10 seeds each, 0.348 ms per env step at 1 thread, 0.364 at torch's
  # default 2 on this 2-core machine; and at 2 torch's idle threads spin after each op, which the referee counts as
  # work while train() is suspended (a run failed its CPU allowance in evaluation that way)
  torch_threads: int | None = 1

  def __init__(self, task, seed: int):
    threads = int(os.environ.get("PEER_TORCH_THREADS") or 0) or self.torch_threads
    if threads: torch.set_num_threads(threads)
    self.profile = {"torch_threads": float(torch.get_num_threads())}
    table = ZOO[self.algo]
    if task.env_id not in table:
      raise ValueError(f"no rl-zoo3 {self.algo.upper()} hyperparameters for {task.env_id} (have: {', '.join(table)})")
    hp = dict(table[task.env_id])
    n_envs, self.total, normalize = hp.pop("n_envs", 1), hp.pop("n_timesteps"), hp.pop("normalize", False)
    env = DummyVecEnv([lambda: Monitor(task.make_env()) for _ in range(n_envs)])
    # the zoo's `normalize: true` = VecNormalize with its defaults (observations and rewards), gamma from the algorithm
    self.vecnorm = VecNormalize(env, gamma=hp.get("gamma", 0.99)) if normalize else None
    self.model = self.algos[self.algo]("MlpPolicy", self.vecnorm or env, seed=seed, device="cpu", verbose=0, **hp)

  def train(self):
    """SB3's own learn() in a greenlet: it hands control back to the referee between updates, on this OS thread. In a
    second thread, as this adapter first did, SB3 ran 1.6x slower than its own loop (the same steps): one core busy
    where the plain loop used two, and per env step slower even than a plain loop at one torch thread (0.51 against
    0.37 ms); the queue hand-offs were a few per second, not the cause (agents/TUNING.md "Peers")."""
    def learn():
      self.model.learn(total_timesteps=self.total, callback=_BetweenUpdates(lambda steps: greenlet.getcurrent().parent.switch(steps)))
      return self.model.num_timesteps
    g = greenlet.greenlet(learn)
    while True:
      steps = g.switch()            # runs learn() up to the next update boundary, or to its end
      yield int(steps)
      if g.dead: return

  def learn_plainly(self, on_update) -> None:
    """SB3's own loop with `on_update(steps)` between updates (True stops it): bench/peers/plain.py's user loop."""
    self.model.learn(total_timesteps=self.total, callback=_BetweenUpdates(on_update))

  def act(self, obs: np.ndarray) -> np.ndarray:
    if self.vecnorm is not None: obs = self.vecnorm.normalize_obs(obs)
    return self.model.predict(obs, deterministic=True)[0]

  def snapshot(self) -> dict[str, np.ndarray]:
    """What act() reads, for the referee's evaluator: the policy's parameters (torch's state_dict; sbx: the leaves of its
    JAX train states' parameters) and VecNormalize's observation statistics."""
    out = {f"p/{k}": v for k, v in _params(self.model.policy).items()}
    if self.vecnorm is not None: out.update(obs_mean=self.vecnorm.obs_rms.mean, obs_var=self.vecnorm.obs_rms.var)
    return out

  def restore(self, state: dict[str, np.ndarray]) -> None:
    _set_params(self.model.policy, {k[2:]: v for k, v in state.items() if k.startswith("p/")})
    if self.vecnorm is not None: self.vecnorm.obs_rms.mean, self.vecnorm.obs_rms.var = state["obs_mean"], state["obs_var"]


def _train_states(policy) -> dict:
  """sbx: the policy's flax TrainStates (actor_state, qf_state, vf_state), by attribute name; none for SB3's torch policies
  (sbx's are torch Modules too, SB3's BasePolicy, whose state_dict is empty)."""
  return {k: v for k, v in vars(policy).items() if k.endswith("_state") and hasattr(v, "params")}


def _params(policy) -> dict[str, np.ndarray]:
  if not _train_states(policy): return {k: v.detach().cpu().numpy() for k, v in policy.state_dict().items()}
  import jax
  return {f"{name}/{i}": np.asarray(leaf) for name, st in _train_states(policy).items()
          for i, leaf in enumerate(jax.tree_util.tree_leaves(st.params))}


def _set_params(policy, params: dict[str, np.ndarray]) -> None:
  if not _train_states(policy):
    policy.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in params.items()})
    return
  import jax
  for name, st in _train_states(policy).items():
    leaves, tree = jax.tree_util.tree_flatten(st.params)
    new = [jax.numpy.asarray(params[f"{name}/{i}"]) for i in range(len(leaves))]
    setattr(policy, name, st.replace(params=jax.tree_util.tree_unflatten(tree, new)))


class SB3PPO(SB3Agent): algo = "ppo"
class SB3DQN(SB3Agent): algo = "dqn"
class SB3SAC(SB3Agent): algo = "sac"


def main(argv: list[str] | None = None) -> int:
  """Run a reference agent and its SB3 counterpart side by side through `pytest bench/`; the session
  ends with the report (verdict, plots) under results/<session>/."""
  import argparse

  import pytest
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--seeds", type=int, default=10)
  p.add_argument("--task", default="CartPole-v1")
  p.add_argument("--agent", default="ppo", help="reference agent (default: ppo); its peer is sb3-<agent>")
  p.add_argument("--results-dir", default="results")
  args, rest = p.parse_known_args(argv)
  return int(pytest.main(["bench/", "--agent", args.agent, "--agent", f"sb3-{args.agent}", "--task", args.task,
                          "--seeds", str(args.seeds), "--baseline", f"sb3-{args.agent}", "--results-dir", args.results_dir,
                          "--benchmark-columns", "min,median,max,mean,rounds", *rest]))


if __name__ == "__main__":
  raise SystemExit(main())
