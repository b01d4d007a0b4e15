"""PPO for discrete (categorical policy) and continuous (Gaussian policy: state-independent log-std, or
gSDE) actions in tinygrad, tuned for wall-clock time-to-threshold; optional observation and reward
normalisation as SB3's VecNormalize does it (rl-zoo3's `normalize`); a conv torso for pixel tasks.

CleanRL-style: hyperparameters in a dataclass, the training loop in `train()`. What makes it fast
(see ../PROTOCOL.md for how it is timed, and the profile it leaves in `self.profile`):
- weights are initialised in numpy and copied in: no init kernels to schedule and compile;
- actor and critic are one block-diagonal MLP (obs -> 2H [-> 2H ...] -> A+1), so every layer is
  one matmul for both networks; masks keep the two networks independent. One hidden layer (the
  default) halves the kernels to schedule and compile in each fresh process against two, which is
  most of the time-to-threshold on CartPole;
- all parameters live in one flat buffer and both Adam moments in another, so Adam is two
  elementwise kernels, not three per tensor;
- one TinyJit call samples actions for all envs (Gumbel or Gaussian noise comes in with the observations);
  one TinyJit call per minibatch does the loss, backward and Adam; every jitted input is a
  persistent fixed-shape buffer written in place (no new Tensors, no `.numpy()` copy kernels);
- GAE and shuffling are done in numpy between them;
- many envs (gymnasium's native vectorized CartPole) and few, large updates.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import math

import gymnasium as gym
import numpy as np
from tinygrad import Tensor, TinyJit, dtypes
from tinygrad.helpers import Context

from agents.common import RunningMeanStd, adam_lr, adam_step, copyin, copyout, mlp_layout, orthogonal, views


@dataclass(frozen=True)
class Config:
  num_envs: int = 32
  num_steps: int = 32            # rollout length per env; batch = num_envs * num_steps
  hidden: int = 32
  layers: int = 1                # hidden layers of actor and critic each
  gamma: float = 0.99
  gae_lambda: float = 0.95
  epochs: int = 4
  minibatches: int = 4
  lr: float = 1e-2               # high, with grad-norm clipping: fewer updates to the threshold
  clip: float = 0.2
  ent_coef: float = 0.0
  vf_coef: float = 0.5
  max_grad_norm: float = 0.5
  adam_eps: float = 1e-5
  log_std_init: float = 0.0      # continuous actions: initial log-std (state-independent, or gSDE's)
  gsde: bool = False             # continuous: generalized state-dependent exploration (Raffin et al. 2022): noise
  sde_sample_freq: int = -1      # = latent @ a random matrix, redrawn every n steps (-1: once per rollout)
  normalize_obs: bool = False    # observations standardised by their running mean/std, clipped at 10 (VecNormalize)
  normalize_reward: bool = False # rewards divided by the running std of the discounted return, clipped at 10
  conv: tuple[tuple[int, int, int], ...] = ()   # pixel tasks: conv layers (channels, kernel, stride) + ReLU, then
  obs_scale: float = 1.0         # one dense layer of `hidden`; actor and critic share it. Observations times obs_scale


# per-task overrides, as data.
# Pendulum-v1: rl-zoo3's PPO (gamma 0.9, lambda 0.95, 10 epochs of 64-sample minibatches, lr 1e-3, gSDE redrawn
# every 4 steps, 64x64 nets) with its 4096-step rollout as 16 envs x 256 steps instead of 4 x 1024 (a quarter of
# the act calls: 6.8-7.7 s instead of 9.1-12.0 s of training on seeds 0-2, the same 20-24k steps). Without gSDE
# (and with rewards scaled by 0.1) PPO stayed near -900 after 100k steps.
# LunarLander-v3: rl-zoo3's PPO (gamma 0.999, lambda 0.98, 4 epochs of 64-sample minibatches, entropy 0.01, lr 3e-4,
# 64x64) with 16 envs x 256 steps instead of 16 x 1024 (four times the updates per sample): on seeds 0-2 it solved
# at 302-453k steps; the zoo's rollout took 538-866k (seeds 0-1). Measured with other runs on the 2 cores.
# The hard tier's pixel tasks start from the usual settings, not yet tuned here (no GPU run so far):
# MinAtar as PureJaxRL's PPO (64 envs x 128 steps, 8 minibatches, lr 5e-4, entropy 0.01) with MinAtar's own
# network (one 16-channel 3x3 conv, 128 units); Pong as CleanRL's ppo_atari (8 envs x 128 steps, 4 minibatches,
# lr 2.5e-4, clip 0.1, entropy 0.01) with the Nature CNN.
TASK_CONFIGS: dict[str, Config] = {
  "CartPole-v1": Config(),
  "Acrobot-v1": Config(),       # CartPole's settings solved it on seeds 0-1 in 17-38k steps
  "Pendulum-v1": Config(num_envs=16, num_steps=256, minibatches=64, epochs=10, gamma=0.9, gae_lambda=0.95, lr=1e-3,
                        hidden=64, layers=2, gsde=True, sde_sample_freq=4),
  "LunarLander-v3": Config(num_envs=16, num_steps=256, minibatches=64, epochs=4, gamma=0.999, gae_lambda=0.98,
                           ent_coef=0.01, lr=3e-4, hidden=64, layers=2),
  "Breakout-MinAtar-v1": Config(num_envs=64, num_steps=128, epochs=4, minibatches=8, lr=5e-4, ent_coef=0.01,
                                hidden=128, conv=((16, 3, 1),)),
  "Pong-v5": Config(num_envs=8, num_steps=128, epochs=4, minibatches=4, lr=2.5e-4, clip=0.1, ent_coef=0.01,
                    hidden=512, conv=((32, 8, 4), (64, 4, 2), (64, 3, 1)), obs_scale=1 / 255),
}


class PPO:
  def __init__(self, task, seed: int, config: Config | None = None):
    self.cfg = cfg = config or TASK_CONFIGS.get(task.name, Config())
    self.task, self.seed = task, seed
    self.envs = task.make_vec(cfg.num_envs)
    obs_space, act_space = self.envs.single_observation_space, self.envs.single_action_space
    self.discrete = isinstance(act_space, gym.spaces.Discrete)
    # A = logits (discrete) or means (continuous); aw = the width of one action in the buffers
    self.obs_dim = int(np.prod(obs_space.shape))
    self.n_actions = int(act_space.n) if self.discrete else int(np.prod(act_space.shape))
    self.aw = 1 if self.discrete else self.n_actions
    if not self.discrete: self.low, self.high = act_space.low, act_space.high
    self.batch = cfg.num_envs * cfg.num_steps
    self.mb = self.batch // cfg.minibatches
    assert self.batch % cfg.minibatches == 0, "num_envs*num_steps must divide into minibatches"
    self.rng = np.random.default_rng(seed)
    self.profile = {"construct_s": 0.0, "env_s": 0.0, "act_s": 0.0, "gae_s": 0.0, "update_s": 0.0,
                    "first_act_s": 0.0, "first_update_s": 0.0, "updates": 0}
    t0 = time.perf_counter()
    A = self.n_actions
    self.layout, weights, self.masks = self._conv_net(obs_space.shape) if cfg.conv else self._mlp_net()
    if not self.discrete:   # gSDE: one log-std per (latent unit, action); else one per action
      std_shape = (cfg.hidden, A) if cfg.gsde else (A,)
      self.layout.append(("log_std", std_shape))
      weights.append(np.full(std_shape, cfg.log_std_init, np.float32))
    flat = np.concatenate([w.ravel() for w in weights])
    self.theta = Tensor(flat).realize()
    self.adam_mv = Tensor.zeros(2, len(flat)).contiguous().realize()
    self.betas = Tensor([[0.9], [0.999]]).realize()
    self.adam_t = 0

    # --- persistent, fixed-shape input buffers for the jitted functions ---
    O, self.obs_shape = self.obs_dim, obs_space.shape
    self.noise_w = cfg.hidden * A if cfg.gsde else A       # Gumbel / Gaussian noise, or gSDE's matrix per env
    self.act_in = Tensor.zeros(cfg.num_envs, O + self.noise_w).contiguous().realize()   # [obs | noise]
    self.act_x = np.zeros((cfg.num_envs, O + self.noise_w), np.float32)
    self.obs_rms, self.ret_rms = RunningMeanStd((O,)), RunningMeanStd()
    self.act_out = np.zeros((cfg.num_envs, self.aw + 2), np.float32)       # [action | logp | value]
    self.lr_in = Tensor([cfg.lr]).realize()
    self.mb_obs = Tensor.zeros(self.mb, O).contiguous().realize()
    self.mb_data = Tensor.zeros(self.mb, self.aw + 4).contiguous().realize()   # action, old logp, advantage, return, weight
    self._act = TinyJit(self._act_fn)
    self._update = TinyJit(self._update_fn)
    self._greedy: dict[int, tuple] = {}
    self.profile["construct_s"] = time.perf_counter() - t0

  # --- the network ---
  def _mlp_net(self):
    """Actor and critic as one block-diagonal MLP in one flat parameter vector. Layer 0: obs -> [actor H |
    critic H]; hidden layers: block-diagonal 2H -> 2H; head: actor H -> A logits/means, critic H -> 1 value.
    Masks zero the cross blocks, so the two networks stay independent."""
    cfg, H, O, A = self.cfg, self.cfg.hidden, self.obs_dim, self.n_actions
    layout, weights, masks = mlp_layout("", [O] + [2 * H] * cfg.layers + [A + 1]), [], []
    for i, (_, (fan_in, fan_out)) in enumerate(layout[::2]):
      last = i == cfg.layers
      a_out, gains = (A, (0.01, 1.0)) if last else (H, (2**0.5, 2**0.5))
      w = np.zeros((fan_in, fan_out), np.float32)
      if i == 0 and not last:
        w[:, :H], w[:, H:] = orthogonal(self.rng, O, H, gains[0]), orthogonal(self.rng, O, H, gains[1])
        masks.append(None)
      else:
        a_in = H if i else O
        w[:a_in, :a_out] = orthogonal(self.rng, a_in, a_out, gains[0])
        w[a_in:, a_out:] = orthogonal(self.rng, fan_in - a_in, fan_out - a_out, gains[1])
        m = np.zeros_like(w); m[:a_in, :a_out] = m[a_in:, a_out:] = 1
        masks.append(Tensor(m).realize())
      weights += [w, np.zeros(fan_out, np.float32)]
    return layout, weights, masks

  def _conv_net(self, shape: tuple[int, ...]):
    """Pixel tasks: a conv torso (ReLU) and one dense layer of `hidden` shared by actor and critic (as in
    CleanRL's Atari PPO), then a head H -> [A logits | value]. Images are (C, H, W)."""
    cfg, A, (c, h, w) = self.cfg, self.n_actions, shape
    layout, weights = [], []
    for i, (ch, k, stride) in enumerate(cfg.conv):
      layout += [(f"c{i}", (ch, c, k, k)), (f"cb{i}", (ch,))]
      weights += [orthogonal(self.rng, c * k * k, ch, 2**0.5).T.reshape(ch, c, k, k), np.zeros(ch, np.float32)]
      c, h, w = ch, (h - k) // stride + 1, (w - k) // stride + 1
    head = np.concatenate([orthogonal(self.rng, cfg.hidden, A, 0.01), orthogonal(self.rng, cfg.hidden, 1, 1.0)], 1)
    layout += [("w0", (c * h * w, cfg.hidden)), ("b0", (cfg.hidden,)), ("w1", (cfg.hidden, A + 1)), ("b1", (A + 1,))]
    weights += [orthogonal(self.rng, c * h * w, cfg.hidden, 2**0.5), np.zeros(cfg.hidden, np.float32),
                head, np.zeros(A + 1, np.float32)]
    return layout, weights, [None, None]

  def _params(self) -> dict[str, Tensor]:
    return views(self.theta, self.layout)

  def _forward(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """-> (logits or means, value, the actor's last hidden layer: gSDE's features)."""
    cfg, p, h = self.cfg, self._params(), obs
    if cfg.conv:
      h = h.reshape(-1, *self.obs_shape) * cfg.obs_scale
      for i, (_, _, stride) in enumerate(cfg.conv): h = h.conv2d(p[f"c{i}"], p[f"cb{i}"], stride=stride).relu()
      h = h.flatten(1)
    for i, mask in enumerate(self.masks):
      if i == len(self.masks) - 1: latent = h if cfg.conv else h[:, :cfg.hidden]
      h = h @ (p[f"w{i}"] if mask is None else p[f"w{i}"] * mask) + p[f"b{i}"]
      if i < len(self.masks) - 1: h = h.relu() if cfg.conv else h.tanh()
    return h[:, :self.n_actions], h[:, self.n_actions], latent

  def _log_std(self, latent: Tensor) -> Tensor:
    """Per-sample, per-action log-std of the Gaussian policy. gSDE's action noise latent @ (eps * std) is
    Gaussian with variance latent^2 @ std^2 (features detached, as SB3's default learn_features=False)."""
    log_std = self._params()["log_std"]
    if not self.cfg.gsde: return log_std.reshape(1, -1).expand(latent.shape[0], -1)
    return 0.5 * (latent.detach().square() @ (2 * log_std).exp() + 1e-6).log()

  def _act_fn(self, x: Tensor) -> Tensor:
    """x = [obs | noise] (drawn in numpy: no RNG kernels): Gumbel noise picks a categorical action, standard
    normal noise a Gaussian one (gSDE: a (hidden, A) matrix per env). Returns [action | logp | value]."""
    head, value, latent = self._forward(x[:, :self.obs_dim])
    noise = x[:, self.obs_dim:]
    if self.discrete:
      action = (head + noise).argmax(-1)
      logp = (head.log_softmax() * action.one_hot(self.n_actions)).sum(-1)
      return Tensor.stack(action.float(), logp, value, dim=1).contiguous().realize()
    log_std = self._log_std(latent)
    if self.cfg.gsde:
      std = self._params()["log_std"].exp()
      action = head + (latent.detach().unsqueeze(1) @ (noise.reshape(-1, self.cfg.hidden, self.n_actions) * std)).squeeze(1)
    else: action = head + log_std.exp() * noise
    logp = gaussian_logp(action, head, log_std)
    return action.cat(logp.unsqueeze(1), value.unsqueeze(1), dim=1).contiguous().realize()

  def _update_fn(self, obs: Tensor, data: Tensor, lr_t: Tensor) -> Tensor:
    """One minibatch step of PPO's clipped loss and Adam. data = [action, old logp, advantage,
    return, weight]; lr_t is the bias-corrected Adam step size, set from numpy per call."""
    cfg, aw = self.cfg, self.aw
    action = data[:, :aw]
    old_logp, adv, ret, w = (data[:, aw + k] for k in range(4))
    w = w / w.sum().maximum(1.0)            # masked mean: autoreset steps carry weight 0
    head, value, latent = self._forward(obs)
    if self.discrete:
      logp_all = head.log_softmax()
      logp = (logp_all * action[:, 0].cast(dtypes.int32).one_hot(self.n_actions)).sum(-1)
      entropy = -(logp_all.exp() * logp_all).sum(-1)
    else:
      log_std = self._log_std(latent)
      logp = gaussian_logp(action, head, log_std)
      entropy = (log_std + 0.5 * (1 + math.log(2 * math.pi))).sum(-1)
    ratio = (logp - old_logp).exp()
    pg_loss = -(Tensor.minimum(ratio * adv, ratio.clip(1 - cfg.clip, 1 + cfg.clip) * adv) * w).sum()
    v_loss = 0.5 * (((value - ret) ** 2) * w).sum()
    loss = pg_loss + cfg.vf_coef * v_loss
    if cfg.ent_coef: loss = loss - cfg.ent_coef * (entropy * w).sum()
    g, = loss.gradient(self.theta)
    g = g * (cfg.max_grad_norm / (g.square().sum().sqrt() + 1e-6)).minimum(1.0)
    adam_step(self.theta, self.adam_mv, self.betas, g, lr_t, cfg.adam_eps)
    Tensor.realize(self.adam_mv, self.theta)
    return self.theta

  # --- the referee's evaluation calls this: greedy actions (argmax, or the mean) for any batch size ---
  def act(self, obs: np.ndarray) -> np.ndarray:
    n = len(obs)
    if n not in self._greedy:   # one jitted function and one pair of fixed-shape buffers per batch size
      if self.discrete:
        fn, out = TinyJit(lambda x: self._forward(x)[0].argmax(-1).contiguous().realize()), np.zeros(n, np.int32)
      else:
        fn, out = TinyJit(lambda x: self._forward(x)[0].contiguous().realize()), np.zeros((n, self.n_actions), np.float32)
      self._greedy[n] = (fn, Tensor.zeros(n, self.obs_dim).contiguous().realize(), out)
    fn, buf, out = self._greedy[n]
    copyin(buf, self._normalize(obs, update=False))
    a = copyout(fn(buf), out)
    return a.astype(np.int64) if self.discrete else np.clip(a, self.low, self.high)

  def _normalize(self, obs: np.ndarray, update: bool) -> np.ndarray:
    """Flattened float32 observations, standardised by the running statistics when normalize_obs is set
    (updated from training batches only; evaluation uses them as they are)."""
    obs = np.asarray(obs, np.float32).reshape(len(obs), self.obs_dim)
    if not self.cfg.normalize_obs: return obs
    if update: self.obs_rms.update(obs)
    return np.clip((obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + 1e-8), -10, 10).astype(np.float32)

  def _sample(self, obs: np.ndarray, new_noise: bool = True) -> np.ndarray:
    if obs.shape != (self.cfg.num_envs, self.obs_dim):
      raise ValueError(f"sample expects obs of shape {(self.cfg.num_envs, self.obs_dim)}, got {obs.shape}")
    self.act_x[:, :self.obs_dim] = obs
    if new_noise:
      shape = (self.cfg.num_envs, self.noise_w)
      self.act_x[:, self.obs_dim:] = self.rng.gumbel(size=shape) if self.discrete else self.rng.standard_normal(shape)
    copyin(self.act_in, self.act_x)
    return copyout(self._act(self.act_in), self.act_out)

  def train(self):
    cfg, N, T, prof = self.cfg, self.cfg.num_envs, self.cfg.num_steps, self.profile
    E, M, O = cfg.epochs * cfg.minibatches, self.mb, self.obs_dim
    obs_buf, act_buf = np.zeros((T, N, O), np.float32), np.zeros((T, N, self.aw), np.float32)
    logp_buf, val_buf, rew_buf = (np.zeros((T, N), np.float32) for _ in range(3))
    term_buf, trunc_buf, valid_buf = (np.zeros((T, N), bool) for _ in range(3))
    obs = self._normalize(self.envs.reset(seed=self.seed)[0], update=True)
    autoreset = np.zeros(N, bool)   # gymnasium next-step autoreset: this step only resets these envs
    disc_ret = np.zeros(N)          # reward normalisation: the running discounted return of each env
    steps, aw = 0, self.aw
    with Context(TRAINING=1):
      out = self._timed("act_s", "first_act_s", self._sample, obs)
      while True:
        # --- rollout: T steps of N envs ---
        for t in range(T):
          obs_buf[t], valid_buf[t] = obs, ~autoreset
          act_buf[t], logp_buf[t], val_buf[t] = out[:, :aw], out[:, aw], out[:, aw + 1]
          t0 = time.perf_counter()
          action = out[:, 0].astype(np.int64) if self.discrete else np.clip(out[:, :aw], self.low, self.high)
          obs, rew, term, trunc, _ = self.envs.step(action)
          prof["env_s"] += time.perf_counter() - t0
          obs, valid = self._normalize(obs, update=True), ~autoreset
          if cfg.normalize_reward:   # SB3 VecNormalize: r / std(discounted return), clipped
            disc_ret = disc_ret * cfg.gamma + rew
            if valid.any(): self.ret_rms.update(disc_ret[valid])
            rew = np.clip(rew / np.sqrt(self.ret_rms.var + 1e-8), -10, 10)
            disc_ret[term | trunc] = 0
          rew_buf[t], term_buf[t], trunc_buf[t] = rew, term, trunc
          steps += int(valid.sum())
          autoreset = term | trunc
          # gSDE keeps its noise matrices for sde_sample_freq steps (-1: the rollout); the sample after the last
          # step bootstraps this rollout and acts first in the next
          new_noise = not cfg.gsde or t == T - 1 or (cfg.sde_sample_freq > 0 and (t + 1) % cfg.sde_sample_freq == 0)
          out = self._timed("act_s", "first_act_s", self._sample, obs, new_noise)
        # --- GAE in numpy, then shuffle into fixed-shape minibatches ---
        t0 = time.perf_counter()
        adv = gae(rew_buf, val_buf, out[:, self.aw + 1], term_buf, trunc_buf, valid_buf, cfg.gamma, cfg.gae_lambda)
        ret = adv + val_buf
        w = valid_buf.astype(np.float32)
        valid = valid_buf.ravel()
        a_mean, a_std = adv.ravel()[valid].mean(), adv.ravel()[valid].std() + 1e-8
        data = np.concatenate([act_buf.reshape(-1, self.aw),
                               np.stack([logp_buf.ravel(), (adv.ravel() - a_mean) / a_std, ret.ravel(), w.ravel()], 1)], 1)
        perm = np.concatenate([self.rng.permutation(self.batch) for _ in range(cfg.epochs)]).reshape(E, M)
        mb_obs, mb_data = obs_buf.reshape(-1, O)[perm], data[perm].astype(np.float32)
        prof["gae_s"] += time.perf_counter() - t0
        # --- epochs x minibatches of jitted PPO steps ---
        self._timed("update_s", "first_update_s", self._learn, mb_obs, mb_data)
        prof["updates"] += 1
        yield steps

  def _learn(self, mb_obs: np.ndarray, mb_data: np.ndarray) -> None:
    for i in range(len(mb_obs)):
      self.adam_t += 1
      copyin(self.lr_in, np.array([adam_lr(self.cfg.lr, self.adam_t)], np.float32))
      copyin(self.mb_obs, mb_obs[i])
      copyin(self.mb_data, mb_data[i])
      self._update(self.mb_obs, self.mb_data, self.lr_in)

  def _timed(self, key: str, first_key: str, fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    dt = time.perf_counter() - t0
    if self.profile[first_key] == 0.0: self.profile[first_key] = dt
    else: self.profile[key] += dt
    return out


def gaussian_logp(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
  """log N(x; mean, exp(log_std)^2), summed over the action dimensions."""
  return (-0.5 * ((x - mean) / log_std.exp()).square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gae(rew, val, last_val, term, trunc, valid, gamma: float, lam: float) -> np.ndarray:
  """Generalized advantage estimates for a (T, N) rollout with gymnasium's next-step autoreset.

  val[t] = V(obs the agent acted on at t); last_val = V(obs after the last step). A terminated step
  does not bootstrap; a truncated one bootstraps from V(final obs) -- with next-step autoreset that
  final obs is what the agent acts on at t+1 (the step that only resets, valid=False), so val[t+1]
  (or last_val) holds it. Invalid (reset-only) steps get advantage 0 and cut the recursion."""
  T = len(rew)
  adv, running = np.zeros_like(rew, dtype=np.float32), np.zeros(rew.shape[1], np.float32)
  for t in reversed(range(T)):
    next_val = val[t + 1] if t + 1 < T else last_val
    delta = rew[t] + gamma * next_val * ~term[t] - val[t]
    running = (delta + gamma * lam * ~(term[t] | trunc[t]) * running) * valid[t]
    adv[t] = running
  return adv
