"""The reference name `ppo` ("agents.ppo:PPO", agents/__init__.py): a dispatch to the PPO variant for a task, so that
one target serves every task and the records that store it reproduce their runs. The variants, each with its own
Config and TASK_CONFIGS, on one loop (agents/ppo_base.py):
- agents/ppo_discrete.py: discrete actions on vectors (CartPole, Acrobot, LunarLander);
- agents/ppo_continuous.py: continuous actions (Gaussian policy, gSDE; Pendulum);
- agents/ppo_atari.py: pixels (a conv torso; MinAtar, Atari).
Nothing in agents/ imports this module. Runs on its own: `python -m agents.ppo --task CartPole-v1`.
"""
from __future__ import annotations

import gymnasium as gym

from agents.ppo_atari import PPOAtari
from agents.ppo_base import LoopConfig, PPOBase
from agents.ppo_continuous import PPOContinuous
from agents.ppo_discrete import Config, PPODiscrete  # noqa: F401  (Config: the discrete variant's, as `agents.ppo.Config` was)


def variant(task) -> type[PPOBase]:
  """The PPO class for a task: the one whose TASK_CONFIGS has it, else by its spaces (continuous actions, pixels, or
  discrete actions on vectors)."""
  for cls in (PPODiscrete, PPOContinuous, PPOAtari):
    if task.name in cls.TASK_CONFIGS: return cls
  obs_space, act_space = task.spaces()
  return PPOContinuous if isinstance(act_space, gym.spaces.Box) else PPOAtari if len(obs_space.shape) == 3 else PPODiscrete


class PPO(PPODiscrete):
  """`PPO(task, seed, config=None)` builds variant(task)'s agent (config: that variant's Config). A subclass (an entry
  building on the reference, as before the split) is the discrete variant with its own overrides."""

  def __new__(cls, task, seed: int, config: LoopConfig | None = None):
    if cls is not PPO: return super().__new__(cls)
    return variant(task)(task, seed, config)


if __name__ == "__main__":
  from agents.run import main
  raise SystemExit(main("agents.ppo:PPO"))   # the module's class, not __main__'s
