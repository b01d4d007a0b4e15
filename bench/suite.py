"""One (agent, task) pair in a session: an untimed warm-up that also checks the agent's interface,
an optional cold-start run, then timed runs with a warm kernel cache, each seed in a fresh process."""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Callable

import numpy as np

from bench.agent_api import AgentError, AgentSpec, check_actions
from bench.clock import SESSION
from bench.records import RecordWriter, RunRecord
from bench.runner import Child, RefereeConfig, RunFailed, run_one

WARMUP_SEED = 1_000_003   # never one of the timed seeds (0..N-1)


class Suite:
  def __init__(self, agent: AgentSpec, task, config: RefereeConfig, writer: RecordWriter | None = None,
               on_record: Callable[[RunRecord], None] | None = None):
    self.agent, self.task, self.config, self.writer, self.on_record = agent, task, config, writer, on_record
    self.workdir = tempfile.mkdtemp(prefix="rlspeedrun-")
    self.warm_cache = os.path.join(self.workdir, "warm", "cache.db")
    self.records: list[RunRecord] = []

  def warm_up(self) -> None:
    """Untimed: load, construct, act, train a few updates, act again — with the kernel cache that the
    timed runs will use. Raises AgentError with one clear message if the agent breaks the interface."""
    child = Child(self.config, self.warm_cache)
    obs_batches = {n: _sample_observations(self.task, n) for n in (self.task.eval_episodes, self.task.confirm_episodes)}
    _, act_space = self.task.spaces()
    t = self.config.hang_timeout_s
    try:
      child.request(("load", self.agent.target, self.task), max(t, self.config.startup_timeout_s), "import")
      child.request(("construct", WARMUP_SEED), t, "construction")
      for _ in range(2):
        for n, obs in obs_batches.items():
          check_actions(child.request(("act", obs), t, "act()")[1], act_space, n)
        steps = 0
        for _ in range(3):   # TinyJit captures on the second call: three updates warm every kernel
          rep = child.request(("train", steps + 1, t), t, "train()")
          steps = rep[1]
          if rep[0] == "finished": break
    except RunFailed as e:
      raise AgentError(f"{self.agent.name} on {self.task.name} failed its warm-up: {e.reason}") from None
    except TimeoutError as e:
      raise AgentError(f"{self.agent.name} on {self.task.name}: no reply from {e} within {t:g} s during warm-up") from None
    except AgentError as e:
      raise AgentError(f"{self.agent.name} on {self.task.name}: {e}") from None
    finally:
      child.close()

  def cold_start(self, seed: int) -> RunRecord:
    """A timed run with an empty kernel cache: reported apart from the warm runs."""
    cold = tempfile.mkdtemp(prefix="cold-", dir=self.workdir)
    return self._record(run_one(self.agent, self.task, seed, self.config, cache_db=os.path.join(cold, "cache.db"),
                                kernel_cache="cold", role="cold-start"))

  def run(self, seed: int) -> RunRecord:
    """A timed run with the warm kernel cache."""
    return self._record(run_one(self.agent, self.task, seed, self.config, cache_db=self.warm_cache))

  def _record(self, rec: RunRecord) -> RunRecord:
    SESSION.add(rec.censored_time_s)
    self.records.append(rec)
    if self.writer: self.writer.write(rec)
    if self.on_record: self.on_record(rec)
    return rec

  def close(self) -> None:
    shutil.rmtree(self.workdir, ignore_errors=True)


def _sample_observations(task, n: int) -> np.ndarray:
  """Real start states (not evaluation seeds) to check act() on a batch of n."""
  env = task.gym_make_vec(n, vectorization_mode="sync")
  try: return env.reset(seed=WARMUP_SEED)[0]
  finally: env.close()
