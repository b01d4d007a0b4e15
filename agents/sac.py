"""SAC for continuous actions (Box) in tinygrad, tuned for wall-clock time-to-threshold.

CleanRL-style: hyperparameters in a dataclass (per-task overrides as data, rl-zoo3's tuned SAC as the
starting point), the loop in `train()`. Soft Actor-Critic (Haarnoja et al. 2018, the "applications"
version): twin Q critics with Polyak-averaged targets, a tanh-squashed Gaussian policy, the entropy
temperature alpha learned towards a target entropy of -dim(A).
What makes it fast:
- actor, critics (both Qs in one buffer), target critics, log-alpha and the three sets of Adam moments are
  a handful of flat buffers; numpy weight init;
- one TinyJit call per gradient step does the critic, actor and alpha losses, their gradients, three
  Adam steps and the target update, on a fixed-shape batch buffer written in place from the numpy replay
  buffer; the Gaussian noise of the reparameterisation comes from numpy inside that batch (no RNG kernels);
- the update is captured in the constructor with a zero step size (moments zeroed after), so its kernels
  are compiled in the referee's untimed warm-up and cached;
- acting on all envs is one jitted call (noise as input), evaluation one per batch size (tanh(mean)).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from tinygrad import Tensor, TinyJit
from tinygrad.helpers import Context

from agents.common import Replay, adam_lr, adam_step, copyin, copyout, mlp_layout, relu_mlp, views

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass(frozen=True)
class Config:
  num_envs: int = 4
  hidden: int = 64
  buffer_size: int = 100_000
  batch_size: int = 128
  learning_starts: int = 1000     # env steps of uniform random actions before the first update
  train_every: int = 1            # vector steps between training phases
  gradient_steps: int = 4         # gradient steps per training phase (num_envs: one per env step)
  gamma: float = 0.99
  tau: float = 0.01               # Polyak factor of the target critics, every gradient step
  lr: float = 1e-3
  init_alpha: float = 1.0
  learn_alpha: bool = True        # False: alpha stays at init_alpha
  pink_noise: bool = False        # exploration noise with a 1/f spectrum over each episode instead of white noise
  noise_len: int = 1000           # ... drawn per env and episode, this many steps long (Eberhard et al. 2023)
  adam_eps: float = 1e-8


# per-task overrides, as data (rl-zoo3's sac.yml is the starting point: Pendulum-v1 lr 1e-3, the rest SB3's
# defaults: 256x256 nets, batch 256, one gradient step per env step, tau 0.005, learning_starts 100)
# The hard tier's MuJoCo tasks take the zoo's HalfCheetah/Hopper SAC as it is (SB3's defaults, 10k random steps).
MUJOCO = Config(hidden=256, batch_size=256, buffer_size=1_000_000, learning_starts=10_000, lr=3e-4, tau=0.005)
# MountainCarContinuous-v0: the zoo's SAC (64x64, batch 512, 50k buffer, lr 3e-4, fixed alpha 0.1, gamma 0.9999,
# tau 0.01, 32 gradient steps every 32 env steps) explores with gSDE; here pink noise does that job (seeds 0-1
# solved at 10k and 15k steps; with white noise SAC settles on not moving, which scores 0).
TASK_CONFIGS: dict[str, Config] = {
  "Pendulum-v1": Config(),
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
    self.cfg = cfg = config or TASK_CONFIGS.get(task.name, Config())
    self.task, self.seed = task, seed
    self.envs = task.make_vec(cfg.num_envs)
    obs_space, act_space = self.envs.single_observation_space, self.envs.single_action_space
    self.obs_dim, self.act_dim = int(np.prod(obs_space.shape)), int(np.prod(act_space.shape))
    self.low, self.high = act_space.low.astype(np.float32), act_space.high.astype(np.float32)
    self.rng = np.random.default_rng(seed)
    self.profile = {"construct_s": 0.0, "env_s": 0.0, "act_s": 0.0, "update_s": 0.0, "capture_s": 0.0, "updates": 0}
    t0 = time.perf_counter()
    O, A, H = self.obs_dim, self.act_dim, cfg.hidden
    self.actor_layout = mlp_layout("pi", [O, H, H, 2 * A])
    self.critic_layout = mlp_layout("q1", [O + A, H, H, 1]) + mlp_layout("q2", [O + A, H, H, 1])
    actor, critic = _init(self.rng, self.actor_layout), _init(self.rng, self.critic_layout)
    self.actor, self.critic, self.critic_target = Tensor(actor).realize(), Tensor(critic).realize(), Tensor(critic).realize()
    self.log_alpha = Tensor([math.log(cfg.init_alpha)]).realize()
    self.adam = [Tensor.zeros(2, n).contiguous().realize() for n in (len(actor), len(critic), 1)]
    self.betas = Tensor([[0.9], [0.999]]).realize()
    self.adam_t = 0
    self.target_entropy = -float(A)
    # a batch row: [obs | action (in [-1, 1]) | reward | next obs | terminated | noise for next action | noise for action]
    self.width = 2 * O + 2 * A + 2 + A
    self.batch_in = Tensor.zeros(cfg.batch_size, self.width).contiguous().realize()
    self.lr_in = Tensor.zeros(1).contiguous().realize()
    self.replay = Replay(cfg.buffer_size, 2 * O + A + 2)   # [obs | action | reward | next obs | terminated]
    self.act_in = Tensor.zeros(cfg.num_envs, O + A).contiguous().realize()   # [obs | noise]
    self.act_out = np.zeros((cfg.num_envs, A), np.float32)
    self._update = TinyJit(self._update_fn)
    self._sample = TinyJit(self._sample_fn)
    self._greedy: dict[int, tuple] = {}
    t1 = time.perf_counter()
    with Context(TRAINING=1):
      for _ in range(2): self._update(self.batch_in, self.lr_in)   # capture with step size 0 ...
    for m in self.adam: copyin(m, np.zeros(m.shape, np.float32))  # ... and forget the moments it touched
    copyin(self.critic_target, critic)                            # tau is not zero: restore the targets
    for _ in range(2): self._sample(self.act_in)                  # exploration kernels too
    self.profile["capture_s"] = time.perf_counter() - t1
    self.profile["construct_s"] = time.perf_counter() - t0

  # --- networks ---
  def _policy(self, actor: Tensor, obs: Tensor) -> tuple[Tensor, Tensor]:
    out = relu_mlp(views(actor, self.actor_layout), "pi", obs, 3)
    mean, log_std = out[:, :self.act_dim], out[:, self.act_dim:]
    log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std.tanh() + 1)   # CleanRL's bounded log-std
    return mean, log_std

  def _q(self, critic: Tensor, obs: Tensor, act: Tensor) -> tuple[Tensor, Tensor]:
    p, x = views(critic, self.critic_layout), obs.cat(act, dim=1)
    return relu_mlp(p, "q1", x, 3)[:, 0], relu_mlp(p, "q2", x, 3)[:, 0]

  def _update_fn(self, batch: Tensor, lr_t: Tensor) -> Tensor:
    """One SAC gradient step: critics, actor, temperature, then the Polyak target update."""
    cfg, O, A = self.cfg, self.obs_dim, self.act_dim
    obs, act, rew = batch[:, :O], batch[:, O:O + A], batch[:, O + A]
    next_obs, term = batch[:, O + A + 1:2 * O + A + 1], batch[:, 2 * O + A + 1]
    noise_next, noise = batch[:, 2 * O + A + 2:2 * O + 2 * A + 2], batch[:, 2 * O + 2 * A + 2:]
    alpha = self.log_alpha.exp().detach()
    # critics: y = r + gamma (1 - terminated) (min target Q(s', a') - alpha log pi(a'|s')), a' ~ pi(s')
    next_a, next_logp = squashed_gaussian(*self._policy(self.actor, next_obs), noise_next)
    tq1, tq2 = self._q(self.critic_target, next_obs, next_a)
    y = (rew + cfg.gamma * (1 - term) * (Tensor.minimum(tq1, tq2) - alpha * next_logp)).detach()
    q1, q2 = self._q(self.critic, obs, act)
    critic_loss = ((q1 - y).square() + (q2 - y).square()).mean() * 0.5
    # actor: alpha log pi(a|s) - min Q(s, a), a = the reparameterised sample, critics held fixed
    new_a, logp = squashed_gaussian(*self._policy(self.actor, obs), noise)
    pq1, pq2 = self._q(self.critic.detach(), obs, new_a)
    actor_loss = (alpha * logp - Tensor.minimum(pq1, pq2)).mean()
    # temperature: towards the target entropy
    alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
    g_critic, = critic_loss.gradient(self.critic)
    g_actor, = actor_loss.gradient(self.actor)
    g_alpha, = alpha_loss.gradient(self.log_alpha)
    stepped = [(self.critic, self.adam[1], g_critic), (self.actor, self.adam[0], g_actor)]
    if cfg.learn_alpha: stepped.append((self.log_alpha, self.adam[2], g_alpha))
    for theta, mv, g in stepped: adam_step(theta, mv, self.betas, g, lr_t, cfg.adam_eps)
    self.critic_target.assign(self.critic_target + cfg.tau * (self.critic - self.critic_target))
    losses = Tensor.stack(critic_loss, actor_loss, alpha_loss)
    Tensor.realize(losses, *self.adam, self.critic, self.actor, self.log_alpha, self.critic_target)
    return losses

  def _sample_fn(self, x: Tensor) -> Tensor:
    """Exploration: x = [obs | standard normal noise]; returns actions in [-1, 1]."""
    a, _ = squashed_gaussian(*self._policy(self.actor, x[:, :self.obs_dim]), x[:, self.obs_dim:])
    return a.contiguous().realize()

  def _scale(self, a: np.ndarray) -> np.ndarray:
    return self.low + (a + 1) * 0.5 * (self.high - self.low)

  # --- the referee's evaluation: deterministic actions, tanh(mean), for any batch size ---
  def act(self, obs: np.ndarray) -> np.ndarray:
    n = len(obs)
    if n not in self._greedy:
      self._greedy[n] = (TinyJit(lambda x: self._policy(self.actor, x)[0].tanh().contiguous().realize()),
                         Tensor.zeros(n, self.obs_dim).contiguous().realize(), np.zeros((n, self.act_dim), np.float32))
    fn, buf, out = self._greedy[n]
    copyin(buf, np.asarray(obs, np.float32).reshape(n, self.obs_dim))
    return self._scale(copyout(fn(buf), out))

  def _learn(self) -> None:
    cfg, A = self.cfg, self.act_dim
    batch = np.empty((cfg.batch_size, self.width), np.float32)
    k = self.replay.rows.shape[1]
    for _ in range(cfg.gradient_steps):
      self.adam_t += 1
      copyin(self.lr_in, np.array([adam_lr(cfg.lr, self.adam_t)], np.float32))
      batch[:, :k] = self.replay.sample(self.rng, cfg.batch_size)
      batch[:, k:] = self.rng.standard_normal((cfg.batch_size, 2 * A), dtype=np.float32)
      copyin(self.batch_in, batch)
      self._update(self.batch_in, self.lr_in)

  def train(self):
    cfg, N, O, A, prof = self.cfg, self.cfg.num_envs, self.obs_dim, self.act_dim, self.profile
    obs, _ = self.envs.reset(seed=self.seed)
    autoreset = np.zeros(N, bool)   # gymnasium next-step autoreset: this step only resets these envs
    rows = np.zeros((N, self.replay.rows.shape[1]), np.float32)
    x = np.zeros((N, O + A), np.float32)
    steps = 0
    if cfg.pink_noise: noise, pos = pink_noise(self.rng, (N, A), cfg.noise_len), np.zeros(N, np.int64)
    with Context(TRAINING=1):
      while True:
        for _ in range(cfg.train_every):
          if steps < cfg.learning_starts: a = self.rng.uniform(-1, 1, (N, A)).astype(np.float32)
          else:
            t0 = time.perf_counter()
            x[:, :O] = obs
            x[:, O:] = noise[np.arange(N), :, pos % cfg.noise_len] if cfg.pink_noise else self.rng.standard_normal((N, A))
            copyin(self.act_in, x)
            a = copyout(self._sample(self.act_in), self.act_out).copy()
            prof["act_s"] += time.perf_counter() - t0
          t0 = time.perf_counter()
          next_obs, rew, term, trunc, _ = self.envs.step(self._scale(a))
          prof["env_s"] += time.perf_counter() - t0
          valid = ~autoreset
          rows[:, :O], rows[:, O:O + A], rows[:, O + A] = obs, a, rew
          rows[:, O + A + 1:2 * O + A + 1], rows[:, 2 * O + A + 1] = next_obs, term
          self.replay.add(rows[valid])
          steps += int(valid.sum())
          autoreset, obs = term | trunc, next_obs
          if cfg.pink_noise:   # a new sequence per episode
            pos += 1
            if autoreset.any(): noise[autoreset], pos[autoreset] = pink_noise(self.rng, (int(autoreset.sum()), A), cfg.noise_len), 0
        if steps >= cfg.learning_starts:
          t0 = time.perf_counter()
          self._learn()
          prof["update_s"] += time.perf_counter() - t0
          prof["updates"] += 1
        yield steps
