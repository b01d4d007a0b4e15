"""The reference PPO's pieces: GAE, the block-diagonal actor-critic, fixed-shape jitted calls; the dispatch to its
variants (agents/ppo.py)."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import pathlib

import numpy as np
import pytest

import agents
from agents import ppo_atari, ppo_continuous
from agents.common import copyin, copyout
from agents.ppo import PPO, variant
from agents.ppo_atari import PPOAtari
from agents.ppo_base import gae
from agents.ppo_continuous import PPOContinuous
from agents.ppo_discrete import Config, PPODiscrete
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


# --- the dispatch: `ppo` builds the variant for the task ---
@pytest.mark.parametrize("name, cls", [("CartPole-v1", PPODiscrete), ("LunarLander-v3", PPODiscrete), ("MountainCar-v0", PPODiscrete),
                                       ("Pendulum-v1", PPOContinuous), ("MountainCarContinuous-v0", PPOContinuous),
                                       ("Breakout-MinAtar-v1", PPOAtari), ("Pong-v5", PPOAtari)])
def test_variant_by_task_settings_else_by_spaces(name, cls):
  assert variant(get_task(name)) is cls


def test_ppo_is_an_agent_class_whose_instances_are_the_variants(monkeypatch):
  assert inspect.isclass(PPO) and inspect.isgeneratorfunction(PPO.train) and callable(PPO.act)   # the referee's checks
  inspect.signature(PPO).bind(object(), 0)
  with pytest.raises(TypeError, match="PPOContinuous takes agents.ppo_continuous.Config"): PPO(get_task("Pendulum-v1"), 0, Config())
  monkeypatch.setenv("PPO_CONFIG", "sde_sample_freq=2")       # one variable for every variant, with that variant's fields
  a = PPO(get_task("Pendulum-v1"), 0)
  assert type(a) is PPOContinuous and a.cfg == dataclasses.replace(ppo_continuous.TASK_CONFIGS["Pendulum-v1"], sde_sample_freq=2)
  with pytest.raises(ValueError, match="not FIELD=VALUE with a field of Config"): PPO(TASK, 0)


def test_no_agent_imports_the_dispatch_and_no_variant_another():
  """agents/ppo.py imports the variants; they build on agents/ppo_base.py only: no import cycle (function-level too)."""
  for path in pathlib.Path(agents.__file__).parent.glob("*.py"):
    nodes = list(ast.walk(ast.parse(path.read_text())))
    mods = {n.module for n in nodes if isinstance(n, ast.ImportFrom)} | {a.name for n in nodes if isinstance(n, ast.Import) for a in n.names}
    mods |= {f"agents.{a.name}" for n in nodes if isinstance(n, ast.ImportFrom) and n.module == "agents" for a in n.names}
    if path.name != "ppo.py": assert "agents.ppo" not in mods, path.name
    if path.name.startswith("ppo_"): assert not mods & {"agents.ppo_discrete", "agents.ppo_continuous", "agents.ppo_atari"}, path.name


@pytest.fixture(scope="module")
def agent():
  return PPO(TASK, 0, Config(num_envs=8, num_steps=8, epochs=2, minibatches=2))


def params(agent) -> dict[str, np.ndarray]:
  theta, p, off = agent.theta.numpy(), {}, 0
  for name, shape in agent.layout:
    n = int(np.prod(shape)); p[name] = theta[off:off + n].reshape(shape); off += n
  return p


def numpy_forward(agent, obs, with_latent: bool = False):
  """Reference forward pass: separate actor and critic nets read out of the flat parameters."""
  p, latent = params(agent), []
  H, A, L = agent.cfg.hidden, agent.n_actions, agent.cfg.layers
  def mlp(hidden: slice, out: slice):
    h = obs
    for i in range(L + 1):
      rows, cols = (slice(None) if i == 0 else hidden), (hidden if i < L else out)
      if i == L: latent.append(h)
      h = h @ p[f"w{i}"][rows, cols] + p[f"b{i}"][cols]
      if i < L: h = np.tanh(h)
    return h
  head, value = mlp(slice(0, H), slice(0, A)), mlp(slice(H, 2 * H), slice(A, A + 1))[:, 0]
  return (head, value, latent[0]) if with_latent else (head, value)


def test_act_is_greedy_for_any_batch_size(agent):
  assert type(agent) is PPODiscrete
  rng = np.random.default_rng(1)
  for n in (3, 10, 3, 100, 10, 250):     # all through the sampling graph with zero noise (250: three calls of 100 rows)
    obs = rng.normal(size=(n, 4)).astype(np.float32)
    logits, _ = numpy_forward(agent, obs)
    a = agent.act(obs)
    assert a.shape == (n,) and a.dtype == np.int64
    np.testing.assert_array_equal(a, logits.argmax(-1))


def test_one_act_graph_serves_rollouts_and_every_evaluation_batch():
  """Start-up: a fresh process schedules and lowers the act graph once, not once more per evaluation batch size."""
  a = PPO(TASK, 1, Config(num_envs=8, num_steps=8, epochs=1, minibatches=1))
  assert a.act_rows == TASK.confirm_episodes and a.greedy == a._greedy_via_sample
  a.act(np.zeros((10, 4), np.float32))
  assert a._act.captured is not None          # captured on its first call (common.jit)
  captured = a._act.captured
  gen = a.train()
  next(gen)
  a.act(np.zeros((100, 4), np.float32))
  assert a._act.captured is captured


def test_an_evaluation_between_rollout_steps_leaves_the_rollout_alone(gsde):
  """act() has its own input and output arrays: gSDE's held noise and the last sample survive an evaluation."""
  rng = np.random.default_rng(8)
  obs = rng.normal(size=(gsde.cfg.num_envs, 3)).astype(np.float32)
  out = gsde._sample(obs)
  before, noise = out.copy(), gsde.act_x.copy()
  gsde.act(rng.normal(size=(100, 3)).astype(np.float32))
  np.testing.assert_array_equal(out, before)
  np.testing.assert_array_equal(gsde.act_x, noise)
  np.testing.assert_allclose(gsde._sample(obs, False), before, atol=1e-6)


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
  out = np.zeros((agent.act_rows, 3), np.float32)
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


