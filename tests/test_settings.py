"""The tinygrad settings an agent declares (TINYGRAD_SETTINGS in its file, PROTOCOL.md section 4): read without running
the file, allow-listed, applied to that agent's processes only, recorded, and a different configuration to the gate."""
from __future__ import annotations

import os
import textwrap

import pytest

from bench.referee.agent_api import ALLOWED_SETTINGS, AgentError, applied_settings, declared_settings, resolve_agent
from bench.referee.pair import Pair
from tests.test_referee import CONFIG, TASK


def entry(tmp_path, body: str, name: str = "entry.py") -> str:
  path = tmp_path / name
  path.write_text(textwrap.dedent(body))
  os.chmod(tmp_path, 0o755)       # the agent's own uid reads its file in the sandbox
  os.chmod(path, 0o644)
  return str(path)


def test_settings_everywhere_per_device_per_task_and_both(tmp_path):
  src = entry(tmp_path, """
    import os
    TINYGRAD_SETTINGS = {"SPEC": "0", "CPU": {"HCQ2": 1}, "Pendulum-v1": {"THREADS": "0", "SPEC": "1"},
                         "Pendulum-v1@CPU": {"HCQ2": "0"}}
    """)
  assert declared_settings(src, "CartPole-v1", "CPU") == {"SPEC": "0", "HCQ2": "1"}
  assert declared_settings(src, "CartPole-v1", "AMD:2") == {"SPEC": "0"}           # HCQ2 declared for the CPU only
  assert declared_settings(src, "Pendulum-v1", "CPU") == {"SPEC": "1", "HCQ2": "0", "THREADS": "0"}   # the narrower wins
  assert declared_settings(src, "Pendulum-v1", "CUDA") == {"SPEC": "1", "THREADS": "0"}
  assert declared_settings(entry(tmp_path, "x = 1\n", "plain.py"), "CartPole-v1") == {}


@pytest.mark.parametrize("body, words", [
  ("TINYGRAD_SETTINGS = {'DEV': 'CUDA'}", "'DEV' is not a tinygrad setting an agent may declare"),
  ("TINYGRAD_SETTINGS = {'CACHEDB': '/tmp/x'}", "'CACHEDB' is not"),
  ("TINYGRAD_SETTINGS = {'Pendulum-v1': {'NUM_CPU_THREADS': '64'}}", "'NUM_CPU_THREADS' is not"),   # another task's too
  ("TINYGRAD_SETTINGS = {'AMD': {'CACHELEVEL': '0'}}", "'CACHELEVEL' is not"),
  ("TINYGRAD_SETTINGS = {'HCQ2': '1; rm -rf /'}", "is not a small integer"),
  ("TINYGRAD_SETTINGS = {'HCQ2': True}", "is not a small integer"),
  ("TINYGRAD_SETTINGS = dict(HCQ2='1')", "must be a literal dict"),
  ("import os\nTINYGRAD_SETTINGS = {'HCQ2': os.environ['X']}", "must be a literal dict"),
  ("TINYGRAD_SETTINGS = [('HCQ2', '1')]", "must be a dict"),
])
def test_a_bad_declaration_is_a_clear_error(tmp_path, body, words):
  with pytest.raises(AgentError, match=words.replace("(", r"\(")) as e:
    declared_settings(entry(tmp_path, body), "CartPole-v1")
  assert "entry.py:" in str(e.value) and "TINYGRAD_SETTINGS" in str(e.value)


def test_the_file_is_read_not_run(tmp_path):
  """A declaration next to code that would show it ran: the referee only parses the file."""
  marker = tmp_path / "ran"
  src = entry(tmp_path, f"""
    open({str(marker)!r}, "w").write("ran")
    TINYGRAD_SETTINGS = {{"THREADS": "0"}}
    """)
  assert declared_settings(src, "CartPole-v1") == {"THREADS": "0"} and not marker.exists()


def test_the_session_overrides_a_declared_setting_and_peers_declare_nothing(tmp_path):
  src = entry(tmp_path, "TINYGRAD_SETTINGS = {'HCQ2': '1', 'SPEC': '0'}\n")
  agent = resolve_agent(f"{src}:Agent")
  assert applied_settings(agent, "CartPole-v1", "CPU", {}) == ({"HCQ2": "1", "SPEC": "0"}, {"HCQ2": "1", "SPEC": "0"})
  assert applied_settings(agent, "CartPole-v1", "CPU", {"HCQ2": "0"}) == ({"HCQ2": "1", "SPEC": "0"}, {"SPEC": "0"})
  assert applied_settings(resolve_agent("sb3-ppo"), "CartPole-v1", "CPU", {}) == ({}, {})
  assert set(ALLOWED_SETTINGS) >= {"HCQ2", "SPEC", "TRACEMETA", "JITBEAM"} and not {"DEV", "CACHEDB", "DEBUG"} & set(ALLOWED_SETTINGS)


def test_declared_settings_reach_the_agents_processes_and_its_records(tmp_path, monkeypatch):
  """The agent fails unless its training process and its evaluators run with what it declared; every record says what
  it declared and what it ran with."""
  monkeypatch.delenv("THREADS", raising=False)
  src = entry(tmp_path, """
    import os
    from tests.fake_agents import Scripted
    TINYGRAD_SETTINGS = {"THREADS": "0", "other-task": {"JITBEAM": "2"}}
    class Checks(Scripted):
      def __init__(self, task, seed):
        assert os.environ.get("THREADS") == "0" and "JITBEAM" not in os.environ, dict(os.environ)
        super().__init__(task, seed)
    """)
  pair = Pair(resolve_agent(f"{src}:Checks"), TASK, CONFIG)
  try:
    pair.warm_up()
    rec = pair.run(0)
  finally: pair.close()
  assert rec.solved, rec.failure_reason
  assert rec.tinygrad_env == {"THREADS": "0"} and rec.tinygrad_declared == {"THREADS": "0"}
  assert CONFIG.extra_env == {}      # the session's config is not changed: another pair does not inherit them


def test_a_refused_declaration_fails_the_pair_before_any_run(tmp_path):
  src = entry(tmp_path, "from tests.fake_agents import Scripted as Agent\nTINYGRAD_SETTINGS = {'DEBUG': '4'}\n")
  pair = Pair(resolve_agent(f"{src}:Agent"), TASK, CONFIG)
  try:
    with pytest.raises(AgentError, match="'DEBUG' is not a tinygrad setting"): pair.warm_up()
    rec = pair.run(0)
  finally: pair.close()
  assert rec.status == "failed" and "'DEBUG' is not" in rec.failure_reason and rec.steps == 0


def test_the_references_declarations_are_valid():
  """Every reference's file parses and declares only allowed settings, for every task it has a configuration for."""
  from agents import REFERENCE_AGENTS
  from envs import TASKS
  for name in REFERENCE_AGENTS:
    agent = resolve_agent(name)
    for task in TASKS:
      for device in ("CPU", "AMD", "CUDA"): assert set(declared_settings(agent.source, task, device)) <= set(ALLOWED_SETTINGS)
  assert os.path.basename(resolve_agent("dqn").source) == "dqn.py"
