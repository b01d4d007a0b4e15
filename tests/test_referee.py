"""The referee: clock, evaluation, budgets, confirmation, faults. Agents are fakes with known behaviour."""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time

import pytest

from bench.analysis.loaders import load_runs
from bench.referee.agent_api import AgentError, resolve_agent
from bench.referee.config import RefereeConfig
from bench.referee.evaluation import EvalSeeds
from bench.referee.pair import Pair
from bench.referee.records import RecordWriter
from bench.referee.run import run_one
from envs import Task
from tests.host import judged_run
from tests.procs import cmdline

HERE = os.path.dirname(os.path.abspath(__file__))
TASK = Task(name="test-CartPole", env_id="CartPole-v1", threshold=475.0, threshold_source="gymnasium",
            time_budget_s=30.0, step_budget=20_000, eval_episodes=5, confirm_episodes=20, eval_every_steps=1000)
CONFIG = RefereeConfig(device="CPU", hang_timeout_s=2.0, calibrate=False)   # machine speed: tests/test_cli.py checks it


def fake(name: str):
  return resolve_agent(os.path.join(HERE, "fake_agents.py") + ":" + name)


def run(name: str, seed: int = 0, task: Task = TASK, config: RefereeConfig = CONFIG):
  return run_one(fake(name), task, seed, config)


def test_scripted_agent_solves_with_confirmation():
  rec = run("Scripted")
  assert rec.status == "solved" and rec.solved
  assert rec.steps_to_threshold == 2000          # learns after 2 updates of 1000 steps; evaluated every 1000
  assert rec.step_source == "wrapper" and rec.sandbox == "bwrap"
  assert rec.confirmation_return == 500.0
  assert [p["steps"] for p in rec.curve] == [0, 1000, 2000]
  assert rec.curve[0]["return"] < 100           # the untrained policy is evaluated at step 0
  assert rec.censored_time_s == rec.time_to_threshold_s > 0


def sleepy_on_time(rec) -> bool:
  """SleepyTrainer's known time: 4 x 0.25 s of training, its evaluation not charged (tests/host.py judged_run)."""
  return rec.solved and 1.0 <= rec.time_to_threshold_s < 1.8 and rec.breakdown["eval_on_clock_s"] == 0


def test_clock_excludes_evaluation_and_counts_training():
  rec = judged_run(lambda: run("SleepyTrainer"), sleepy_on_time, "SleepyTrainer")
  assert rec.solved
  # 4 updates x 0.25 s of sleep in train(); evaluation (>1000 act calls x 0.5 ms, within the allowance) is excluded
  assert 1.0 <= rec.time_to_threshold_s < 1.0 + 0.8
  assert rec.breakdown["act_calls"] > 1000 and rec.breakdown["eval_s"] > 0.5 and rec.breakdown["eval_on_clock_s"] == 0


def cadence_on_time(rec) -> bool:
  """Evaluated at the first yields past 0.5 s and 1.0 s of training (SleepyTrainer yields every 0.25 s)."""
  ts = [p["t"] for p in rec.curve]
  return rec.solved and len(ts) == 3 and 0.5 <= ts[1] < 0.9 and 1.0 <= ts[2] < 1.5


def test_evaluation_cadence_in_training_seconds():
  task = dataclasses.replace(TASK, eval_every_steps=None, eval_every_seconds=0.5)
  rec = judged_run(lambda: run("SleepyTrainer", task=task), cadence_on_time, "SleepyTrainer evaluated every 0.5 s")
  assert cadence_on_time(rec), (rec.status, [p["t"] for p in rec.curve])


def test_agent_that_tampers_with_its_clock_changes_nothing():
  rec = judged_run(lambda: run("ClockTamperer"), sleepy_on_time, "ClockTamperer")   # a SleepyTrainer: its known time
  assert rec.solved
  assert 1.0 <= rec.time_to_threshold_s < 1.8


def test_pass_must_be_confirmed():
  task = dataclasses.replace(TASK, step_budget=3000)
  rec = run("LuckyPass", task=task)
  assert rec.status == "unsolved" and not rec.solved
  assert all(p["return"] >= 475 for p in rec.curve[1:])   # every regular evaluation passed ...
  assert rec.confirmations and all(c["return"] < 475 for c in rec.confirmations)   # ... none was confirmed
  assert "step budget" in rec.failure_reason


def test_unconfirmed_pass_lets_training_continue():
  rec = run("LuckyOnce")
  assert rec.solved and rec.steps_to_threshold > 5000
  assert rec.confirmations[0]["steps"] == 2000 and rec.confirmations[0]["return"] < 475


