"""The sbx (JAX) and RLtools peers (optional extras `peers-sbx`, `peers-rltools`; each skipped without its library)."""
from __future__ import annotations

import numpy as np
import pytest

from envs import get_task

CARTPOLE, PENDULUM = get_task("CartPole-v1"), get_task("Pendulum-v1")


def _train_until(agent, n: int) -> list[int]:
  steps = []
  for s in agent.train():
    steps.append(s)
    if s >= n: break
  return steps


def test_rltools_sac_builds_in_prepare_then_trains_and_acts_in_the_action_bounds(monkeypatch):
  pytest.importorskip("tinyrl")
  import tinyrl.src.accelerate
  monkeypatch.setattr(tinyrl.src.accelerate, "disable_mkl", True)   # tinyrl refuses to look for MKL once torch is imported
  from bench.peers.rltools import RLtoolsSAC, prepare_sac
  prepare_sac(PENDULUM)                          # the compile (or the cached module): untimed start-up in the referee
  agent = RLtoolsSAC(PENDULUM, seed=0)
  steps = _train_until(agent, 300)
  assert steps == list(range(1, 301))             # one env step per State.step()
  obs = np.stack([PENDULUM.make_env().reset(seed=i)[0] for i in range(7)])
  a = agent.act(obs)
  assert a.shape == (7, 1) and a.dtype == np.float32 and (np.abs(a) <= 2.0).all()
  assert agent.profile["blas"] in (0.0, 1.0)


def test_rltools_refuses_a_discrete_task():
  pytest.importorskip("tinyrl")
  from bench.peers.rltools import RLtoolsSAC
  with pytest.raises(ValueError, match="continuous action space"): RLtoolsSAC(CARTPOLE, 0)


def test_sbx_ppo_trains_through_the_sb3_adapter_and_acts_on_a_batch():
  pytest.importorskip("sbx")
  from bench.peers.sbx import SBXPPO
  agent = SBXPPO(CARTPOLE, seed=0)
  steps = _train_until(agent, 512)
  assert steps == [256, 512]                      # the zoo's 8 envs x 32 steps a rollout
  obs = np.stack([CARTPOLE.make_env().reset(seed=i)[0] for i in range(7)])
  a = np.asarray(agent.act(obs))
  assert a.shape == (7,) and set(a.tolist()) <= {0, 1}


@pytest.mark.parametrize("algo, task", [("SBXPPO", CARTPOLE), ("SBXDQN", CARTPOLE), ("SBXSAC", PENDULUM)])
def test_an_sbx_peer_restored_from_its_snapshot_acts_as_it_does(algo, task):
  pytest.importorskip("sbx")
  import bench.peers.sbx as peers
  from bench.referee.agent_host import pack, restore, snapshot, unpack
  trained, fresh = getattr(peers, algo)(task, seed=0), getattr(peers, algo)(task, seed=1)
  _train_until(trained, 2100)
  obs = np.stack([task.make_env().reset(seed=i)[0] for i in range(64)])
  restore(fresh, unpack(pack(snapshot(trained))))
  np.testing.assert_allclose(np.asarray(fresh.act(obs), float), np.asarray(trained.act(obs), float), rtol=1e-5)
