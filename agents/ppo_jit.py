"""PPO whose iteration runs on the device in TinyJit calls: the rollout of num_envs tinygrad-native envs
(envs/batched.py), GAE, and every epoch's minibatch updates, with nothing read back while training but the step count
the agent reports. The PureJaxRL recipe in tinygrad: on a GPU nothing crosses to the host while training; on a CPU it
removes the per-step Python and copies (agents/ppo_base.py steps gymnasium's envs and copies observations every step).
Runs on its own: `python -m agents.ppo_jit --task CartPole-v1`. Discrete actions: CartPole-v1, Acrobot-v1, MountainCar-v0.

How it is built (tinygrad 0.14; ../shared/tinygrad-notes.md):
- actor and critic are one block-diagonal MLP in one flat parameter buffer, Adam's moments in another (agents/ppo_base.py);
- three jitted calls: `steps_per_call` rollout steps (forward, Gumbel-max sample, env transition) appended to a
  device buffer; the batch (log-probabilities, values, the critic on every reached observation to bootstrap
  truncated episodes, GAE as one masked sum); `updates_per_call` minibatch updates. With both settings 0 the whole
  iteration is one call. Unrolled steps and updates carry their state as values and assign each buffer once a call
  (a replayed jit that assigns one buffer many times leaves it stale); values used many times are made contiguous;
- a call's only inputs are the minibatch permutation and Adam's step sizes (numpy, a few KB an iteration);
- env steps are reported by the agent (num_envs * num_steps an iteration: same-step autoreset, every step is a
  transition); the referee records them as `step_source: yield` and evaluates on gymnasium's envs as for any agent.
The price: each fresh process builds its graphs again (the cold start reports the compile apart; agents/TUNING.md says
what each setting costs here).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from tinygrad import Tensor, dtypes
from tinygrad.helpers import Context

from agents.common import Adam, Columns, Greedy, Profile, copyin, jit, mlp_layout, orthogonal, overridden, views
from envs.batched import DYNAMICS, BatchedEnv


@dataclass(frozen=True)
class Config:
  num_envs: int = 64
  """environments stepped together on the device"""
  num_steps: int = 16
  """rollout length per env and call (unrolled in the graph: more steps, a bigger graph to build per process)"""
  hidden: int = 32
  """units of the hidden layer, of the actor and of the critic each"""
  gamma: float = 0.99
  """discount"""
  gae_lambda: float = 0.95
  """GAE's lambda"""
  epochs: int = 4
  """passes over each batch (unrolled in the graph)"""
  minibatches: int = 4
  """minibatches per pass (unrolled in the graph)"""
  lr: float = 1e-2
  """Adam's step size (high, with grad-norm clipping: agents/TUNING.md)"""
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
  steps_per_call: int = 1
  """rollout steps unrolled in one jitted call (0: all num_steps). With 0 here and in updates_per_call, the whole
  iteration is one call: the fewest launches and Python calls, but the biggest graph to build in each fresh process
  (CartPole on this CPU: 12.4-15.2 s for its 394 kernels, 2.5-2.9 s for the 46 of one step and one update a call)"""
  updates_per_call: int = 1
  """minibatch updates unrolled in one jitted call (0: all epochs * minibatches)"""


TASK_CONFIGS: dict[str, Config] = {
  "CartPole-v1": Config(),
  "Acrobot-v1": Config(),
}


