"""Many runs at once on this machine (bench/parallel.py, `pytest bench/ --workers N`): placement, pinning, failures,
Ctrl-C. The agents are the fake ones (no tinygrad), so each run takes a second or two."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from bench.analysis.loaders import load_runs
from bench.parallel import CoreLocks, LocalSlot, PlacementError, Pool, most_beside, plan
from bench.referee.agent_api import resolve_agent
from bench.referee.config import RefereeConfig
from bench.referee.pair import Pair
from bench.referee.records import RecordWriter
from envs import get_task
from tests.procs import agents, alive, cmdline, tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
two_cores = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores")


def test_plan_gives_each_run_its_own_cores_and_device():
  slots = plan(3, "CPU", cores=list(range(8)))
  assert [p["cores"] for p in slots] == [[0, 1], [2, 3], [4, 5]] and {p["device"] for p in slots} == {"CPU"}
  assert [p["cores"] for p in plan(2, "CPU", cores_per_run=1, cores=[4, 6, 7])] == [[4], [6]]
  gpus = plan(6, "AMD", cores=list(range(32)))
  assert [p["device"] for p in gpus] == [f"AMD:{i}" for i in range(6)] and all(len(p["cores"]) == 5 for p in gpus)
  assert [p["device"] for p in plan(1, "CPU", devices=["AMD:0", "AMD:2"], cores=list(range(4)))] == ["AMD:0", "AMD:2"]
  assert all(p["workers"] == 3 for p in slots)


@pytest.mark.parametrize("kw, message", [
  (dict(workers=3, device="CPU", cores=[0, 1]), "need 3 cores"),
  (dict(workers=2, device="CPU", cores_per_run=2, cores=[0, 1, 2]), "need 4 cores"),
  (dict(workers=2, device="CUDA:1", cores=[0, 1]), "name one per run with --devices"),
  (dict(workers=3, device="AMD", devices=["AMD:0", "AMD:1"], cores=list(range(8))), "--workers 3 with 2 --devices"),
])
def test_plan_refuses_what_does_not_fit(kw, message):
  with pytest.raises(PlacementError, match=message): plan(**kw)


def test_two_sessions_never_pin_runs_to_the_same_core():
  a, b = CoreLocks(), CoreLocks()
  try:
    a.take_all([0])
    with pytest.raises(PlacementError, match=f"core 0 is held by .*pid {os.getpid()}"): b.take_all([0])
    assert b.take_free(1, [0, 1]) == [1]           # a Ray actor takes what is free
    with pytest.raises(PlacementError, match="1 free cores wanted, 0 free"): CoreLocks().take_free(1, [0, 1])
  finally:
    a.close(); b.close()
  c = CoreLocks()
  c.take_all([0, 1])       # released with their holders
  c.close()


def test_runs_beside_a_run_are_the_most_at_one_instant():
  assert most_beside([0, 10], []) == 0
  assert most_beside([0, 10], [[1, 2], [3, 4], [5, 6]]) == 1        # three, one after another
  assert most_beside([0, 10], [[1, 5], [2, 6], [8, None]]) == 2
  assert most_beside([0, 10], [[-5, 0], [10, 12]]) == 0             # touching, not overlapping


def run_pool(tmp_path, agent: str, seeds, *, workers: int = 2, cold: int | None = None, **referee):
  pair = Pair(resolve_agent(agent), get_task("CartPole-v1"), RefereeConfig(calibrate=False, hang_timeout_s=60, **referee),
                RecordWriter(str(tmp_path / "runs.jsonl")))
  try: Pool(plan(workers, "CPU", cores_per_run=1), LocalSlot).run_pair(pair, list(seeds), cold)
  finally: pair.close()
  return {(r.seed, r.role): r for r in pair.records}


@pytest.mark.slow
@two_cores
def test_runs_side_by_side_are_pinned_told_their_cores_and_recorded(tmp_path):
  recs = run_pool(tmp_path, "tests/fake_agents.py:ReportsItsCores", range(4), cold=0)
  assert sorted(recs) == [(0, "cold-start"), (0, "timed"), (1, "timed"), (2, "timed"), (3, "timed")]
  assert all(r.solved for r in recs.values())
  for r in recs.values():
    cores = r.placement["cores"]
    assert len(cores) == 1 and r.agent_profile["affinity_mask"] == float(1 << cores[0])    # the agent ran on its core only
    assert r.agent_profile["omp_threads"] == 1 and r.agent_profile["tinygrad_threads"] == 1
    assert r.placement["workers"] == 2 and r.placement["scheduler"] == "local" and r.contention["cores"] == 1
  assert recs[(0, "cold-start")].placement["beside"] == 0                                # alone
  assert max(r.placement["beside"] for r in recs.values()) == 1
  assert {tuple(r.placement["cores"]) for k, r in recs.items() if k[1] == "timed"} == {(0,), (1,)}
  assert len(load_runs(str(tmp_path / "runs.jsonl"))) == 5           # each written as it finished


@two_cores
def test_a_failing_run_does_not_stop_the_others(tmp_path):
  recs = run_pool(tmp_path, "tests/fake_agents.py:CrashesOnSeed1", range(4))
  assert recs[(1, "timed")].status == "failed" and "boom" in recs[(1, "timed")].failure_reason
  assert all(recs[(s, "timed")].solved for s in (0, 2, 3))


@two_cores
def test_a_slot_whose_referee_dies_is_replaced_and_the_run_recorded_as_failed(tmp_path):
  recs = run_pool(tmp_path, "tests/fake_agents.py:KillsItsRefereeOnSeed1", range(5), sandbox="none")
  lost = recs[(1, "timed")]
  assert lost.status == "failed" and "the slot running it died" in lost.failure_reason and "SIGKILL" in lost.failure_reason
  assert all(recs[(s, "timed")].solved for s in (0, 2, 3, 4)) and len(recs) == 5


@two_cores
def test_an_agent_that_leaves_its_cores_fails(tmp_path):
  """Hostile: an agent pinned beside another widens its CPU affinity to every core, to take its neighbour's."""
  recs = run_pool(tmp_path, "tests/hostile_agents.py:LeavesItsCores", range(2))
  for r in recs.values():
    assert r.status == "failed" and "may run outside the cores it was given" in r.failure_reason


