"""Classic control as batched tinygrad programs: CartPole-v1, Acrobot-v1, Pendulum-v1, MountainCar-v0 and
MountainCarContinuous-v0 on any tinygrad device, N environments a call, with gymnasium's spaces, dynamics, rewards,
terminations and time limits (tests/test_batched_envs.py checks each step against gymnasium's own envs).

An env here is data (a `Dynamics`: constants as class attributes, `reset(u)`, `step(s, a)`, `observe(s)`), and
`BatchedEnv` runs any of them: state and elapsed steps live on the device, `step(actions)` advances every env,
resets those that ended (same-step autoreset: the observation returned for an ended env is its new episode's first;
the one it ended on is in `final_observations`) and draws reset states with tinygrad's RNG, so that a rollout of many
steps can be one TinyJit call (agents/ppo_jit.py). `BatchedEnv.transition` is the pure function under `step`.

Training on these is legitimate because they are the same MDPs: the referee still evaluates on gymnasium's envs
(PROTOCOL.md section 3); an agent that trains on them counts its own steps (`step_source: yield` in its records).
Differences: the state is float32 (gymnasium's physics run in float64 and return float32 observations), and the
reset states come from tinygrad's RNG, not gymnasium's seeding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from tinygrad import Tensor, dtypes


class Dynamics:
  """One environment's MDP on batched state tensors (N, state_dim). Subclasses set the constants and the three methods."""
  env_id: str
  state_dim: int
  obs_dim: int
  max_steps: int              # gymnasium's TimeLimit
  reset_low: tuple[float, ...]
  reset_high: tuple[float, ...]

  @classmethod
  def spaces(cls) -> tuple[gym.Space, gym.Space]:
    env = gym.make(cls.env_id)
    try: return env.observation_space, env.action_space
    finally: env.close()

  @classmethod
  def reset(cls, u: Tensor) -> Tensor:
    """Start states from uniform [0, 1) noise of the state's shape (constants in the graph: no copies from the host)."""
    lo, hi = cls.reset_low, cls.reset_high
    if len(set(lo)) == 1 and len(set(hi)) == 1: return lo[0] + u * (hi[0] - lo[0])
    return Tensor.stack(*[a + u[:, i] * (b - a) for i, (a, b) in enumerate(zip(lo, hi))], dim=1)

  @classmethod
  def step(cls, s: Tensor, a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(states, actions) -> (next states, rewards, terminated)."""
    raise NotImplementedError

  @classmethod
  def observe(cls, s: Tensor) -> Tensor:
    return s

  @classmethod
  def state_of(cls, env: gym.Env) -> np.ndarray:
    """A gymnasium env's state in this layout (for the parity tests)."""
    return np.asarray(env.unwrapped.state, np.float32)

  @classmethod
  def set_state(cls, env: gym.Env, s: np.ndarray) -> None:
    env.unwrapped.state = np.asarray(s, np.float64)


def _cols(s: Tensor) -> list[Tensor]:
  return [s[:, i] for i in range(s.shape[1])]


class CartPole(Dynamics):
  env_id, state_dim, obs_dim, max_steps = "CartPole-v1", 4, 4, 500
  reset_low, reset_high = (-0.05,) * 4, (0.05,) * 4
  gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
  total_mass, polemass_length = masspole + masscart, masspole * length
  theta_threshold, x_threshold = 12 * 2 * math.pi / 360, 2.4

  @classmethod
  def step(cls, s, a):
    x, x_dot, theta, theta_dot = _cols(s)
    force = (a.cast(dtypes.float32) * 2 - 1) * cls.force_mag
    cos, sin = theta.cos(), theta.sin()
    temp = (force + cls.polemass_length * theta_dot.square() * sin) / cls.total_mass
    thetaacc = (cls.gravity * sin - cos * temp) / (cls.length * (4.0 / 3.0 - cls.masspole * cos.square() / cls.total_mass))
    xacc = temp - cls.polemass_length * thetaacc * cos / cls.total_mass
    x, x_dot, theta, theta_dot = x + cls.tau * x_dot, x_dot + cls.tau * xacc, theta + cls.tau * theta_dot, theta_dot + cls.tau * thetaacc
    term = (x < -cls.x_threshold) | (x > cls.x_threshold) | (theta < -cls.theta_threshold) | (theta > cls.theta_threshold)
    return Tensor.stack(x, x_dot, theta, theta_dot, dim=1), Tensor.ones_like(x), term


def _wrap(x: Tensor, lo: float, hi: float) -> Tensor:
  """gymnasium's acrobot.wrap for moves of less than one period a step (a step moves an angle by at most 9*pi*0.2)."""
  return (x > hi).where(x - (hi - lo), (x < lo).where(x + (hi - lo), x))


class Acrobot(Dynamics):
  env_id, state_dim, obs_dim, max_steps = "Acrobot-v1", 4, 6, 500
  reset_low, reset_high = (-0.1,) * 4, (0.1,) * 4
  dt, m1, m2, l1, lc1, lc2, I1, I2, g = 0.2, 1.0, 1.0, 1.0, 0.5, 0.5, 1.0, 1.0, 9.8
  max_vel_1, max_vel_2 = 4 * math.pi, 9 * math.pi

  @classmethod
  def _dsdt(cls, y: list[Tensor], torque: Tensor) -> list[Tensor]:
    """gymnasium's AcrobotEnv._dsdt, "book" dynamics."""
    m1, m2, l1, lc1, lc2, I1, I2, g = cls.m1, cls.m2, cls.l1, cls.lc1, cls.lc2, cls.I1, cls.I2, cls.g
    theta1, theta2, dtheta1, dtheta2 = y
    cos2, sin2 = theta2.cos(), theta2.sin()
    d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * cos2) + I1 + I2
    d2 = m2 * (lc2**2 + l1 * lc2 * cos2) + I2
    phi2 = m2 * lc2 * g * (theta1 + theta2 - math.pi / 2.0).cos()
    phi1 = -m2 * l1 * lc2 * dtheta2.square() * sin2 - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * sin2 \
           + (m1 * lc1 + m2 * l1) * g * (theta1 - math.pi / 2).cos() + phi2
    ddtheta2 = (torque + d2 / d1 * phi1 - m2 * l1 * lc2 * dtheta1.square() * sin2 - phi2) / (m2 * lc2**2 + I2 - d2.square() / d1)
    ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
    return [dtheta1, dtheta2, ddtheta1, ddtheta2]

  @classmethod
  def step(cls, s, a):
    torque = a.cast(dtypes.float32) - 1          # AVAIL_TORQUE = [-1, 0, 1]
    y0, dt = _cols(s), cls.dt                  # one RK4 step over [0, dt] (gymnasium's rk4 with t = [0, dt])
    def stage(y: list[Tensor]) -> list[Tensor]:  # each stage materialized: four small kernels, not one that inlines
      return _cols(Tensor.stack(*cls._dsdt(y, torque), dim=1).contiguous())   # all of them per output (slow to build)
    k1 = stage(y0)
    k2 = stage([y + dt / 2 * k for y, k in zip(y0, k1)])
    k3 = stage([y + dt / 2 * k for y, k in zip(y0, k2)])
    k4 = stage([y + dt * k for y, k in zip(y0, k3)])
    ns = [y + dt / 6.0 * (a1 + 2 * a2 + 2 * a3 + a4) for y, a1, a2, a3, a4 in zip(y0, k1, k2, k3, k4)]
    t1, t2 = _wrap(ns[0], -math.pi, math.pi), _wrap(ns[1], -math.pi, math.pi)
    v1, v2 = ns[2].clip(-cls.max_vel_1, cls.max_vel_1), ns[3].clip(-cls.max_vel_2, cls.max_vel_2)
    term = -t1.cos() - (t2 + t1).cos() > 1.0
    return Tensor.stack(t1, t2, v1, v2, dim=1), term.where(0.0, -1.0), term

  @classmethod
  def observe(cls, s):
    t1, t2, v1, v2 = _cols(s)
    return Tensor.stack(t1.cos(), t1.sin(), t2.cos(), t2.sin(), v1, v2, dim=1)