class PPOJit:
  def __init__(self, task, seed: int, config: Config | None = None):
    if task.env_id not in DYNAMICS: raise ValueError(f"ppo_jit trains on envs/batched.py's envs: none for {task.env_id}")
    self.cfg = cfg = config or overridden(TASK_CONFIGS.get(task.name, Config()), "PPO_JIT_CONFIG")
    self.task, self.seed, N, T = task, seed, cfg.num_envs, cfg.num_steps
    U = self.updates = cfg.epochs * cfg.minibatches
    self.steps_per_call, self.updates_per_call = K, J = cfg.steps_per_call or T, cfg.updates_per_call or U
    if T % K or U % J:
      raise ValueError(f"ppo_jit: steps_per_call must divide num_steps ({T}) and updates_per_call epochs*minibatches ({U})")
    self.profile = Profile(construct_s=0.0, first_iteration_s=0.0, iterations_s=0.0, iterations=0)
    t0 = time.perf_counter()
    self.envs = BatchedEnv(task.env_id, N)
    if not self.envs.discrete: raise ValueError(f"ppo_jit is for discrete actions: {task.env_id} has {self.envs.single_action_space}")
    self.obs_dim, self.n_actions = int(np.prod(self.envs.single_observation_space.shape)), int(self.envs.single_action_space.n)
    self.batch, self.mb = N * T, N * T // cfg.minibatches
    assert self.batch % cfg.minibatches == 0, "num_envs*num_steps must divide into minibatches"
    self.rng = np.random.default_rng(seed)
    self.layout, weights, mask = self._net()
    self.theta = Tensor(np.concatenate([w.ravel() for w in weights])).realize()
    self.mask = Tensor(mask).realize()
    self.adam = Adam(self.theta, lr=cfg.lr, eps=cfg.adam_eps)
    self.obs = self.envs.reset(seed=seed).contiguous().realize()   # the observations the next call acts on first
    # --- device buffers: the rollout (T, N, columns), filled as a shift register (each rollout call appends its steps
    #     at the end), the batch the updates read, and per-update inputs (rotated by each update call) ---
    O, z = self.obs_dim, lambda *shape: Tensor.zeros(*shape).contiguous().realize()
    self.cols = Columns(observations=O, actions=(), rewards=(), terminated=(), dones=(), reached=O)
    self.rollout_buf = z(T, N, self.cols.width)
    self.batch_cols = Columns(observations=O, actions=(), logps=(), advantages=(), returns=())   # what updates read
    self.batch_buf = z(self.batch, self.batch_cols.width)
    self.perm, self.lrs = z(U, self.mb), z(U)             # minibatch rows (exact in float32) and Adam's step sizes
    gl = cfg.gamma * cfg.gae_lambda                        # GAE as one masked sum (see _prepare)
    self.gae_w = Tensor(np.triu(gl ** (np.arange(T)[None, :] - np.arange(T)[:, None]).astype(np.float32))).realize()
    self.before = Tensor(np.tril(np.ones((T, T), np.float32), -1)).realize()
    whole = K == T and J == U
    self._whole = jit(lambda: Tensor.realize(*self._rollout(T), *self._prepare(), *self._learn(U))) if whole else None
    self._roll_call = jit(lambda: Tensor.realize(*self._rollout(K)))
    self._prepare_call = jit(lambda: Tensor.realize(*self._prepare()))
    self._learn_call = jit(lambda: Tensor.realize(*self._learn(J)))
    self.greedy = Greedy(lambda x: self._forward(x)[0].argmax(-1), self.obs_dim, dtype=np.int32, rows=task.confirm_episodes)
    self.profile["construct_s"] = time.perf_counter() - t0

  def _net(self):
    """Actor and critic as one block-diagonal MLP: obs -> [actor H | critic H] (tanh) -> [A logits | 1 value]; the mask
    zeroes the cross blocks of the second layer."""
    H, O, A = self.cfg.hidden, self.obs_dim, self.n_actions
    w0 = np.concatenate([orthogonal(self.rng, O, H, 2**0.5), orthogonal(self.rng, O, H, 2**0.5)], 1)
    w1, mask = np.zeros((2 * H, A + 1), np.float32), np.zeros((2 * H, A + 1), np.float32)
    w1[:H, :A], w1[H:, A:] = orthogonal(self.rng, H, A, 0.01), orthogonal(self.rng, H, 1, 1.0)
    mask[:H, :A] = mask[H:, A:] = 1
    return mlp_layout("", [O, 2 * H, A + 1]), [w0, np.zeros(2 * H, np.float32), w1, np.zeros(A + 1, np.float32)], mask

  def _forward(self, obs: Tensor, theta: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """-> (logits, values)."""
    p = views(self.theta if theta is None else theta, self.layout)
    out = (obs @ p["w0"] + p["b0"]).tanh() @ (p["w1"] * self.mask) + p["b1"]
    return out[:, :self.n_actions], out[:, self.n_actions]

  def _logits(self, obs: Tensor) -> Tensor:
    """The actor alone (the rollout samples; log-probabilities and values are computed for the whole batch after)."""
    H, A, p = self.cfg.hidden, self.n_actions, views(self.theta, self.layout)
    return (obs @ p["w0"][:, :H] + p["b0"][:H]).tanh() @ p["w1"][:H, :A] + p["b1"][:A]

  def roll(self):
    """The rollout buffer's columns (self.cols) by name, each (num_steps * num_envs, ...), step-major."""
    return self.cols.split(self.rollout_buf.reshape(self.batch, -1))

  # --- the three parts of an iteration: each builds a graph and returns the buffers' assigns to realize ---
  def _rollout(self, k: int) -> list[Tensor]:
    """k steps of all envs, sampled by Gumbel-max; appended to the rollout buffers (their oldest k steps drop out)."""
    N, A = self.cfg.num_envs, self.n_actions
    s, el, obs, new = self.envs.states, self.envs.elapsed, self.obs, []
    S = s.shape[1]
    noise = Tensor.rand(k, N, A + S).contiguous()          # all the call's random numbers at once: Gumbel | resets
    gumbel = -(-noise[:, :, :A].maximum(1e-20).log()).log()
    for t in range(k):
      action = (self._logits(obs) + gumbel[t]).argmax(-1)
      tr = self.envs.transition(s, el, action, noise[t, :, A:])
      row = [obs, action, tr.rewards, tr.terminated, tr.terminated | tr.truncated, tr.final_observations]   # self.cols
      new.append(Tensor.cat(*[v.cast(dtypes.float32).reshape(N, -1) for v in row], dim=1))
      s, el = tr.states.contiguous(), tr.elapsed
      obs = self.envs.dyn.observe(s).contiguous()     # not recomputed (cos, sin) inside the next matmul
    buf = self.rollout_buf
    return [buf.assign(Tensor.cat(buf[k:], Tensor.stack(*new))), self.envs.states.assign(s), self.envs.elapsed.assign(el),
            self.obs.assign(obs)]

  def _prepare(self) -> list[Tensor]:
    """The rollout's log-probabilities and values, the critic on every reached observation (the last of an episode where
    it ended: a truncated episode bootstraps from it, a terminated one does not), and GAE as one masked sum:
    adv[t] = sum over s >= t of (gamma*lambda)^(s-t) * delta[s], over the steps s of t's episode (no end in t..s-1)."""
    cfg, T, N, r = self.cfg, self.cfg.num_steps, self.cfg.num_envs, self.roll()
    logits, values = self._forward(r.observations)
    logps = (logits.log_softmax() * r.actions.cast(dtypes.int32).one_hot(self.n_actions)).sum(-1).contiguous()
    values, next_values = values.contiguous(), self._forward(r.reached)[1]
    delta = (r.rewards + cfg.gamma * next_values * (1 - r.terminated) - values).reshape(T, N).contiguous()
    ends_before = self.before @ r.dones.reshape(T, N)      # (T, N): episode ends before step t
    same = ends_before.reshape(1, T, N) == ends_before.reshape(T, 1, N)
    adv = (same.where(self.gae_w.reshape(T, T, 1) * delta.reshape(1, T, N), 0)).sum(1).reshape(-1).contiguous()
    # (each materialized: inlined into the one kernel below, the forward passes made it slow to build)
    batch = Tensor.cat(r.observations, *[v.reshape(-1, 1) for v in (r.actions, logps, adv, adv + values)], dim=1)   # batch_cols
    return [self.batch_buf.assign(batch)]

  def _learn(self, j: int) -> list[Tensor]:
    """j minibatch steps of PPO's clipped loss and Adam, the parameters and moments carried from one to the next; the
    minibatch rows and step sizes are the first j of their buffers, which are then rotated by j."""
    cfg, A = self.cfg, self.n_actions
    data = self.batch_buf.detach()       # data (in one whole-iteration graph computed from theta: not differentiated)
    theta, mv, betas = self.theta, self.adam.moments[0], self.adam.betas
    for u in range(j):
      idx = self.perm[u].cast(dtypes.int32)
      mb = self.batch_cols.split(data[idx])
      mb_obs, mb_act, mb_logp, mb_adv, mb_ret = mb.observations, mb.actions, mb.logps, mb.advantages, mb.returns
      mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
      logits, value = self._forward(mb_obs, theta)
      logp_all = logits.log_softmax()
      ratio = ((logp_all * mb_act.cast(dtypes.int32).one_hot(A)).sum(-1) - mb_logp).exp()
      loss = -Tensor.minimum(ratio * mb_adv, ratio.clip(1 - cfg.clip, 1 + cfg.clip) * mb_adv).mean()
      loss = loss + cfg.vf_coef * 0.5 * (value - mb_ret).square().mean()
      if cfg.ent_coef: loss = loss + cfg.ent_coef * (logp_all.exp() * logp_all).sum(-1).mean()
      g, = loss.gradient(theta)
      g = g * (cfg.max_grad_norm / (g.square().sum().sqrt() + 1e-6)).minimum(1.0).contiguous()
      mv = (mv * betas + (1 - betas) * Tensor.stack(g, g * g)).contiguous()
      theta = (theta - self.lrs[u] * mv[0] / (mv[1].sqrt() + cfg.adam_eps)).contiguous()
    return [self.theta.assign(theta), self.adam.moments[0].assign(mv),
            self.perm.assign(Tensor.cat(self.perm[j:], self.perm[:j])), self.lrs.assign(Tensor.cat(self.lrs[j:], self.lrs[:j]))]

  def train(self):
    cfg, prof, steps = self.cfg, self.profile, 0
    with Context(TRAINING=1):
      while True:
        t0 = time.perf_counter()
        copyin(self.perm, np.concatenate([self.rng.permutation(self.batch).reshape(cfg.minibatches, self.mb) for _ in range(cfg.epochs)]))
        copyin(self.lrs, np.array([self.adam.next_lr() for _ in range(self.updates)], np.float32))
        if self._whole is not None: self._whole()
        else:
          for _ in range(cfg.num_steps // self.steps_per_call): self._roll_call()
          self._prepare_call()
          for _ in range(self.updates // self.updates_per_call): self._learn_call()
        steps += self.batch
        prof["first_iteration_s" if prof["iterations"] == 0 else "iterations_s"] += time.perf_counter() - t0
        prof["iterations"] += 1
        yield steps

  def act(self, obs: np.ndarray) -> np.ndarray:
    """The referee's evaluation: the most likely action, for a batch of any size."""
    return self.greedy(obs).astype(np.int64)


if __name__ == "__main__":
  from agents.run import main
  raise SystemExit(main("agents.ppo_jit:PPOJit"))
