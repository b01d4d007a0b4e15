"""The reference Double DQN's pieces against hand-computed values: loss, Double-DQN target, Adam step,
target updates, replay ring buffer, fixed-shape jitted calls."""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from tinygrad import Tensor
from tinygrad.helpers import Context

from agents.common import Replay, copyin
from agents.dqn import DQN, Config, NStep, huber
from envs import get_task

TASK = get_task("CartPole-v1")


DQN_CFG = Config(num_envs=4, hidden=16, layers=2, batch_size=8, buffer_size=10, learning_starts=0, train_every=2, gradient_steps=2)


@pytest.fixture(scope="module")
def agent():
  return DQN(TASK, 0, DQN_CFG)


def q_numpy(agent, flat, x):
  h, off = x, 0
  for i in range(agent.cfg.layers + 1):
    (_, ws), (_, bs) = agent.layout[2 * i], agent.layout[2 * i + 1]
    w = flat[off:off + ws[0] * ws[1]].reshape(ws); off += ws[0] * ws[1]
    b = flat[off:off + bs[0]]; off += bs[0]
    h = h @ w + b
    if i < agent.cfg.layers: h = np.maximum(h, 0)
  return h


def test_huber_by_hand():
  x = Tensor([-3.0, -0.5, 0.2, 2.0])
  loss = huber(x)
  g, = loss.gradient(x)
  assert loss.item() == pytest.approx((2.5 + 0.125 + 0.02 + 1.5) / 4)
  np.testing.assert_allclose(g.numpy(), [-0.25, -0.125, 0.05, 0.25], rtol=1e-6)


def _batch(agent, rng):
  O, B = agent.obs_dim, agent.cfg.batch_size
  return agent.cols.fill(np.zeros((B, agent.cols.width), np.float32), observations=rng.normal(size=(B, O)),
                         actions=rng.integers(0, 2, B), returns=rng.normal(size=B), next_observations=rng.normal(size=(B, O)),
                         terminations=rng.random(B) < 0.3,
                         discounts=rng.choice([agent.cfg.gamma, agent.cfg.gamma**3], B))   # of 1- and 3-step rows


def _call(agent, *steps):
  """One jitted call of the update on (batch, step size, tau) per step (the call's input row of each)."""
  steps = [steps] if not isinstance(steps[0], tuple) else steps
  copyin(agent.call_in, np.stack([np.concatenate([b.ravel(), [lr, tau]]) for b, lr, tau in steps]).astype(np.float32))
  with Context(TRAINING=1): return agent._update(agent.call_in)


