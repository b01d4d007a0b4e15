"""The reference agents, shrunk for the hard tier's CPU smoke test (tests/test_hard_tier.py): the same code
(conv torso, replay buffer, jitted updates, the task's own settings otherwise) with smaller nets, batches and
rollouts, so that a CPU run takes seconds instead of a GPU's hours."""
from dataclasses import replace

from agents import ppo_atari, sac


class TinyPPO(ppo_atari.PPOAtari):   # the hard tier's PPO tasks are pixels
  def __init__(self, task, seed):
    cfg = ppo_atari.TASK_CONFIGS[task.name]
    super().__init__(task, seed, replace(cfg, num_envs=4, num_steps=16, minibatches=2, epochs=2, hidden=32,
                                         conv=tuple((8, k, s) for _, k, s in cfg.conv)))


class TinySAC(sac.SAC):
  def __init__(self, task, seed):
    super().__init__(task, seed, replace(sac.TASK_CONFIGS[task.name], hidden=32, batch_size=32, buffer_size=5_000,
                                         learning_starts=200))
