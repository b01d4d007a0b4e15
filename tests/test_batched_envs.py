"""envs/batched.py against gymnasium: from the same states, with the same actions, every step's observation, reward,
termination and truncation equal gymnasium's (float32 tolerance), over random trajectories that include episode ends,
time limits and random jumps across the state space (so that goals, walls, clips and angle wraps are reached); then
auto-reset, spaces, and the environments inside a TinyJit (many steps a call, fresh random resets each replay)."""
from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from tinygrad import Tensor, TinyJit, dtypes

from envs.batched import DYNAMICS, BatchedEnv

# where a state may jump to (wider than resets: the walls, goals and clips of each env are reached), per state column
STATE_BOX = {
  "CartPole-v1": [(-2.5, 2.5), (-3, 3), (-0.25, 0.25), (-3, 3)],
  "Acrobot-v1": [(-math.pi, math.pi), (-math.pi, math.pi), (-4 * math.pi, 4 * math.pi), (-9 * math.pi, 9 * math.pi)],
  "Pendulum-v1": [(-3 * math.pi, 3 * math.pi), (-8, 8)],
  "MountainCar-v0": [(-1.2, 0.6), (-0.07, 0.07)],
  "MountainCarContinuous-v0": [(-1.2, 0.6), (-0.07, 0.07)],
}


def _time_limit(env: gym.Env) -> gym.wrappers.TimeLimit:
  while not isinstance(env, gym.wrappers.TimeLimit): env = env.env
  return env


def _actions(env_id: str, rng: np.random.Generator, n: int) -> np.ndarray:
  _, act = DYNAMICS[env_id].spaces()
  if isinstance(act, gym.spaces.Discrete): return rng.integers(0, act.n, n)
  return rng.uniform(act.low[0] * 1.5, act.high[0] * 1.5, (n, 1)).astype(np.float32)   # beyond the bounds too: clipped


@pytest.mark.parametrize("env_id", list(DYNAMICS))
def test_each_step_matches_gymnasium(env_id):
  N, steps, rng = 24, 150, np.random.default_rng(0)
  dyn, batched = DYNAMICS[env_id], BatchedEnv(env_id, N)
  envs = [gym.make(env_id) for _ in range(N)]
  for i, e in enumerate(envs): e.reset(seed=i)
  limits = [_time_limit(e) for e in envs]
  for lim in limits: lim._elapsed_steps = int(rng.integers(0, dyn.max_steps))   # time limits are reached too
  box = np.array(STATE_BOX[env_id], np.float64)
  def transition(s, el, a):
    tr = batched.transition(s, el, a)
    return [t.realize() for t in (tr.final_observations, tr.rewards, tr.terminated, tr.truncated, tr.observations, tr.elapsed)]
  step = TinyJit(transition)     # what the jitted agents run; and one graph to build, not one per step
  ends = {"terminated": 0, "truncated": 0}
  # float32 against gymnasium's float64 physics: within 2e-5 of each observation's range (Acrobot's velocities reach 9*pi,
  # and their RK4 step sums terms of hundreds)
  high = dyn.spaces()[0].high
  obs_scale = np.maximum(np.where(np.isfinite(high), np.abs(high), 1.0), 1.0)
  for _ in range(steps):
    for e, lim in zip(envs, limits):
      if rng.random() < 0.05:        # jump across the state space
        dyn.set_state(e, rng.uniform(box[:, 0], box[:, 1]))
        lim._elapsed_steps = int(rng.integers(0, dyn.max_steps))
    states = np.stack([dyn.state_of(e) for e in envs])
    elapsed = np.array([lim._elapsed_steps for lim in limits], np.int32)
    actions = _actions(env_id, rng, N)
    got = [t.numpy() for t in step(*(Tensor(x).realize() for x in (states, elapsed, actions)))]
    want = [e.step(a) for e, a in zip(envs, actions)]
    np.testing.assert_allclose(got[0] / obs_scale, np.stack([w[0] for w in want]) / obs_scale, rtol=1e-4, atol=2e-5, err_msg=f"{env_id} observations")
    np.testing.assert_allclose(got[1], np.array([w[1] for w in want], np.float32), rtol=1e-4, atol=2e-5, err_msg=f"{env_id} rewards")
    np.testing.assert_array_equal(got[2], np.array([w[2] for w in want]), err_msg=f"{env_id} terminated")
    np.testing.assert_array_equal(got[3], np.array([w[3] for w in want]), err_msg=f"{env_id} truncated")
    done = got[2] | got[3]
    np.testing.assert_array_equal(got[4][~done], got[0][~done])           # running envs go on ...
    np.testing.assert_array_equal(got[5], np.where(done, 0, elapsed + 1))  # ... ended ones start anew
    ends["terminated"] += int(got[2].sum())
    ends["truncated"] += int(got[3].sum())
    for e, d in zip(envs, done):
      if d: e.reset()
  if env_id != "Pendulum-v1": assert ends["terminated"] > 0, ends     # the checks above saw episode ends of both kinds
  assert ends["truncated"] > 0, ends


