"""The evaluator's side of issue 26: a snapshot of the agent's state (its tinygrad Tensors and its own extras) taken in
the training process, packed without pickle, restored in another process; budgets scaled by the machine's speed."""
from __future__ import annotations

import numpy as np
import pytest
from tinygrad import Tensor, TinyJit

from bench.referee import calibrate
from bench.referee.agent_api import AgentError
from bench.referee.agent_host import pack, restore, snapshot, unpack
from bench.referee.pair import Pair
from tests.test_referee import CONFIG, TASK, fake


class Tiny:
  """An agent-shaped object: weights as Tensors (one in a list), a jitted act(), and a statistic its act() reads."""
  def __init__(self, seed: int):
    Tensor.manual_seed(seed)
    self.w = Tensor.randn(3, 2).realize()
    self.layers = [Tensor.randn(2).realize()]
    self.scale = np.ones(3, np.float32)
    self._act = TinyJit(lambda x: (x @ self.w + self.layers[0]).realize())

  def act(self, obs: np.ndarray) -> np.ndarray:
    return self._act(Tensor(obs * self.scale)).numpy()

  def snapshot(self): return {"scale": self.scale}
  def restore(self, state): self.scale = state["scale"]


def test_a_restored_agent_acts_as_the_one_it_was_taken_from():
  a, b = Tiny(0), Tiny(1)
  obs = np.arange(12, dtype=np.float32).reshape(4, 3)
  for _ in range(3): b.act(obs)                    # b's act() is captured (TinyJit) before the restore ...
  a.scale = np.full(3, 2.0, np.float32)
  state = unpack(pack(snapshot(a)))
  assert set(state) == {"t/w", "t/layers.0", "x/scale"}
  restore(b, state)
  np.testing.assert_allclose(b.act(obs), a.act(obs), rtol=1e-6)   # ... and replays the restored weights


def test_a_tensor_only_one_side_has_is_left_alone():
  a, b = Tiny(0), Tiny(1)
  b.extra = Tensor.ones(5).realize()
  restore(b, unpack(pack(snapshot(a))))
  assert (b.extra.numpy() == 1).all()


def test_the_snapshot_is_numbers_without_pickle():
  class Bad(Tiny):
    def snapshot(self): return {"obj": np.array([object()])}
  with pytest.raises(AgentError, match="numbers only"): pack(snapshot(Bad(0)))
  with pytest.raises(AgentError, match="dict of str -> numpy array"):
    snapshot(type("Worse", (Tiny,), {"snapshot": lambda self: [1, 2]})(0))
  with pytest.raises(ValueError): unpack(np.frombuffer(b"not an npz archive", np.uint8))


def test_a_snapshot_that_misses_what_act_reads_is_refused_in_the_warm_up():
  pair = Pair(fake("ForgetsItsState"), TASK, CONFIG)
  try:
    with pytest.raises(AgentError, match="acts otherwise than its training process"): pair.warm_up()
  finally:
    pair.close()


def test_budgets_scale_with_the_machines_speed_and_never_shrink():
  ref = calibrate.REFERENCE_SCORE_S
  cal = lambda s: {"workload": calibrate.WORKLOAD, "score_s": s, "session_median_s": s}
  assert calibrate.budget_scale(cal(3 * ref)) == pytest.approx(3.0)
  assert calibrate.budget_scale(cal(ref / 2)) == 1.0            # a faster machine keeps the stated budget
  assert calibrate.budget_scale({}) == 1.0                      # not measured
  assert calibrate.budget_scale({"workload": "another", "score_s": 9.0}) == 1.0


def test_a_run_records_its_scaled_budget(monkeypatch):
  import bench.referee.run as runner
  monkeypatch.setattr(runner, "calibrate", lambda: {"workload": calibrate.WORKLOAD, "score_s": 0.075, "session_median_s": 0.075})
  rec = runner.run_one(fake("NeverLearns"), TASK, 0, CONFIG.__class__(**{**CONFIG.__dict__, "calibrate": True}))
  assert rec.budget_scale == pytest.approx(3.0) and rec.time_budget_s == pytest.approx(3 * TASK.time_budget_s)
  assert rec.status == "unsolved" and rec.censored_time_s == rec.time_budget_s


def test_a_dead_referees_frozen_group_is_reaped_with_its_processes():
  import os
  import subprocess
  import sys

  from bench.referee import cgroup
  if os.geteuid() != 0: pytest.skip("cgroups need root")
  g = cgroup.Group.make("test")
  if g is None: pytest.skip("no cgroup freezer here")
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()                                                     # a pid that no longer exists: a dead referee's
  renamed = {}
  for c, d in g.dirs.items():
    new = d.replace(f"-{os.getpid()}-", f"-{dead.pid}-")
    os.rename(d, new)
    renamed[c] = new
  g.dirs = renamed
  p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], preexec_fn=g.enter)
  g.freeze()
  gone = cgroup.reap_orphans()
  assert set(renamed.values()) <= set(gone), (gone, renamed)
  assert p.wait(timeout=10) == -9


def test_the_agents_tensors_are_found_through_cycles_and_past_modules():
  from bench.referee.agent_host import tensors
  a = Tiny(0)
  a.me, a.np, a.nested = a, np, {"x": [(a.w, Tensor.zeros(1).realize())]}
  found = tensors(a)
  assert set(found) >= {"w", "layers.0", "nested.x.0.1"} and found["w"] is a.w