def test_untrained_pass_is_flagged_not_solved():
  rec = run("PassesUntrained")
  assert rec.status == "flagged" and not rec.solved and rec.passes_untrained
  assert "untrained" in rec.failure_reason and rec.confirmations[0]["steps"] == 0


def test_unconfirmed_untrained_pass_is_not_flagged():
  rec = run("LuckyPass", task=dataclasses.replace(TASK, step_budget=1000))
  assert rec.status == "unsolved" and not rec.passes_untrained


def test_step_budget_censors():
  rec = run("NeverLearns", task=dataclasses.replace(TASK, step_budget=3000))
  assert rec.status == "unsolved" and "step budget" in rec.failure_reason
  assert 3000 <= rec.steps <= 4000           # stopped at the first yield past the budget
  assert rec.curve[-1]["steps"] == rec.steps  # and evaluated there
  assert rec.censored_time_s == TASK.time_budget_s and rec.time_to_threshold_s is None


def test_time_budget_censors():
  rec = judged_run(lambda: run("SlowNeverLearns", task=dataclasses.replace(TASK, time_budget_s=1.0, step_budget=10**9)),
                   lambda r: r.training_clock_s < 1.5, "SlowNeverLearns stopped at its 1 s budget")
  assert rec.status == "unsolved" and "time budget" in rec.failure_reason
  assert rec.censored_time_s == 1.0
  assert rec.training_clock_s < 1.5            # stopped at the first yield (every 0.05 s) past the budget


@pytest.mark.parametrize("name, words", [
  ("CrashesOnSeed1", "boom: simulated crash"),
  ("CrashesInConstructor", "bad hyperparameter"),
  ("HangsInTrain", "hang"),
  ("HangsInAct", "hang"),
  ("DiesInTrain", "SIGKILL"),
  ("NaNActions", "non-finite"),
  ("NaNSteps", "non-finite step count"),
  ("NotAGenerator", "generator"),
  ("ListActions", "not a numpy array"),
])
def test_faults_are_recorded_as_failed_with_reason(name, words):
  rec = run(name, seed=1)
  assert rec.status == "failed" and not rec.solved
  assert words in rec.failure_reason
  assert rec.censored_time_s == TASK.time_budget_s


def test_hang_is_killed_within_timeout():
  import time
  t0 = time.perf_counter()
  rec = run("HangsInTrain", config=dataclasses.replace(CONFIG, hang_timeout_s=1.0))
  assert rec.status == "failed" and time.perf_counter() - t0 < 20


def test_crash_on_one_seed_other_seeds_go_on(tmp_path):
  writer = RecordWriter(str(tmp_path / "runs.jsonl"))
  pair = Pair(fake("CrashesOnSeed1"), TASK, CONFIG, writer)
  try: recs = [pair.run(s) for s in range(3)]
  finally: pair.close()
  assert [r.status for r in recs] == ["solved", "failed", "solved"]
  df = load_runs(str(tmp_path))
  assert list(df["status"]) == ["solved", "failed", "solved"]      # every run on disk, in order
  assert "boom" in df.loc[1, "failure_reason"]


@pytest.mark.parametrize("name, words", [
  ("WrongShape", "shape"),
  ("FloatActions", "integer actions"),
  ("NoAct", "lacks method(s): act"),
])
def test_malformed_agent_gets_one_clear_error_before_timing(name, words, tmp_path):
  writer = RecordWriter(str(tmp_path / "runs.jsonl"))
  pair = Pair(fake(name), TASK, CONFIG, writer)
  try:
    with pytest.raises(AgentError, match=re.escape(words)):
      pair.warm_up()
  finally:
    pair.close()
  assert not os.path.exists(writer.path)       # nothing was timed or recorded


@pytest.mark.parametrize("name, slow", [("Scripted", False), ("SlowAct", True)])
def test_warm_up_warns_of_an_act_that_will_make_evaluations_slow(name, slow):
  warnings = []
  pair = Pair(fake(name), TASK, CONFIG, on_warning=warnings.append)
  try: pair.warm_up()
  finally: pair.close()
  assert bool(warnings) == slow
  if slow: assert "act() took" in warnings[0] and "500 times" in warnings[0] and "jit it" in warnings[0]


def test_run_line_says_the_steps_done_and_when_the_last_evaluation_was():
  from bench.session import run_line
  rec = run("SlowNeverLearns", task=dataclasses.replace(TASK, time_budget_s=1.0, step_budget=10**9))
  head = "[SlowNeverLearns · test-CartPole · seed 0 · warm cache]"
  for contended in (False, True):     # the run as it was, and flagged as a shared machine's (the host's steal can do it)
    r = dataclasses.replace(rec, contended=contended, contended_why="other processes used 0.9 cores" if contended else "")
    line = run_line(r, TASK)
    assert line.startswith(head + (" CONTENDED (other processes used 0.9 cores)" if contended else "") + " UNSOLVED after"), line
    assert f"{rec.steps:,} env steps done" in line and "time budget" in line
    assert ("last evaluation at" in line) or ("no evaluation after the untrained one (they come every 1,000 steps)" in line)