def test_several_updates_in_one_call_are_the_same_steps():
  """updates_per_call=2: one call makes the two steps that two calls of one step make, on the same batches."""
  rng = np.random.default_rng(1)
  one, two = DQN(TASK, 0, DQN_CFG), DQN(TASK, 0, dataclasses.replace(DQN_CFG, updates_per_call=2))
  batches = [_batch(one, rng), _batch(one, rng)]
  for b, tau in zip(batches, (0.0, 1.0)): _call(one, b, 1e-3, tau)
  _call(two, (batches[0], 1e-3, 0.0), (batches[1], 1e-3, 1.0))
  np.testing.assert_allclose(two.theta.numpy(), one.theta.numpy(), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(two.target.numpy(), one.target.numpy(), rtol=1e-5, atol=1e-7)


def test_update_is_double_dqn_with_adam_and_the_target_update(agent):
  """One jitted step against numpy: the online net picks a', the target net values it, terminals do not
  bootstrap, each row's own discount (gamma^m for an m-step row) scales the bootstrap; loss = mean Huber;
  Adam's first step moves every weight by lr * sign(grad) (|m/sqrt(v)| = 1)."""
  rng = np.random.default_rng(0)
  # make the target differ from the online net, so that Double DQN and plain DQN give different values
  copyin(agent.target, agent.theta.numpy() + rng.normal(scale=0.1, size=agent.theta.shape).astype(np.float32))
  agent.adam.forget()
  b = _batch(agent, rng)
  theta, target = agent.theta.numpy().copy(), agent.target.numpy().copy()
  data = agent.cols.split(b)
  next_a = q_numpy(agent, theta, data.next_observations).argmax(1)
  y = data.returns + data.discounts * (1 - data.terminations) * q_numpy(agent, target, data.next_observations)[np.arange(len(b)), next_a]
  d = q_numpy(agent, theta, data.observations)[np.arange(len(b)), data.actions.astype(int)] - y
  expected_loss = np.where(np.abs(d) < 1, 0.5 * d * d, np.abs(d) - 0.5).mean()
  lr_t = 1e-3 * (1 - 0.999) ** 0.5 / (1 - 0.9)                      # Adam's bias-corrected step size, t = 1
  loss = _call(agent, b, lr_t, 0.0).item()                          # tau 0: target unchanged
  assert loss == pytest.approx(expected_loss, rel=1e-5)
  step = agent.theta.numpy() - theta
  moved = np.abs(step) > 1e-9
  assert moved.mean() > 0.5
  # Adam's first step: lr * sign(grad), shortened by eps (1e-8) only where |grad| ~ 1e-5
  np.testing.assert_allclose(np.abs(step[moved]), 1e-3, rtol=3e-2)
  assert np.median(np.abs(step[moved])) == pytest.approx(1e-3, rel=1e-4)
  np.testing.assert_array_equal(agent.target.numpy(), target)
  # a hard copy (tau 1) on the next step: target = theta after that step
  _call(agent, b, 1e-3, 1.0)
  np.testing.assert_allclose(agent.target.numpy(), agent.theta.numpy(), rtol=0, atol=1e-6)
  # Polyak: target += 0.25 (theta - target)
  before_t = agent.target.numpy().copy()
  _call(agent, b, 1e-3, 0.25)
  np.testing.assert_allclose(agent.target.numpy(), before_t + 0.25 * (agent.theta.numpy() - before_t), rtol=1e-5, atol=1e-7)


def _step_rows(nstep, rewards, term_at=None, trunc_at=None, envs=1):
  """Feed env 0 observations 0, 1, 2, ... (action = 10 * t) and the given rewards; other envs reset throughout."""
  out = []
  for t, r in enumerate(rewards):
    obs, nxt = np.full((envs, 1), float(t)), np.full((envs, 1), t + 1.0)
    term, trunc = np.array([t == term_at] * envs), np.array([t == trunc_at] * envs)
    out.append(nstep.rows(obs, np.full(envs, 10 * t), np.full(envs, r), nxt, term, trunc, np.arange(envs) == 0))
  return out


def test_n_step_rows_by_hand():
  """[obs | action | return | obs m steps on | terminated | gamma^m]: m = n until the episode ends, then shorter."""
  g = 0.5
  rows = _step_rows(NStep(3, 2, g), [1.0, 2.0, 4.0, 8.0], term_at=3, envs=2)
  assert [len(r) for r in rows] == [0, 0, 1, 3]                      # nothing until 3 steps are in; env 1 never counts
  np.testing.assert_allclose(rows[2], [[0, 0, 1 + g * 2 + g * g * 4, 3, 0, g**3]])
  np.testing.assert_allclose(rows[3], [[1, 10, 2 + g * 4 + g * g * 8, 4, 1, g**3],   # the end flushes: 3, 2, 1 steps
                                       [2, 20, 4 + g * 8, 4, 1, g**2],
                                       [3, 30, 8, 4, 1, g]])
  trunc = _step_rows(NStep(3, 1, g), [1.0, 2.0], trunc_at=1)         # a time limit: shorter rows that bootstrap
  np.testing.assert_allclose(trunc[1], [[0, 0, 1 + g * 2, 2, 0, g**2], [1, 10, 2, 2, 0, g]])
  one = _step_rows(NStep(1, 1, g), [1.0, 2.0, 4.0])                  # n = 1: the one-step transition at once
  np.testing.assert_allclose(np.concatenate(one), [[t, 10 * t, r, t + 1, 0, g] for t, r in enumerate([1, 2, 4])])


def test_replay_is_a_ring_buffer_and_samples_only_what_it_holds():
  replay = Replay(10, 3)
  rows = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
  replay.add(rows[:4])
  assert set(replay.sample(np.random.default_rng(0), 200)[:, 0]) == {0.0, 3.0, 6.0, 9.0}   # never an empty row
  replay.add(rows)
  replay.add(rows[:1])                     # capacity 10: 12 rows, the two oldest overwritten
  assert replay.len == 10 and replay.pos == 2
  np.testing.assert_array_equal(replay.rows[:2], np.stack([rows[6], rows[0]]))
  np.testing.assert_array_equal(replay.rows[2:4], rows[2:4])
  np.testing.assert_array_equal(replay.rows[4:10], rows[:6])


def test_greedy_matches_numpy_for_any_batch_size(agent):
  rng = np.random.default_rng(1)
  for n in (3, 4, 10, 3):
    obs = rng.normal(size=(n, agent.obs_dim)).astype(np.float32)
    np.testing.assert_array_equal(agent.act(obs), q_numpy(agent, agent.theta.numpy(), obs).argmax(1))


def test_jitted_inputs_refuse_another_shape(agent):
  with pytest.raises(AssertionError, match="does not match"):
    copyin(agent.call_in, np.zeros((1, (agent.cfg.batch_size + 1) * agent.cols.width + 2), np.float32))


def test_training_stores_real_transitions_and_stays_finite():
  a = DQN(TASK, 3, Config(num_envs=4, hidden=16, batch_size=8, buffer_size=1000, learning_starts=16, train_every=8,
                          gradient_steps=2))
  steps = list(itertools.islice(a.train(), 6))
  assert steps == sorted(steps) and steps[-1] <= 6 * 8 * 4 and a.profile["updates"] >= 4
  data = a.cols.split(a.replay.rows[:a.replay.len])
  assert a.replay.len == steps[-1]                                   # one row per counted env step
  fell = (np.abs(data.next_observations[:, 2]) > 0.2095) | (np.abs(data.next_observations[:, 0]) > 2.4)
  np.testing.assert_array_equal(fell, data.terminations > 0)         # terminated exactly when CartPole fails
  assert np.isfinite(a.theta.numpy()).all()


def _run_lengths(actions: np.ndarray) -> np.ndarray:
  change = np.flatnonzero(np.diff(actions) != 0)
  return np.diff(np.concatenate([[-1], change, [len(actions) - 1]]))


def test_temporally_extended_exploration_holds_random_actions_for_zeta_runs():
  """MountainCar: with eps_zeta, random actions come in runs (mean length well above plain epsilon-greedy's
  1 / (1 - 1/3) = 1.5 for three actions); without it, the warm-up's actions are independent."""
  task = get_task("MountainCar-v0")
  def warmup_actions(cfg):
    a = DQN(task, 0, cfg)
    list(itertools.islice(a.train(), 1))
    return a.cols.split(a.replay.rows[:a.replay.len:a.cfg.num_envs]).actions   # env 0's actions
  base = Config(num_envs=2, hidden=16, batch_size=8, buffer_size=5000, learning_starts=4000, train_every=2000,
                gradient_steps=1)
  plain = _run_lengths(warmup_actions(base)).mean()
  held = _run_lengths(warmup_actions(dataclasses.replace(base, eps_zeta=2.0, eps_max_repeat=100))).mean()
  assert plain == pytest.approx(1.5, abs=0.15) and held > 3.0


def test_scale_obs_maps_the_space_bounds_to_unit_range_inside_the_net():
  """MountainCar's observation (position in [-1.2, 0.6], velocity in [-0.07, 0.07]) enters the first layer as
  [-1, 1]; greedy actions match numpy on the scaled input. An unbounded space (CartPole) is refused."""
  task = get_task("MountainCar-v0")
  a = DQN(task, 0, Config(num_envs=2, hidden=16, batch_size=8, buffer_size=100, scale_obs=True))
  obs = np.array([[-1.2, -0.07], [0.6, 0.07], [-0.3, 0.0], [0.1, -0.02]], np.float32)
  scaled = (obs - np.array([-0.3, 0.0])) / np.array([0.9, 0.07])
  np.testing.assert_allclose(scaled[:3], [[-1, -1], [1, 1], [0, 0]], atol=1e-6)
  theta, q = a.theta.numpy(), a._q(a.theta, Tensor(obs)).numpy()
  np.testing.assert_allclose(q, q_numpy(a, theta, scaled), rtol=1e-4, atol=1e-5)
  assert np.abs(q - q_numpy(a, theta, obs)).max() > 1e-2          # not the raw observation
  np.testing.assert_array_equal(a.act(obs), q.argmax(1))
  with pytest.raises(ValueError, match="bounded observation space"):
    DQN(TASK, 0, Config(num_envs=2, hidden=16, batch_size=8, buffer_size=100, scale_obs=True))
