"""One (agent, task) pair in a session: an untimed warm-up that also checks the agent's interface,
an optional cold-start run, then timed runs with a warm kernel cache, each seed in a fresh process.

The warm-up shares nothing with the timed runs but its kernel cache, and that only after the referee
has verified it (bench/referee/kernel_cache.py): its seed is secret, its scratch directory is deleted, and every
timed run gets its own copy of the verified cache, so nothing one run writes reaches another."""
from __future__ import annotations

import dataclasses
import gc
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable

import numpy as np

from bench.referee import protocol as P
from bench.referee.agent_api import AgentError, AgentSpec, applied_settings, check_actions
from bench.referee.agent_process import AgentProcess, RunFailed
from bench.referee.clock import SESSION
from bench.referee.config import RefereeConfig, known_fields
from bench.referee.kernel_cache import CacheRejected, rebuild, take, verify
from bench.referee.records import RecordWriter, RunRecord
from bench.referee.run import run_one

OBS_SEED = 1_000_003      # start states for checking act() in the warm-up (not an evaluation seed)
SLOW_ACT_WARNING_S = 0.02  # an act() call slower than this after the warm-up's training gets a warning


class Pair:
  """One (agent, task) of a session: its warm-up, its kernel cache, its runs and where their records go."""
  def __init__(self, agent: AgentSpec, task, config: RefereeConfig, writer: RecordWriter | None = None,
               on_record: Callable[[RunRecord], None] | None = None, on_warning: Callable[[str], None] | None = None,
               archive_dir: str | None = None):
    self.agent, self.task, self.writer, self.on_record = agent, task, writer, on_record
    # the tinygrad settings the agent's file declares for the task, set in each of its processes (PROTOCOL.md section 4)
    try: self.settings, self.settings_error = applied_settings(agent, task.name, config.device), ""
    except AgentError as e: self.settings, self.settings_error = ({}, {}), f"{agent.name} on {task.name}: {e}"
    self.config = dataclasses.replace(config, extra_env={**config.extra_env, **self.settings[1]})
    self.archive_dir = archive_dir     # where the rebuilt kernel cache is kept for review (the session's directory)
    self.on_warning = on_warning or (lambda line: None)
    self.workdir = tempfile.mkdtemp(prefix="rlspeedrun-")
    # the referee's own heap (pytest, pandas, the records so far) left out of the garbage collector's scans from now
    # on: a collection during a run's act() round trips would be charged to the agent, more in a big process than a small
    gc.collect()
    gc.freeze()
    self.warm_cache = os.path.join(self.workdir, "verified-cache.db")   # the referee's; never inside a sandbox
    self.records: list[RunRecord] = []
    self.warm_up_info: dict = {}     # the warm-up's wall and CPU time and env steps: in every record of the pair
    self.cache_rebuilt: dict = {}    # what the rebuild of its kernel cache compiled and dropped, its keys' bytes, its SHA-256

  def warm_up(self) -> None:
    """Untimed: load, construct (with a secret seed), act, train a few updates, act again, in a scratch
    directory that is deleted afterwards; then verify and seal the kernel cache it filled, for the timed runs.
    Raises AgentError with one clear message if the agent breaks the interface or leaves a bad cache."""
    if self.settings_error: raise AgentError(self.settings_error)
    scratch = tempfile.mkdtemp(prefix="warm-up-", dir=self.workdir)
    try:
      obs_batches = {n: _sample_observations(self.task, n) for n in (self.task.eval_episodes, self.task.confirm_episodes)}
      state, acted = self._warm_up_agent(scratch, obs_batches)
      if state.arrays: self._check_evaluator(state, obs_batches, acted)
      taken = take(scratch, os.path.join(self.workdir, "warm-up-cache.db"))    # out of the agent's directory, no link followed
      if taken: verify(taken)
      self.cache_rebuilt = rebuild(taken, self.warm_cache, self.config, self.workdir)
      if self.archive_dir and os.path.exists(self.warm_cache):    # for review: the keys that reached the timed runs
        shutil.copyfile(self.warm_cache, os.path.join(self.archive_dir, f"kernel-cache-{_slug(self.agent.name)}-{_slug(self.task.name)}.db"))
    except RunFailed as e:
      raise AgentError(f"{self.agent.name} on {self.task.name} failed its warm-up: {P.printable(e.reason, keep=chr(10))}") from None
    except TimeoutError as e:
      raise AgentError(f"{self.agent.name} on {self.task.name}: no reply from {e} within {self.config.hang_timeout_s:g} s during warm-up") from None
    except CacheRejected as e:
      raise AgentError(f"{self.agent.name} on {self.task.name}: its warm-up's kernel cache was refused: {e}") from None
    except AgentError as e:
      raise AgentError(f"{self.agent.name} on {self.task.name}: {P.printable(str(e), keep=chr(10))}") from None
    finally:
      shutil.rmtree(scratch, ignore_errors=True)

  def _warm_up_agent(self, scratch: str, obs_batches: dict) -> tuple[P.State, dict]:
    """The warm-up's agent process, under its cap (its agent code's wall time, all requests together): act on both batch
    sizes, three updates (TinyJit captures on the second call), twice; a third act() per batch (what an evaluation's
    calls cost); a snapshot. Returns the snapshot and the last actions."""
    _, act_space = self.task.spaces()
    child, cap = AgentProcess.for_agent(self.config, self.agent, scratch), self.config.warm_up_cap_s
    try:
      t_load = time.perf_counter()
      child.load(self.task, self.agent)
      t0, cpu0, steps_done = time.perf_counter(), child.cpu.scan(), 0     # steps_done: the last count it reported

      def request(msg, what: str, expect: type):
        left = cap - (time.perf_counter() - t0)
        if left <= 0: raise AgentError(f"its warm-up ran over its cap of {cap:g} s (before {what})")
        try: return child.request(msg, min(left, self.config.hang_timeout_s), what, expect)
        except TimeoutError:
          if left <= self.config.hang_timeout_s: raise AgentError(f"its warm-up ran over its cap of {cap:g} s (during {what})") from None
          raise
      request(P.Import(target=self.agent.target), "import", P.Ok)
      request(P.Construct(seed=1_000_000 + secrets.randbelow(2**31)), "construction", P.Ok)
      for _ in range(2):
        for n, obs in obs_batches.items(): check_actions(request(P.Act(obs=obs), "act()", P.Actions).actions, act_space, n)
        steps = 0
        for _ in range(3):
          rep = request(P.Train(until_steps=steps + 1, max_s=cap), "train()", P.Trained)
          steps = rep.steps
          steps_done = max(steps_done, steps)
          if rep.finished: break
      acted = {}
      for n, obs in obs_batches.items():
        t1 = time.perf_counter()
        acted[n] = check_actions(request(P.Act(obs=obs), "act()", P.Actions).actions, act_space, n)
        self._warn_if_slow_act(time.perf_counter() - t1, n)
      state = request(P.Snapshot(), "snapshot()", P.State)
      self.warm_up_info = {"start_up_s": round(t0 - t_load, 4), "wall_s": round(time.perf_counter() - t0, 4),
                           "cpu_s": round(child.cpu.scan() - cpu0, 4), "env_steps": steps_done, "cap_s": cap,
                           "snapshot_arrays": state.arrays, "snapshot_bytes": int(state.blob.nbytes)}
      return state, acted
    finally:
      child.close()

  def _check_evaluator(self, state: P.State, obs_batches: dict, acted: dict) -> None:
    """An evaluator restored from the warm-up's snapshot acts as the warm-up's training process did on the same
    observations, or the agent's snapshot misses something its act() reads (an AgentError that says so)."""
    scratch = tempfile.mkdtemp(prefix="warm-up-eval-", dir=self.workdir)
    ev = None
    try:
      ev = AgentProcess.for_agent(self.config, self.agent, scratch, role="evaluator")
      ev.load(self.task, self.agent)
      t = self.config.hang_timeout_s
      ev.request(P.Import(target=self.agent.target), t, "the evaluator's import", P.Ok)
      ev.request(P.Construct(seed=1_000_000 + secrets.randbelow(2**31)), t, "the evaluator's construction", P.Ok)
      ev.request(P.Restore(blob=state.blob), t, "restore()", P.Ok)
      for n, obs in obs_batches.items():
        got = check_actions(ev.request(P.Act(obs=obs), t, "the evaluator's act()", P.Actions).actions, self.task.spaces()[1], n)
        if not np.allclose(np.asarray(got, np.float64), np.asarray(acted[n], np.float64), rtol=1e-4, atol=1e-5):
          raise AgentError(f"restored from its snapshot in an evaluator, it acts otherwise than its training process did on the same "
                           f"{n} observations: its act() reads state that is neither a tinygrad Tensor on the agent nor in what its "
                           "snapshot() returns (PROTOCOL.md section 3: define snapshot() and restore())")
    finally:
      if ev is not None: ev.close()
      shutil.rmtree(scratch, ignore_errors=True)

  def _warn_if_slow_act(self, dt: float, n: int) -> None:
    """After training has warmed it: a slow act() makes every evaluation slow (off the clock, but the session waits)."""
    if dt < SLOW_ACT_WARNING_S: return
    steps = self.task.max_episode_steps()
    self.on_warning(f"warning: {self.agent.name} on {self.task.name}: act() took {dt * 1e3:.0f} ms for a batch of {n} after the "
                    f"warm-up's training; an evaluation calls it up to {steps:,} times (about {dt * steps:.0f} s of the session's "
                    "wall time, off the clock): "
                    "jit it (TinyJit, one fixed-shape buffer per batch size: agents/common.py Greedy)")

  def cold_start(self, seed: int) -> RunRecord:
    """A timed run with an empty kernel cache: reported apart from the warm runs."""
    return self._record(self._refused(seed, "cold", "cold-start") or run_one(
      self.agent, self.task, seed, self.config, cache_db=None, kernel_cache="cold", role="cold-start", workdir=self.workdir, settings=self.settings))

  def run(self, seed: int, role: str = "timed") -> RunRecord:
    """A timed run with (a copy of) the verified warm kernel cache. `role` "rerun": the regression gate's confirmation
    of a flagged pair (reported by the gate only, not pooled with the timed runs)."""
    return self._record(self._refused(seed, "warm", role) or run_one(
      self.agent, self.task, seed, self.config, cache_db=self.warm_cache, workdir=self.workdir, role=role, settings=self.settings))

  def _refused(self, seed: int, kernel_cache: str, role: str) -> RunRecord | None:
    """A failed record without a run where the agent's declared settings are refused (warm_up raises the same)."""
    if not self.settings_error: return None
    rec = RunRecord.start(self.agent, self.task, seed, role=role, kernel_cache=kernel_cache, device=self.config.device)
    rec.finish_unsolved("failed", self.settings_error, 0.0)
    return rec

  def adopt(self, rec: dict | RunRecord, timer: bool = True) -> RunRecord:
    """A run of this (agent, task) made by a worker process of this same version (bench/worker.py: the interleaved
    regression gate, the slots of --workers), recorded in this session as if made here. `timer` False: its time is
    added to pytest-benchmark's timer later, by the round that reports it (runs side by side finish in any order)."""
    if isinstance(rec, dict): rec = RunRecord(**known_fields(RunRecord, rec))
    return self._record(rec, timer)

  def _record(self, rec: RunRecord, timer: bool = True) -> RunRecord:
    if not rec.warm_up and self.warm_up_info: rec.warm_up = dict(self.warm_up_info, cache=self.cache_rebuilt)
    if timer: SESSION.add(rec.censored_time_s)
    self.records.append(rec)
    if self.writer: self.writer.write(rec)
    if self.on_record: self.on_record(rec)
    return rec

  def close(self) -> None:
    shutil.rmtree(self.workdir, ignore_errors=True)


def _slug(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80]


def _sample_observations(task, n: int) -> np.ndarray:
  """Real start states (not evaluation seeds) to check act() on a batch of n."""
  env = task.gym_make_vec(n, vectorization_mode="sync")
  try: return env.reset(seed=OBS_SEED)[0]
  finally: env.close()
