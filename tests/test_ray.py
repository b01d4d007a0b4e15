"""Runs on a Ray cluster (bench/ray_slots.py, `pytest bench/ --ray auto|ADDRESS`), on local clusters: end to end through
`pytest bench/`, and a node that dies under a run. Skipped without the extra `ray`."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import psutil
import pytest

from bench.analysis.loaders import load_runs
from tests.procs import agents

pytestmark = pytest.mark.slow    # a Ray cluster's start-up in each: `pytest -m slow` (CI runs them)
ray = pytest.importorskip("ray")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pytest_bench_on_a_local_ray_cluster(tmp_path):
  cmd = [sys.executable, "-m", "pytest", "bench/", "-p", "no:cacheprovider", "--results-dir", str(tmp_path), "--seeds", "3",
         "--task", "CartPole-v1", "--ray", "auto", "--workers", "2", "--agent", "tests/fake_agents.py:ReportsItsCores"]
  env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
  r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
  assert "2 runs at once (a local Ray cluster started for this session" in r.stdout
  assert "test_time_to_threshold[ReportsItsCores-CartPole-v1]" in r.stdout      # pytest-benchmark's table, as ever
  runs = load_runs(str(tmp_path))
  assert sorted(zip(runs["role"], runs["seed"])) == [("cold-start", 0), ("timed", 0), ("timed", 1), ("timed", 2)]
  assert runs["solved"].all() and (runs["placement.scheduler"] == "ray").all() and runs["placement.node_id"].str.len().gt(0).all()
  assert (runs["fingerprint.host"] != "").all() and (runs["sandbox"] == "bwrap").all()
  for cores, mask in zip(runs["placement.cores"], runs["agent_profile.affinity_mask"]):
    assert len(cores) == 1 and mask == float(1 << cores[0])      # pinned on its node to the cores it claimed


def test_a_node_that_dies_mid_run_makes_that_run_a_failed_record(tmp_path):
  from ray.cluster_utils import Cluster

  from bench import ray_slots
  from bench.parallel import Pool
  from bench.referee.agent_api import resolve_agent
  from bench.referee.config import RefereeConfig
  from bench.referee.pair import Pair
  from bench.referee.records import RecordWriter
  from envs import get_task
  cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})    # the driver's node runs nothing
  node = cluster.add_node(num_cpus=1)
  ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False,
           runtime_env={"env_vars": {"PYTHONPATH": ROOT}})
  pair = Pair(resolve_agent("tests/fake_agents.py:SlowNeverLearns"), get_task("CartPole-v1"),
                RefereeConfig(calibrate=False, startup_timeout_s=15), RecordWriter(str(tmp_path / "runs.jsonl")))
  try:
    running = threading.Event()
    class Slot(ray_slots.RaySlot):
      def call(self, line):
        if line.startswith("run "): running.set()      # the warm-up is over: seed 0's run is asked for
        return super().call(line)
    pool = Pool(ray_slots.plan(None, "CPU", 1), Slot, label="test cluster")
    done = threading.Thread(target=pool.run_pair, args=(pair, [0, 1], None), daemon=True)
    done.start()
    assert running.wait(timeout=180), "the slot never got past its warm-up"
    deadline, ours = time.time() + 60, []
    while time.time() < deadline and not ours:    # this test's agent process: below this process (the cluster is ours),
      ours = [p.pid for p in agents(psutil.Process().children(recursive=True))]   # not another session's on the machine
      time.sleep(0.1)
    assert ours, "seed 0's agent process never started"
    time.sleep(3.0)                    # seed 0's run is training
    cluster.remove_node(node)
    done.join(timeout=120)
    assert not done.is_alive()
  finally:
    pair.close()
    ray.shutdown()
    cluster.shutdown()
  recs = {r.seed: r for r in pair.records}
  assert sorted(recs) == [0, 1] and len(load_runs(str(tmp_path / "runs.jsonl"))) == 2
  assert recs[0].status == "failed" and "died" in recs[0].failure_reason and "node" in recs[0].failure_reason
  assert recs[0].placement["scheduler"] == "ray" and recs[0].placement["node_id"] and recs[0].placement["cores"]   # where it was
  assert recs[1].status == "failed" and "not run: every slot was lost" in recs[1].failure_reason     # nowhere left to run it, said so
  time.sleep(1.0)
  assert not [p for p in ours if p in [q.pid for q in agents(psutil.process_iter())]], "an agent process outlived its node"
