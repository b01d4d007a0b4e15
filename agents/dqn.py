"""Double DQN for discrete actions in tinygrad, tuned for wall-clock time-to-threshold.

CleanRL-style: hyperparameters in a dataclass (per-task overrides as data, rl-zoo3's tuned DQN as the
starting point), the loop in `train()`. Double DQN (van Hasselt et al. 2016): the online network picks
the next action, the target network values it; Huber loss; a replay buffer in numpy; n-step returns as an option.
What makes it fast:
- the Q-network lives in one flat parameter buffer, its target in another, Adam's moments in a third;
  numpy weight init (no init kernels);
- one TinyJit call per gradient step does the Double-DQN loss, backward, Adam, and the target update
  (`tau` is an input: 0 on most steps, 1 on a hard copy), on one fixed-shape input buffer (the batch, the step
  size, tau) written in place from the replay buffer (one numpy fancy-index, one copy, no new Tensors);
- on the CPU it declares HCQ2 (TINYGRAD_SETTINGS): the update's kernels replay in one compiled call;
- the update is captured at the start of train() on a dummy batch with a zero step size (and the moments
  zeroed after), so kernels are compiled and cached before training, and in the referee's warm-up; not in
  the constructor, which the referee's evaluators run too (they only act);
- acting on all envs is one jitted argmax; exploration noise is numpy.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass

import numpy as np
from tinygrad import Tensor, dtypes
from tinygrad.helpers import Context

from agents.common import Adam, Columns, Greedy, Profile, Replay, copyin, jit, mlp_layout, orthogonal, overridden, relu_mlp, views


@dataclass(frozen=True)
class Config:
  num_envs: int = 8
  """environments stepped together"""
  hidden: int = 64
  """units per hidden layer"""
  layers: int = 2
  """hidden layers"""
  buffer_size: int = 100_000
  """replay rows kept (the oldest overwritten)"""
  batch_size: int = 64
  """rows per gradient step"""
  learning_starts: int = 1000
  """env steps of uniform random actions before the first update"""
  train_every: int = 32
  """vector steps between training phases (num_envs * train_every env steps)"""
  gradient_steps: int = 64
  """gradient steps per training phase"""
  updates_per_call: int = 1
  """gradient steps per jitted call (a divisor of gradient_steps): fewer calls, a bigger graph to build"""
  target_every: int = 1
  """training phases between hard target copies (tau = 1 on the phase's first step) ..."""
  target_tau: float = 1.0
  """... or, below 1, a Polyak update target += tau (theta - target) after every step"""
  gamma: float = 0.99
  """discount"""
  n_step: int = 1
  """n-step returns (Sutton & Barto 7.1, as in Rainbow): bootstrap n env steps ahead"""
  lr: float = 2.3e-3
  """Adam's step size"""
  eps_start: float = 1.0
  """epsilon-greedy: epsilon at the start ..."""
  eps_end: float = 0.04
  """... and at the end of its linear decay"""
  eps_decay_steps: int = 8_000
  """env steps of the linear epsilon decay (from the start)"""
  eps_zeta: float = 0.0
  """> 1: temporally-extended epsilon-greedy (Dabney et al. 2021): an exploratory action is held for n ~ zeta(eps_zeta)
  steps; 0: plain epsilon-greedy"""
  eps_max_repeat: int = 100
  """the longest an exploratory action is held"""
  max_grad_norm: float = 10.0
  """global gradient norm clip"""
  adam_eps: float = 1e-8
  """Adam's epsilon"""
  scale_obs: bool = False
  """map observations to [-1, 1] by the observation space's (finite) bounds, in the net"""


# tinygrad settings the referee runs this agent with (bench/referee/agent_api.py declared_settings; agents/TUNING.md
# "Settings"): HCQ2 replays the 27-kernel update in one compiled call on the CPU
TINYGRAD_SETTINGS = {"CartPole-v1@CPU": {"HCQ2": "1"}}


# per-task settings, as data (rl-zoo3's tuned DQN as the starting point); why each: agents/TUNING.md
TASK_CONFIGS: dict[str, Config] = {
  "CartPole-v1": Config(num_envs=16, train_every=16),
  "Acrobot-v1": Config(train_every=4, gradient_steps=8, lr=6.3e-4, batch_size=128, target_every=8, eps_end=0.1,
                       eps_decay_steps=12_000),
  "LunarLander-v3": Config(hidden=128, train_every=4, gradient_steps=8, lr=6.3e-4, batch_size=128, buffer_size=50_000,
                           target_every=8, eps_end=0.1, eps_decay_steps=12_000),
  "MountainCar-v0": Config(hidden=128, train_every=2, gradient_steps=8, lr=4e-3, batch_size=128, buffer_size=10_000,
                           target_every=37, gamma=0.98, eps_end=0.1, eps_decay_steps=60_000, eps_zeta=2.0,
                           n_step=8, scale_obs=True),
}


def replay_columns(obs_dim: int) -> Columns:
  """A replay row: an n-step transition (NStep), the discount gamma^m of its bootstrap included."""
  return Columns(observations=obs_dim, actions=(), returns=(), next_observations=obs_dim, terminations=(), discounts=())


class DQN:
  def __init__(self, task, seed: int, config: Config | None = None):
    self.cfg = cfg = config or overridden(TASK_CONFIGS.get(task.name, Config()), "DQN_CONFIG")
    self.task, self.seed = task, seed
    self.envs = task.make_vec(cfg.num_envs)
    obs_space, act_space = self.envs.single_observation_space, self.envs.single_action_space
    self.obs_dim, self.n_actions = int(np.prod(obs_space.shape)), int(act_space.n)
    self.rng = np.random.default_rng(seed)
    if cfg.scale_obs:   # x -> (x - mid) / half, constants in the net
      low, high = obs_space.low.astype(np.float64).ravel(), obs_space.high.astype(np.float64).ravel()
      if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ValueError(f"scale_obs needs a bounded observation space, {task.name} has {obs_space}")
      self.obs_mid = Tensor(((high + low) / 2).astype(np.float32)).realize()
      self.obs_inv_half = Tensor((2 / (high - low)).astype(np.float32)).realize()
    self.profile = Profile(construct_s=0.0, env_s=0.0, act_s=0.0, update_s=0.0, capture_s=0.0, updates=0)
    t0 = time.perf_counter()
    O, A, H = self.obs_dim, self.n_actions, cfg.hidden
    self.layout, weights = mlp_layout("", [O] + [H] * cfg.layers + [A]), []
    for i, (_, (fan_in, fan_out)) in enumerate(self.layout[::2]):
      weights += [orthogonal(self.rng, fan_in, fan_out, 1.0 if i == cfg.layers else 2**0.5), np.zeros(fan_out, np.float32)]
    flat = np.concatenate([w.ravel() for w in weights])
    self.theta, self.target = Tensor(flat).realize(), Tensor(flat).realize()
    self.adam = Adam(self.theta, lr=cfg.lr, eps=cfg.adam_eps)
    # persistent fixed-shape inputs: a batch of replay rows, [step size, tau]
    self.cols = replay_columns(O)
    if cfg.gradient_steps % cfg.updates_per_call:
      raise ValueError(f"updates_per_call {cfg.updates_per_call} must divide gradient_steps {cfg.gradient_steps}")
    # one input per call (TinyJit prepares each input on every call: ~50 us): per update its batch of replay rows, then
    # [step size, tau]
    self.call_in = Tensor.zeros(cfg.updates_per_call, cfg.batch_size * self.cols.width + 2).contiguous().realize()
    self.call_rows = np.zeros(self.call_in.shape, np.float32)
    self.replay = Replay(cfg.buffer_size, self.cols.width)
    self._update = jit(self._update_fn)
    self.greedy = Greedy(lambda x: self._q(self.theta, x).argmax(-1), O, dtype=np.int32, rows=max(task.confirm_episodes, cfg.num_envs))
    self.act(np.zeros((cfg.num_envs, O), np.float32))
    self.profile["construct_s"] = time.perf_counter() - t0

  def _capture(self) -> None:
    """Capture the update (zero step size, no target change), then forget the moments it touched: at the start of
    train(), so that an evaluator, which only acts, never spends seconds on it."""
    with self.profile.timed("capture_s"), Context(TRAINING=1):
      for _ in range(2): self._update(self.call_in)
    self.adam.forget()

  def _q(self, theta: Tensor, obs: Tensor) -> Tensor:
    if self.cfg.scale_obs: obs = (obs - self.obs_mid) * self.obs_inv_half
    return relu_mlp(views(theta, self.layout), "", obs, self.cfg.layers + 1)

  def _update_fn(self, x: Tensor) -> Tensor:
    """`updates_per_call` gradient steps, one after the other; row k of `x`: step k's batch, its step size and tau."""
    cfg, n = self.cfg, self.cfg.batch_size * self.cols.width
    losses = [self._step(x[k, :n].reshape(cfg.batch_size, self.cols.width), x[k, n:]) for k in range(cfg.updates_per_call)]
    return losses[0] if len(losses) == 1 else Tensor.stack(*losses).realize()

  def _step(self, batch: Tensor, lr_tau: Tensor) -> Tensor:
    """One Double-DQN gradient step with Adam, then target <- target + tau * (theta - target)."""
    cfg, data = self.cfg, self.cols.split(batch)
    next_action = self._q(self.theta.detach(), data.next_observations).argmax(-1)                  # online net picks
    next_q = (self._q(self.target, data.next_observations) * next_action.one_hot(self.n_actions)).sum(-1)   # target values
    y = (data.returns + data.discounts * (1 - data.terminations) * next_q).detach()
    q = (self._q(self.theta, data.observations) * data.actions.cast(dtypes.int32).one_hot(self.n_actions)).sum(-1)
    loss = huber(q - y)
    g, = loss.gradient(self.theta)
    g = g * (cfg.max_grad_norm / (g.square().sum().sqrt() + 1e-6)).minimum(1.0).contiguous()
    new_theta = self.adam.step(0, self.theta, g, lr_tau[0])
    self.target.assign(self.target + lr_tau[1] * (new_theta - self.target))
    Tensor.realize(loss, *self.adam.moments, self.theta, self.target)   # loss of the weights before the step
    return loss

  def act(self, obs: np.ndarray) -> np.ndarray:
    """The referee's evaluation (and exploitation in training): argmax_a Q(obs, a) for a batch of any size."""
    return self.greedy(obs).astype(np.int64)

  def _learn(self, phase: int) -> None:
    cfg, K, x = self.cfg, self.cfg.updates_per_call, self.call_rows
    for k in range(cfg.gradient_steps):
      x[k % K, -2] = self.adam.next_lr()
      if cfg.target_tau < 1.0: x[k % K, -1] = cfg.target_tau
      else: x[k % K, -1] = 1.0 if k == 0 and phase % cfg.target_every == 0 else 0.0
      if k % K < K - 1: continue
      x[:, :-2] = self.replay.sample(self.rng, cfg.batch_size * K).reshape(K, -1)
      copyin(self.call_in, x)
      self._update(self.call_in)

  def train(self):
    self._capture()
    cfg, N, prof = self.cfg, self.cfg.num_envs, self.profile
    obs, _ = self.envs.reset(seed=self.seed)
    autoreset = np.zeros(N, bool)   # gymnasium next-step autoreset: this step only resets these envs
    n_step = NStep(cfg.n_step, N, cfg.gamma)
    held, held_for = np.zeros(N, np.int64), np.zeros(N, np.int64)   # temporally-extended exploration per env
    steps = phase = 0
    with Context(TRAINING=1):
      while True:
        for _ in range(cfg.train_every):
          if steps < cfg.learning_starts: eps, actions = 1.0, np.zeros(N, np.int64)
          else:
            eps = max(cfg.eps_end, cfg.eps_start - (cfg.eps_start - cfg.eps_end) * steps / cfg.eps_decay_steps)
            with prof.timed("act_s"): actions = self.act(obs)
          if cfg.eps_zeta:   # start a run of one random action where none is held, then play the held ones
            start = (held_for == 0) & (self.rng.random(N) < eps)
            held[start] = self.rng.integers(0, self.n_actions, int(start.sum()))
            held_for[start] = np.minimum(self.rng.zipf(cfg.eps_zeta, int(start.sum())), cfg.eps_max_repeat)
            explore = held_for > 0
            actions[explore], held_for[explore] = held[explore], held_for[explore] - 1
          elif steps < cfg.learning_starts: actions = self.rng.integers(0, self.n_actions, N)
          else:
            explore = self.rng.random(N) < eps
            actions[explore] = self.rng.integers(0, self.n_actions, int(explore.sum()))
          with prof.timed("env_s"): next_obs, rew, term, trunc, _ = self.envs.step(actions)
          valid = ~autoreset
          self.replay.add(n_step.rows(obs, actions, rew, next_obs, term, trunc, valid))
          steps += int(valid.sum())
          autoreset, obs = term | trunc, next_obs
          held_for[autoreset] = 0
        if steps >= cfg.learning_starts:
          with prof.timed("update_s"): self._learn(phase)
          prof["updates"] += 1
          phase += 1
        yield steps


class NStep:
  """Each env's stream of steps as n-step replay rows (replay_columns): observations o_t, actions a_t, returns
  sum_{k<m} gamma^k r_{t+k}, next_observations o_{t+m}, terminations, discounts gamma^m; m = n, or fewer where the
  episode ends first (a truncated end still bootstraps from its last obs)."""
  def __init__(self, n: int, num_envs: int, gamma: float):
    self.n, self.gamma, self.pending = n, gamma, [collections.deque() for _ in range(num_envs)]

  def rows(self, obs, actions, rew, next_obs, term, trunc, valid) -> np.ndarray:
    """Rows completed by this vector step (envs where `valid` is False are resetting: no transition)."""
    out = []
    for i in np.flatnonzero(valid):
      pending, ended = self.pending[i], term[i] or trunc[i]
      pending.append((obs[i], actions[i], rew[i]))
      while pending and (len(pending) == self.n or ended):
        m = len(pending)
        ret = sum(self.gamma**k * r for k, (_, _, r) in enumerate(pending))
        o, a, _ = pending.popleft()
        out.append((o, a, ret, next_obs[i], term[i], self.gamma**m))
    cols = replay_columns(obs[0].size)
    rows = np.zeros((len(out), cols.width), np.float32)
    if out: cols.fill(rows, **{name: np.asarray(v) for name, v in zip(cols.fields, zip(*out))})
    return rows


def huber(x: Tensor, delta: float = 1.0) -> Tensor:
  """Mean Huber loss of the TD errors x (smooth L1, as SB3's DQN)."""
  a = x.abs()
  return Tensor.where(a < delta, 0.5 * x * x, delta * (a - 0.5 * delta)).mean()


if __name__ == "__main__":
  from agents.run import main
  raise SystemExit(main("agents.dqn:DQN"))   # the module's class, not __main__'s