def test_anneal_lr_decays_the_step_size_linearly_to_zero_over_the_step_budget():
  task = dataclasses.replace(TASK, step_budget=200)
  a = PPO(task, 0, Config(num_envs=8, num_steps=8, epochs=1, minibatches=1, anneal_lr=True))
  lrs, seen, learn = [], [], a._learn
  a._learn = lambda *args: (lrs.append(a.adam.lr), learn(*args))
  for steps in a.train():                                   # yielded after the update, with the steps it was made at
    seen.append(steps)
    if steps >= 256: break
  np.testing.assert_allclose(lrs, [a.cfg.lr * max(0.0, 1 - s / 200) for s in seen])
  assert lrs[0] > lrs[1] > lrs[2] > 0 and lrs[-1] == 0.0


# --- continuous actions: Gaussian policy with a state-independent log-std ---
@pytest.fixture(scope="module")
def gaussian():
  return PPO(get_task("Pendulum-v1"), 0, ppo_continuous.Config(num_envs=8, num_steps=8, epochs=2, minibatches=2, log_std_init=-0.5))


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


# --- gSDE: noise = latent @ (eps * std), a matrix per env held for sde_sample_freq steps ---
@pytest.fixture(scope="module")
def gsde():
  return PPO(get_task("Pendulum-v1"), 0, ppo_continuous.Config(num_envs=8, num_steps=8, epochs=2, minibatches=2, layers=2, gsde=True,
                                                               sde_sample_freq=4, log_std_init=-1.0))


def test_gsde_action_and_log_prob_match_numpy_and_scipy(gsde):
  from scipy import stats
  rng = np.random.default_rng(5)
  N, H = gsde.cfg.num_envs, gsde.cfg.hidden
  obs = rng.normal(size=(N, 3)).astype(np.float32)
  for _ in range(3):
    out = gsde._sample(obs).copy()
    eps = gsde.act_x[:N, 3:].reshape(N, H, 1)
    mean, value, latent = numpy_forward(gsde, obs, with_latent=True)
    std = np.exp(params(gsde)["log_std"])                            # (hidden, actions)
    assert std.shape == (H, 1) and std == pytest.approx(np.exp(-1.0))
    np.testing.assert_allclose(out[:, 0], mean[:, 0] + np.einsum("nh,nha->na", latent, eps * std)[:, 0], atol=1e-5)
    sigma = np.sqrt(latent**2 @ std**2 + 1e-6)[:, 0]                   # the noise's distribution given the state
    np.testing.assert_allclose(out[:, 1], stats.norm.logpdf(out[:, 0], mean[:, 0], sigma), rtol=1e-4)
    np.testing.assert_allclose(out[:, 2], value, atol=1e-5)


