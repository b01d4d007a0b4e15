"""Bounty entries from outside the repository: a file in a temp dir, an installed entry point, names."""
from __future__ import annotations

import os
import textwrap

import pytest

from bench.analysis.loaders import load_runs
from bench.referee.agent_api import AgentError, installed_agents, load_agent_class, resolve_agent
from tests.test_cli import bench

ENTRY = textwrap.dedent('''
    """A bounty entry that the repository has never seen: it "learns" CartPole after one update."""
    import time

    import numpy as np


    class QuickBalancer:
        def __init__(self, task, seed):
            self.envs = task.make_vec(4, vectorization_mode="sync")
            self.obs, _ = self.envs.reset(seed=seed)
            self.learned = False

        @staticmethod
        def policy(obs):
            return (obs[:, 0] * 0.1 + obs[:, 1] * 0.5 + obs[:, 2] * 10 + obs[:, 3] * 2 > 0).astype(np.int64)

        def train(self):
            steps = 0
            while True:
                for _ in range(250):
                    self.obs = self.envs.step(self.policy(self.obs))[0]
                steps += 1000
                time.sleep(0.05)
                self.learned = True
                yield steps

        def act(self, obs):
            return self.policy(obs) if self.learned else np.zeros(len(obs), dtype=np.int64)

        def snapshot(self):       # what act() reads (it has no tinygrad Tensors): its evaluator restores it
            return {"learned": np.array(self.learned)}

        def restore(self, state):
            self.learned = bool(state["learned"])
''')


@pytest.mark.slow
def test_out_of_tree_entry_runs_beside_the_baseline_and_shows_in_the_report(tmp_path):
  entry = tmp_path / "elsewhere" / "my_entry.py"
  entry.parent.mkdir()
  entry.write_text(ENTRY)
  r = bench("--agent", "tests/fake_agents.py:SleepyTrainer", "--agent", f"{entry}:QuickBalancer", "--baseline", "SleepyTrainer",
            "--seeds", "4", "--no-cold-start", results=tmp_path / "results", timeout=400)
  assert r.returncode == 0, r.stdout + r.stderr
  runs = load_runs(str(tmp_path / "results"))
  mine = runs[runs["agent"] == "QuickBalancer"]
  assert len(mine) == 4 and mine["solved"].all() and set(mine["agent_target"]) == {f"{entry}:QuickBalancer"}
  (report,) = (tmp_path / "results").glob("*/report.md")
  md = report.read_text()
  assert "| CartPole-v1 | QuickBalancer | SleepyTrainer" in md and "**faster**" in md
  assert all((report.parent / png).exists() for png in ("time_to_threshold.png", "speedup.png", "performance_profile.png"))
  assert "verdicts" in r.stdout and "faster" in r.stdout


def _install(tmp_path, entry_points: str):
  """A package with an entry point, installed the way pip leaves it: a module and a .dist-info on sys.path."""
  pkg = tmp_path / "tmpentry"
  pkg.mkdir()
  (pkg / "__init__.py").write_text("")
  (pkg / "agent.py").write_text(ENTRY)
  info = tmp_path / "tmpentry-0.1.dist-info"
  info.mkdir()
  (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tmpentry\nVersion: 0.1\n")
  (info / "entry_points.txt").write_text(entry_points)


def test_installed_entry_point_is_an_agent_name(tmp_path, monkeypatch):
  _install(tmp_path, "[rlspeedrun.agents]\ntmp-entry = tmpentry.agent:QuickBalancer\nppo = tmpentry.agent:QuickBalancer\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  assert installed_agents()["tmp-entry"] == "tmpentry.agent:QuickBalancer"
  spec = resolve_agent("tmp-entry")
  assert spec.name == "tmp-entry" and spec.target == "tmpentry.agent:QuickBalancer"
  assert spec.source == os.path.join(str(tmp_path), "tmpentry", "agent.py")
  assert load_agent_class(spec.target).__name__ == "QuickBalancer"
  assert resolve_agent("ppo").target == "agents.ppo:PPO"        # a reference name cannot be taken over


def test_names_chosen_on_the_command_line(tmp_path):
  assert resolve_agent("mine=tests/fake_agents.py:Scripted").name == "mine"
  with pytest.raises(AgentError, match="taken by a reference"): resolve_agent("ppo=tests/fake_agents.py:Scripted")
  with pytest.raises(AgentError, match="NAME=AGENT"): resolve_agent("=tests/fake_agents.py:Scripted")
