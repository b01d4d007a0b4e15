"""The regression gate's plumbing: where a baseline comes from (bench/regress.py), named baselines (bench/analysis/baseline.py),
the history page (bench/analysis/history.py), contention (bench/referee/contention.py), and the machine-speed calibration."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from bench import regress
from bench.regress import BaselineError, PairGate, resolve
from tests.procs import agents, cmdline, tree
from tests.synthetic import lognormal_times, runs_of, write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_baseline_is_a_path_a_named_baseline_or_a_git_ref(tmp_path, monkeypatch):
  session = write(str(tmp_path / "s1" / "runs.jsonl"), runs_of("ppo", [3.0, 3.1, 2.9]))
  assert isinstance(resolve(os.path.dirname(session)), regress.Stored) and isinstance(resolve(session), regress.Stored)
  monkeypatch.setattr(regress, "BASELINES_DIR", str(tmp_path / "baselines"))
  from bench.analysis.baseline import save
  save("nightly", [os.path.dirname(session)], root=str(tmp_path / "baselines"))
  base = resolve("nightly")
  assert isinstance(base, regress.Stored) and len(base.runs_for("ppo", "CartPole-v1")) == 3
  with pytest.raises(BaselineError, match=r"not a session directory or runs.jsonl, not a named baseline \(nightly\), and not a git ref"):
    resolve("no-such-thing-anywhere")
  (tmp_path / "empty").mkdir()
  with pytest.raises(BaselineError, match="no run records"): resolve(str(tmp_path / "empty"))


def test_a_commit_from_before_the_gate_is_refused_with_what_to_do_instead():
  first = subprocess.run(["git", "rev-list", "--max-parents=0", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.split()
  if not first: pytest.skip("not a git checkout")
  has = subprocess.run(["git", "cat-file", "-e", f"{first[0]}:bench/worker.py"], cwd=ROOT).returncode == 0
  if has: pytest.skip("a shallow clone: its first commit already has the worker")
  with pytest.raises(BaselineError, match="predates --regress-against .* stored runs of it"): resolve(first[0])


def test_interleaving_alternates_which_side_runs_first_and_both_sides_are_workers():
  order = []

  class FakeWorker:
    def __init__(self, side): self.side = side
    def run_role(self, seed, role): order.append((self.side, seed)); return {"seed": seed, "role": role}

  gate = PairGate.__new__(PairGate)
  gate.worker, gate.current, gate.rounds, gate.baseline_records = FakeWorker("baseline"), FakeWorker("current"), 0, []
  gate.on_baseline, gate.adopt = lambda r: None, lambda r: r
  for s in range(4): assert gate.run(s, lambda seed: pytest.fail("the current side runs in its worker, not in-process"))["seed"] == s
  assert order == [("baseline", 0), ("current", 0), ("current", 1), ("baseline", 1),
                   ("baseline", 2), ("current", 2), ("current", 3), ("baseline", 3)]


def test_an_interleaved_pair_is_judged_without_the_stored_runs_machine_speed_check():
  """Both sides of a git-ref baseline run on this machine, seed by seed: their speed scores differ by the moment's load
  (0.040 and 0.066 s were both scores of one session on this VM), recorded but not judged (bench/analysis/gate.py gate_runs).
  A CI run's gate of 2 seeds a side against HEAD (tests/test_cli.py) failed to say 'inconclusive' while the hypervisor
  stole cores: the speed check was the one that could differ between two sides of one machine."""
  from dataclasses import asdict

  from bench.referee.calibrate import WORKLOAD
  from tests.synthetic import runs_of
  base, cur = runs_of("ppo", [3.0, 3.1]), runs_of("ppo", [3.05, 2.95])
  for r in base: r.calibration = {"workload": WORKLOAD, "score_s": 0.040}
  for r in cur: r.calibration = {"workload": WORKLOAD, "score_s": 0.066}
  gate = PairGate.__new__(PairGate)
  gate.agent, gate.task, gate.alpha, gate.tolerance, gate.force = "ppo", "CartPole-v1", 0.01, 0.10, False
  gate.worker, gate.baseline_records = object(), [asdict(r) for r in base]
  row, warns = gate.judge(cur)
  assert row["verdict"] == "inconclusive" and "5 needed to call it unchanged" in row["why"] and not warns
  assert row["machine_speed_ratio"] == pytest.approx(0.066 / 0.040)
  stored = regress.records_frame(base).assign(role="timed")
  gate.worker, gate.base = None, regress.Stored(label="stored", runs=stored)
  assert gate.judge(cur)[0]["verdict"] == "not comparable"                # the same runs stored: the speed check applies


def test_a_baseline_saves_whole_sessions_lists_them_and_refuses_a_tampered_one(tmp_path, capsys):
  from bench.analysis.baseline import listing, main, save
  s1 = write(str(tmp_path / "results" / "20261101-000000-a" / "runs.jsonl"), runs_of("ppo", [3.0, 3.2]))
  s2 = write(str(tmp_path / "results" / "20261102-000000-a" / "runs.jsonl"), runs_of("dqn", [9.0, 12.0]))
  dest = save("box1", [os.path.dirname(s1), os.path.dirname(s2)], root=str(tmp_path / "baselines"))
  for s in (s1, s2):
    with open(s) as a, open(os.path.join(dest, os.path.basename(os.path.dirname(s)), "runs.jsonl")) as b: assert a.read() == b.read()
  meta = json.load(open(os.path.join(dest, "meta.json")))
  assert meta["runs"] == 4 and meta["pairs"] == ["dqn on CartPole-v1", "ppo on CartPole-v1"] and meta["tinygrad_version"]
  assert listing(str(tmp_path / "baselines"))[0].startswith("box1: 4 runs")
  with pytest.raises(FileExistsError): save("box1", [os.path.dirname(s1)], root=str(tmp_path / "baselines"))
  lines = open(s1).read().splitlines()
  lines[0] = lines[0].replace('"seed": 0', '"seed": 7')
  open(s1, "w").write("\n".join(lines) + "\n")
  assert main(["save", "box2", os.path.dirname(s1)]) == 2 and "hash chain is broken" in capsys.readouterr().err


def test_the_history_page_marks_a_regression_and_draws_each_pair(tmp_path):
  from bench.analysis.history import main
  medians = [3.0, 3.05, 2.95, 4.5]               # the fourth session: 50 % slower
  for i, m in enumerate(medians):
    recs = runs_of("ppo", lognormal_times(m, 10, seed=i, sigma=0.05))
    for r in recs: r.timestamp, r.git = f"2026-11-0{i + 1}T10:00:00+00:00", {"commit": f"{i}" * 40, "dirty": False}
    write(str(tmp_path / "results" / f"s{i}" / "runs.jsonl"), recs)
  write(str(tmp_path / "results" / "baselines" / "old" / "s9" / "runs.jsonl"), runs_of("ppo", [99.0] * 5))   # left out
  assert main([str(tmp_path / "results"), "--out", str(tmp_path / "h")]) == 0
  md = (tmp_path / "h" / "history.md").read_text()
  assert "4 sessions" in md and md.count("| regressed") == 1 and "3333333" in md.split("| regressed")[0].splitlines()[-1]
  assert (tmp_path / "h" / "history-ppo-CartPole-v1.png").stat().st_size > 10_000


def test_each_agent_is_lined_up_by_its_own_configuration_variable():
  from bench.analysis.history import _own_config
  recorded = ["PPO_CONFIG", "PPO_JIT_CONFIG", "SAC_CONFIG"]
  assert _own_config("ppo", recorded) == "PPO_CONFIG" and _own_config("ppo_jit", recorded) == "PPO_JIT_CONFIG"
  assert _own_config("ppo_jit", ["PPO_CONFIG"]) is None and _own_config("dqn", recorded) is None   # not another's


def test_a_run_sharing_the_cores_with_cpu_burners_is_contended_and_a_quiet_one_is_not():
  from bench.referee.accounting import TreeCPU
  from bench.referee.contention import Contention

  def measure(burners: int) -> dict:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(burners)]
    agent = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"])
    try:
      time.sleep(0.1)
      tree, c = TreeCPU(agent.pid), Contention()
      c.enter(tree)
      t0 = time.perf_counter()
      time.sleep(1.0)
      c.leave(tree)
      return c.summary(time.perf_counter() - t0)
    finally:
      for p in [agent, *hogs]: p.kill(); p.wait()
  shared = measure(burners=(os.cpu_count() or 1) + 1)
  assert shared["contended"] and "waited for a free core" in shared["contended_why"]
  assert shared["contention"]["others_cores"] > 0.5 and shared["contention"]["wait_share"] > 0.1
  quiet = measure(burners=0)
  assert quiet["contention"]["cpu_share"] > 0.8 and quiet["contention"]["wait_share"] < 0.1 or not quiet["contended"]


def test_the_speed_calibration_is_a_fixed_workload_scored_by_its_fastest_pass():
  from bench.referee.calibrate import WORKLOAD, calibrate, speed_ratio
  c = calibrate(repeats=3)
  assert c["workload"] == WORKLOAD and len(c["passes_s"]) == 3 and c["score_s"] == min(c["passes_s"]) > 0
  assert speed_ratio([{"workload": WORKLOAD, "score_s": 0.2}], [{"workload": WORKLOAD, "score_s": 0.1}]) == 2.0
  assert speed_ratio([{"workload": "other/v9", "score_s": 0.2}], [c]) is None


def test_the_speed_calibration_sees_how_many_cores_there_are():
  """Issue 26: an agent's tree uses more than one core, so the workload runs in two processes at once and a round lasts
  until both have finished a pass. Held to one core (the affinity the processes inherit), a round of two takes about
  two passes, where one process (v3) took one: one pass alone could not tell one core from two."""
  import os

  from bench.referee.calibrate import calibrate
  cores = os.sched_getaffinity(0)
  os.sched_setaffinity(0, {min(cores)})
  try:
    one_core = calibrate(repeats=5, width=2)["score_s"]
    alone = calibrate(repeats=5, width=1)["score_s"]
  finally:
    os.sched_setaffinity(0, cores)
  assert one_core > 1.6 * alone, (one_core, alone)


def test_the_speed_calibration_never_computes_on_subnormal_floats():
  """Issue 25: v2's products decayed into subnormal floats (~1e-45), ~30x slower on a Xeon than on an EPYC: a score
  that said nothing comparable. v3's values stay normal through every product."""
  import numpy as np

  from bench.referee.calibrate import _matrices
  a, w = _matrices()
  smallest = np.inf
  for _ in range(1500):
    a = np.tanh(a @ w)
    smallest = min(smallest, float(np.abs(a[a != 0]).min()))
  assert smallest > np.finfo(np.float32).tiny * 1e6 and np.abs(a).max() > 0.5, smallest


