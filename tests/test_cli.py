"""`pytest bench/` end to end, in a subprocess: options, pytest-benchmark's numbers, failures, Ctrl-C."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from bench.analysis.loaders import load_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench(*args, results, timeout=300, env=None):
  """`pytest bench/` in a subprocess; on CartPole-v1 unless the args pick tasks (the fake agents are CartPole's)."""
  task = [] if {"--task", "--tier"} & set(args) else ["--task", "CartPole-v1"]
  cmd = [sys.executable, "-m", "pytest", "bench/", "-p", "no:cacheprovider", "--results-dir", str(results), *task, *args]
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def gate_session(*args, results, tries=3, **kw):
  """A session with a regression gate, made again (up to `tries`, each in a results dir of its own) while its gate saw
  contended runs: the gate never judges a slowdown on those (the machine was shared, or the hypervisor stole its cores:
  tests/host.py), and says so instead of the verdict a test expects (a CI run's gate found 1 of 2 runs contended).
  -> (the last run, its dir)."""
  for i in range(tries):
    r = bench(*args, results=(out := results / f"try{i}"), **kw)
    if "current runs were contended" not in r.stdout: break
  return r, out


@pytest.mark.parametrize("args, message", [
  (["--agent", "no-such-agent"], "unknown agent 'no-such-agent'"),
  (["--agent", "missing/entry.py:Agent"], "no such file"),
  (["--task", "Pong-v9"], "unknown task 'Pong-v9'"),
  (["--tier", "galactic"], "unknown tier 'galactic'"),
  (["--agent-device", "TPU"], "unknown device 'TPU'"),
  (["--seeds", "0"], "--seeds: must be at least 1"),
  (["--hang-timeout", "-1"], "--hang-timeout: must be more than 0"),
  (["--agent", "tests/fake_agents.py:Scripted", "--agent", "./tests/fake_agents.py:Scripted"], "two agents are called Scripted"),
])
def test_bad_options_give_one_clear_message(args, message, tmp_path):
  r = bench(*args, results=tmp_path)
  assert r.returncode not in (0, 1), r.stdout + r.stderr
  assert message in r.stdout + r.stderr
  assert not list(tmp_path.iterdir())       # nothing ran, nothing written


@pytest.mark.slow
def test_benchmark_statistics_are_time_to_threshold(tmp_path):
  out = tmp_path / "bench.json"
  r = bench("--agent", "tests/fake_agents.py:SleepyTrainer", "--seeds", "2", "--no-cold-start",
            f"--benchmark-json={out}", results=tmp_path / "results")
  assert r.returncode == 0, r.stdout + r.stderr
  runs = load_runs(str(tmp_path / "results"))
  assert list(runs["role"]) == ["timed", "timed"] and runs["solved"].all()
  assert (runs["calibration.score_s"] > 0).all()       # measured per run, and so is contention (PROTOCOL §13): a quiet run
  assert (~runs["contended"] | (runs["contention.steal_share"] > 0.1)).all()      # is not flagged (the hypervisor's steal is)
  assert (runs["contention.cpu_s"] >= 0).all() and len(runs["contention.loadavg_before"][0]) == 3
  stats = json.loads(out.read_text())["benchmarks"][0]
  ttt = sorted(runs["time_to_threshold_s"])
  assert stats["stats"]["rounds"] == 2
  assert stats["stats"]["min"] == pytest.approx(ttt[0], abs=1e-9) and stats["stats"]["max"] == pytest.approx(ttt[1], abs=1e-9)
  assert 1.0 <= ttt[0] < 1.8                 # 4 x 0.25 s of training; slow evaluation excluded
  assert stats["extra_info"]["solved"] == 2 and stats["extra_info"]["time_to_threshold_s"] == list(runs["time_to_threshold_s"])
  assert "[SleepyTrainer · CartPole-v1 · seed 1 · warm cache] solved in" in r.stdout
  assert "solved/seeds" in r.stdout and "2/2" in r.stdout
  assert list((tmp_path / "results").glob("*/time_to_threshold.png"))


@pytest.mark.slow
def test_benchmark_compare_fail_gates_on_time_to_threshold(tmp_path, monkeypatch):
  """The regression gate a tinygrad CI would use: autosave a baseline, then compare a slower run."""
  common = ["--agent", "tests/fake_agents.py:SleepyFromEnv", "--seeds", "2", "--no-cold-start",
            f"--benchmark-storage=file://{tmp_path / 'storage'}"]
  monkeypatch.setenv("TRAIN_SLEEP_S", "0.2")      # baseline: 4 x 0.2 s
  assert bench(*common, "--benchmark-autosave", results=tmp_path / "r1").returncode == 0
  monkeypatch.setenv("TRAIN_SLEEP_S", "0.2")      # same speed: passes the gate
  same = bench(*common, "--benchmark-compare", "--benchmark-compare-fail=median:50%", results=tmp_path / "r2")
  assert same.returncode == 0, same.stdout + same.stderr
  monkeypatch.setenv("TRAIN_SLEEP_S", "0.5")      # 2.5x slower to the threshold: fails the gate
  slow = bench(*common, "--benchmark-compare", "--benchmark-compare-fail=median:50%", results=tmp_path / "r3")
  assert slow.returncode == 1 and "Performance has regressed" in slow.stdout + slow.stderr


@pytest.mark.slow
def test_solve_rate_below_the_bar_fails_and_keeps_every_record(tmp_path):
  r = bench("--agent", "tests/fake_agents.py:CrashesOnSeed1", "--seeds", "2", results=tmp_path)
  assert r.returncode == 1, r.stdout + r.stderr
  assert "solved CartPole-v1 on 1/2 seeds" in r.stdout and "boom: simulated crash" in r.stdout
  runs = load_runs(str(tmp_path))
  assert list(zip(runs["role"], runs["seed"], runs["status"])) == \
    [("cold-start", 0, "solved"), ("timed", 0, "solved"), ("timed", 1, "failed")]


def test_malformed_agent_fails_before_any_timed_run(tmp_path):
  r = bench("--agent", "tests/fake_agents.py:WrongShape", "--seeds", "2", results=tmp_path)
  assert r.returncode == 1
  assert "WrongShape on CartPole-v1: act() returned shape (10, 2), expected (10,)" in r.stdout
  assert not list(tmp_path.glob("*/runs.jsonl"))


def _agent_processes(referee: int) -> set[int]:
  """The referee's agent processes (`python -m bench.referee.agent_host`, its children; not those of other sessions)."""
  out = subprocess.run(["pgrep", "-P", str(referee), "-f", "bench.referee.agent_host"], capture_output=True, text=True).stdout
  return {int(p) for p in out.split()}


def _running(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat") as f: return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except FileNotFoundError: return False


@pytest.mark.slow
def test_ctrl_c_keeps_finished_records_and_kills_the_agent(tmp_path):
  # three quick Scripted runs, then SlowNeverLearns, whose runs last until a budget runs out
  cmd = [sys.executable, "-m", "pytest", "bench/", "-p", "no:cacheprovider", "--results-dir", str(tmp_path), "--seeds", "3",
         "--no-cold-start", "--task", "CartPole-v1", "--agent", "tests/fake_agents.py:Scripted",
         "--agent", "tests/fake_agents.py:SlowNeverLearns"]
  # Ctrl-C's default action in the session, even where this test runs with SIGINT ignored (a `cmd &` job inherits that)
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  deadline, agents = time.time() + 120, set()
  while time.time() < deadline:
    files = list(tmp_path.glob("*/runs.jsonl"))
    if files and len(files[0].read_text().splitlines()) >= 3 and (agents := _agent_processes(proc.pid)):
      break
    time.sleep(0.2)
  else:
    proc.kill(); pytest.fail("the Scripted runs did not finish in time")
  time.sleep(1.0)                          # the first SlowNeverLearns run is under way
  agents |= _agent_processes(proc.pid)
  proc.send_signal(signal.SIGINT)
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode != 0
  runs = load_runs(str(tmp_path))
  assert list(runs["agent"]) == ["Scripted"] * 3 and runs["solved"].all()   # finished runs kept, on disk
  time.sleep(0.5)
  assert not [p for p in agents if _running(p)], "agent process left running"


def test_sessions_started_in_the_same_second_get_their_own_directories(tmp_path, monkeypatch):
  import datetime as dt

  from bench import session
  class Frozen(dt.datetime):
    @classmethod
    def now(cls, tz=None): return dt.datetime(2026, 1, 2, 3, 4, 5)
  monkeypatch.setattr(session, "datetime", Frozen)
  dirs = [session.new_session_dir(str(tmp_path / "results")) for _ in range(3)]
  assert len(set(dirs)) == 3 and all(os.path.isdir(d) for d in dirs)
  assert dirs[1] == dirs[0] + "-2" and dirs[2] == dirs[0] + "-3" and "20260102-030405" in dirs[0]


@pytest.mark.slow
def test_without_a_sandbox_the_session_warns_and_gives_no_verdict_on_an_entry(tmp_path):
  r = bench("--agent", "tests/fake_agents.py:SleepyTrainer", "--agent", "tests/fake_agents.py:Scripted", "--baseline",
            "SleepyTrainer", "--seeds", "2", "--no-cold-start", "--sandbox", "none", results=tmp_path)
  assert r.returncode == 0, r.stdout + r.stderr
  assert "warning: agents ran without a sandbox (none: switched off (--sandbox none))" in r.stdout
  assert "not comparable" in r.stdout and "no verdict for an entry without one" in r.stdout
  runs = load_runs(str(tmp_path))
  assert set(runs["sandbox"]) == {"none: switched off (--sandbox none)"}
  assert "last line sha256" in r.stdout


def test_help_shows_every_option_with_its_default():
  r = subprocess.run([sys.executable, "-m", "pytest", "bench/", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr
  section = r.stdout.split("rlspeedrun benchmark (pytest bench/):")[1]
  for opt, default in [("--seeds", "5"), ("--agent-device", "'CPU'"), ("--sandbox", "'bwrap'"), ("--hang-timeout", "300.0"),
                       ("--eval-cpu-cap", "30.0"), ("--tier", "'quick'"), ("--results-dir", "'results'")]:
    assert opt in section and f"default: {default}" in " ".join(section.split()), opt


@pytest.mark.slow
def test_an_entry_below_the_bar_fails_with_the_lines_that_matter_and_nothing_twice(tmp_path):
  r = bench("--agent", "tests/fake_agents.py:NeverLearns", "--seeds", "1", "--no-cold-start", results=tmp_path, timeout=300)
  assert r.returncode == 1
  failure = r.stdout.split("= FAILURES =")[1]
  assert "NeverLearns solved CartPole-v1 on 0/1 seeds, below the task's bar 90%" in failure and "seed 0: unsolved" in failure
  assert "Task(" not in failure and "def test_time_to_threshold" not in failure
  warm = bench("--agent", "tests/fake_agents.py:WrongShape", "--seeds", "1", results=tmp_path / "w")
  assert "During handling of the above exception" not in warm.stdout and "PytestBenchmarkWarning" not in warm.stdout
  failure = warm.stdout.split("= FAILURES =")[1].split("short test summary")[0]
  assert failure.count("act() returned shape (10, 2)") == 1         # once, not once per chained exception


@pytest.mark.slow
def test_regress_against_stored_runs_fails_on_a_slowdown_with_a_command_to_reproduce_it(tmp_path):
  """5 seeds a side (the fewest with which a one-sided Mann-Whitney can reach p < 0.01): training twice as slow is a
  regression; the test fails, the table puts it first, and says how to rerun it."""
  agent = ["--agent", "sleepy=tests/fake_agents.py:SleepyFromEnv", "--seeds", "5", "--no-cold-start"]
  base = bench(*agent, results=tmp_path / "base")
  assert base.returncode == 0, base.stdout + base.stderr
  session = str(next((tmp_path / "base").glob("*/runs.jsonl")).parent)
  # forced past the machine-speed check (tested in tests/test_gate.py): this VM's calibration scores spread 0.040-0.066 s
  # within one session, so the medians of 5 runs a side were once 1.34x apart and made this gate "not comparable"
  slow, out = gate_session(*agent, "--regress-against", session, "--force-compare", results=tmp_path / "slow", env={"TRAIN_SLEEP_S": "0.5"})
  assert slow.returncode == 1, slow.stdout + slow.stderr
  assert re.search(r"gate: sleepy on CartPole-v1: regressed: (1\.[89]|2\.\d)\dx slower \[", slow.stdout), slow.stdout
  assert f"reproduce: pytest bench/ --agent sleepy --task CartPole-v1 --seeds 5 --regress-against {session}" in slow.stdout
  gate = next(out.glob("*/gate.csv")).read_text()
  assert gate.splitlines()[1].startswith("sleepy,CartPole-v1,5,5,1.0,1.0,0.9,")


@pytest.mark.slow
def test_regress_against_a_git_ref_runs_that_version_interleaved(tmp_path):
  """HEAD exported and its own referee run beside this one, same seeds, alternating; its records kept apart."""
  head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
  if not head: pytest.skip("not a git checkout (a copy made with git archive): there is no git ref to run against")
  r, out = gate_session("--agent", "tests/fake_agents.py:SleepyTrainer", "--seeds", "2", "--no-cold-start", "--regress-against", "HEAD",
                        results=tmp_path / "results")
  assert r.returncode == 0, r.stdout + r.stderr
  lines = [line for line in r.stdout.splitlines() if line.startswith("[SleepyTrainer")]
  assert [line.split("·")[2].strip() + " " + line.split("·")[3].split("]")[0].strip() for line in lines] == \
    ["seed 0 baseline " + head[:10], "seed 0 warm cache", "seed 1 warm cache", "seed 1 baseline " + head[:10]]
  assert "gate: SleepyTrainer on CartPole-v1: inconclusive" in r.stdout and "5 needed to call it unchanged" in r.stdout
  session = next(out.glob("*/runs.jsonl")).parent
  base = load_runs(str(session / f"baseline-{head[:10]}.jsonl"))
  assert list(base["seed"]) == [0, 1] and set(base["git.commit"]) == {head} and base["solved"].all()
  assert len(load_runs(str(session))) == 2        # the session's own records: this version's runs only
