"""PPO for discrete (categorical policy) and continuous (Gaussian policy, state-independent log-std)
actions in tinygrad, tuned for wall-clock time-to-threshold.

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

from agents.common import adam_lr, adam_step, copyin, copyout, orthogonal, views


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
  log_std_init: float = 0.0      # continuous actions: initial state-independent log-std


# per-task overrides, as data. Continuous actions work (tests/test_ppo.py) but no continuous task has a tuned
# PPO yet: rl-zoo3's Pendulum PPO (gamma 0.9, lambda 0.95, 10 epochs, lr 1e-3) relies on gSDE, which this file
# lacks; without it (and with rewards scaled by 0.1) PPO stayed near -900 after 100k steps (seed 0).
TASK_CONFIGS: dict[str, Config] = {
  "CartPole-v1": Config(),
  "Acrobot-v1": Config(),       # CartPole's settings solved it on seeds 0-1 in 17-38k steps
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

    # --- actor and critic as one block-diagonal MLP in one flat parameter vector ---
    # layer 0: obs -> [actor H | critic H]; hidden layers: block-diagonal 2H -> 2H; head: actor H -> A
    # logits, critic H -> 1 value. Masks zero the cross blocks, so the two networks stay independent.
    H, O, A = cfg.hidden, self.obs_dim, self.n_actions
    sizes = [O] + [2 * H] * cfg.layers + [A + 1]
    self.layout, weights, masks = [], [], []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
      self.layout += [(f"w{i}", (fan_in, fan_out)), (f"b{i}", (fan_out,))]
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
    self.masks = masks
    if not self.discrete:
      self.layout.append(("log_std", (A,)))
      weights.append(np.full(A, cfg.log_std_init, np.float32))
    flat = np.concatenate([w.ravel() for w in weights])
    self.theta = Tensor(flat).realize()
    self.adam_mv = Tensor.zeros(2, len(flat)).contiguous().realize()
    self.betas = Tensor([[0.9], [0.999]]).realize()
    self.adam_t = 0

    # --- persistent, fixed-shape input buffers for the jitted functions ---
    self.act_in = Tensor.zeros(cfg.num_envs, O + A).contiguous().realize()   # [obs | Gumbel or Gaussian noise]
    self.act_x = np.zeros((cfg.num_envs, O + A), np.float32)
    self.act_out = np.zeros((cfg.num_envs, self.aw + 2), np.float32)       # [action | logp | value]
    self.lr_in = Tensor([cfg.lr]).realize()
    self.mb_obs = Tensor.zeros(self.mb, O).contiguous().realize()
    self.mb_data = Tensor.zeros(self.mb, self.aw + 4).contiguous().realize()   # action, old logp, advantage, return, weight
    self._act = TinyJit(self._act_fn)
    self._update = TinyJit(self._update_fn)
    self._greedy: dict[int, tuple] = {}
    self.profile["construct_s"] = time.perf_counter() - t0

  # --- the network: one block-diagonal MLP for actor and critic ---
  def _params(self) -> dict[str, Tensor]:
    return views(self.theta, self.layout)

  def _forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
    p, h = self._params(), obs
    for i, mask in enumerate(self.masks):
      h = h @ (p[f"w{i}"] if mask is None else p[f"w{i}"] * mask) + p[f"b{i}"]
      if i < len(self.masks) - 1: h = h.tanh()
    return h[:, :self.n_actions], h[:, self.n_actions]

  def _log_std(self) -> Tensor:
    return self._params()["log_std"]

  def _act_fn(self, x: Tensor) -> Tensor:
    """x = [obs | noise] (drawn in numpy: no RNG kernels): Gumbel noise picks a categorical action,
    standard normal noise a Gaussian one. Returns [action | logp | value]."""
    head, value = self._forward(x[:, :self.obs_dim])
    noise = x[:, self.obs_dim:]
    if self.discrete:
      action = (head + noise).argmax(-1)
      logp = (head.log_softmax() * action.one_hot(self.n_actions)).sum(-1)
      return Tensor.stack(action.float(), logp, value, dim=1).contiguous().realize()
    log_std = self._log_std()
    action = head + log_std.exp() * noise
    logp = (-0.5 * noise.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    return action.cat(logp.unsqueeze(1), value.unsqueeze(1), dim=1).contiguous().realize()

  def _update_fn(self, obs: Tensor, data: Tensor, lr_t: Tensor) -> Tensor:
    """One minibatch step of PPO's clipped loss and Adam. data = [action, old logp, advantage,
    return, weight]; lr_t is the bias-corrected Adam step size, set from numpy per call."""
    cfg, aw = self.cfg, self.aw
    action = data[:, :aw]
    old_logp, adv, ret, w = (data[:, aw + k] for k in range(4))
    w = w / w.sum().maximum(1.0)            # masked mean: autoreset steps carry weight 0
    head, value = self._forward(obs)
    if self.discrete:
      logp_all = head.log_softmax()
      logp = (logp_all * action[:, 0].cast(dtypes.int32).one_hot(self.n_actions)).sum(-1)
      entropy = -(logp_all.exp() * logp_all).sum(-1)
    else:
      log_std = self._log_std()
      logp = (-0.5 * ((action - head) / log_std.exp()).square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
      entropy = (log_std + 0.5 * (1 + math.log(2 * math.pi))).sum()
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
    copyin(buf, np.asarray(obs, np.float32).reshape(n, self.obs_dim))
    a = copyout(fn(buf), out)
    return a.astype(np.int64) if self.discrete else np.clip(a, self.low, self.high)

  def _sample(self, obs: np.ndarray) -> np.ndarray:
    if obs.shape != (self.cfg.num_envs, self.obs_dim):
      raise ValueError(f"sample expects obs of shape {(self.cfg.num_envs, self.obs_dim)}, got {obs.shape}")
    self.act_x[:, :self.obs_dim] = obs
    shape = (self.cfg.num_envs, self.n_actions)
    self.act_x[:, self.obs_dim:] = self.rng.gumbel(size=shape) if self.discrete else self.rng.standard_normal(shape)
    copyin(self.act_in, self.act_x)
    return copyout(self._act(self.act_in), self.act_out)

  def train(self):
    cfg, N, T, prof = self.cfg, self.cfg.num_envs, self.cfg.num_steps, self.profile
    E, M, O = cfg.epochs * cfg.minibatches, self.mb, self.obs_dim
    obs_buf, act_buf = np.zeros((T, N, O), np.float32), np.zeros((T, N, self.aw), np.float32)
    logp_buf, val_buf, rew_buf = (np.zeros((T, N), np.float32) for _ in range(3))
    term_buf, trunc_buf, valid_buf = (np.zeros((T, N), bool) for _ in range(3))
    obs, _ = self.envs.reset(seed=self.seed)
    autoreset = np.zeros(N, bool)   # gymnasium next-step autoreset: this step only resets these envs
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
          rew_buf[t], term_buf[t], trunc_buf[t] = rew, term, trunc
          steps += int((~autoreset).sum())
          autoreset = term | trunc
          out = self._timed("act_s", "first_act_s", self._sample, obs)   # also bootstraps the last step
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