def test_gsde_noise_is_held_until_redrawn_and_depends_on_the_state(gsde):
  rng = np.random.default_rng(6)
  obs, other = (rng.normal(size=(gsde.cfg.num_envs, 3)).astype(np.float32) for _ in range(2))
  first = gsde._sample(obs)[:, 0].copy()
  held = gsde._sample(obs, False)[:, 0].copy()
  moved = gsde._sample(other, False)[:, 0].copy() - numpy_forward(gsde, other)[0][:, 0]
  redrawn = gsde._sample(obs, True)[:, 0].copy()
  np.testing.assert_allclose(first, held, atol=1e-6)
  assert not np.allclose(first, redrawn)
  assert not np.allclose(moved, first - numpy_forward(gsde, obs)[0][:, 0])   # same matrix, other state, other noise


def test_gsde_training_updates_the_log_std_matrix_and_stays_finite(gsde):
  gen = gsde.train()
  for _ in range(3): next(gen)
  log_std = params(gsde)["log_std"]
  assert np.isfinite(gsde.theta.numpy()).all() and not np.allclose(log_std, -1.0)


# --- observation and reward normalisation ---
def test_running_mean_std_matches_numpy_over_a_stream():
  from agents.common import RunningMeanStd
  rng = np.random.default_rng(7)
  batches = [rng.normal(3.0, 2.0, size=(n, 2)) for n in (1, 5, 64, 7)]
  rms = RunningMeanStd((2,))
  for b in batches: rms.update(b)
  allx = np.concatenate(batches)
  np.testing.assert_allclose(rms.mean, allx.mean(0), rtol=1e-4)
  np.testing.assert_allclose(rms.var, allx.var(0), rtol=1e-3)


def test_normalized_agent_acts_on_standardised_observations_and_evaluation_does_not_move_them():
  agent = PPO(TASK, 0, Config(num_envs=8, num_steps=8, epochs=1, minibatches=2, normalize_obs=True, normalize_reward=True))
  gen = agent.train()
  for _ in range(2): next(gen)
  assert agent.obs_rms.count > 100 and agent.ret_rms.count > 100
  mean, var, count = agent.obs_rms.mean.copy(), agent.obs_rms.var.copy(), agent.obs_rms.count
  obs = np.random.default_rng(8).normal(size=(5, 4)).astype(np.float32) * 3
  z = np.clip((obs - mean) / np.sqrt(var + 1e-8), -10, 10).astype(np.float32)
  np.testing.assert_array_equal(agent.act(obs), numpy_forward(agent, z)[0].argmax(-1))
  assert agent.obs_rms.count == count and np.array_equal(agent.obs_rms.mean, mean)


# --- pixel tasks: a conv torso shared by actor and critic ---
def numpy_conv_forward(agent, obs):
  p, h = params(agent), obs.reshape(len(obs), *agent.obs_shape) * agent.cfg.obs_scale
  for i, (_, k, stride) in enumerate(agent.cfg.conv):
    win = np.lib.stride_tricks.sliding_window_view(h, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    h = np.maximum(np.einsum("bchwij,ocij->bohw", win, p[f"c{i}"]) + p[f"cb{i}"][:, None, None], 0)
  h = np.maximum(h.reshape(len(h), -1) @ p["w0"] + p["b0"], 0)
  out = h @ p["w1"] + p["b1"]
  return out[:, :agent.n_actions], out[:, agent.n_actions]


@pytest.mark.parametrize("name, conv", [("Breakout-MinAtar-v1", ((8, 3, 1),)), ("Pong-v5", ((4, 8, 4), (4, 4, 2)))])
def test_conv_policy_matches_numpy_for_any_batch_size(name, conv):
  pytest.importorskip("minatar" if "MinAtar" in name else "ale_py")
  task = get_task(name)
  agent = PPO(task, 0, ppo_atari.Config(num_envs=2, num_steps=4, minibatches=2, epochs=1, hidden=16, conv=conv,
                                        obs_scale=1 / 255 if "Pong" in name else 1.0))
  obs_space, _ = task.spaces()
  rng = np.random.default_rng(9)
  for n in (1, 3, 2):
    obs = rng.integers(0, 256 if "Pong" in name else 2, size=(n, *obs_space.shape)).astype(obs_space.dtype)
    logits, _ = numpy_conv_forward(agent, obs.astype(np.float32))
    np.testing.assert_array_equal(agent.act(obs), logits.argmax(-1))
  obs = rng.integers(0, 2, size=(2, *obs_space.shape)).astype(np.float32)
  out = agent._sample(obs.reshape(2, -1)).copy()
  logits, value = numpy_conv_forward(agent, obs)
  np.testing.assert_allclose(out[:, 2], value, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="shape"): agent._sample(obs)           # an image batch, not the flat one
