"""Task definitions: what is solved, how it is judged, how long an agent may take.

A task is data. Adding one means adding one `Task(...)` entry to `TASKS` below; the referee,
the benchmark parametrization and the report pick it up from there. PROTOCOL.md explains the rules.
Tasks whose environments need more than classic control name the pyproject extra that installs them
(`extra`); `envs/extras.py` registers the ids that gymnasium does not know by itself (ALE, MinAtar).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import gymnasium as gym
import numpy as np

from envs.counting import CountEpisodeSteps, CountVectorSteps
from envs.extras import atari_preprocessing, channels_first, ensure_registered, needs_extra


@dataclass(frozen=True)
class Task:
  name: str                         # the task's id in records and on the command line
  env_id: str                       # versioned gymnasium id
  threshold: float                  # mean evaluation return that counts as solved
  threshold_source: str             # where the number comes from
  time_budget_s: float              # training-clock seconds before a run is censored
  step_budget: int                  # env steps before a run is censored
  eval_episodes: int = 10           # K episodes of a regular evaluation
  confirm_episodes: int = 100       # episodes of the confirmation that turns a pass into a solve
  eval_every_steps: int | None = None      # evaluation cadence in env steps ...
  eval_every_seconds: float | None = None  # ... and/or in training-clock seconds (whichever comes first)
  min_solve_rate: float = 0.9       # the benchmark test fails below this fraction of solved seeds
  tiers: tuple[str, ...] = ()
  agents: tuple[str, ...] = ()      # reference agents that run on this task by default
  env_kwargs: dict[str, Any] = field(default_factory=dict)
  wrappers: tuple[Callable[[gym.Env], gym.Env], ...] = ()   # applied to every env, training and evaluation
  extra: str | None = None          # the pyproject extra that installs the environment
  step_floor: int = 0               # a confirmed pass with fewer env steps is flagged, not solved (set by this project:
                                    # a sanity bar well under the fewest steps any reference run has needed)
  max_step_reward: float | None = None   # the most one step can pay (the environment's definition); where known, an
                                         # evaluation stops once its mean can no longer reach the threshold

  def __post_init__(self):
    if self.eval_every_steps is None and self.eval_every_seconds is None:
      raise ValueError(f"task {self.name}: set eval_every_steps and/or eval_every_seconds")


  # --- the task as the referee sends it to the agent's process (JSON; wrappers are code, found by name) ---
  def to_wire(self) -> str:
    return json.dumps({f.name: getattr(self, f.name) for f in fields(self) if f.name != "wrappers"})

  @staticmethod
  def from_wire(s: str) -> Task:
    """The task the referee sent; its wrappers are those of the registered task of the same name or env id."""
    d = json.loads(s)
    known = TASKS.get(d["name"]) or next((t for t in TASKS.values() if t.env_id == d["env_id"]), None)
    d.update(tiers=tuple(d["tiers"]), agents=tuple(d["agents"]), wrappers=known.wrappers if known else ())
    return Task(**d)

  # --- environments as the task defines them (registration, kwargs, wrappers); nothing counted ---
  def gym_make(self, **kwargs) -> gym.Env:
    with needs_extra(self.env_id, self.extra):
      ensure_registered(self.env_id, self.extra)
      env = gym.make(self.env_id, **{**self.env_kwargs, **kwargs})
    for wrap in self.wrappers: env = wrap(env)
    return env

  @property
  def native_vector(self) -> bool:
    """gymnasium has a native vectorized env for this task (one that adds no wrappers): make_vec's default here."""
    return gym.spec(self.env_id).vector_entry_point is not None and not self.wrappers

  def gym_make_vec(self, num_envs: int, vectorization_mode: str | None = None, **kwargs) -> gym.vector.VectorEnv:
    """gymnasium's make_vec; vectorization_mode None picks the native vectorized env where there is one."""
    with needs_extra(self.env_id, self.extra):
      ensure_registered(self.env_id, self.extra)
      if vectorization_mode is None: vectorization_mode = "vector_entry_point" if self.native_vector else "sync"
      return gym.make_vec(self.env_id, num_envs=num_envs, vectorization_mode=vectorization_mode,
                          wrappers=list(self.wrappers) or None, **{**self.env_kwargs, **kwargs})

  # --- what an agent uses to build its training environments (steps are counted by the referee) ---
  def make_env(self, **kwargs) -> gym.Env:
    """One training environment (gymnasium API), wrapped so the referee counts its steps."""
    return CountEpisodeSteps(self.gym_make(**kwargs))

  def make_vec(self, num_envs: int, vectorization_mode: str | None = None, **kwargs) -> gym.vector.VectorEnv:
    """`num_envs` training environments as one gymnasium VectorEnv, steps counted by the referee.

    vectorization_mode is gymnasium's: "sync", "async" or "vector_entry_point" (a native vectorized
    implementation, where the environment has one); None picks the native one when it exists.
    """
    return CountVectorSteps(self.gym_make_vec(num_envs, vectorization_mode, **kwargs))

  def max_episode_steps(self) -> int:
    """The episode's step limit (its TimeLimit); 100,000 where the environment sets none."""
    with needs_extra(self.env_id, self.extra):
      ensure_registered(self.env_id, self.extra)
      limit = self.env_kwargs.get("max_episode_steps") or gym.spec(self.env_id).max_episode_steps
    return int(limit or 100_000)

  def run_episodes(self, policy: Callable, seeds: list[int], check: Callable = lambda actions, space, n: actions,
                   give_up_below: float | None = None, info: dict | None = None) -> np.ndarray:
    """One episode per seed, all at once in a sync vector env, with `policy(obs_batch) -> actions`; `check(actions,
    space, n)` validates what the policy returned and gives what to step with. The policy always receives the full batch
    (len(seeds) observations, finished envs included), so that it sees one fixed batch size; actions of finished envs
    are ignored. Returns the undiscounted return of each episode (the referee's evaluation, and agents/run.py's).

    With `give_up_below` (a mean return) on a task that states its `max_step_reward`, the episodes stop as soon as
    their mean could not reach it even if every unfinished episode earned the most a step pays until its time limit.
    The decision "mean >= give_up_below" is then the same as with every episode run out, and the returns given are
    upper bounds (a finished episode's return; an unfinished one's so far plus the most its remaining steps could pay),
    their mean below give_up_below; `info["curtailed_at"]` is the step count at which they stopped."""
    n, limit = len(seeds), self.max_episode_steps()
    envs = self.gym_make_vec(n, vectorization_mode="sync")
    can_give_up = give_up_below is not None and self.max_step_reward is not None
    try:
      obs, _ = envs.reset(seed=seeds)
      returns, done = np.zeros(n), np.zeros(n, dtype=bool)
      for t in range(limit):
        obs, rew, term, trunc, _ = envs.step(check(policy(obs), envs.single_action_space, n))
        returns += np.where(done, 0.0, rew)
        done |= term | trunc
        if done.all(): break
        if can_give_up:
          bounds = returns + np.where(done, 0.0, self.max_step_reward * (limit - t - 1))
          if bounds.mean() < give_up_below:
            if info is not None: info["curtailed_at"] = t + 1
            return bounds
      return returns
    finally:
      envs.close()

  def spaces(self) -> tuple[gym.Space, gym.Space]:
    env = self.gym_make()
    try:
      return env.observation_space, env.action_space
    finally:
      env.close()


