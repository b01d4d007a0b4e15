"""PPO for discrete actions on vector observations (CartPole, Acrobot, LunarLander): a categorical policy over the
block-diagonal actor-critic MLP, on agents/ppo_base.py's loop (its docstring says what makes it fast). The reference
name `ppo` builds this class on such tasks (agents/ppo.py). Runs on its own: `python -m agents.ppo_discrete --task
CartPole-v1`. Settings: agents/TUNING.md.
"""
from __future__ import annotations

from dataclasses import dataclass

from tinygrad import Tensor

from agents.ppo_base import MLPConfig, PPOBase, block_mlp, block_mlp_forward


@dataclass(frozen=True)
class Config(MLPConfig):
  """The loop's settings and the MLP's (agents/ppo_base.py): nothing of its own."""


# per-task settings, as data; why each: agents/TUNING.md
TASK_CONFIGS: dict[str, Config] = {
  "CartPole-v1": Config(),
  "Acrobot-v1": Config(),
  "LunarLander-v3": Config(num_envs=16, num_steps=256, minibatches=64, epochs=4, gamma=0.999, gae_lambda=0.98,
                           ent_coef=0.01, lr=3e-4, anneal_lr=True, hidden=64, layers=2),
}


class PPODiscrete(PPOBase):
  Config = Config
  TASK_CONFIGS = TASK_CONFIGS

  def _net(self):
    return block_mlp(self.rng, self.obs_dim, self.n_actions, self.cfg.hidden, self.cfg.layers)

  def _forward(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return block_mlp_forward(self._params(), self.masks, obs, self.cfg.hidden, self.n_actions)


if __name__ == "__main__":
  from agents.run import main
  raise SystemExit(main("agents.ppo_discrete:PPODiscrete"))   # the module's class, not __main__'s
