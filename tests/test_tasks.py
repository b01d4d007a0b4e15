"""Tasks and the env-step counting wrappers."""
from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import pytest

from envs import TASKS, TIERS, get_task, tasks_in_tier
from envs.counting import STEPS


def test_thresholds_are_gymnasiums_where_it_has_one():
  for task in TASKS.values():
    try: task.spaces()
    except ImportError: continue                 # the task's extra is not installed here
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


def test_every_tier_has_tasks_and_every_task_a_known_tier_and_extra():
  for tier in TIERS: assert tasks_in_tier(tier), tier
  extras = {"box2d", "mujoco", "atari", None}
  for task in TASKS.values():
    assert set(task.tiers) <= set(TIERS) and task.extra in extras, task.name


def test_a_missing_extra_is_a_clear_error(monkeypatch):
  import sys
  monkeypatch.setitem(sys.modules, "ale_py", None)          # as if ale-py were not installed
  monkeypatch.setattr(gym, "registry", {k: v for k, v in gym.registry.items() if not k.startswith("ALE/")})
  with pytest.raises(ImportError, match=r"ALE/Pong-v5 needs .*pip install 'rlspeedrun\[atari\]'"):
    get_task("Pong-v5").make_vec(1)


@pytest.mark.parametrize("name, shape, dtype", [("Breakout-MinAtar-v1", (4, 10, 10), np.float32),
                                                ("Pong-v5", (4, 84, 84), np.uint8)])
def test_pixel_tasks_give_channels_first_images_in_training_and_evaluation(name, shape, dtype):
  pytest.importorskip("minatar" if "MinAtar" in name else "ale_py")
  task = get_task(name)
  obs_space, _ = task.spaces()
  assert obs_space.shape == shape
  for envs in (task.make_vec(2), task.gym_make_vec(3, vectorization_mode="sync")):   # agent's, referee's
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (envs.num_envs, *shape) and obs.dtype == dtype
    obs, *_ = envs.step(envs.action_space.sample())
    assert obs.shape == (envs.num_envs, *shape)
    envs.close()
  if "MinAtar" in name: assert gym.spec(task.env_id).max_episode_steps      # every evaluation ends


def test_a_missing_gymnasium_dependency_names_the_extra_too(tmp_path):
  """Box2D missing (a fresh process where importing it fails): gymnasium's DependencyNotInstalled becomes ours."""
  import subprocess
  import sys
  code = ("import sys; sys.modules['Box2D'] = None\n"
          "from envs import get_task\n"
          "try: get_task('LunarLander-v3').make_vec(1)\n"
          "except ImportError as e: print(e)\n")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root,
                       env={**os.environ, "PYTHONPATH": root})
  assert "LunarLander-v3 needs a package that is not installed" in out.stdout
  assert "pip install 'rlspeedrun[box2d]'" in out.stdout, out.stdout + out.stderr
