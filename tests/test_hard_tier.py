"""The hard tier on a CPU: every task starts, learns and records through the referee with a tiny budget.

Its real runs need a GPU box (`pytest bench/ --tier hard --agent-device CUDA`); this checks that the environments
install and register (extras `mujoco`, `atari`), their wrappers give what the agents expect, the reference agent
of each task (shrunk: tests/tiny_agents.py) trains on them with its task settings, and the record lands on disk."""
from __future__ import annotations

import dataclasses
import math
import os

import pytest

from bench.analysis.loaders import load_runs
from bench.referee.agent_api import resolve_agent
from bench.referee.config import RefereeConfig
from bench.referee.pair import Pair
from bench.referee.records import RecordWriter
from envs import tasks_in_tier

HERE = os.path.dirname(os.path.abspath(__file__))
EXTRA_MODULES = {"mujoco": "mujoco", "atari": "ale_py"}
TINY = {"ppo": ("TinyPPO", 128), "sac": ("TinySAC", 400)}   # class, step budget: PPO 2 rollouts, SAC 200 learning steps


@pytest.mark.slow
@pytest.mark.parametrize("task", tasks_in_tier("hard"), ids=lambda t: t.name)
def test_hard_task_starts_learns_and_records(task, tmp_path):
  pytest.importorskip(EXTRA_MODULES[task.extra], reason=f"extra {task.extra!r} not installed")
  if task.extra == "atari": pytest.importorskip("minatar")
  cls, budget = TINY[task.agents[0]]
  tiny = dataclasses.replace(task, step_budget=budget, time_budget_s=600.0, eval_episodes=2, confirm_episodes=2,
                             eval_every_steps=budget)
  writer = RecordWriter(str(tmp_path / "runs.jsonl"))
  pair = Pair(resolve_agent(os.path.join(HERE, "tiny_agents.py") + ":" + cls), tiny,
                RefereeConfig(device="CPU", hang_timeout_s=300.0), writer)
  try: rec = pair.run(0)
  finally: pair.close()
  assert rec.status == "unsolved" and "step budget" in rec.failure_reason, rec.failure_reason
  assert rec.steps >= budget and rec.agent_profile["updates"] >= 2            # it trained: updates ran
  assert [p["steps"] for p in rec.curve][0] == 0 and rec.curve[-1]["steps"] >= budget
  assert all(math.isfinite(p["return"]) for p in rec.curve)
  df = load_runs(str(tmp_path))
  assert list(df["task"]) == [task.name] and list(df["status"]) == ["unsolved"]
