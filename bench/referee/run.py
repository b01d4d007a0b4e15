"""One run: one agent, one task, one seed, in a fresh sandboxed process. The referee (this module) owns the clock,
the budgets, the evaluation and the accounting of work done while the clock is stopped; it returns a RunRecord whatever
the agent does (PROTOCOL.md sections 3, 5, 6 and 12)."""
from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import tempfile
import time

import numpy as np

from bench import ROOT
from bench.referee import protocol as P
from bench.referee.agent_api import AgentError, AgentSpec, hash_sources
from bench.referee.agent_process import AgentProcess, RunFailed, outside_cores
from bench.referee.calibrate import budget_scale, calibrate
from bench.referee.clock import TrainingClock
from bench.referee.config import RefereeConfig
from bench.referee.contention import Contention
from bench.referee.evaluation import EvalSeeds, evaluate
from bench.referee.records import Breakdown, RunRecord

PROGRESS_EVERY_S = 5.0  # train() replies (with its step count) at least this often, between evaluations too


def run_one(agent: AgentSpec, task, seed: int, config: RefereeConfig, *, cache_db: str | None = None,
            kernel_cache: str = "warm", role: str = "timed", workdir: str | None = None,
            settings: tuple[dict, dict] = ({}, {})) -> RunRecord:
  """Run `agent` on `task` with `seed` until a confirmed pass, a budget, or a failure. `cache_db` is a verified
  kernel cache (kernel_cache.seal) of which the run gets its own copy; None starts with an empty one. Whatever happens
  it returns the run's record: an exception of the referee's own at any stage (its clean-up included) fails the run
  with its reason, and the session goes on with the next seed. `settings`: the agent's declared and applied tinygrad
  settings (agent_api.applied_settings; `config.extra_env` carries the applied ones), for the record."""
  rec = RunRecord.start(agent, task, seed, role=role, kernel_cache=kernel_cache, device=config.device, settings=settings)
  rec.placement = dict(config.placement)
  try: Run(rec, agent, task, seed, config, cache_db, workdir).execute()
  except Exception as e:
    rec.finish_unsolved("failed", f"referee error while handling the run: {type(e).__name__}: {e}", rec.breakdown.get("train_clock_s") or 0.0)
  return rec