def _angle_normalize(x: Tensor) -> Tensor:
  return x + math.pi - ((x + math.pi) / (2 * math.pi)).floor() * (2 * math.pi) - math.pi


class Pendulum(Dynamics):
  env_id, state_dim, obs_dim, max_steps = "Pendulum-v1", 2, 3, 200
  reset_low, reset_high = (-math.pi, -1.0), (math.pi, 1.0)
  max_speed, max_torque, dt, g, m, l = 8.0, 2.0, 0.05, 10.0, 1.0, 1.0

  @classmethod
  def step(cls, s, a):
    th, thdot = _cols(s)
    u = a.reshape(-1).clip(-cls.max_torque, cls.max_torque)
    costs = _angle_normalize(th).square() + 0.1 * thdot.square() + 0.001 * u.square()
    newthdot = (thdot + (3 * cls.g / (2 * cls.l) * th.sin() + 3.0 / (cls.m * cls.l**2) * u) * cls.dt).clip(-cls.max_speed, cls.max_speed)
    newth = th + newthdot * cls.dt
    return Tensor.stack(newth, newthdot, dim=1), -costs, Tensor.zeros_like(th).cast(dtypes.bool)

  @classmethod
  def observe(cls, s):
    th, thdot = _cols(s)
    return Tensor.stack(th.cos(), th.sin(), thdot, dim=1)