TASKS: dict[str, Task] = {t.name: t for t in [
  Task(
    name="CartPole-v1", env_id="CartPole-v1",
    threshold=475.0, threshold_source="gymnasium reward_threshold",
    time_budget_s=120.0, step_budget=500_000,
    eval_episodes=10, confirm_episodes=100, eval_every_steps=2048,
    step_floor=2_000, min_solve_rate=0.9, tiers=("quick",), agents=("ppo", "ppo_jit", "dqn"),
    max_step_reward=1.0,    # +1 every step
  ),
  Task(
    name="Acrobot-v1", env_id="Acrobot-v1",
    threshold=-100.0, threshold_source="gymnasium reward_threshold",
    time_budget_s=300.0, step_budget=500_000,
    eval_episodes=10, confirm_episodes=100, eval_every_steps=4096,
    step_floor=2_000, min_solve_rate=0.9, tiers=("quick",), agents=("ppo", "ppo_jit", "dqn"),
    max_step_reward=0.0,    # -1 a step until the goal, 0 on reaching it
  ),
  Task(
    name="Pendulum-v1", env_id="Pendulum-v1",
    threshold=-200.0, threshold_source="documented: gymnasium sets none; -200 per the agents issue (trained SAC/TD3 "
                                       "reach about -150 in CleanRL's and rl-zoo3's reports)",
    time_budget_s=300.0, step_budget=100_000,
    eval_episodes=10, confirm_episodes=100, eval_every_steps=2000,
    step_floor=1_000, min_solve_rate=0.9, tiers=("quick",), agents=("sac", "ppo"),
    max_step_reward=0.0,    # minus a cost (angle, speed, torque), never positive
  ),
  # --- standard: CPU, under an hour (extra `box2d` for LunarLander) ---
  Task(
    name="LunarLander-v3", env_id="LunarLander-v3",
    threshold=200.0, threshold_source="gymnasium reward_threshold",
    time_budget_s=900.0, step_budget=1_000_000,
    eval_episodes=10, confirm_episodes=100, eval_every_steps=10_000,
    step_floor=25_000, min_solve_rate=0.9, tiers=("standard",), agents=("ppo", "dqn"), extra="box2d",
  ),
  Task(
    name="MountainCar-v0", env_id="MountainCar-v0",
    threshold=-110.0, threshold_source="gymnasium reward_threshold",
    time_budget_s=600.0, step_budget=300_000,
    eval_episodes=10, confirm_episodes=100, eval_every_steps=5_000,
    step_floor=2_500, min_solve_rate=0.9, tiers=("standard",), agents=("dqn",),
    max_step_reward=-1.0,   # -1 every step
  ),
  Task(
    name="MountainCarContinuous-v0", env_id="MountainCarContinuous-v0",
    threshold=90.0, threshold_source="gymnasium reward_threshold",
    time_budget_s=600.0, step_budget=300_000,
    eval_episodes=10, confirm_episodes=100, eval_every_steps=5_000,
    step_floor=2_500, min_solve_rate=0.9, tiers=("standard",), agents=("sac",),
  ),
  # --- hard: a GPU box (extras `mujoco`, `atari`); on a CPU only the smoke test in tests/ runs them ---
  Task(
    name="HalfCheetah-v5", env_id="HalfCheetah-v5",
    threshold=4800.0, threshold_source="gymnasium reward_threshold",
    time_budget_s=3600.0, step_budget=1_000_000,
    eval_episodes=10, confirm_episodes=100, eval_every_steps=20_000,
    step_floor=25_000, min_solve_rate=0.9, tiers=("hard",), agents=("sac",), extra="mujoco",
  ),
  Task(
    name="Hopper-v5", env_id="Hopper-v5",
    threshold=3800.0, threshold_source="gymnasium reward_threshold",
    time_budget_s=3600.0, step_budget=1_000_000,
    eval_episodes=10, confirm_episodes=100, eval_every_steps=20_000,
    step_floor=25_000, min_solve_rate=0.9, tiers=("hard",), agents=("sac",), extra="mujoco",
  ),
  Task(
    name="Breakout-MinAtar-v1", env_id="MinAtar/Breakout-v1",
    threshold=20.0, threshold_source="set by this project (MinAtar has none): 20 bricks in one life, two thirds of "
                                      "a full wall; not yet checked against a reference run on a GPU box",
    time_budget_s=1800.0, step_budget=5_000_000,
    eval_episodes=10, confirm_episodes=100, eval_every_steps=50_000,
    step_floor=100_000, min_solve_rate=0.9, tiers=("hard",), agents=("ppo",), wrappers=(channels_first,), extra="atari",
  ),
  Task(
    name="Pong-v5", env_id="ALE/Pong-v5",
    threshold=18.0, threshold_source="set by this project (ALE has none): winning by 18 of 21 points; not yet "
                                     "checked against a reference run on a GPU box",
    time_budget_s=3600.0, step_budget=10_000_000,
    eval_episodes=10, confirm_episodes=100, eval_every_steps=100_000,
    step_floor=250_000, min_solve_rate=0.9, tiers=("hard",), agents=("ppo",), env_kwargs={"frameskip": 1},
    wrappers=(atari_preprocessing,), extra="atari",
  ),
]}

TIERS: tuple[str, ...] = ("quick", "standard", "hard")


def get_task(name: str) -> Task:
  if name not in TASKS:
    raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
  return TASKS[name]


def tasks_in_tier(tier: str) -> list[Task]:
  if tier not in TIERS:
    raise KeyError(f"unknown tier {tier!r}; known tiers: {', '.join(TIERS)}")
  return [t for t in TASKS.values() if tier in t.tiers]
