"""The reference PPO's pieces: GAE, the block-diagonal actor-critic, fixed-shape jitted calls."""
from __future__ import annotations

import numpy as np
import pytest

from agents.common import copyin, copyout
from agents.ppo import PPO, Config, gae
from envs import get_task

TASK = get_task("CartPole-v1")


def test_gae_by_hand():
  # one env, 4 steps: step 1 terminates, step 2 is the reset-only step, step 3 is truncated
  rew = np.array([[1.0], [1.0], [0.0], [1.0]], np.float32)
  val = np.array([[0.5], [0.4], [9.0], [0.3]], np.float32)   # val[2] = V(obs after the terminal step), unused
  term = np.array([[False], [True], [False], [False]])
  trunc = np.array([[False], [False], [False], [True]])
  valid = np.array([[True], [True], [False], [True]])
  last_val = np.array([0.7], np.float32)                      # V(final obs of the truncated episode)
  g, lam = 0.9, 0.5
  adv = gae(rew, val, last_val, term, trunc, valid, g, lam)
  d3 = 1.0 + g * 0.7 - 0.3                 # truncated: bootstraps from V(final obs), no recursion past it
  d1 = 1.0 - 0.4                           # terminated: no bootstrap
  d0 = 1.0 + g * 0.4 - 0.5
  np.testing.assert_allclose(adv[:, 0], [d0 + g * lam * d1, d1, 0.0, d3], rtol=1e-6)


def test_gae_does_not_mix_envs_and_matches_plain_recursion_without_episode_ends():
  rng = np.random.default_rng(0)
  T, N = 6, 3
  rew, val = rng.normal(size=(T, N)).astype(np.float32), rng.normal(size=(T, N)).astype(np.float32)
  last = rng.normal(size=N).astype(np.float32)
  no = np.zeros((T, N), bool)
  adv = gae(rew, val, last, no, no, ~no, 0.99, 0.95)
  for n in range(N):
    running, nxt = 0.0, last[n]
    for t in reversed(range(T)):
      running = rew[t, n] + 0.99 * nxt - val[t, n] + 0.99 * 0.95 * running
      nxt = val[t, n]
      assert adv[t, n] == pytest.approx(running, rel=1e-5)


@pytest.fixture(scope="module")
def agent():
  return PPO(TASK, 0, Config(num_envs=8, num_steps=8, epochs=2, minibatches=2))


def numpy_forward(agent, obs):
  """Reference forward pass: separate actor and critic nets read out of the flat parameters."""
  theta = agent.theta.numpy()
  p, off = {}, 0
  for name, shape in agent.layout:
    n = int(np.prod(shape)); p[name] = theta[off:off + n].reshape(shape); off += n
  H, A, L = agent.cfg.hidden, agent.n_actions, agent.cfg.layers
  def mlp(hidden: slice, out: slice):
    h = obs
    for i in range(L + 1):
      rows, cols = (slice(None) if i == 0 else hidden), (hidden if i < L else out)
      h = h @ p[f"w{i}"][rows, cols] + p[f"b{i}"][cols]
      if i < L: h = np.tanh(h)
    return h
  return mlp(slice(0, H), slice(0, A)), mlp(slice(H, 2 * H), slice(A, A + 1))[:, 0]


def test_act_is_greedy_for_any_batch_size(agent):
  rng = np.random.default_rng(1)
  for n in (3, 10, 3, 100, 10):     # each batch size gets its own jitted function and buffers
    obs = rng.normal(size=(n, 4)).astype(np.float32)
    logits, _ = numpy_forward(agent, obs)
    a = agent.act(obs)
    assert a.shape == (n,) and a.dtype == np.int64
    np.testing.assert_array_equal(a, logits.argmax(-1))