def test_agent_cannot_see_evaluation_seeds(tmp_path, monkeypatch):
  snoop = tmp_path / "seen.txt"
  monkeypatch.setenv("SNOOP_FILE", str(snoop))
  root = 987_654_321_123
  # the protocol's guarantee, without the sandbox (which would keep the agent from writing its file here)
  rec = run("SeedSnoop", config=dataclasses.replace(CONFIG, eval_seed=root, sandbox="none"))
  assert rec.solved and rec.eval_seed_root == root
  seen = snoop.read_text()
  seeds = EvalSeeds(root)
  secret = [root] + [s for _ in range(6) for s in seeds.next(TASK.confirm_episodes)]
  assert len(seen) > 1000
  assert not [s for s in secret if str(s) in seen]


def test_eval_seeds_are_secret_by_default_and_disjoint():
  a, b = run("Scripted"), run("Scripted")
  assert a.eval_seed_root != b.eval_seed_root
  s = EvalSeeds(1)
  first, second = s.next(10), s.next(10)
  assert len(set(first) | set(second)) == 20


def test_unknown_agent_is_a_clear_error():
  with pytest.raises(AgentError, match="unknown agent"):
    resolve_agent("no-such-agent")
  with pytest.raises(AgentError, match="no such file"):
    resolve_agent("nowhere/entry.py:Agent")
  with pytest.raises(AgentError, match="cannot find module"):
    resolve_agent("no_such_pkg.mod:Agent")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_agent_process_dies_with_the_referee(tmp_path, sandbox):
  """A referee killed while its agent trains (here: it exits mid-train()) takes every process of the agent with it,
  instead of leaving them to train on alone."""
  script = tmp_path / "referee.py"
  script.write_text(
    "import os, sys, tempfile, time\n"
    "from bench.referee import protocol as P\n"
    "from bench.referee.agent_process import AgentProcess\nfrom bench.referee.config import RefereeConfig\n"
    "from envs import get_task\n"
    f"c = AgentProcess(RefereeConfig(device='CPU', sandbox={sandbox!r}), tempfile.mkdtemp(), None)\n"
    "c.request(P.Load(task=get_task('CartPole-v1').to_wire(), preload=[]), 120, 'start-up', P.Loaded)\n"
    "c.request(P.Import(target=sys.argv[1]), 60, 'import', P.Ok)\n"
    "c.request(P.Construct(seed=0), 60, 'construction', P.Ok)\n"
    "c.wire.send(P.Train(until_steps=10, max_s=60.0), 99)\n"      # the agent now sleeps in train() for an hour
    "time.sleep(1.0)\n"
    "print(*[p.pid for p in c.cpu.snapshot()], flush=True)\n"
    "os._exit(0)\n")
  out = subprocess.run([sys.executable, str(script), os.path.join(HERE, "fake_agents.py") + ":HangsInTrain"],
                       capture_output=True, text=True, timeout=180, cwd=os.path.dirname(HERE),
                       env={**os.environ, "PYTHONPATH": os.path.dirname(HERE)})
  pids = [int(p) for p in out.stdout.split()]
  assert len(pids) >= (3 if sandbox == "bwrap" else 1), out.stdout + out.stderr   # bwrap, its init, the agent
  deadline = time.monotonic() + 10
  while any(_alive(p) for p in pids) and time.monotonic() < deadline: time.sleep(0.1)
  assert not [p for p in pids if _alive(p)], f"agent processes {pids} outlived their referee"


def _alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat") as f: return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except FileNotFoundError: return False


def test_tinygrads_compile_workers_are_up_before_the_clock_starts(tmp_path):
  """Started in the untimed start-up (bench/referee/agent_host.py _start_compile_pool): else they start in the first act() of the
  untrained evaluation and their imports run on into the next calls, which the referee counts as work while train()
  is suspended (an honest PPO Pendulum run failed so in CI)."""
  from tinygrad.helpers import PARALLEL

  from bench.referee.agent_process import AgentProcess
  child = AgentProcess.for_agent(CONFIG, fake("Scripted"), str(tmp_path))
  try:
    child.load(TASK, fake("Scripted"))
    procs = child.cpu.snapshot()
    workers = [p for p in procs if "spawn_main" in cmdline(p)]
    assert len(workers) >= min(PARALLEL.value, 1)
    before = child.cpu.scan()
    time.sleep(1.0)
    assert child.cpu.scan() - before < 0.2              # up and idle: their imports are done
  finally:
    child.close()