@pytest.mark.slow
@two_cores
def test_ctrl_c_keeps_every_finished_record_and_leaves_no_process(tmp_path):
  cmd = [sys.executable, "-m", "pytest", "bench/", "-p", "no:cacheprovider", "--results-dir", str(tmp_path), "--seeds", "4",
         "--no-cold-start", "--task", "CartPole-v1", "--workers", "2", "--agent", "tests/fake_agents.py:Scripted",
         "--agent", "tests/fake_agents.py:SlowNeverLearns"]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  deadline, seen = time.time() + 120, []
  try:
    while time.time() < deadline:
      files = list(tmp_path.glob("*/runs.jsonl"))
      seen = tree(proc.pid)
      if files and len(files[0].read_text().splitlines()) >= 4 and len(agents(seen)) >= 2: break
      time.sleep(0.3)
    else: pytest.fail("the Scripted runs did not finish in time")
    time.sleep(1.0)                          # both SlowNeverLearns runs are under way, one per slot
    seen += tree(proc.pid)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=90)
  finally:                                   # never leave the session (and the cores it holds) to the next test
    if proc.poll() is None:
      for p in [*tree(proc.pid), psutil.Process(proc.pid)]:
        try: p.kill()
        except psutil.Error: pass
      proc.wait()
  assert proc.returncode != 0
  runs = load_runs(str(tmp_path))
  assert sorted(runs["seed"]) == [0, 1, 2, 3] and set(runs["agent"]) == {"Scripted"} and runs["solved"].all()
  time.sleep(0.5)
  left = [p for p in seen if alive(p)]
  assert not left, f"left running: {[cmdline(p)[:80] for p in left]}"
  free = CoreLocks()
  try: assert free.take_free(2, [0, 1]) == [0, 1]        # the session's cores are free again
  finally: free.close()
