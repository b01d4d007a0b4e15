"""SAC for continuous actions (Box) in tinygrad, tuned for wall-clock time-to-threshold.

CleanRL-style: hyperparameters in a dataclass (per-task overrides as data, rl-zoo3's tuned SAC as the
starting point), the loop in `train()`. Soft Actor-Critic (Haarnoja et al. 2018, the "applications"
version): twin Q critics with Polyak-averaged targets, a tanh-squashed Gaussian policy, the entropy
temperature alpha learned towards a target entropy of -dim(A).
What makes it fast:
- actor, critics (both Qs in one buffer, stacked: each layer of both is one batched matmul), target critics,
  log-alpha and the three sets of Adam moments are a handful of flat buffers; numpy weight init;
- one TinyJit call per gradient step does the critic, actor and alpha losses, their gradients (one backward
  pass of their sum), three Adam steps and the target update, on a fixed-shape batch buffer written in place from the numpy replay
  buffer; the Gaussian noise of the reparameterisation comes from numpy inside that batch (no RNG kernels);
- the update is captured at the start of train() with a zero step size (moments zeroed after), so its kernels
  are compiled in the referee's untimed warm-up and cached; not in the constructor, which the referee's
  evaluators run too (they only act);
- acting on all envs is one jitted call (noise as input), evaluation one per batch size (tanh(mean)).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from tinygrad import Tensor
from tinygrad.helpers import Context

from agents.common import Adam, Columns, Greedy, Profile, Replay, copyin, copyout, jit, mlp_layout, overridden, relu_mlp, views

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass(frozen=True)
class Config:
  num_envs: int = 4
  """environments stepped together"""
  hidden: int = 64
  """units per hidden layer (two hidden layers, actor and critics)"""
  buffer_size: int = 100_000
  """replay rows kept (the oldest overwritten)"""
  batch_size: int = 128
  """rows per gradient step"""
  learning_starts: int = 1000
  """env steps of uniform random actions before the first update"""
  train_every: int = 1
  """vector steps between training phases"""
  gradient_steps: int = 4
  """gradient steps per training phase (num_envs: one per env step)"""
  gamma: float = 0.99
  """discount"""
  tau: float = 0.01
  """Polyak factor of the target critics, every gradient step"""
  lr: float = 1e-3
  """Adam's step size (actor, critics, temperature)"""
  init_alpha: float = 1.0
  """initial entropy temperature"""
  learn_alpha: bool = True
  """learn the temperature towards a target entropy of -dim(A); False: it stays at init_alpha"""
  pink_noise: bool = False
  """explore with noise of a 1/f spectrum over each episode instead of white noise (Eberhard et al. 2023)"""
  noise_len: int = 1000
  """pink noise: the length of each env's drawn sequence, in steps"""
  adam_eps: float = 1e-8
  """Adam's epsilon"""


# tinygrad settings the referee runs this agent with (bench/referee/agent_api.py declared_settings; agents/TUNING.md
# "Settings"): HCQ2 replays the update's kernels in one compiled call on the CPU
TINYGRAD_SETTINGS = {"Pendulum-v1@CPU": {"HCQ2": "1"}}


# per-task settings, as data (rl-zoo3's tuned SAC as the starting point); why each: agents/TUNING.md
MUJOCO = Config(hidden=256, batch_size=256, buffer_size=1_000_000, learning_starts=10_000, lr=3e-4, tau=0.005)
TASK_CONFIGS: dict[str, Config] = {
  "Pendulum-v1": Config(num_envs=8, gradient_steps=8, batch_size=64),
  "MountainCarContinuous-v0": Config(hidden=64, batch_size=512, buffer_size=50_000, lr=3e-4, init_alpha=0.1,
                                     learn_alpha=False, gamma=0.9999, tau=0.01, train_every=8, gradient_steps=32,
                                     pink_noise=True),
  "HalfCheetah-v5": MUJOCO,
  "Hopper-v5": MUJOCO,
}