def test_sample_rejects_a_changed_shape(agent):
  obs = np.zeros((agent.cfg.num_envs, 4), np.float32)
  for _ in range(3): agent._sample(obs)          # run, capture, replay
  with pytest.raises(ValueError, match="shape"):
    agent._sample(np.zeros((agent.cfg.num_envs + 1, 4), np.float32))
  with pytest.raises(AssertionError, match="shape"):
    copyin(agent.act_in, np.zeros((2, 2), np.float32))


def test_sample_returns_policy_logp_and_value(agent):
  rng = np.random.default_rng(2)
  obs = rng.normal(size=(agent.cfg.num_envs, 4)).astype(np.float32)
  for _ in range(3):
    out = agent._sample(obs).copy()
    logits, value = numpy_forward(agent, obs)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    a = out[:, 0].astype(int)
    assert set(a) <= {0, 1}
    np.testing.assert_allclose(out[:, 1], logp[np.arange(len(a)), a], atol=1e-5)
    np.testing.assert_allclose(out[:, 2], value, atol=1e-5)


def test_copyout_matches_numpy(agent):
  out = np.zeros((agent.cfg.num_envs, 3), np.float32)
  t = agent._act(agent.act_in)
  np.testing.assert_array_equal(copyout(t, out), t.numpy())


def test_training_keeps_actor_and_critic_separate_and_finite(agent):
  theta0 = agent.theta.numpy().copy()
  gen = agent.train()
  for _ in range(3): next(gen)
  theta = agent.theta.numpy()
  assert np.isfinite(theta).all() and not np.allclose(theta, theta0)
  off = 0
  H, A = agent.cfg.hidden, agent.n_actions
  for name, shape in agent.layout:
    n = int(np.prod(shape)); w = theta[off:off + n].reshape(shape); off += n
    if name.startswith("w") and name != "w0":      # cross blocks stay exactly 0
      a = A if name == f"w{agent.cfg.layers}" else H
      assert not w[:H, a:].any() and not w[H:, :a].any() and w[:H, :a].any() and w[H:, a:].any()
  assert agent.profile["updates"] == 3 and agent.profile["first_update_s"] > 0


# --- continuous actions: Gaussian policy with a state-independent log-std ---
@pytest.fixture(scope="module")
def gaussian():
  return PPO(get_task("Pendulum-v1"), 0, Config(num_envs=8, num_steps=8, epochs=2, minibatches=2, log_std_init=-0.5))


def test_gaussian_sample_log_prob_matches_scipy(gaussian):
  from scipy import stats
  rng = np.random.default_rng(3)
  obs = rng.normal(size=(gaussian.cfg.num_envs, 3)).astype(np.float32)
  for _ in range(3):
    out = gaussian._sample(obs).copy()                      # [action | logp | value]
    mean, value = numpy_forward(gaussian, obs)
    std = np.exp(gaussian.theta.numpy()[-1])                  # log-std: the last parameter, state-independent
    assert std == pytest.approx(np.exp(-0.5))
    np.testing.assert_allclose(out[:, 1], stats.norm.logpdf(out[:, 0], mean[:, 0], std), rtol=1e-4)
    np.testing.assert_allclose(out[:, 2], value, atol=1e-5)
  assert out[:, 0].std() > 0.1                                 # it samples, not the mean


def test_gaussian_act_is_the_clipped_mean_for_any_batch_size(gaussian):
  rng = np.random.default_rng(4)
  for n in (1, 10, 100, 10):
    obs = rng.normal(size=(n, 3)).astype(np.float32) * 50
    a = gaussian.act(obs)
    assert a.shape == (n, 1)
    np.testing.assert_allclose(a, np.clip(numpy_forward(gaussian, obs)[0], -2, 2), atol=1e-5)


def test_gaussian_training_updates_the_log_std_and_stays_finite(gaussian):
  gen = gaussian.train()
  for _ in range(3): next(gen)
  theta = gaussian.theta.numpy()
  assert np.isfinite(theta).all() and theta[-1] != pytest.approx(-0.5, abs=1e-6)
