"""PPO for continuous actions (Box) on vector observations, on agents/ppo_base.py's loop and block-diagonal MLP. The
policy is a Gaussian around the actor's output, with a state-independent log-std per action dimension, or with
gSDE (generalized state-dependent exploration, Raffin et al. 2022): the noise is the actor's last hidden layer
times a random (hidden, actions) matrix per env, held for `sde_sample_freq` steps. Actions are clipped to the
space's bounds for the env; the log-probability is of the unclipped sample. Greedy actions are the mean.
The reference name `ppo` builds this class on such tasks (agents/ppo.py). Runs on its own: `python -m
agents.ppo_continuous --task Pendulum-v1`. Settings: agents/TUNING.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from tinygrad import Tensor

from agents.ppo_base import MLPConfig, PPOBase, block_mlp, block_mlp_forward


@dataclass(frozen=True)
class Config(MLPConfig):
  """The loop's settings and the MLP's (agents/ppo_base.py), and the Gaussian policy's."""
  log_std_init: float = 0.0
  """initial log-std of the Gaussian policy (state-independent, or gSDE's)"""
  gsde: bool = False
  """generalized state-dependent exploration (Raffin et al. 2022): noise = latent @ a random matrix"""
  sde_sample_freq: int = -1
  """gSDE: redraw the noise matrices every n steps (-1: once per rollout)"""


# per-task settings, as data; why each: agents/TUNING.md
TASK_CONFIGS: dict[str, Config] = {
  "Pendulum-v1": Config(num_envs=16, num_steps=256, minibatches=64, epochs=10, gamma=0.9, gae_lambda=0.95, lr=1e-3,
                        hidden=64, layers=2, gsde=True, sde_sample_freq=4),
}


class PPOContinuous(PPOBase):
  Config = Config
  TASK_CONFIGS = TASK_CONFIGS

  def _action_space(self, space: gym.spaces.Box) -> None:
    self.n_actions = int(np.prod(space.shape))    # means
    self.action_shape = (self.n_actions,)         # n_actions numbers an action in the buffers
    self.low, self.high = space.low, space.high
    # standard normal noise per action dimension, or gSDE's (hidden, actions) matrix per env
    self.noise_width = self.cfg.hidden * self.n_actions if self.cfg.gsde else self.n_actions

  def _net(self):
    """The block-diagonal MLP, and the log-std: one per (latent unit, action) with gSDE, else one per action."""
    layout, weights, masks = block_mlp(self.rng, self.obs_dim, self.n_actions, self.cfg.hidden, self.cfg.layers)
    std_shape = (self.cfg.hidden, self.n_actions) if self.cfg.gsde else (self.n_actions,)
    return layout + [("log_std", std_shape)], weights + [np.full(std_shape, self.cfg.log_std_init, np.float32)], masks

  def _forward(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return block_mlp_forward(self._params(), self.masks, obs, self.cfg.hidden, self.n_actions)

  def _noise(self, shape: tuple[int, int]) -> np.ndarray:
    return self.rng.standard_normal(shape)

  def _new_noise(self, t: int) -> bool:
    """gSDE keeps its noise matrices for sde_sample_freq steps (-1: the whole rollout)."""
    cfg = self.cfg
    return not cfg.gsde or t == cfg.num_steps - 1 or (cfg.sde_sample_freq > 0 and (t + 1) % cfg.sde_sample_freq == 0)

  def _env_actions(self, actions: np.ndarray) -> np.ndarray:
    return np.clip(actions, self.low, self.high)

  def _log_std(self, latent: Tensor) -> Tensor:
    """Per-sample, per-action log-std of the Gaussian policy. gSDE's action noise latent @ (eps * std) is
    Gaussian with variance latent^2 @ std^2 (features detached, as SB3's default learn_features=False)."""
    log_std = self._params()["log_std"]
    if not self.cfg.gsde: return log_std.reshape(1, -1).expand(latent.shape[0], -1)
    return 0.5 * (latent.detach().square() @ (2 * log_std).exp() + 1e-6).log()

  def _act_fn(self, x: Tensor) -> Tensor:
    """x = act_cols [observations | standard normal noise (gSDE: a (hidden, A) matrix per env)]; returns out_cols
    [action | logp | value]."""
    x = self.act_cols.split(x)
    head, value, latent = self._forward(x.observations)
    log_std = self._log_std(latent)
    if self.cfg.gsde:
      std = self._params()["log_std"].exp()
      action = head + (latent.detach().unsqueeze(1) @ (x.noise.reshape(-1, self.cfg.hidden, self.n_actions) * std)).squeeze(1)
    else: action = head + log_std.exp() * x.noise
    logp = gaussian_logp(action, head, log_std)
    return action.cat(logp.unsqueeze(1), value.unsqueeze(1), dim=1).contiguous().realize()

  def _logp_entropy(self, head: Tensor, latent: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
    log_std = self._log_std(latent)
    return gaussian_logp(actions, head, log_std), (log_std + 0.5 * (1 + math.log(2 * math.pi))).sum(-1)

  def act(self, obs: np.ndarray) -> np.ndarray:
    """The referee's evaluation: the policy's mean, clipped to the action space, for a batch of any size."""
    return np.clip(self.greedy(self._normalize(obs, update=False)), self.low, self.high)


def gaussian_logp(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
  """log N(x; mean, exp(log_std)^2), summed over the action dimensions."""
  return (-0.5 * ((x - mean) / log_std.exp()).square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


if __name__ == "__main__":
  from agents.run import main
  raise SystemExit(main("agents.ppo_continuous:PPOContinuous"))   # the module's class, not __main__'s