def _init(rng: np.random.Generator, layout) -> np.ndarray:
  """PyTorch's default Linear init (uniform +-1/sqrt(fan_in) for weights and biases), as SB3 and CleanRL use."""
  parts = []
  for (_, w_shape), (_, b_shape) in zip(layout[::2], layout[1::2]):
    bound = 1 / math.sqrt(w_shape[0])
    parts += [rng.uniform(-bound, bound, w_shape).ravel(), rng.uniform(-bound, bound, b_shape)]
  return np.concatenate(parts).astype(np.float32)


def twin_layout(layout):
  """A layer list (mlp_layout) as two stacked copies: weights (2, fan_in, fan_out), biases (2, 1, fan_out)."""
  return [(name, (2, *shape) if len(shape) == 2 else (2, 1, *shape)) for name, shape in layout]


def _init_twins(rng: np.random.Generator, layout) -> np.ndarray:
  """Two networks of `layout` initialised one after the other (as two separate critics were), stored stacked
  (twin_layout): each weight's and bias's two copies side by side."""
  first, second = _init(rng, layout), _init(rng, layout)
  parts, off = [], 0
  for _, shape in layout:
    n = int(np.prod(shape))
    parts += [first[off:off + n], second[off:off + n]]
    off += n
  return np.concatenate(parts)


def pink_noise(rng: np.random.Generator, shape: tuple[int, ...], length: int) -> np.ndarray:
  """Gaussian noise with a 1/f power spectrum along a last axis of `length` steps, scaled to unit variance
  per sequence: temporally correlated exploration (Eberhard et al. 2023, "Pink noise is all you need")."""
  f = np.fft.rfftfreq(length)
  f[0] = f[1]                                    # the constant term gets the lowest frequency's power
  spec = (rng.standard_normal((*shape, len(f))) + 1j * rng.standard_normal((*shape, len(f)))) / np.sqrt(f)
  x = np.fft.irfft(spec, n=length)
  return (x / x.std(-1, keepdims=True)).astype(np.float32)


