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


def test_adapter_runs_sb3_on_the_calling_thread_and_trains_as_its_own_loop_does(monkeypatch):
  """The referee's train() generator is SB3's own learn(): same updates at the same step counts, same weights after,
  and torch runs on the thread that drives it (in a second thread torch ran 1.6x slower: bench/peers/sb3.py)."""
  import threading

  import torch
  monkeypatch.setattr(SB3PPO, "torch_threads", 1)
  threads, seen = set(), []
  adapted = SB3PPO(CARTPOLE, seed=3)
  orig = adapted.model.train
  monkeypatch.setattr(adapted.model, "train", lambda: (threads.add(threading.get_ident()), orig())[1])
  for s in adapted.train():
    seen.append(s)
    if s >= 1024: break
  assert threads == {threading.get_ident()}
  plain, plain_seen = SB3PPO(CARTPOLE, seed=3), []
  plain.learn_plainly(lambda s: plain_seen.append(s) or s >= 1024)
  assert seen == plain_seen == [256, 512, 768, 1024]
  for a, b in zip(adapted.model.policy.parameters(), plain.model.policy.parameters()): assert torch.equal(a, b)
  assert adapted.profile["torch_threads"] == 1.0


def test_peer_torch_threads_env_overrides_and_is_recorded(monkeypatch):
  import torch

  from bench.referee.records import AGENT_VARS
  monkeypatch.setenv("PEER_TORCH_THREADS", "2")
  before = torch.get_num_threads()
  try: assert SB3PPO(CARTPOLE, seed=0).profile["torch_threads"] == 2.0
  finally: torch.set_num_threads(before)
  assert "PEER_TORCH_THREADS" in AGENT_VARS


def test_only_peers_get_a_preload_and_an_entry_cannot_borrow_one(tmp_path):
  from bench.peers import PEER_AGENTS, PEER_PRELOAD
  from bench.referee.agent_api import resolve_agent
  assert set(PEER_PRELOAD) == set(PEER_AGENTS)
  assert resolve_agent("rltools-sac").preload == ("tinyrl", "bench.peers.rltools:prepare_sac")
  (tmp_path / "mine.py").write_text("class A: pass\n")
  assert resolve_agent(f"rltools={tmp_path}/mine.py:A").preload == ()
  assert resolve_agent("bench.peers.rltools:RLtoolsSAC").preload == ("tinyrl", "bench.peers.rltools:prepare_sac")   # the peer by target


def test_a_preload_function_is_called_with_the_task_in_untimed_start_up(monkeypatch):
  import bench.referee.agent_host
  from tests import fake_agents
  monkeypatch.setattr(fake_agents, "PREPARED", [])
  bench.referee.agent_host._preload(["tests.fake_agents:prepare", "no_such_module_xyz"], PENDULUM)
  assert fake_agents.PREPARED == ["Pendulum-v1"]


def test_plain_loop_runs_the_peer_in_its_own_loop_and_evaluates_on_the_step_grid():
  """bench/peers/plain.py, the yardstick of bench.peers.overhead: SB3's learn() with evaluations every 2,048 steps."""
  from bench.peers.plain import run
  r = run("sb3-ppo", "CartPole-v1", seed=7, torch_threads=1)
  assert r["solved"] and r["torch_threads"] == 1.0
  steps = [s for _, s, _ in r["evals"]]
  assert steps == [2048 * (k + 1) for k in range(len(steps))]     # 8 envs x 32 steps: every multiple is an update boundary
  assert r["evals"][-1][2] >= 475.0 and all(ret < 475.0 for _, _, ret in r["evals"][:-1])   # stops at the first pass
  assert r["time_s"] == r["evals"][-1][0] > 0


@pytest.mark.parametrize("cls, task", [(SB3PPO, get_task("Acrobot-v1")), (SB3DQN, CARTPOLE), (SB3SAC, PENDULUM)])
def test_a_peer_restored_from_its_snapshot_acts_as_it_does(cls, task):
  """The referee's evaluator (PROTOCOL.md section 3): a fresh peer given a trained one's snapshot() acts as it does (its
  parameters, and VecNormalize's statistics where the zoo normalises: PPO on Acrobot)."""
  from bench.referee.agent_host import pack, restore, snapshot, unpack
  trained, fresh = cls(task, seed=0), cls(task, seed=1)
  for s in trained.train():
    if s >= 2100: break
  obs = np.stack([task.make_env().reset(seed=i)[0] for i in range(7)])
  assert not np.allclose(np.asarray(fresh.act(obs), float), np.asarray(trained.act(obs), float))
  restore(fresh, unpack(pack(snapshot(trained))))
  np.testing.assert_allclose(np.asarray(fresh.act(obs), float), np.asarray(trained.act(obs), float), rtol=1e-5)
