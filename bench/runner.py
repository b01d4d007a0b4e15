"""One run: one agent, one task, one seed, in a fresh child process. The referee (this module) owns
the clock, the budgets and the evaluation; it returns a RunRecord whatever the agent does."""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import numpy as np

from bench.agent_api import AgentError, AgentSpec
from bench.clock import TrainingClock
from bench.evaluation import EvalSeeds, evaluate
from bench.records import RunRecord

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class RefereeConfig:
  device: str | None = "CPU"          # tinygrad DEV= in the child; None leaves the environment alone
  hang_timeout_s: float = 300.0       # no reply for this long (outside the time budget) = hang
  startup_timeout_s: float = 120.0    # process start, library and agent-module imports (untimed)
  eval_seed: int | None = None        # fixed evaluation seed root (reproductions); None = secret
  extra_env: dict[str, str] = field(default_factory=dict)


class RunFailed(Exception):
  def __init__(self, status: str, reason: str):
    super().__init__(reason)
    self.status, self.reason = status, reason


class Child:
  """The agent's process and the pipe to it. Replies are waited for with a deadline."""
  def __init__(self, config: RefereeConfig, cache_db: str | None):
    ours, theirs = socket.socketpair()
    env = {**os.environ, **config.extra_env, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    if config.device: env["DEV"] = config.device
    if cache_db: env["CACHEDB"] = cache_db
    self.log = tempfile.TemporaryFile()
    self.proc = subprocess.Popen([sys.executable, "-m", "bench.child", str(theirs.fileno())], pass_fds=[theirs.fileno()],
                                 env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                 start_new_session=True)  # Ctrl-C reaches the referee only
    theirs.close()
    self.conn = Connection(ours.detach())

  def request(self, msg: tuple, timeout: float, what: str) -> tuple:
    self.conn.send(msg)
    return self.reply(timeout, what)

  def reply(self, timeout: float, what: str) -> tuple:
    if not self.conn.poll(max(timeout, 0.0)):
      raise TimeoutError(what)
    try: rep = self.conn.recv()
    except (EOFError, ConnectionError, OSError):
      raise RunFailed("failed", f"agent process died during {what} ({self._exit()}){self._log_tail()}")
    if rep[0] == "error":
      _, phase, kind, message, tb = rep
      if kind == "interface": raise RunFailed("failed", f"agent broke the interface during {phase}: {message}")
      raise RunFailed("failed", f"agent raised during {phase}: {message}\n{tb}")
    return rep

  def _exit(self) -> str:
    try: code = self.proc.wait(timeout=5)
    except subprocess.TimeoutExpired: return "still running"
    return f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"

  def _log_tail(self, n: int = 2000) -> str:
    self.log.seek(0)
    tail = self.log.read().decode(errors="replace")[-n:]
    return f"; its output ended with:\n{tail}" if tail.strip() else ""

  def close(self) -> None:
    """Ask the child to exit; kill its process group if it does not (it may be mid-update)."""
    try: self.conn.send(("close",))
    except OSError: pass
    try: self.proc.wait(timeout=0.5)
    except subprocess.TimeoutExpired: pass
    if self.proc.poll() is None:
      os.killpg(self.proc.pid, signal.SIGKILL)
      self.proc.wait()
    self.conn.close()
    self.log.close()


def run_one(agent: AgentSpec, task, seed: int, config: RefereeConfig, *, cache_db: str | None = None,
            kernel_cache: str = "warm", role: str = "timed") -> RunRecord:
  """Run `agent` on `task` with `seed` until a confirmed pass, a budget, or a failure."""
  rec = RunRecord.start(agent, task, seed, role=role, kernel_cache=kernel_cache, device=config.device)
  clock = TrainingClock()
  root = config.eval_seed if config.eval_seed is not None else secrets.randbits(63)
  seeds = EvalSeeds(root)
  br = rec.breakdown
  child = Child(config, cache_db)
  act_times: list[float] = []

  def policy(obs: np.ndarray) -> np.ndarray:
    t0 = time.perf_counter()
    rep = child.request(("act", obs), config.hang_timeout_s, "act()")
    act_times.append(time.perf_counter() - t0)
    return rep[1]

  def run_eval(n: int) -> float:
    t0 = time.perf_counter()
    try: return float(evaluate(task, policy, seeds.next(n)).mean())
    finally:
      br["eval_s"] += time.perf_counter() - t0
      br["evaluations"] += 1

  def timed(msg: tuple, what: str) -> tuple:
    """Send a command that runs agent code, with the clock running, under the time budget."""
    remaining = task.time_budget_s - clock.elapsed
    wait = min(remaining, config.hang_timeout_s)
    clock.start()
    try: return child.request(msg, wait, what)
    except TimeoutError:
      if wait >= remaining:
        raise RunFailed("unsolved", f"time budget ({task.time_budget_s:g} s) ran out during {what}")
      raise RunFailed("failed", f"hang: no reply from {what} for {config.hang_timeout_s:g} s")
    finally:
      clock.stop()

  try:
    try:
      info = child.request(("load", agent.target, task), config.startup_timeout_s, "start-up and import")[1]
    except TimeoutError:
      raise RunFailed("failed", f"hang: agent process did not start within {config.startup_timeout_s:g} s")
    rec.fingerprint.update(tinygrad_version=info["tinygrad_version"], tinygrad_device=info["tinygrad_device"])
    br["import_s"] = info.get("import_s")

    timed(("construct", seed), "construction")
    br["construct_s"] = clock.elapsed

    def passes(steps: int) -> bool:
      """A regular evaluation; a pass counts only if a confirmation evaluation (new seeds) agrees."""
      rec.add_eval(clock.elapsed, steps, ret := run_eval(task.eval_episodes))
      if ret < task.threshold: return False
      confirm = run_eval(task.confirm_episodes)
      rec.confirmations.append({"t": clock.elapsed, "steps": steps, "return": confirm})
      return confirm >= task.threshold

    # the untrained policy: a (confirmed) pass here is flagged, never counted as a solve
    if passes(0):
      rec.passes_untrained = True
      raise RunFailed("flagged", f"the untrained policy already passes (confirmation return "
                                 f"{rec.confirmations[-1]['return']:.1f} >= {task.threshold:g})")

    # evaluations fall on a fixed grid: the first yield at or past each multiple of the cadence
    every_n, every_t = task.eval_every_steps, task.eval_every_seconds
    steps, last_eval_steps, last_eval_t = 0, 0, 0.0
    while True:
      targets = [task.step_budget] + ([(last_eval_steps // every_n + 1) * every_n] if every_n else [])
      max_s = task.time_budget_s - clock.elapsed
      if every_t: max_s = min(max_s, (last_eval_t // every_t + 1) * every_t - clock.elapsed)
      rep = timed(("train", min(targets), max(max_s, 0.0)), "train()")
      steps, report = rep[1], rep[2]
      rec.steps, rec.step_source = steps, "referee" if report["counted_steps"] > 0 else "agent"
      rec.agent_profile = report["profile"]
      if clock.elapsed > task.time_budget_s:
        raise RunFailed("unsolved", f"time budget ({task.time_budget_s:g} s) ran out during train()")
      due = (every_n and steps // every_n > last_eval_steps // every_n) or \
            (every_t and clock.elapsed // every_t > last_eval_t // every_t) or \
            steps >= task.step_budget or rep[0] == "finished"
      if due:
        last_eval_steps, last_eval_t = steps, clock.elapsed
        if passes(steps):
          rec.finish_solved(clock.elapsed, steps, rec.confirmations[-1]["return"])
          return rec
      if steps >= task.step_budget:
        raise RunFailed("unsolved", f"step budget ({task.step_budget:,} steps) reached")
      if rep[0] == "finished":
        raise RunFailed("unsolved", "train() returned before the threshold was reached")
  except RunFailed as e:
    rec.finish_unsolved(e.status, e.reason, clock.elapsed)
    return rec
  except AgentError as e:  # bad actions during evaluation
    rec.finish_unsolved("failed", f"agent broke the interface in act(): {e}", clock.elapsed)
    return rec
  except TimeoutError as e:
    rec.finish_unsolved("failed", f"hang: no reply from {e} for {config.hang_timeout_s:g} s", clock.elapsed)
    return rec
  finally:
    rec.eval_seed_root = root
    br["train_clock_s"] = clock.elapsed
    br["act_calls"] = len(act_times)
    br["act_roundtrip_ms_median"] = float(np.median(act_times) * 1e3) if act_times else None
    child.close()
