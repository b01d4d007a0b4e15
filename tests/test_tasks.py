"""Tasks and the env-step counting wrappers."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from envs import TASKS, get_task, tasks_in_tier
from envs.counting import STEPS


def test_thresholds_are_gymnasiums_where_it_has_one():
  for task in TASKS.values():
    spec = gym.spec(task.env_id)
    if task.threshold_source.startswith("gymnasium"):
      assert spec.reward_threshold == task.threshold, task.name
    assert task.time_budget_s > 0 and task.step_budget > 0 and task.confirm_episodes >= task.eval_episodes
    assert task.tiers and task.agents


def test_cartpole_is_in_the_quick_tier():
  t = get_task("CartPole-v1")
  assert t.threshold == 475 and t in tasks_in_tier("quick")


def test_unknown_task_or_tier_is_a_clear_error():
  with pytest.raises(KeyError, match="unknown task 'Nope'.*CartPole-v1"): get_task("Nope")
  with pytest.raises(KeyError, match="unknown tier"): tasks_in_tier("galactic")


@pytest.mark.parametrize("mode", ["sync", "vector_entry_point"])
def test_vector_counter_counts_real_transitions(mode):
  """Count against a per-env reference: a transition is a step() of a sub-env that was not resetting."""
  task = get_task("CartPole-v1")
  envs = task.make_vec(4, vectorization_mode=mode)
  envs.reset(seed=0)
  rng = np.random.default_rng(0)
  start, real, resetting = STEPS.count, 0, np.zeros(4, bool)
  for _ in range(300):
    _, _, term, trunc, _ = envs.step(rng.integers(0, 2, 4))
    real += int((~resetting).sum())
    resetting = term | trunc
  assert STEPS.count - start == real < 1200       # random play ends episodes: some steps only reset


def test_single_env_counter():
  env = get_task("CartPole-v1").make_env()
  env.reset(seed=0)
  start = STEPS.count
  for _ in range(5): env.step(0)
  assert STEPS.count - start == 5
