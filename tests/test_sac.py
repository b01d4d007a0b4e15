"""The reference SAC's pieces against numpy: squashed-Gaussian log-prob, the three losses with Polyak
targets, the temperature, the replay rows, fixed-shape jitted calls."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats
from tinygrad import Tensor
from tinygrad.helpers import Context

from agents.common import copyin
from agents.sac import LOG_STD_MAX, LOG_STD_MIN, SAC, Config, pink_noise, squashed_gaussian
from envs import get_task

TASK = get_task("Pendulum-v1")


@pytest.fixture(scope="module")
def agent():
  return SAC(TASK, 0, Config(num_envs=2, hidden=16, batch_size=8, buffer_size=50, learning_starts=0, gradient_steps=1))


def test_squashed_gaussian_log_prob_by_hand():
  mean, log_std = np.array([[0.3, -1.0], [2.0, 0.0]]), np.array([[-0.5, 0.2], [0.0, -2.0]])
  noise = np.array([[0.7, -1.2], [0.1, 3.0]])
  a, logp = squashed_gaussian(Tensor(mean), Tensor(log_std), Tensor(noise))
  u = mean + np.exp(log_std) * noise
  expected = stats.norm.logpdf(u, mean, np.exp(log_std)).sum(1) - np.log(1 - np.tanh(u) ** 2).sum(1)
  np.testing.assert_allclose(a.numpy(), np.tanh(u), rtol=1e-5)
  np.testing.assert_allclose(logp.numpy(), expected, rtol=1e-4)
  # far in the tail tanh(u) rounds to 1 in float32: the stable form stays finite
  _, tail = squashed_gaussian(Tensor([[12.0]]), Tensor([[0.0]]), Tensor([[0.0]]))
  assert np.isfinite(tail.numpy()).all()


def mlp(flat, layout, prefix, x, layers=3):
  p, off = {}, 0
  for name, shape in layout:
    n = int(np.prod(shape)); p[name] = flat[off:off + n].reshape(shape); off += n
  for i in range(layers):
    x = x @ p[f"{prefix}w{i}"] + p[f"{prefix}b{i}"]
    if i < layers - 1: x = np.maximum(x, 0)
  return x


def test_losses_targets_and_temperature_match_numpy(agent):
  rng = np.random.default_rng(0)
  A, g, tau = agent.act_dim, agent.cfg.gamma, agent.cfg.tau
  copyin(agent.critic_target, agent.critic.numpy() + rng.normal(scale=0.05, size=agent.critic.shape).astype(np.float32))
  copyin(agent.log_alpha, np.array([math.log(0.3)], np.float32))
  b = rng.normal(size=(agent.cfg.batch_size, agent.cols.width)).astype(np.float32)
  agent.cols.fill(b, actions=np.tanh(agent.cols.split(b).actions), terminations=rng.random(len(b)) < 0.3)
  data = agent.cols.split(b)
  actor, critic, target = agent.actor.numpy(), agent.critic.numpy(), agent.critic_target.numpy()

  def policy(obs, noise):
    out = mlp(actor, agent.actor_layout, "pi", obs)
    mean, ls = out[:, :A], LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (np.tanh(out[:, A:]) + 1)
    u = mean + np.exp(ls) * noise
    return np.tanh(u), (stats.norm.logpdf(u, mean, np.exp(ls)) - np.log(1 - np.tanh(u) ** 2)).sum(1)

  def q(flat, obs, act):    # the twin critics stacked (2, fan_in, fan_out): numpy's matmul broadcasts over them as well
    out = mlp(flat, agent.critic_layout, "q", np.concatenate([obs, act], 1))[..., 0]
    assert out.shape == (2, len(obs)) and not np.allclose(out[0], out[1])    # two critics, initialised apart
    return out[0], out[1]

  na, nlogp = policy(data.next_observations, data.next_action_noise)
  y = data.rewards + g * (1 - data.terminations) * (np.minimum(*q(target, data.next_observations, na)) - 0.3 * nlogp)
  q1, q2 = q(critic, data.observations, data.actions)
  critic_loss = 0.5 * (((q1 - y) ** 2) + ((q2 - y) ** 2)).mean()
  a, logp = policy(data.observations, data.action_noise)
  actor_loss = (0.3 * logp - np.minimum(*q(critic, data.observations, a))).mean()
  alpha_loss = -(math.log(0.3) * (logp + agent.target_entropy)).mean()

  copyin(agent.batch_in, b)
  copyin(agent.lr_in, np.zeros(1, np.float32))          # step size 0: the weights stay, the target moves by tau
  with Context(TRAINING=1): losses = agent._update(agent.batch_in, agent.lr_in).numpy()
  np.testing.assert_allclose(losses, [critic_loss, actor_loss, alpha_loss], rtol=2e-4)
  np.testing.assert_allclose(agent.critic_target.numpy(), target + tau * (critic - target), rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(agent.critic.numpy(), critic)


def test_alpha_moves_towards_the_target_entropy(agent):
  """Entropy above the target (-dim A) -> alpha falls; the gradient of the alpha loss is -(logp + target)."""
  b = np.zeros((agent.cfg.batch_size, agent.cols.width), np.float32)     # zero noise: a = tanh(mean)
  copyin(agent.log_alpha, np.zeros(1, np.float32))
  agent.adam.forget()
  copyin(agent.batch_in, b)
  mean, ls = agent._policy(agent.actor, Tensor(np.zeros((1, agent.obs_dim), np.float32)))
  entropy_high = -squashed_gaussian(mean, ls, Tensor(np.zeros((1, agent.act_dim), np.float32)))[1].item() > agent.target_entropy
  copyin(agent.lr_in, np.array([1e-2 * (1 - 0.999) ** 0.5 / (1 - 0.9)], np.float32))
  with Context(TRAINING=1): agent._update(agent.batch_in, agent.lr_in)
  assert (agent.log_alpha.item() < 0) == entropy_high and abs(agent.log_alpha.item()) == pytest.approx(1e-2, rel=1e-3)


def test_actions_in_bounds_for_any_batch_size(agent):
  rng = np.random.default_rng(1)
  for n in (1, 10, 100, 10):
    a = agent.act(rng.normal(size=(n, agent.obs_dim)).astype(np.float32))
    assert a.shape == (n, agent.act_dim) and (a >= -2).all() and (a <= 2).all()


def test_jitted_inputs_refuse_another_shape(agent):
  with pytest.raises(AssertionError, match="does not match"):
    copyin(agent.batch_in, np.zeros((agent.cfg.batch_size - 1, agent.cols.width), np.float32))
  with pytest.raises(AssertionError, match="does not match"):
    copyin(agent.act_in, np.zeros((agent.cfg.num_envs + 1, agent.act_cols.width), np.float32))


def test_training_stores_real_transitions_and_stays_finite():
  a = SAC(TASK, 2, Config(num_envs=2, hidden=16, batch_size=8, buffer_size=500, learning_starts=20, gradient_steps=2))
  steps = list(itertools.islice(a.train(), 30))
  assert steps == sorted(steps) and steps[-1] == 60 and a.profile["updates"] == 21
  data = a.replay_cols.split(a.replay.rows[:a.replay.len])
  assert a.replay.len == 60 and (np.abs(data.actions) <= 1).all() and (data.terminations == 0).all()  # Pendulum never terminates
  assert np.isfinite(a.actor.numpy()).all() and np.isfinite(a.critic.numpy()).all()


def test_pink_noise_has_a_one_over_f_spectrum_and_unit_variance():
  x = pink_noise(np.random.default_rng(0), (300, 2), 1000)
  assert x.shape == (300, 2, 1000) and x.std(-1) == pytest.approx(1.0, abs=1e-4)
  power = (np.abs(np.fft.rfft(x, axis=-1)) ** 2).mean((0, 1))[1:]
  slope = np.polyfit(np.log(np.fft.rfftfreq(1000)[1:]), np.log(power), 1)[0]
  assert slope == pytest.approx(-1.0, abs=0.1)                                   # white noise: 0
  assert np.corrcoef(x[..., :-1].ravel(), x[..., 1:].ravel())[0, 1] > 0.5        # correlated in time


def test_pink_noise_exploration_and_a_fixed_temperature():
  a = SAC(get_task("MountainCarContinuous-v0"), 0, Config(num_envs=2, hidden=16, batch_size=8, buffer_size=500,
          learning_starts=20, gradient_steps=2, pink_noise=True, noise_len=50, learn_alpha=False, init_alpha=0.1))
  steps = list(itertools.islice(a.train(), 80))
  assert steps[-1] == 160 and np.isfinite(a.actor.numpy()).all()
  assert a.log_alpha.numpy()[0] == pytest.approx(math.log(0.1))                  # never stepped
  acts = a.replay_cols.split(a.replay.rows[20:a.replay.len:2]).actions[:, 0]     # env 0's actions after the random start
  assert np.corrcoef(acts[:-1], acts[1:])[0, 1] > 0.3                             # pink: neighbouring actions agree
