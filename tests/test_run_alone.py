"""agents/run.py: an agent trained on its own, outside the referee (the entry author's debugging path)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agents.run import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKES = os.path.join(ROOT, "tests", "fake_agents.py")


def test_an_entry_file_trains_until_it_reaches_the_threshold(capsys):
  assert main(argv=[f"{FAKES}:Scripted", "--task", "CartPole-v1", "--eval-every", "1000"]) == 0
  out = capsys.readouterr().out
  assert "Scripted on CartPole-v1 (seed 0): threshold 475" in out and "1,000 steps" in out
  assert "(untrained; evaluation" in out                                 # step 0 first, as the referee
  assert "reached 500.00 >= 475 after" in out and "2,000 env steps" in out and "pytest bench/ --agent" in out


def test_a_budget_ends_it_and_says_what_was_reached(capsys):
  assert main(argv=[f"{FAKES}:NeverLearns", "--task", "CartPole-v1", "--steps", "3000"]) == 1
  assert "not reached after" in capsys.readouterr().out


@pytest.mark.parametrize("name, words", [("ListActions", "return a numpy array"), ("FloatActions", r"astype\(np.int64\)")])
def test_bad_actions_stop_it_with_the_fix(name, words):
  with pytest.raises(SystemExit, match=words):
    main(argv=[f"{FAKES}:{name}", "--task", "CartPole-v1", "--eval-every", "1000"])


def test_an_unknown_agent_or_task_is_one_line(capsys):
  with pytest.raises(SystemExit): main(argv=["no/such/file.py:Agent"])
  with pytest.raises(SystemExit): main(argv=["ppo", "--task", "Pong-v9"])
  err = capsys.readouterr().err
  assert "cannot load 'no/such/file.py:Agent'" in err and "unknown task 'Pong-v9'" in err


def test_a_reference_runs_as_a_module():
  r = subprocess.run([sys.executable, "-m", "agents.ppo", "--task", "CartPole-v1", "--steps", "4096"], cwd=ROOT,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 1, r.stdout + r.stderr          # 4,096 steps: not yet at 475
  assert "PPO on CartPole-v1 (seed 0)" in r.stdout and "2,0" in r.stdout and "not reached after" in r.stdout