def test_records_carry_tinygrads_version_and_the_commit_of_its_checkout(tmp_path, monkeypatch):
  """`pip install -e path/to/tinygrad`: the checkout's commit; a package that merely sits inside some other repository
  (a virtualenv inside this project) has none."""
  import importlib.util
  from types import SimpleNamespace

  from bench.referee.records import hardware_fingerprint, tinygrad_info
  version, _ = tinygrad_info()
  assert hardware_fingerprint()["tinygrad_version"] == version and "tinygrad_commit" in hardware_fingerprint()
  repo = tmp_path / "tinygrad-checkout"
  (repo / "tinygrad").mkdir(parents=True)
  (repo / "tinygrad" / "__init__.py").write_text("")
  (repo / "venv" / "site-packages" / "tinygrad").mkdir(parents=True)
  (repo / "venv" / "site-packages" / "tinygrad" / "__init__.py").write_text("")
  git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
  subprocess.run([*git, "init", "-q"], check=True)
  subprocess.run([*git, "add", "-A"], check=True)
  subprocess.run([*git, "commit", "-qm", "x"], check=True)
  head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
  real = importlib.util.find_spec
  for where, expected in (("tinygrad", head), ("venv/site-packages/tinygrad", None)):
    origin = str(repo / where / "__init__.py")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, o=origin: SimpleNamespace(origin=o) if name == "tinygrad" else real(name, *a))
    assert tinygrad_info() == (version, expected)