class MountainCar(Dynamics):
  env_id, state_dim, obs_dim, max_steps = "MountainCar-v0", 2, 2, 200
  reset_low, reset_high = (-0.6, 0.0), (-0.4, 0.0)
  min_position, max_position, max_speed, goal_position, goal_velocity = -1.2, 0.6, 0.07, 0.5, 0.0
  force, gravity = 0.001, 0.0025

  @classmethod
  def _move(cls, s: Tensor, dv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    position, velocity = _cols(s)
    velocity = (velocity + dv - (3 * position).cos() * cls.gravity).clip(-cls.max_speed, cls.max_speed)
    position = (position + velocity).clip(cls.min_position, cls.max_position)
    velocity = ((position == cls.min_position) & (velocity < 0)).where(0.0, velocity)
    term = (position >= cls.goal_position) & (velocity >= cls.goal_velocity)
    return Tensor.stack(position, velocity, dim=1), term, position

  @classmethod
  def step(cls, s, a):
    s2, term, position = cls._move(s, (a.cast(dtypes.float32) - 1) * cls.force)
    return s2, Tensor.full_like(position, -1.0), term


class MountainCarContinuous(MountainCar):
  env_id, max_steps = "MountainCarContinuous-v0", 999
  goal_position, power = 0.45, 0.0015

  @classmethod
  def step(cls, s, a):
    a = a.reshape(-1)
    s2, term, _ = cls._move(s, a.clip(-1.0, 1.0) * cls.power)
    return s2, term.where(100.0, 0.0) - a.square() * 0.1, term

  @classmethod
  def set_state(cls, env, s):
    env.unwrapped.state = np.asarray(s, np.float32)


DYNAMICS: dict[str, type[Dynamics]] = {d.env_id: d for d in (CartPole, Acrobot, Pendulum, MountainCar, MountainCarContinuous)}


@dataclass
class Transition:
  """What one step of N envs gives (tensors, not realized): `observations` are the next ones to act on (a new episode's
  first for the envs that ended); `final_observations` the ones each env reached (where an episode ended, its last)."""
  states: Tensor
  elapsed: Tensor
  observations: Tensor
  rewards: Tensor
  terminated: Tensor
  truncated: Tensor
  final_observations: Tensor


class BatchedEnv:
  """`num_envs` copies of one environment on a tinygrad device, state and elapsed steps in device buffers.

      envs = BatchedEnv("CartPole-v1", 4096)
      obs = envs.reset(seed=0)                         # (N, obs_dim) Tensor
      obs, rew, term, trunc = envs.step(actions)       # actions: (N,) ints or (N, 1) floats, a Tensor on the device

  `step` assigns the new state into the buffers: one step a TinyJit call (fixed-shape actions). For many steps in one
  call, chain the pure `transition` and assign the buffers once at the end: in tinygrad 0.14 a replayed jit that assigned
  the state buffer at each of 40 steps left it stale (not the state the call ended on), seen while writing
  tests/test_batched_envs.py, which checks the chained form. Nothing here is counted by the referee: an agent
  that trains on these reports its own steps."""
  def __init__(self, env_id: str, num_envs: int, device: str | None = None):
    if env_id not in DYNAMICS: raise KeyError(f"no batched tinygrad version of {env_id!r}; there are: {', '.join(DYNAMICS)}")
    self.dyn, self.num_envs = DYNAMICS[env_id], num_envs
    self.single_observation_space, self.single_action_space = self.dyn.spaces()
    self.discrete = isinstance(self.single_action_space, gym.spaces.Discrete)
    self.states = Tensor.zeros(num_envs, self.dyn.state_dim, device=device).contiguous().realize()
    self.elapsed = Tensor.zeros(num_envs, dtype=dtypes.int32, device=device).contiguous().realize()
    self.device = self.states.device

  def reset(self, seed: int | None = None) -> Tensor:
    if seed is not None: Tensor.manual_seed(seed)
    self.states.assign(self.dyn.reset(Tensor.rand(*self.states.shape, device=self.device)))
    self.elapsed.assign(Tensor.zeros_like(self.elapsed))
    Tensor.realize(self.states, self.elapsed)
    return self.dyn.observe(self.states)

  def transition(self, states: Tensor, elapsed: Tensor, actions: Tensor, noise: Tensor | None = None) -> Transition:
    """The pure step: from these states and elapsed steps, with these actions; ended envs start anew, from `noise`
    (uniform [0, 1), the states' shape; drawn here if not given: a rollout draws all its steps' noise at once)."""
    s2, rew, term = self.dyn.step(states, actions)
    elapsed = elapsed + 1
    trunc = elapsed >= self.dyn.max_steps      # as gymnasium's TimeLimit: also where the env terminated on that step
    done = (term | trunc).reshape(-1, 1)
    fresh = self.dyn.reset(Tensor.rand(*states.shape, device=self.device) if noise is None else noise)
    s_next = done.where(fresh, s2)
    return Transition(states=s_next, elapsed=done.reshape(-1).where(0, elapsed), observations=self.dyn.observe(s_next),
                      rewards=rew, terminated=term, truncated=trunc, final_observations=self.dyn.observe(s2))

  def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    tr = self.transition(self.states, self.elapsed, actions)
    self.states.assign(tr.states)
    self.elapsed.assign(tr.elapsed)
    return tr.observations, tr.rewards, tr.terminated, tr.truncated
