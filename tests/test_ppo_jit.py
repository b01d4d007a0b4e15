"""agents/ppo_jit.py: its GAE (one masked sum on the device) against the recursion, the updates carried through one call
against one call each, what train() reports, and that it learns."""
from __future__ import annotations

import numpy as np
import pytest

from agents.common import copyin
from agents.ppo_jit import Config, PPOJit
from envs import get_task

TASK = get_task("CartPole-v1")
SMALL = dict(num_envs=8, num_steps=6, epochs=2, minibatches=2)


def _fill(agent: PPOJit, rng: np.random.Generator) -> dict[str, np.ndarray]:
  T, N, O = agent.cfg.num_steps, agent.cfg.num_envs, agent.obs_dim
  roll = {"observations": rng.normal(size=(T, N, O)), "actions": rng.integers(0, 2, (T, N)), "rewards": rng.normal(size=(T, N)),
          "terminated": rng.random((T, N)) < 0.15, "reached": rng.normal(size=(T, N, O))}
  roll["dones"] = roll["terminated"] | (rng.random((T, N)) < 0.1)     # truncations: ended, not terminated
  buf = np.zeros((T * N, agent.cols.width), np.float32)
  agent.cols.fill(buf, **{k: v.reshape(T * N, -1) if v.ndim == 3 else v.ravel() for k, v in roll.items()})
  copyin(agent.rollout_buf, buf.reshape(T, N, -1))
  return roll


def _numpy_forward(agent: PPOJit, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  theta, p, off = agent.theta.numpy(), {}, 0
  for name, shape in agent.layout:
    n = int(np.prod(shape)); p[name] = theta[off:off + n].reshape(shape); off += n
  out = np.tanh(obs @ p["w0"] + p["b0"]) @ (p["w1"] * agent.mask.numpy()) + p["b1"]
  return out[:, :agent.n_actions], out[:, agent.n_actions]


def test_gae_as_one_masked_sum_equals_the_recursion():
  cfg = Config(**SMALL)
  agent = PPOJit(TASK, 0, cfg)
  roll = _fill(agent, np.random.default_rng(1))
  agent._prepare_call()
  T, N = cfg.num_steps, cfg.num_envs
  _, values = _numpy_forward(agent, roll["observations"].reshape(T * N, -1).astype(np.float32))
  _, next_values = _numpy_forward(agent, roll["reached"].reshape(T * N, -1).astype(np.float32))
  values, next_values = values.reshape(T, N), next_values.reshape(T, N)
  adv, running = np.zeros((T, N)), np.zeros(N)
  for t in reversed(range(T)):      # same-step autoreset: step t's successor is its reached observation
    delta = roll["rewards"][t] + cfg.gamma * next_values[t] * ~roll["terminated"][t] - values[t]
    running = delta + cfg.gamma * cfg.gae_lambda * ~roll["dones"][t] * running
    adv[t] = running
  got = agent.batch_cols.split(agent.batch_buf.numpy())
  np.testing.assert_allclose(got.advantages, adv.ravel(), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got.returns, (adv + values).ravel(), rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(got.observations, roll["observations"].reshape(T * N, -1).astype(np.float32))


def test_updates_in_one_call_equal_one_update_a_call():
  """The parameters and Adam moments carried as values through the unrolled updates of one call (assigned once) end
  where one update a call (assigned every call) ends; the per-update inputs are rotated as they are used."""
  agents = [PPOJit(TASK, 0, Config(**SMALL, updates_per_call=k)) for k in (4, 1)]
  rng = np.random.default_rng(2)
  perm = np.concatenate([rng.permutation(48).reshape(2, 24) for _ in range(2)]).astype(np.float32)
  for a in agents:
    _fill(a, np.random.default_rng(3))
    a._prepare_call()
    copyin(a.perm, perm)
    copyin(a.lrs, np.array([a.adam.next_lr() for _ in range(4)], np.float32))
  whole, single = agents
  for _ in range(2):                   # twice: the second time the jits replay
    whole._learn_call()
    for _ in range(4): single._learn_call()
    np.testing.assert_allclose(whole.theta.numpy(), single.theta.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(whole.adam.moments[0].numpy(), single.adam.moments[0].numpy(), rtol=1e-4, atol=1e-8)
    np.testing.assert_array_equal(whole.perm.numpy(), perm)       # rotated all the way round
  assert not np.allclose(whole.theta.numpy(), PPOJit(TASK, 0, Config(**SMALL)).theta.numpy())   # it did move


@pytest.mark.parametrize("calls", [dict(steps_per_call=6, updates_per_call=4), dict(steps_per_call=2, updates_per_call=2)])
def test_train_reports_its_steps_and_learns(calls):
  """Whole-iteration and split calls: each iteration reports num_envs * num_steps more steps (every step a transition),
  the rollout buffers hold real transitions, and the sampled policy's episodes get longer (a random one's end every
  ~22 steps on CartPole)."""
  cfg = Config(num_envs=32, num_steps=6, epochs=2, minibatches=2, **calls)
  agent = PPOJit(TASK, 0, cfg)
  assert (agent._whole is not None) == (calls["steps_per_call"] == 6)
  gen, steps, ends = agent.train(), [], []
  for _ in range(60):
    steps.append(next(gen))
    ends.append(agent.roll().dones.numpy().mean())
  assert steps == [192 * (i + 1) for i in range(60)]
  obs = agent.roll().observations.numpy()
  assert np.isfinite(obs).all() and (np.abs(obs[..., 2]) <= 0.25).all()   # pole angles of live episodes
  assert 0.02 < np.mean(ends[2:12]) and np.mean(ends[-10:]) < np.mean(ends[2:12]) / 3, ends   # (call 1: no episode ends so soon)


def test_refuses_what_it_cannot_train_on():
  with pytest.raises(ValueError, match="no batched|batched.py"): PPOJit(get_task("LunarLander-v3"), 0)
  with pytest.raises(ValueError, match="discrete"): PPOJit(get_task("Pendulum-v1"), 0)
  with pytest.raises(ValueError, match="steps_per_call"): PPOJit(TASK, 0, Config(num_steps=16, steps_per_call=5))