def test_a_worker_and_its_agent_die_with_the_session(tmp_path):
  """The session's process is killed (SIGKILL: no clean-up of its own) while a worker warms an agent up: the worker
  gets SIGTERM from the kernel (PR_SET_PDEATHSIG), ends the run and kills its agent's processes."""
  import psutil
  script = (
    "import os, sys, time\n"
    "from bench.referee.agent_api import resolve_agent\nfrom bench.regress import Side\nfrom bench.referee.config import RefereeConfig\n"
    "from envs import get_task\n"
    f"w = Side({ROOT!r}, None, 'test', resolve_agent('tests/fake_agents.py:SleepyTrainer'), get_task('CartPole-v1'), "
    f"RefereeConfig(hang_timeout_s=30.0), {str(tmp_path / 'runs.jsonl')!r})\n"
    "w.client.proc.stdin.write('warm-up\\n'); w.client.proc.stdin.flush()\n"
    "print(w.client.proc.pid, flush=True)\ntime.sleep(60)\n")
  session = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
  worker = psutil.Process(int(session.stdout.readline()))
  deadline = time.time() + 30
  while not agents(tree(worker.pid)):   # its agent is up
    assert time.time() < deadline, "the worker never started its agent"
    time.sleep(0.1)
  procs = [worker, *tree(worker.pid)]
  session.kill()
  session.wait()
  _, left = psutil.wait_procs(procs, timeout=10)
  assert not left, f"still running after the session died: {[cmdline(p)[:80] for p in left]}"
