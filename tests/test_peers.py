"""The Stable-Baselines3 peers (optional extra `peers`; skipped without it)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from bench.peers.sb3 import SB3DQN, SB3PPO, SB3SAC, ZOO  # noqa: E402
from envs import get_task  # noqa: E402

CARTPOLE = get_task("CartPole-v1")
PENDULUM = replace(CARTPOLE, name="Pendulum-v1", env_id="Pendulum-v1", threshold=-200.0)


@pytest.mark.parametrize("cls, task, n_act", [(SB3PPO, CARTPOLE, ()), (SB3DQN, CARTPOLE, ()), (SB3SAC, PENDULUM, (1,))])
def test_peer_trains_yields_growing_steps_and_acts_on_a_batch(cls, task, n_act):
  agent = cls(task, seed=0)
  steps = []
  for s in agent.train():
    steps.append(s)
    if s >= 600: break
  assert steps == sorted(steps) and steps[-1] >= 600 and len(steps) >= 2
  obs = np.stack([task.make_env().reset(seed=i)[0] for i in range(7)])
  a = np.asarray(agent.act(obs))
  assert a.shape == (7, *n_act)


def test_unknown_env_is_a_clear_error():
  with pytest.raises(ValueError, match="no rl-zoo3 SAC hyperparameters for CartPole-v1"): SB3SAC(CARTPOLE, 0)
  assert {"ppo", "dqn", "sac"} == set(ZOO)