@pytest.mark.parametrize("env_id", list(DYNAMICS))
def test_spaces_resets_and_autoreset(env_id):
  envs = BatchedEnv(env_id, 4096)
  ref = gym.make(env_id)
  assert envs.single_observation_space == ref.observation_space and envs.single_action_space == ref.action_space
  obs = envs.reset(seed=1).numpy()
  assert obs.shape == (4096, *ref.observation_space.shape) and obs.dtype == np.float32
  lo, hi = np.array(envs.dyn.reset_low), np.array(envs.dyn.reset_high)
  s = envs.states.numpy()
  assert (s >= lo).all() and (s <= hi).all() and (s.std(0) > 0.2 * (hi - lo) / np.sqrt(12)).sum() == (hi > lo).sum()
  np.testing.assert_array_equal(BatchedEnv(env_id, 4096).reset(seed=1).numpy(), obs)   # a seed gives the same starts
  # every env ends by its time limit at the latest (one jitted step, replayed)
  act = Tensor(_actions(env_id, np.random.default_rng(0), 4096)).realize()
  step = TinyJit(lambda a: [x.realize() for x in envs.step(a)][2:])
  ended = np.zeros(4096, bool)
  for _ in range(envs.dyn.max_steps):
    term, trunc = step(act)
    ended |= term.numpy() | trunc.numpy()
  assert ended.all() and np.isfinite(envs.states.numpy()).all()


@pytest.mark.slow
def test_many_steps_in_one_jitted_call():
  """A rollout of T steps of N envs as one TinyJit call gives, call after call, what the same steps give unjitted while no
  env resets (resets draw from tinygrad's RNG, whose stream differs in a jit); its resets are fresh on every replay (not
  frozen at capture), in the reset range, and the same for the same seed."""
  N, T = 64, 40
  def rollout(envs, actions):      # state carried through `transition`, assigned once (BatchedEnv's docstring)
    s, el, obs, done = envs.states, envs.elapsed, [], []
    for t in range(T):
      tr = envs.transition(s, el, actions[t])
      s, el = tr.states, tr.elapsed
      obs.append(tr.observations)
      done.append(tr.terminated | tr.truncated)
    envs.states.assign(s)
    envs.elapsed.assign(el)
    return Tensor.stack(*obs).realize(), Tensor.stack(*done).realize(), envs.states.realize(), envs.elapsed.realize()
  acts = Tensor(np.random.default_rng(0).integers(0, 2, (T, N))).realize()
  jitted, plain = BatchedEnv("CartPole-v1", N), BatchedEnv("CartPole-v1", N)
  jitted.reset(seed=3)
  plain.states.assign(jitted.states).realize()
  f = TinyJit(lambda a: rollout(jitted, a))
  for _ in range(4):
    before = jitted.states.numpy()
    obs, done, after, _ = (x.numpy() for x in f(acts))
    np.testing.assert_array_equal(after, jitted.states.numpy())
    np.testing.assert_array_equal(after, obs[-1])                  # the buffers hold where the call ended
    plain.states.assign(Tensor(before)).realize()
    plain.elapsed.assign(jitted.elapsed * 0).realize()
    want = rollout(plain, acts)[0].numpy()
    running = ~np.logical_or.accumulate(done, axis=0)       # (T, N): no reset yet
    np.testing.assert_allclose(obs[running], want[running], rtol=1e-5, atol=1e-6)
  assert (~running).any() and running.any()

  def resets(seed):                # every env at its time limit: every step's observations are fresh starts
    envs = BatchedEnv("CartPole-v1", N)
    envs.reset(seed=seed)
    at_limit = Tensor.full((N,), envs.dyn.max_steps - 1, dtype=dtypes.int32).contiguous().realize()
    f = TinyJit(lambda a: envs.transition(envs.states, at_limit, a).observations.realize())
    return [f(acts[0]).numpy() for _ in range(5)]
  r = resets(7)
  assert all(not np.array_equal(a, b) for a, b in zip(r, r[1:]))          # new draws each replay
  assert all((np.abs(x) <= 0.05).all() for x in r)
  assert all(np.array_equal(a, b) for a, b in zip(r, resets(7)))          # the same for the same seed
