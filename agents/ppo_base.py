"""PPO's loop (clipped objective, GAE), shared by its variants: agents/ppo_discrete.py (discrete actions on vectors),
agents/ppo_continuous.py (Gaussian policy, gSDE), agents/ppo_atari.py (a conv torso for pixels). Each variant is a
subclass with its own Config and TASK_CONFIGS; it gives the network (`_net`, `_forward`) and, for continuous actions,
the policy (the categorical one here serves discrete actions and pixels). Tuned for wall-clock time-to-threshold.

What makes it fast (../PROTOCOL.md says how it is timed; `self.profile` says where the time went):
- weights are initialised in numpy and copied in: no init kernels to schedule and compile;
- actor and critic are one block-diagonal MLP (obs -> 2H [-> 2H ...] -> A+1; `block_mlp`, the vector variants'
  network), so every layer is one matmul for both networks; masks keep the two networks independent. One hidden layer
  (the discrete default) halves the kernels to schedule and compile in each fresh process against two, which is most
  of the time-to-threshold on CartPole;
- all parameters live in one flat buffer and both Adam moments in another: Adam is two elementwise kernels;
- one TinyJit call samples actions for all envs (Gumbel noise comes in with the observations); one TinyJit call
  per minibatch does the loss, backward and Adam; every jitted input is a persistent fixed-shape buffer written
  in place (no new Tensors, no `.numpy()` copy kernels);
- GAE and shuffling are done in numpy between them;
- many envs (gymnasium's native vectorized CartPole) and few, large updates.
Where the settings come from: agents/TUNING.md.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from tinygrad import Tensor, dtypes
from tinygrad.helpers import Context

from agents.common import Adam, Columns, Greedy, Profile, RunningMeanStd, copyin, copyout, jit, mlp_layout, orthogonal, overridden, views


@dataclass(frozen=True)
class LoopConfig:
  """The settings of the loop, which every variant reads; each variant's Config adds its network's (and policy's)."""
  num_envs: int = 32
  """environments stepped together (one act() call samples for all of them)"""
  num_steps: int = 32
  """rollout length per env; a batch is num_envs * num_steps env steps"""
  gamma: float = 0.99
  """discount"""
  gae_lambda: float = 0.95
  """GAE's lambda"""
  epochs: int = 4
  """passes over each batch"""
  minibatches: int = 4
  """minibatches per pass; one jitted update each"""
  lr: float = 1e-2
  """Adam's step size: high, with grad-norm clipping, for fewer updates to the threshold"""
  anneal_lr: bool = False
  """decay the step size linearly to zero over the task's step budget (CleanRL's anneal_lr)"""
  clip: float = 0.2
  """PPO's ratio clip"""
  ent_coef: float = 0.0
  """entropy bonus"""
  vf_coef: float = 0.5
  """value loss weight"""
  max_grad_norm: float = 0.5
  """global gradient norm clip"""
  adam_eps: float = 1e-5
  """Adam's epsilon"""
  normalize_obs: bool = False
  """standardise observations by their running mean/std, clipped at 10 (SB3's VecNormalize)"""
  normalize_reward: bool = False
  """divide rewards by the running std of the discounted return, clipped at 10 (VecNormalize)"""


@dataclass(frozen=True)
class MLPConfig(LoopConfig):
  """The loop's settings and the block-diagonal MLP's (`block_mlp`): the variants on vector observations."""
  hidden: int = 32
  """units per hidden layer, of the actor and of the critic each"""
  layers: int = 1
  """hidden layers of actor and critic each (fewer: fewer kernels to compile in every fresh process)"""


class PPOBase:
  """The loop every PPO variant runs. A subclass sets Config (its settings' dataclass) and TASK_CONFIGS (per task), and
  gives `_net` and `_forward`; `ppo.PPO` picks the subclass for a task."""
  Config: type[LoopConfig] = LoopConfig
  TASK_CONFIGS: dict[str, LoopConfig] = {}
  shared_act_graph = True   # act() runs the sampling graph with zero noise: one act graph per process (see __init__)

  def __init__(self, task, seed: int, config: LoopConfig | None = None):
    self.cfg = cfg = config or overridden(self.TASK_CONFIGS.get(task.name, self.Config()), "PPO_CONFIG")
    if not isinstance(cfg, self.Config):
      raise TypeError(f"{type(self).__name__} takes {self.Config.__module__}.Config, not {type(cfg).__module__}.{type(cfg).__name__}")
    self.task, self.seed = task, seed
    self.envs = task.make_vec(cfg.num_envs)
    obs_space, act_space = self.envs.single_observation_space, self.envs.single_action_space
    self.obs_shape, self.obs_dim = obs_space.shape, int(np.prod(obs_space.shape))
    self._action_space(act_space)
    self.batch = cfg.num_envs * cfg.num_steps
    self.mb = self.batch // cfg.minibatches
    assert self.batch % cfg.minibatches == 0, "num_envs*num_steps must divide into minibatches"
    self.rng = np.random.default_rng(seed)
    self.profile = Profile(construct_s=0.0, env_s=0.0, act_s=0.0, gae_s=0.0, update_s=0.0, first_act_s=0.0,
                           first_update_s=0.0, updates=0)
    t0 = time.perf_counter()
    self.layout, weights, self.masks = self._net()
    flat = np.concatenate([w.ravel() for w in weights])
    self.theta = Tensor(flat).realize()
    self.adam = Adam(self.theta, lr=cfg.lr, eps=cfg.adam_eps)
    # --- persistent, fixed-shape input buffers for the jitted functions, their columns named ---
    O = self.obs_dim
    self.act_cols = Columns(observations=O, noise=self.noise_width)           # sampling: Gumbel (or Gaussian) noise
    self.out_cols = Columns(actions=self.action_shape, logps=(), values=())   # what sampling returns
    self.mb_cols = Columns(actions=self.action_shape, logps=(), advantages=(), returns=(), weights=())
    # one act graph for rollouts and the referee's evaluations, with rows for its largest batch (the confirmation's):
    # the rollout fills the first num_envs rows; act() fills them all with zero noise, which makes the sample the
    # greedy action (the argmax of the logits; the mean). A fresh process then schedules and lowers one act graph, not
    # three (rollout, 10 and 100 observations): 0.3-0.4 s less of PPO CartPole's ~2.3 s start-up (agents/TUNING.md)
    self.act_rows = max(cfg.num_envs, task.confirm_episodes) if self.shared_act_graph else cfg.num_envs
    self.act_in = Tensor.zeros(self.act_rows, self.act_cols.width).contiguous().realize()
    self.act_x, self.greedy_x = (np.zeros((self.act_rows, self.act_cols.width), np.float32) for _ in range(2))
    self.act_out, self.greedy_out = (np.zeros((self.act_rows, self.out_cols.width), np.float32) for _ in range(2))
    self.obs_rms, self.ret_rms = RunningMeanStd((O,)), RunningMeanStd()
    self.lr_in = Tensor([cfg.lr]).realize()
    self.mb_obs = Tensor.zeros(self.mb, O).contiguous().realize()
    self.mb_data = Tensor.zeros(self.mb, self.mb_cols.width).contiguous().realize()
    self._act = jit(self._act_fn)
    self._update = jit(self._update_fn)
    self.greedy = self._greedy_via_sample if self.shared_act_graph else self._greedy()
    self.profile["construct_s"] = time.perf_counter() - t0

  # --- the policy: categorical (discrete actions, pixels); agents/ppo_continuous.py overrides these ---
  def _action_space(self, space: gym.spaces.Discrete) -> None:
    self.n_actions = int(space.n)     # logits
    self.action_shape = ()            # one number an action in the buffers
    self.noise_width = self.n_actions # Gumbel noise per logit

  def _noise(self, shape: tuple[int, int]) -> np.ndarray:
    return self.rng.gumbel(size=shape)

  def _new_noise(self, t: int) -> bool:
    """Draw new noise for the sample after rollout step t."""
    return True

  def _env_actions(self, actions: np.ndarray) -> np.ndarray:
    return actions.astype(np.int64)

  def _act_fn(self, x: Tensor) -> Tensor:
    """x = act_cols [observations | Gumbel noise] (drawn in numpy: no RNG kernels): the noisy argmax is a sample of
    the categorical policy. Returns out_cols [action | logp | value]."""
    x = self.act_cols.split(x)
    head, value, _ = self._forward(x.observations)
    action = (head + x.noise).argmax(-1)
    logp = (head.log_softmax() * action.one_hot(self.n_actions)).sum(-1)
    return Tensor.stack(action.float(), logp, value, dim=1).contiguous().realize()

  def _logp_entropy(self, head: Tensor, latent: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
    logp_all = head.log_softmax()
    return (logp_all * actions.cast(dtypes.int32).one_hot(self.n_actions)).sum(-1), -(logp_all.exp() * logp_all).sum(-1)

  def _greedy(self) -> Greedy:
    return Greedy(lambda x: self._forward(x)[0].argmax(-1), self.obs_dim, dtype=np.int32)

  def _greedy_via_sample(self, obs: np.ndarray) -> np.ndarray:
    """Greedy actions from the sampling graph with zero noise, act_rows observations a call; its own input and output
    arrays, so that the rollout's (gSDE's kept noise, the last sample) survive an evaluation."""
    res = np.empty((len(obs), *self.action_shape), np.float32)
    for i in range(0, len(obs), self.act_rows):
      chunk = obs[i:i + self.act_rows]
      self.greedy_x[:len(chunk), self.act_cols.index("observations")] = chunk
      copyin(self.act_in, self.greedy_x)
      res[i:i + len(chunk)] = self.out_cols.split(copyout(self._act(self.act_in), self.greedy_out)).actions[:len(chunk)]
    return res

  def act(self, obs: np.ndarray) -> np.ndarray:
    """The referee's evaluation: the most likely action, for a batch of any size."""
    return self.greedy(self._normalize(obs, update=False)).astype(np.int64)

  def snapshot(self) -> dict[str, np.ndarray]:
    """What act() reads besides the Tensors (which the referee takes itself): the observation statistics."""
    return {"obs_mean": self.obs_rms.mean, "obs_var": self.obs_rms.var}

  def restore(self, state: dict[str, np.ndarray]) -> None:
    """The referee's evaluator: a snapshot's statistics (its Tensors are assigned already)."""
    self.obs_rms.mean, self.obs_rms.var = state["obs_mean"], state["obs_var"]

  # --- the network: each variant's ---
  def _net(self) -> tuple[list[tuple[str, tuple[int, ...]]], list[np.ndarray], list[Tensor | None]]:
    """Initial (layout, weights, masks): the flat parameters' names and shapes, their values, a mask per layer."""
    raise NotImplementedError

  def _params(self) -> dict[str, Tensor]:
    return views(self.theta, self.layout)

  def _forward(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """-> (logits or means, value, the actor's last hidden layer: gSDE's features)."""
    raise NotImplementedError

  # --- the update ---
  def _update_fn(self, obs: Tensor, data: Tensor, lr_t: Tensor) -> Tensor:
    """One minibatch step of PPO's clipped loss and Adam. data = mb_cols [actions | old logps | advantages | returns
    | weights]; lr_t is Adam's bias-corrected step size, set from numpy per call."""
    cfg, data = self.cfg, self.mb_cols.split(data)
    w = data.weights / data.weights.sum().maximum(1.0)     # masked mean: autoreset steps carry weight 0
    head, value, latent = self._forward(obs)
    logp, entropy = self._logp_entropy(head, latent, data.actions)
    ratio = (logp - data.logps).exp()
    adv = data.advantages
    pg_loss = -(Tensor.minimum(ratio * adv, ratio.clip(1 - cfg.clip, 1 + cfg.clip) * adv) * w).sum()
    v_loss = 0.5 * (((value - data.returns) ** 2) * w).sum()
    loss = pg_loss + cfg.vf_coef * v_loss
    if cfg.ent_coef: loss = loss - cfg.ent_coef * (entropy * w).sum()
    g, = loss.gradient(self.theta)
    g = g * (cfg.max_grad_norm / (g.square().sum().sqrt() + 1e-6)).minimum(1.0)
    self.adam.step(0, self.theta, g, lr_t)
    Tensor.realize(*self.adam.moments, self.theta)
    return self.theta

  def _normalize(self, obs: np.ndarray, update: bool) -> np.ndarray:
    """Flattened float32 observations, standardised by the running statistics when normalize_obs is set
    (updated from training batches only; evaluation uses them as they are)."""
    obs = np.asarray(obs, np.float32).reshape(len(obs), self.obs_dim)
    if not self.cfg.normalize_obs: return obs
    if update: self.obs_rms.update(obs)
    return np.clip((obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + 1e-8), -10, 10).astype(np.float32)

  def _sample(self, obs: np.ndarray, new_noise: bool = True) -> np.ndarray:
    """Sample actions for all envs: out_cols [action | logp | value] (one array, overwritten by the next call)."""
    if obs.shape != (self.cfg.num_envs, self.obs_dim):
      raise ValueError(f"sample expects obs of shape {(self.cfg.num_envs, self.obs_dim)}, got {obs.shape}")
    N = self.cfg.num_envs
    self.act_cols.fill(self.act_x[:N], observations=obs)
    if new_noise: self.act_cols.fill(self.act_x[:N], noise=self._noise((N, self.noise_width)))
    copyin(self.act_in, self.act_x)
    return copyout(self._act(self.act_in), self.act_out)[:N]

  def _learn(self, mb_obs: np.ndarray, mb_data: np.ndarray) -> None:
    for i in range(len(mb_obs)):
      copyin(self.lr_in, np.array([self.adam.next_lr()], np.float32))
      copyin(self.mb_obs, mb_obs[i])
      copyin(self.mb_data, mb_data[i])
      self._update(self.mb_obs, self.mb_data, self.lr_in)

  # --- the loop ---
  def train(self):
    cfg, N, T, prof = self.cfg, self.cfg.num_envs, self.cfg.num_steps, self.profile
    E, M, O = cfg.epochs * cfg.minibatches, self.mb, self.obs_dim
    obs_buf, act_buf = np.zeros((T, N, O), np.float32), np.zeros((T, N, *self.action_shape), np.float32)
    logp_buf, val_buf, rew_buf = (np.zeros((T, N), np.float32) for _ in range(3))
    term_buf, trunc_buf, valid_buf = (np.zeros((T, N), bool) for _ in range(3))
    obs = self._normalize(self.envs.reset(seed=self.seed)[0], update=True)
    autoreset = np.zeros(N, bool)   # gymnasium next-step autoreset: this step only resets these envs
    disc_ret = np.zeros(N)          # reward normalisation: the running discounted return of each env
    steps = 0
    with Context(TRAINING=1):
      with prof.timed("act_s", first="first_act_s"): out = self.out_cols.split(self._sample(obs))
      while True:
        # --- rollout: T steps of N envs ---
        for t in range(T):
          obs_buf[t], valid_buf[t] = obs, ~autoreset
          act_buf[t], logp_buf[t], val_buf[t] = out.actions, out.logps, out.values
          with prof.timed("env_s"): obs, rew, term, trunc, _ = self.envs.step(self._env_actions(out.actions))
          obs, valid = self._normalize(obs, update=True), ~autoreset
          if cfg.normalize_reward:   # SB3 VecNormalize: r / std(discounted return), clipped
            disc_ret = disc_ret * cfg.gamma + rew
            if valid.any(): self.ret_rms.update(disc_ret[valid])
            rew = np.clip(rew / np.sqrt(self.ret_rms.var + 1e-8), -10, 10)
            disc_ret[term | trunc] = 0
          rew_buf[t], term_buf[t], trunc_buf[t] = rew, term, trunc
          steps += int(valid.sum())
          autoreset = term | trunc
          # the sample after the last step bootstraps this rollout and acts first in the next
          with prof.timed("act_s", first="first_act_s"): out = self.out_cols.split(self._sample(obs, self._new_noise(t)))
        # --- GAE in numpy, then shuffle into fixed-shape minibatches ---
        with prof.timed("gae_s"):
          adv = gae(rew_buf, val_buf, out.values, term_buf, trunc_buf, valid_buf, cfg.gamma, cfg.gae_lambda)
          ret = adv + val_buf
          valid = valid_buf.ravel()
          a_mean, a_std = adv.ravel()[valid].mean(), adv.ravel()[valid].std() + 1e-8
          data = self.mb_cols.fill(np.zeros((self.batch, self.mb_cols.width), np.float32),
                                   actions=act_buf.reshape(self.batch, *self.action_shape), logps=logp_buf.ravel(),
                                   advantages=(adv.ravel() - a_mean) / a_std, returns=ret.ravel(),
                                   weights=valid_buf.astype(np.float32).ravel())
          perm = np.concatenate([self.rng.permutation(self.batch) for _ in range(cfg.epochs)]).reshape(E, M)
          mb_obs, mb_data = obs_buf.reshape(-1, O)[perm], data[perm]
        # --- epochs x minibatches of jitted PPO steps ---
        if cfg.anneal_lr: self.adam.lr = cfg.lr * max(0.0, 1.0 - steps / self.task.step_budget)
        with prof.timed("update_s", first="first_update_s"): self._learn(mb_obs, mb_data)
        prof["updates"] += 1
        yield steps


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


def block_mlp(rng: np.random.Generator, O: int, A: int, H: int, layers: int):
  """Actor and critic as one block-diagonal MLP in one flat parameter vector. Layer 0: obs (O) -> [actor H |
  critic H]; hidden layers: block-diagonal 2H -> 2H; head: actor H -> A logits/means, critic H -> 1 value.
  Masks zero the cross blocks, so the two networks stay independent. Returns (layout, weights, masks)."""
  layout, weights, masks = mlp_layout("", [O] + [2 * H] * layers + [A + 1]), [], []
  for i, (_, (fan_in, fan_out)) in enumerate(layout[::2]):
    last = i == layers
    a_out, gains = (A, (0.01, 1.0)) if last else (H, (2**0.5, 2**0.5))
    w = np.zeros((fan_in, fan_out), np.float32)
    if i == 0 and not last:
      w[:, :H], w[:, H:] = orthogonal(rng, O, H, gains[0]), orthogonal(rng, O, H, gains[1])
      masks.append(None)
    else:
      a_in = H if i else O
      w[:a_in, :a_out] = orthogonal(rng, a_in, a_out, gains[0])
      w[a_in:, a_out:] = orthogonal(rng, fan_in - a_in, fan_out - a_out, gains[1])
      m = np.zeros_like(w); m[:a_in, :a_out] = m[a_in:, a_out:] = 1
      masks.append(Tensor(m).realize())
    weights += [w, np.zeros(fan_out, np.float32)]
  return layout, weights, masks


def block_mlp_forward(p: dict[str, Tensor], masks: list[Tensor | None], obs: Tensor, H: int, A: int) -> tuple[Tensor, Tensor, Tensor]:
  """`block_mlp`'s network on obs: (logits or means, value, the actor's last hidden layer: gSDE's features)."""
  h = obs
  for i, mask in enumerate(masks):
    if i == len(masks) - 1: latent = h[:, :H]
    h = h @ (p[f"w{i}"] if mask is None else p[f"w{i}"] * mask) + p[f"b{i}"]
    if i < len(masks) - 1: h = h.tanh()
  return h[:, :A], h[:, A], latent