class Run:
  """One run's state: its record, its clock (running only while agent code runs on it), its training process and its
  evaluators, the time split it records (Breakdown). `execute` takes it from calibration to clean-up."""
  def __init__(self, rec: RunRecord, agent: AgentSpec, task, seed: int, config: RefereeConfig, cache_db: str | None, workdir: str | None):
    self.rec, self.agent, self.task, self.seed, self.config, self.cache_db, self.workdir = rec, agent, task, seed, config, cache_db, workdir
    self.cores = tuple(config.placement.get("cores") or ()) or None
    self.clock, self.br = TrainingClock(), Breakdown()
    self.contention: Contention | None = None    # made after the calibration: it covers the run's own time only
    self.seed_root = config.eval_seed if config.eval_seed is not None else secrets.randbits(63)
    self.eval_seeds = EvalSeeds(self.seed_root)
    self.act_times: list[float] = []
    self.budget = 0.0
    self.trainer: AgentProcess | None = None
    self.evals: Evaluators | None = None
    self.scratch = ""

  def execute(self) -> None:
    """The run whole: whatever fails is the run's status and reason; the accounting and the clean-up happen anyway."""
    wall0 = time.perf_counter()
    try:
      self._calibrate()
      self.contention = Contention(self.cores)
      self.scratch = tempfile.mkdtemp(prefix="run-", dir=self.workdir)
      self._start()
      self._train()
    except RunFailed as e: self.rec.finish_unsolved(e.status, e.reason, self.clock.elapsed)
    except AgentError as e: self.rec.finish_unsolved("failed", f"agent broke the interface in act(): {e}", self.clock.elapsed)
    except TimeoutError as e: self.rec.finish_unsolved("failed", f"hang: no reply from {e} for {self.config.hang_timeout_s:g} s", self.clock.elapsed)
    except Exception as e:   # whatever went wrong, this run is recorded and the session goes on
      self.rec.finish_unsolved("failed", f"referee error while running the agent: {type(e).__name__}: {e}", self.clock.elapsed)
    finally:
      try: self._account()
      finally:
        try: self._close()
        finally:
          self.br.wall_s = time.perf_counter() - wall0
          self.rec.breakdown = dataclasses.asdict(self.br)

  def _calibrate(self) -> None:
    """The machine-speed workload, outside the clock, and the time budget it scales."""
    t0 = time.perf_counter()
    if self.config.calibrate: self.rec.calibration = calibrate()
    self.br.calibration_s = time.perf_counter() - t0
    self.rec.budget_scale = budget_scale(self.rec.calibration)
    self.budget = self.rec.time_budget_s = round(self.task.time_budget_s * self.rec.budget_scale, 3)

  def _start(self) -> None:
    """The training process and the regular evaluator start up side by side (untimed); import and construction on the clock."""
    agent, task, rec, br = self.agent, self.task, self.rec, self.br
    self.trainer = AgentProcess.for_agent(self.config, agent, self.scratch, self.cache_db)
    rec.sandbox, rec.freezer = self.trainer.sandbox.label, self.trainer.freezer
    self.evals = Evaluators(self.config, agent, task, self.seed, self.cache_db, self.workdir)   # their scratch never inside the trainer's
    t0 = time.perf_counter()
    self.trainer.send_ahead(P.Load(task=task.to_wire(), preload=list(agent.preload)))
    self.evals.regular = self.evals.new()       # its start-up beside the training process's
    loaded = self.trainer.collect_load()
    self.evals.regular.collect_load()           # its import and construction: at its first evaluation
    self.evals.regular.loaded = True
    br.start_up_s = time.perf_counter() - t0
    rec.self_reported.update(pid=loaded.pid, tinygrad_version=loaded.tinygrad_version, tinygrad_device=loaded.tinygrad_device)
    self._timed(P.Import(target=agent.target), "import of the agent's module", P.Ok)
    br.import_s = self.clock.elapsed
    self._timed(P.Construct(seed=self.seed), "construction", P.Ok)
    br.construct_s = self.clock.elapsed - br.import_s

  def _train(self) -> None:
    """train() in requests until a confirmed pass (then the run is solved), a budget, or a failure (RunFailed). Evaluations
    fall on a fixed grid: the first yield at or past each multiple of the task's cadence."""
    task, rec, br, clock = self.task, self.rec, self.br, self.clock
    if self._passes(0):    # the untrained policy: a (confirmed) pass here is flagged, never counted as a solve
      rec.passes_untrained = True
      raise RunFailed("flagged", f"the untrained policy already passes (confirmation return "
                                 f"{rec.confirmations[-1]['return']:.1f} >= {task.threshold:g})")
    every_n, every_t = task.eval_every_steps, task.eval_every_seconds
    last_eval_steps, last_eval_t = 0, 0.0
    while True:
      targets = [task.step_budget] + ([(last_eval_steps // every_n + 1) * every_n] if every_n else [])
      max_s = min(self.budget - clock.elapsed, PROGRESS_EVERY_S)   # a reply at least this often: steps done so far
      if every_t: max_s = min(max_s, (last_eval_t // every_t + 1) * every_t - clock.elapsed)
      # the first request returns at train()'s first yield: the clock then is the run's first update (first_update_s)
      until = 1 if br.first_update_s is None else min(targets)
      rep = self._timed(P.Train(until_steps=until, max_s=max(max_s, 0.0)), "train()", P.Trained)
      steps = rep.steps
      if br.first_update_s is None and steps > 0: br.first_update_s, br.first_update_steps = clock.elapsed, steps
      rec.steps, rec.step_source = steps, rep.step_source
      rec.self_reported.update(agent_steps=rep.agent_steps, counted_steps=rep.counted_steps)
      rec.agent_profile = rep.profile or None
      if clock.elapsed > self.budget: raise RunFailed("unsolved", f"time budget ({self.budget:g} s) ran out during train()")
      due = (every_n and steps // every_n > last_eval_steps // every_n) or \
            (every_t and clock.elapsed // every_t > last_eval_t // every_t) or steps >= task.step_budget or rep.finished
      if due:
        last_eval_steps, last_eval_t = steps, clock.elapsed
        if self._passes(steps): return self._solved(steps, rep.finished)
      if steps >= task.step_budget: raise RunFailed("unsolved", f"step budget ({task.step_budget:,} steps) reached")
      if rep.finished: raise RunFailed("unsolved", "train() returned before the threshold was reached")

  def _solved(self, steps: int, finished: bool) -> None:
    """A confirmed pass at `steps`: the run is solved, unless the pass cannot have come from training the referee saw."""
    rec, t = self.rec, self.clock.elapsed
    if finished: raise RunFailed("flagged", "passed after train() had returned: a solve needs a train() that is still training")
    if steps < self.task.step_floor:
      raise RunFailed("flagged", f"passed with {steps:,} env steps, under the task's floor of {self.task.step_floor:,} "
                                 "(no training the referee saw can have produced it)")
    rec.finish_solved(t, steps, rec.confirmations[-1]["return"])
    if len([p for p in rec.curve if p["steps"] > 0]) == 1:
      rec.review.append(f"no learning curve on the clock: it went from the untrained policy (return {rec.curve[0]['return']:.1f}) "
                        f"to a pass at its first evaluation ({steps:,} steps, {t:.2f} s): was it learned or written "
                        "before the clock? (PROTOCOL.md 12)")

  def _passes(self, steps: int) -> bool:
    """A regular evaluation; a pass counts only if a confirmation evaluation (new seeds, a fresh evaluator) agrees."""
    task, rec = self.task, self.rec
    ret = self._evaluate(task.eval_episodes, fresh=False, info=(info := {}))
    rec.add_eval(self.clock.elapsed, steps, ret, info.get("curtailed_at"))
    if ret < task.threshold: return False
    confirm = self._evaluate(task.confirm_episodes, fresh=True, info=(info := {}))
    rec.confirmations.append({"t": self.clock.elapsed, "steps": steps, "return": confirm, **info})
    return confirm >= task.threshold

  def _timed(self, msg, what: str, expect: type, max_in: int | None = None):
    """Send a request that runs agent code, with the clock running, under the time budget."""
    clock, budget, trainer = self.clock, self.budget, self.trainer
    remaining = budget - clock.elapsed
    if remaining <= 0: raise RunFailed("unsolved", f"time budget ({budget:g} s) ran out before {what}")
    wait = min(remaining, self.config.hang_timeout_s)
    self.contention.enter(trainer.cpu)
    clock.start()
    try: rep = trainer.request(msg, wait, what, expect, max_in)
    except TimeoutError:
      if wait >= remaining: raise RunFailed("unsolved", f"time budget ({budget:g} s) ran out during {what}") from None
      raise RunFailed("failed", f"hang: no reply from {what} for {self.config.hang_timeout_s:g} s") from None
    finally:
      clock.stop()
      self.contention.leave(trainer.cpu)
    if self.cores and (out := outside_cores(trainer.cpu.snapshot(), self.cores)):
      raise RunFailed("failed", f"the agent's {out} may run outside the cores it was given ({','.join(map(str, self.cores))}) after "
                                f"{what}: runs side by side each keep to their own cores (PROTOCOL.md section 14)")
    return rep

  def _evaluate(self, n: int, fresh: bool, info: dict) -> float:
    """One evaluation of the policy as it is now. The training process (frozen) gives a snapshot, on the clock; an
    evaluator process restores it and answers act() off the clock, its CPU capped; nothing reaches the training process.
    An agent whose snapshot holds nothing is evaluated in place: its act() calls are on the clock."""
    c0 = self.clock.elapsed
    state = self._timed(P.Snapshot(), "snapshot()", P.State, max_in=P.MAX_STATE_BYTES)
    self.br.snapshot_s += self.clock.elapsed - c0
    self.br.snapshot_bytes = int(state.blob.nbytes)
    self.rec.evaluation = "snapshot" if state.arrays else "in place"
    t0 = time.perf_counter()
    return self._in_evaluator(state, n, fresh, info, t0) if state.arrays else self._in_place(n, info, t0)

  def _counted(self, t0: float) -> None:
    """One evaluation done: its wall time since its snapshot (an evaluator's wait to start included)."""
    self.br.eval_s += time.perf_counter() - t0
    self.br.evaluations += 1

  def _in_place(self, n: int, info: dict, t0: float) -> float:
    """An agent whose snapshot is empty: its own process acts, on the clock."""
    def policy(obs: np.ndarray) -> np.ndarray:
      t1 = time.perf_counter()
      rep = self._timed(P.Act(obs=obs), "act() (evaluated in place: on the clock)", P.Actions)
      self.act_times.append(time.perf_counter() - t1)
      return rep.actions
    c1 = self.clock.elapsed
    try: return float(evaluate(self.task, policy, self.eval_seeds.next(n), info).mean())
    finally:
      self.br.eval_on_clock_s += self.clock.elapsed - c1
      self._counted(t0)

  def _in_evaluator(self, state: P.State, n: int, fresh: bool, info: dict, t0: float) -> float:
    """An evaluator process restores the snapshot and acts, off the clock, within its caps (act() per call and per
    evaluation, CPU-s per evaluation)."""
    config, evals = self.config, self.evals
    if not fresh: evals.prestart()
    ev = evals.get(fresh)
    act_wall, cpu0 = [0.0], ev.cpu_s()

    def over_cpu() -> None:
      used = ev.cpu_s() - cpu0
      ev.eval_cpu_max_s = max(ev.eval_cpu_max_s, used)
      if used > config.eval_cpu_cap_s:
        raise RunFailed("failed", f"its evaluator used {used:.1f} CPU-s in one evaluation, over the cap of {config.eval_cpu_cap_s:g} "
                                  "(an evaluation restores a snapshot and answers act(); PROTOCOL.md section 3)")

    def policy(obs: np.ndarray) -> np.ndarray:
      cap, why = min((config.act_call_cap_s, f"act() took more than {config.act_call_cap_s:g} s for one batch (the cap per call)"),
                     (config.hang_timeout_s, f"hang: no reply from act() for {config.hang_timeout_s:g} s"),
                     (config.act_eval_cap_s - act_wall[0],
                      f"act() took more than {config.act_eval_cap_s:g} s in one evaluation (the cap per evaluation)"))
      t1 = time.perf_counter()
      try: rep = ev.request(P.Act(obs=obs), cap, "act()", P.Actions)
      except TimeoutError: raise RunFailed("failed", why) from None
      dt = time.perf_counter() - t1
      self.act_times.append(dt)
      act_wall[0] += dt
      over_cpu()
      return rep.actions

    ev.hold(True)
    try:
      try: ev.request(P.Restore(blob=state.blob), config.hang_timeout_s, "restore()", P.Ok)
      except TimeoutError: raise RunFailed("failed", f"hang: no reply from restore() for {config.hang_timeout_s:g} s") from None
      except RunFailed as e: raise RunFailed(e.status, f"in its evaluator: {e.reason}") from None
      over_cpu()
      ret = float(evaluate(self.task, policy, self.eval_seeds.next(n), info).mean())
      over_cpu()
      return ret
    finally:
      ev.hold(False)
      evals.pause()
      self.br.evaluator_cpu_s += max(ev.cpu_s() - cpu0, 0.0)
      self._counted(t0)
      evals.done(ev)

  def _account(self) -> None:
    """What the record says of the run beyond its result: the clock, the contention, the act() round trips, the
    evaluators, the CPU between requests, the sources it ran."""
    rec, br = self.rec, self.br
    br.train_clock_s = self.clock.elapsed
    rec.eval_seed_root = self.seed_root
    if self.contention is not None:
      for k, v in self.contention.summary(self.clock.elapsed).items(): setattr(rec, k, v)
    br.act_calls = len(self.act_times)
    br.act_roundtrip_ms_median = float(np.median(self.act_times) * 1e3) if self.act_times else None
    if self.evals is not None: br.evaluator_start_s, br.evaluator_cpu_max_s = self.evals.start_s, self.evals.cpu_max_s()
    if self.trainer is not None:
      self.trainer._thaw_quietly()     # counts the last gap
      br.cpu_between_requests_s = round(self.trainer.cpu_between_requests_s, 4)
    rec.sources = hash_sources(os.path.dirname(self.agent.source), ROOT, skip=self.config.hidden_dirs)

  def _close(self) -> None:
    """Every process of the run killed, its scratch removed, whatever fails on the way (no evaluator outlives its run)."""
    try:
      try:
        if self.evals is not None: self.evals.close()
      except BaseException:
        for c in self.evals.started:
          try: c.release()
          except Exception: pass
        raise
      finally:
        if self.trainer is not None: self.trainer.close()
    finally:
      if self.scratch: shutil.rmtree(self.scratch, ignore_errors=True)


class Evaluators:
  """The run's evaluator processes (PROTOCOL.md section 3): the regular one, which serves every regular evaluation, and a
  fresh one for each confirmation evaluation (nothing an evaluator learned in an earlier evaluation can decide a pass).
  Each starts up (untimed) before it is needed: its start-up, import and construction requests are sent at once, the
  regular one's beside the training process's start-up, the next fresh one's during a regular evaluation; each is
  frozen whenever no evaluation needs it, so that it never competes with training."""
  def __init__(self, config: RefereeConfig, agent: AgentSpec, task, seed: int, cache_db: str | None, workdir: str | None):
    self.config, self.agent, self.task, self.seed, self.cache_db, self.workdir = config, agent, task, seed, cache_db, workdir
    self.regular: AgentProcess | None = None
    self.spare: AgentProcess | None = None
    self.started: list[AgentProcess] = []
    self.start_s = 0.0               # wall time the referee waited for evaluators to start up, import and construct

  def new(self) -> AgentProcess:
    scratch = tempfile.mkdtemp(prefix="eval-", dir=self.workdir)
    c = AgentProcess.for_agent(self.config, self.agent, scratch, self.cache_db, role="evaluator")
    self.started.append(c)
    c.send_ahead(P.Load(task=self.task.to_wire(), preload=list(self.agent.preload)))
    c.send_ahead(P.Import(target=self.agent.target))
    c.send_ahead(P.Construct(seed=self.seed))
    return c

  def prestart(self) -> None:
    """Start the next fresh evaluator's start-up now (during a regular evaluation)."""
    if self.spare is None and self.config.freezer: self.spare = self.new()

  def pause(self) -> None:
    """A spare still starting up is frozen until it is needed."""
    if self.spare is not None and not self.spare.ready: self.spare._freeze()

  def get(self, fresh: bool) -> AgentProcess:
    if fresh: c, self.spare = self.spare or self.new(), None
    else: c = self.regular = self.regular or self.new()
    if not c.ready:
      t0 = time.perf_counter()
      try:
        if not c.loaded: c.collect_load()
        c.loaded = True
        c.collect(self.config.hang_timeout_s, "the evaluator's import", P.Ok)
        c.collect(self.config.hang_timeout_s, "the evaluator's construction", P.Ok)
      except TimeoutError as e: raise RunFailed("failed", f"hang: no reply from {e} for {self.config.hang_timeout_s:g} s") from None
      except RunFailed as e: raise RunFailed(e.status, f"in its evaluator: {e.reason}") from None
      finally: self.start_s += time.perf_counter() - t0
      c.ready = True
    return c

  def done(self, c: AgentProcess) -> None:
    """A fresh evaluator after its one evaluation: killed."""
    if c is not self.regular: self._release(c)

  def _release(self, c: AgentProcess) -> None:
    c.released = True
    try: c.release()
    finally: shutil.rmtree(c.scratch, ignore_errors=True)

  def cpu_max_s(self) -> float:
    return max([c.eval_cpu_max_s for c in self.started] or [0.0])

  def close(self) -> None:
    for c in self.started:
      if not c.released: self._release(c)
    self.started = []
