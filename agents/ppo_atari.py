"""PPO on pixels (MinAtar, Atari): a categorical policy on agents/ppo_base.py's loop, over a conv torso (ReLU) and one
dense layer of `hidden` shared by actor and critic (as CleanRL's ppo_atari), then one head H -> [A logits | value].
Images come (C, H, W), flattened in the buffers. The reference name `ppo` builds this class on such tasks
(agents/ppo.py). Runs on its own:
`python -m agents.ppo_atari --task Breakout-MinAtar-v1` (extra `atari`). Settings: agents/TUNING.md (not yet tuned
on a GPU box).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tinygrad import Tensor

from agents.common import orthogonal
from agents.ppo_base import LoopConfig, PPOBase


@dataclass(frozen=True)
class Config(LoopConfig):
  """The loop's settings (agents/ppo_base.py) and the conv network's."""
  hidden: int = 32
  """units of the dense layer after the conv layers, shared by actor and critic"""
  conv: tuple[tuple[int, int, int], ...] = ()
  """conv layers (channels, kernel, stride) + ReLU, then one dense layer of `hidden` shared by actor and critic"""
  obs_scale: float = 1.0
  """observations are multiplied by this first (1/255 for Atari frames)"""


# per-task settings, as data; why each: agents/TUNING.md
TASK_CONFIGS: dict[str, Config] = {
  "Breakout-MinAtar-v1": Config(num_envs=64, num_steps=128, epochs=4, minibatches=8, lr=5e-4, ent_coef=0.01,
                                hidden=128, conv=((16, 3, 1),)),
  "Pong-v5": Config(num_envs=8, num_steps=128, epochs=4, minibatches=4, lr=2.5e-4, clip=0.1, ent_coef=0.01,
                    hidden=512, conv=((32, 8, 4), (64, 4, 2), (64, 3, 1)), obs_scale=1 / 255),
}


class PPOAtari(PPOBase):
  Config = Config
  TASK_CONFIGS = TASK_CONFIGS
  shared_act_graph = False   # pixels: a conv pass over 100 padded frames at every rollout step would cost more

  def _net(self):
    """Conv layers c{i}/cb{i}, then w0/b0 (flattened features -> hidden) and the head w1/b1 (hidden -> A + 1)."""
    cfg, A, (c, h, w) = self.cfg, self.n_actions, self.obs_shape
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

  def _forward(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """-> (logits, value, the shared dense layer)."""
    cfg, p = self.cfg, self._params()
    h = obs.reshape(-1, *self.obs_shape) * cfg.obs_scale
    for i, (_, _, stride) in enumerate(cfg.conv): h = h.conv2d(p[f"c{i}"], p[f"cb{i}"], stride=stride).relu()
    h = (h.flatten(1) @ p["w0"] + p["b0"]).relu()
    out = h @ p["w1"] + p["b1"]
    return out[:, :self.n_actions], out[:, self.n_actions], h


if __name__ == "__main__":
  from agents.run import main
  raise SystemExit(main("agents.ppo_atari:PPOAtari"))   # the module's class, not __main__'s