def squashed_gaussian(mean: Tensor, log_std: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
  """a = tanh(mean + std * noise) and its log-probability: the Gaussian's, minus log(1 - tanh(u)^2) per
  dimension (computed stably as 2 (log 2 - u - softplus(-2u)))."""
  u = mean + log_std.exp() * noise
  logp_u = (-0.5 * noise * noise - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
  log_det = (2 * (math.log(2) - u - (-2 * u).softplus())).sum(-1)
  return u.tanh(), logp_u - log_det


class SAC:
  def __init__(self, task, seed: int, config: Config | None = None):
    self.cfg = cfg = config or overridden(TASK_CONFIGS.get(task.name, Config()), "SAC_CONFIG")
    self.task, self.seed = task, seed
    self.envs = task.make_vec(cfg.num_envs)
    obs_space, act_space = self.envs.single_observation_space, self.envs.single_action_space
    self.obs_dim, self.act_dim = int(np.prod(obs_space.shape)), int(np.prod(act_space.shape))
    self.low, self.high = act_space.low.astype(np.float32), act_space.high.astype(np.float32)
    self.rng = np.random.default_rng(seed)
    self.profile = Profile(construct_s=0.0, env_s=0.0, act_s=0.0, update_s=0.0, capture_s=0.0, updates=0)
    t0 = time.perf_counter()
    O, A, H = self.obs_dim, self.act_dim, cfg.hidden
    self.actor_layout = mlp_layout("pi", [O, H, H, 2 * A])
    self.critic_layout = twin_layout(mlp_layout("q", [O + A, H, H, 1]))
    actor, critic = _init(self.rng, self.actor_layout), _init_twins(self.rng, mlp_layout("q", [O + A, H, H, 1]))
    self.actor, self.critic, self.critic_target = Tensor(actor).realize(), Tensor(critic).realize(), Tensor(critic).realize()
    self.log_alpha = Tensor([math.log(cfg.init_alpha)]).realize()
    self.adam = Adam(self.actor, self.critic, self.log_alpha, lr=cfg.lr, eps=cfg.adam_eps)
    self.target_entropy = -float(A)
    # replay rows (actions in [-1, 1]); a batch adds the reparameterisation's Gaussian noise for a' ~ pi(s') and a ~ pi(s)
    self.replay_cols = Columns(observations=O, actions=A, rewards=(), next_observations=O, terminations=())
    self.cols = self.replay_cols.extend(next_action_noise=A, action_noise=A)
    self.batch_in = Tensor.zeros(cfg.batch_size, self.cols.width).contiguous().realize()
    self.lr_in = Tensor.zeros(1).contiguous().realize()
    self.replay = Replay(cfg.buffer_size, self.replay_cols.width)
    self.act_cols = Columns(observations=O, noise=A)
    self.act_in = Tensor.zeros(cfg.num_envs, self.act_cols.width).contiguous().realize()
    self.act_out = np.zeros((cfg.num_envs, A), np.float32)
    self._update = jit(self._update_fn)
    self._sample = jit(self._sample_fn)
    self.greedy = Greedy(lambda x: self._policy(self.actor, x)[0].tanh(), O, (A,), rows=task.confirm_episodes)
    self.profile["construct_s"] = time.perf_counter() - t0

  def _capture(self) -> None:
    """Capture the update and the exploration kernels: at the start of train(), so that an evaluator, which only
    acts, never spends seconds on them."""
    with self.profile.timed("capture_s"):
      targets = copyout(self.critic_target, np.empty(self.critic_target.shape, np.float32))
      with Context(TRAINING=1):
        for _ in range(2): self._update(self.batch_in, self.lr_in)   # capture with step size 0 ...
      self.adam.forget()                                            # ... and forget the moments it touched
      copyin(self.critic_target, targets)                           # tau is not zero: restore the targets
      for _ in range(2): self._sample(self.act_in)                  # exploration kernels too

  # --- networks ---
  def _policy(self, actor: Tensor, obs: Tensor) -> tuple[Tensor, Tensor]:
    out = relu_mlp(views(actor, self.actor_layout), "pi", obs, 3)
    mean, log_std = out[:, :self.act_dim], out[:, self.act_dim:]
    log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std.tanh() + 1)   # CleanRL's bounded log-std
    return mean, log_std

  def _q(self, critic: Tensor, obs: Tensor, act: Tensor) -> tuple[Tensor, Tensor]:
    """Both critics in one pass: their weights stacked (2, fan_in, fan_out), the batch broadcast over them, so that each
    layer is one batched matmul, not two (fewer kernels to build and to run: agents/TUNING.md "SAC")."""
    q = relu_mlp(views(critic, self.critic_layout), "q", obs.cat(act, dim=1).unsqueeze(0), 3)[..., 0]   # (2, B)
    return q[0], q[1]

  def _update_fn(self, batch: Tensor, lr_t: Tensor) -> Tensor:
    """One SAC gradient step: critics, actor, temperature, then the Polyak target update."""
    cfg, data = self.cfg, self.cols.split(batch)
    alpha = self.log_alpha.exp().detach()
    # critics: y = r + gamma (1 - terminated) (min target Q(s', a') - alpha log pi(a'|s')), a' ~ pi(s')
    next_a, next_logp = squashed_gaussian(*self._policy(self.actor, data.next_observations), data.next_action_noise)
    tq1, tq2 = self._q(self.critic_target, data.next_observations, next_a)
    y = (data.rewards + cfg.gamma * (1 - data.terminations) * (Tensor.minimum(tq1, tq2) - alpha * next_logp)).detach()
    q1, q2 = self._q(self.critic, data.observations, data.actions)
    critic_loss = ((q1 - y).square() + (q2 - y).square()).mean() * 0.5
    # actor: alpha log pi(a|s) - min Q(s, a), a = the reparameterised sample, critics held fixed
    new_a, logp = squashed_gaussian(*self._policy(self.actor, data.observations), data.action_noise)
    pq1, pq2 = self._q(self.critic.detach(), data.observations, new_a)
    actor_loss = (alpha * logp - Tensor.minimum(pq1, pq2)).mean()
    # temperature: towards the target entropy
    alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
    # one backward pass: each loss reaches only its own parameters (the critics are detached in the actor's loss, the
    # target y and the entropy term in the others'), so the sum's gradient is each loss's own
    g_critic, g_actor, g_alpha = (critic_loss + actor_loss + alpha_loss).gradient(self.critic, self.actor, self.log_alpha)
    stepped = [(1, self.critic, g_critic), (0, self.actor, g_actor)] + ([(2, self.log_alpha, g_alpha)] if cfg.learn_alpha else [])
    for i, theta, g in stepped: self.adam.step(i, theta, g, lr_t)
    self.critic_target.assign(self.critic_target + cfg.tau * (self.critic - self.critic_target))
    losses = Tensor.stack(critic_loss, actor_loss, alpha_loss)
    Tensor.realize(losses, *self.adam.moments, self.critic, self.actor, self.log_alpha, self.critic_target)
    return losses

  def _sample_fn(self, x: Tensor) -> Tensor:
    """Exploration: x = act_cols [observations | standard normal noise]; returns actions in [-1, 1]."""
    x = self.act_cols.split(x)
    a, _ = squashed_gaussian(*self._policy(self.actor, x.observations), x.noise)
    return a.contiguous().realize()

  def _scale(self, a: np.ndarray) -> np.ndarray:
    return self.low + (a + 1) * 0.5 * (self.high - self.low)

  # --- the referee's evaluation: deterministic actions, tanh(mean), for any batch size ---
  def act(self, obs: np.ndarray) -> np.ndarray:
    return self._scale(self.greedy(obs))

  def _learn(self) -> None:
    cfg, A = self.cfg, self.act_dim
    batch = np.empty((cfg.batch_size, self.cols.width), np.float32)
    k = self.replay_cols.width
    for _ in range(cfg.gradient_steps):
      copyin(self.lr_in, np.array([self.adam.next_lr()], np.float32))
      batch[:, :k] = self.replay.sample(self.rng, cfg.batch_size)
      batch[:, k:] = self.rng.standard_normal((cfg.batch_size, 2 * A), dtype=np.float32)   # both noises, in one draw
      copyin(self.batch_in, batch)
      self._update(self.batch_in, self.lr_in)

  def train(self):
    self._capture()
    cfg, N, A, prof = self.cfg, self.cfg.num_envs, self.act_dim, self.profile
    obs, _ = self.envs.reset(seed=self.seed)
    autoreset = np.zeros(N, bool)   # gymnasium next-step autoreset: this step only resets these envs
    rows = np.zeros((N, self.replay_cols.width), np.float32)
    x = np.zeros((N, self.act_cols.width), np.float32)
    steps = 0
    if cfg.pink_noise: noise, pos = pink_noise(self.rng, (N, A), cfg.noise_len), np.zeros(N, np.int64)
    with Context(TRAINING=1):
      while True:
        for _ in range(cfg.train_every):
          if steps < cfg.learning_starts: a = self.rng.uniform(-1, 1, (N, A)).astype(np.float32)
          else:
            with prof.timed("act_s"):
              self.act_cols.fill(x, observations=obs, noise=noise[np.arange(N), :, pos % cfg.noise_len] if cfg.pink_noise
                                 else self.rng.standard_normal((N, A)))
              copyin(self.act_in, x)
              a = copyout(self._sample(self.act_in), self.act_out).copy()
          with prof.timed("env_s"): next_obs, rew, term, trunc, _ = self.envs.step(self._scale(a))
          valid = ~autoreset
          self.replay_cols.fill(rows, observations=obs, actions=a, rewards=rew, next_observations=next_obs, terminations=term)
          self.replay.add(rows[valid])
          steps += int(valid.sum())
          autoreset, obs = term | trunc, next_obs
          if cfg.pink_noise:   # a new sequence per episode
            pos += 1
            if autoreset.any(): noise[autoreset], pos[autoreset] = pink_noise(self.rng, (int(autoreset.sum()), A), cfg.noise_len), 0
        if steps >= cfg.learning_starts:
          with prof.timed("update_s"): self._learn()
          prof["updates"] += 1
        yield steps


if __name__ == "__main__":
  from agents.run import main
  raise SystemExit(main("agents.sac:SAC"))   # the module's class, not __main__'s
