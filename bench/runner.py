"""One run: one agent, one task, one seed, in a fresh sandboxed child process. The referee (this module)
owns the clock, the budgets, the evaluation and the accounting of work done while the clock is stopped;
it returns a RunRecord whatever the agent does (PROTOCOL.md sections 3, 5, 6 and 12)."""
from __future__ import annotations

import dataclasses
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from bench import protocol as P
from bench.accounting import TreeCPU
from bench.agent_api import AgentError, AgentSpec, hash_sources
from bench.calibrate import calibrate
from bench.clock import TrainingClock
from bench.contention import Contention
from bench.evaluation import EvalSeeds, evaluate
from bench.records import RunRecord
from bench.sandbox import agent_environ, probe
from bench.worker import die_with_parent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLOW_ACT_S = 0.02     # an act() call longer than this is compiling (or charged in full): its CPU is not limited
PROGRESS_EVERY_S = 5.0  # train() replies (with its step count) at least this often, between evaluations too


@dataclass
class RefereeConfig:
  device: str | None = "CPU"          # tinygrad DEV= in the child; None leaves the environment alone
  hang_timeout_s: float = 300.0       # no reply for this long (outside the time budget) = hang
  startup_timeout_s: float = 120.0    # process start, library imports and device start-up (untimed)
  eval_seed: int | None = None        # fixed evaluation seed root (reproductions); None = secret
  extra_env: dict[str, str] = field(default_factory=dict)
  sandbox: str = "bwrap"              # "bwrap" (required: the session refuses to start without it) or "none" (recorded)
  hidden_dirs: tuple[str, ...] = ()   # directories the agent must not see (the results directory)
  memory_limit_gb: float | None = 8.0  # address-space limit of each agent process (CPU device only)
  max_processes: int = 1024           # processes and threads of the agent's uid (RLIMIT_NPROC), where it has its own (root)
  act_allowance_ms: float = 2.0       # act() time per call that is not charged to the training clock
  act_call_cap_s: float = 10.0        # one act() call longer than this fails the run
  act_eval_cap_s: float = 120.0       # act() time in one evaluation longer than this fails the run
  eval_cpu_s: float = 0.5             # CPU-seconds the agent's processes may use in a run's evaluations ...
  idle_cpu_fraction: float = 0.25     # ... plus this fraction of the wall time between them (the references: 0-0.2 s a run)
  act_cpu_ratio: float = 1.5          # ... plus this many CPU-seconds per second inside act() (the references: 0.7-1.05)
  warm_up_cap_s: float = 120.0        # the untimed warm-up's agent code (import to its last act()), all requests together
  calibrate: bool = True              # time the machine-speed workload before each run (bench/calibrate.py), outside the clock
  placement: dict = field(default_factory=dict)  # runs side by side (bench/parallel.py): slot, cores (pinned), workers; recorded


def bytecode_dirs(top: str, limit: int = 1000) -> list[str]:
  """The __pycache__ directories under an entry's directory: covered in its sandbox, so that Python compiles what it
  imports from the sources a record hashes, never from a .pyc shipped beside them (a compiled file whose source check
  is off runs whatever it holds)."""
  found = []
  for n, (dirpath, dirnames, _) in enumerate(os.walk(top)):
    if n >= limit: break
    found += [os.path.join(dirpath, d) for d in dirnames if d == "__pycache__"]
    dirnames[:] = [d for d in dirnames if d != "__pycache__"]
  return found


def limits(config: RefereeConfig, uid: int | None, sandboxed: bool) -> None:
  """In a forked child before exec (an agent's process, the kernel cache's rebuild): limits every process of it inherits."""
  gb = config.memory_limit_gb
  if gb and (config.device or "CPU").split(":")[0].upper() == "CPU":   # GPU drivers reserve huge address ranges
    resource.setrlimit(resource.RLIMIT_AS, (int(gb * 2**30),) * 2)
  resource.setrlimit(resource.RLIMIT_FSIZE, (4 * 2**30,) * 2)    # no file (its output included) over 4 GiB
  resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
  if uid is not None: resource.setrlimit(resource.RLIMIT_NPROC, (config.max_processes,) * 2)   # counted on the agent's uid
  if not sandboxed: die_with_parent(signal.SIGKILL)   # bwrap does it with --die-with-parent


class RunFailed(Exception):
  def __init__(self, status: str, reason: str):
    super().__init__(reason)
    self.status, self.reason = status, reason


class Child:
  """The agent's process (in its sandbox) and the wire to it. Replies are waited for with a deadline,
  read with a size limit and checked against the type the request expects."""
  def __init__(self, config: RefereeConfig, scratch: str, cache_db: str | None, readable: list[str] = ()):
    self.config, self.sandbox, self.cache_db = config, probe(config.sandbox), cache_db
    ours, theirs = socket.socketpair()
    env = agent_environ({**config.extra_env, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
                         "HOME": scratch, "TMPDIR": scratch, "USER": "agent", "LOGNAME": "agent", "PYTHONDONTWRITEBYTECODE": "1",
                         "BEAM_MAX_TASKS_PER_CHILD": os.environ.get("BEAM_MAX_TASKS_PER_CHILD", "1000000")})  # compile workers kept (child.py)
    if config.device: env["DEV"] = config.device
    if cache_db: env["CACHEDB"] = cache_db
    if self.sandbox.kind != "none": env["RLSPEEDRUN_SANDBOX"] = self.sandbox.kind
    owned = [os.path.dirname(cache_db), cache_db] if cache_db else []
    self.uid = self.sandbox.uid(config.placement.get("slot") or 0)
    self.sandbox.give(scratch, *[p for p in owned if os.path.exists(p)], uid=self.uid)
    fds = [theirs.fileno()]
    argv = self.sandbox.wrap([sys.executable, "-m", "bench.child", str(theirs.fileno())], scratch=scratch,
                             readable=[ROOT, *readable], hidden=list(config.hidden_dirs), device=config.device, uid=self.uid, pass_fds=fds)
    self.log = tempfile.TemporaryFile()
    try:
      self.proc = subprocess.Popen(argv, pass_fds=fds, env=env, cwd=scratch, stdin=subprocess.DEVNULL,
                                   stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,  # Ctrl-C reaches the referee only
                                   preexec_fn=lambda: limits(config, self.uid, self.sandbox.kind != "none"))
    finally:
      for fd in fds[1:]: os.close(fd)     # the seccomp filter's pipe: bwrap has its own copy
    theirs.close()
    self.wire = P.Wire(ours, accept=P.REPLIES, max_in=P.MAX_REPLY_BYTES)
    self.cpu = TreeCPU(self.proc.pid)
    self.seq, self.idle = 0, False    # idle: the last request got its reply (the agent waits for the next)

  @classmethod
  def for_agent(cls, config: RefereeConfig, agent: AgentSpec, scratch: str, cache_db: str | None = None) -> Child:
    """The agent's process for one run (or the warm-up) in `scratch`, with its own copy of a verified kernel cache
    (kernel_cache.seal), or an empty one."""
    cache = os.path.join(scratch, "kernel-cache", "cache.db")
    os.makedirs(os.path.dirname(cache))
    if cache_db and os.path.exists(cache_db): shutil.copyfile(cache_db, cache)
    entry = os.path.dirname(agent.source)
    return cls(dataclasses.replace(config, hidden_dirs=(*config.hidden_dirs, *bytecode_dirs(entry))), scratch, cache, readable=[entry])

  def load(self, task, agent: AgentSpec) -> P.Loaded:
    """Untimed start-up: libraries (and the agent's preloads), the tinygrad device, the task."""
    try: return self.request(P.Load(task=task.to_wire(), preload=list(agent.preload)), self.config.startup_timeout_s,
                             "start-up", P.Loaded)
    except TimeoutError:
      raise RunFailed("failed", f"hang: agent process did not start within {self.config.startup_timeout_s:g} s") from None

  def request(self, msg, timeout: float, what: str, expect: type):
    self.seq, self.idle = self.seq + 1, False
    t0 = time.monotonic()
    try: self.wire.send(msg, self.seq, timeout)
    except TimeoutError: raise TimeoutError(what) from None
    except OSError: raise RunFailed("failed", f"agent process died before {what} ({self._exit()}){self._log_tail()}") from None
    return self.reply(timeout - (time.monotonic() - t0), what, expect)

  def reply(self, timeout: float, what: str, expect: type):
    try: seq, rep = self.wire.recv(timeout)
    except TimeoutError: raise TimeoutError(what) from None
    except (EOFError, OSError):
      raise RunFailed("failed", f"agent process died during {what} ({self._exit()}){self._log_tail()}") from None
    except P.ProtocolError as e:
      raise RunFailed("failed", f"agent process broke the wire protocol during {what}: {e}") from None
    if isinstance(rep, P.Error):
      if rep.kind == "interface": raise RunFailed("failed", f"agent broke the interface during {rep.phase}: {rep.message}")
      raise RunFailed("failed", f"agent raised during {rep.phase}: {rep.message}\n{rep.traceback}")
    if seq != self.seq or not isinstance(rep, expect):
      raise RunFailed("failed", f"agent process broke the wire protocol during {what}: reply {rep.verb!r} #{seq} "
                                f"to request #{self.seq}, expected {expect.verb!r}")
    self.idle = True
    return rep

  def _exit(self) -> str:
    try: code = self.proc.wait(timeout=5)
    except subprocess.TimeoutExpired: return "still running"
    if 128 < code < 128 + signal.NSIG and self.sandbox.kind == "bwrap": code = 128 - code    # 128+N: killed by signal N
    try: return f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    except ValueError: return f"killed by signal {-code}"

  def _log_tail(self, n: int = 2000) -> str:
    self.log.seek(0, os.SEEK_END)
    self.log.seek(max(self.log.tell() - n, 0))
    tail = P.printable(self.log.read().decode(errors="replace"), keep="\n")
    return f"; its output ended with:\n{tail}" if tail.strip() else ""

  def close(self) -> None:
    """Ask the child to exit, then kill every process of its tree, those seen before it exited included (a sandbox's
    whole PID namespace dies with it)."""
    tree = self.cpu.snapshot()
    try: self.wire.send(P.Close(), self.seq + 1, timeout=1.0)
    except (OSError, P.ProtocolError): pass
    try: self.proc.wait(timeout=0.5)
    except subprocess.TimeoutExpired: pass
    self.cpu.kill_all(tree)
    if self.proc.poll() is None:
      try: os.killpg(self.proc.pid, signal.SIGKILL)
      except ProcessLookupError: pass
    self.proc.wait()
    self.cpu.close()
    self.wire.close()
    self.log.close()


def outside_cores(procs, cores: tuple[int, ...]) -> str:
  """'thread T of process P' whose CPU affinity reaches beyond `cores`, or '' (a run pinned to them: bench/parallel.py)."""
  allowed = set(cores)
  for p in procs:
    try: tids = [int(t) for t in os.listdir(f"/proc/{p.pid}/task")]
    except OSError: continue
    for tid in tids:
      try: mask = os.sched_getaffinity(tid)
      except OSError: continue
      if not mask <= allowed: return f"thread {tid} of process {p.pid} (allowed cores {','.join(map(str, sorted(mask)))})"
  return ""


def run_one(agent: AgentSpec, task, seed: int, config: RefereeConfig, *, cache_db: str | None = None,
            kernel_cache: str = "warm", role: str = "timed", workdir: str | None = None) -> RunRecord:
  """Run `agent` on `task` with `seed` until a confirmed pass, a budget, or a failure. `cache_db` is a verified
  kernel cache (kernel_cache.seal) of which the run gets its own copy; None starts with an empty one. Whatever happens
  it returns the run's record: an exception of the referee's own at any stage (its clean-up included) fails the run
  with its reason, and the session goes on with the next seed."""
  rec = RunRecord.start(agent, task, seed, role=role, kernel_cache=kernel_cache, device=config.device)
  rec.placement = dict(config.placement)
  try: _run(rec, agent, task, seed, config, cache_db, workdir)
  except Exception as e:
    rec.finish_unsolved("failed", f"referee error while handling the run: {type(e).__name__}: {e}", rec.breakdown.get("train_clock_s") or 0.0)
  return rec


def _run(rec: RunRecord, agent: AgentSpec, task, seed: int, config: RefereeConfig, cache_db: str | None, workdir: str | None) -> None:
  cores = tuple(config.placement.get("cores") or ()) or None
  if config.calibrate: rec.calibration = calibrate()
  clock, shared = TrainingClock(), Contention(cores)
  root = config.eval_seed if config.eval_seed is not None else secrets.randbits(63)
  seeds = EvalSeeds(root)
  br = rec.breakdown
  act_times: list[float] = []
  scratch = tempfile.mkdtemp(prefix="run-", dir=workdir)
  child = None

  def run_eval(n: int) -> float:
    """One evaluation. act() time beyond the allowance is charged to the clock. CPU time of the agent's process tree
    during the run's evaluations (work while train() is suspended: threads, other processes) beyond an allowance (a
    little more than one core inside act(), a little between the calls) fails the run."""
    acct = {"wall": 0.0, "cpu": 0.0, "excess": 0.0, "slow_wall": 0.0, "slow_cpu": 0.0}
    allowance = config.act_allowance_ms / 1e3

    def policy(obs: np.ndarray) -> np.ndarray:
      cap, why = min((config.act_call_cap_s, f"act() took more than {config.act_call_cap_s:g} s for one batch (the cap per call)"),
                     (config.hang_timeout_s, f"hang: no reply from act() for {config.hang_timeout_s:g} s"),
                     (config.act_eval_cap_s - acct["wall"],
                      f"act() took more than {config.act_eval_cap_s:g} s in one evaluation (the cap per evaluation)"))
      c0, t0 = child.cpu.read(), time.perf_counter()
      try: rep = child.request(P.Act(obs=obs), cap, "act()", P.Actions)
      except TimeoutError: raise RunFailed("failed", why) from None
      dt = time.perf_counter() - t0
      # a slow call may have started processes (tinygrad compiles its first calls in a pool of processes): find them,
      # so that their time counts as act()'s; a process started in a fast call is found at the end of the evaluation
      # (and counts as idle). A slow call's CPU is not limited (a compile uses every core); its wall time is charged.
      cpu = (child.cpu.scan() if dt > SLOW_ACT_S else child.cpu.read()) - c0
      acct["cpu"] += cpu
      if dt > SLOW_ACT_S: acct["slow_wall"], acct["slow_cpu"] = acct["slow_wall"] + dt, acct["slow_cpu"] + cpu
      act_times.append(dt)
      acct["wall"] += dt
      acct["excess"] += max(0.0, dt - allowance)
      return rep.actions

    t0, cpu0 = time.perf_counter(), child.cpu.scan()
    try: ret = float(evaluate(task, policy, seeds.next(n)).mean())
    finally:
      br["eval_s"] += time.perf_counter() - t0
      br["evaluations"] += 1
    br["idle_cpu_s"] += max(child.cpu.scan() - cpu0 - acct["cpu"], 0.0)
    br["idle_wall_s"] += time.perf_counter() - t0 - acct["wall"]
    br["act_cpu_s"] += acct["cpu"]
    br["act_wall_s"] += acct["wall"]
    br["act_slow_cpu_s"] += acct["slow_cpu"]
    br["act_slow_wall_s"] += acct["slow_wall"]
    # over the run's evaluations so far: CPU beyond one core's worth of (fast) act() calls and a little between calls
    used = br["act_cpu_s"] - br["act_slow_cpu_s"] + br["idle_cpu_s"]
    limit = config.eval_cpu_s + config.act_cpu_ratio * (br["act_wall_s"] - br["act_slow_wall_s"]) + \
      config.idle_cpu_fraction * br["idle_wall_s"]
    if used > limit:
      raise RunFailed("failed", f"the agent's processes used {used:.2f} CPU-s in this run's evaluations, {br['idle_cpu_s']:.2f} "
                                f"of them between act() calls (allowance {limit:.2f}: {config.eval_cpu_s:g} s + "
                                f"{config.act_cpu_ratio:g} x the time in act() calls of up to {SLOW_ACT_S * 1e3:g} ms + "
                                f"{config.idle_cpu_fraction:g} x the time between calls): no work may go on while train() is suspended")
    clock.charge(acct["excess"])
    br["act_charged_s"] += acct["excess"]
    return ret

  def timed(msg, what: str, expect: type):
    """Send a command that runs agent code, with the clock running, under the time budget."""
    remaining = task.time_budget_s - clock.elapsed
    wait = min(remaining, config.hang_timeout_s)
    shared.enter(child.cpu)
    clock.start()
    try: rep = child.request(msg, wait, what, expect)
    except TimeoutError:
      if wait >= remaining:
        raise RunFailed("unsolved", f"time budget ({task.time_budget_s:g} s) ran out during {what}") from None
      raise RunFailed("failed", f"hang: no reply from {what} for {config.hang_timeout_s:g} s") from None
    finally:
      clock.stop()
      shared.leave(child.cpu)
    if cores and (out := outside_cores(child.cpu.snapshot(), cores)):
      raise RunFailed("failed", f"the agent's {out} may run outside the cores it was given ({','.join(map(str, cores))}) after "
                                f"{what}: runs side by side each keep to their own cores (PROTOCOL.md section 14)")
    return rep

  try:
    child = Child.for_agent(config, agent, scratch, cache_db)
    rec.sandbox = child.sandbox.label
    loaded = child.load(task, agent)
    rec.self_reported.update(pid=loaded.pid, tinygrad_version=loaded.tinygrad_version, tinygrad_device=loaded.tinygrad_device)

    timed(P.Import(target=agent.target), "import of the agent's module", P.Ok)
    br["import_s"] = clock.elapsed
    timed(P.Construct(seed=seed), "construction", P.Ok)
    br["construct_s"] = clock.elapsed - br["import_s"]

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
      max_s = min(task.time_budget_s - clock.elapsed, PROGRESS_EVERY_S)   # a reply at least this often: steps done so far
      if every_t: max_s = min(max_s, (last_eval_t // every_t + 1) * every_t - clock.elapsed)
      # the first request returns at train()'s first yield: the clock then is the run's first update (first_update_s)
      until = 1 if br.get("first_update_s") is None else min(targets)
      rep = timed(P.Train(until_steps=until, max_s=max(max_s, 0.0)), "train()", P.Trained)
      steps = rep.counted_steps if rep.counted_steps > 0 else rep.agent_steps
      if br.get("first_update_s") is None and steps > 0: br["first_update_s"], br["first_update_steps"] = clock.elapsed, steps
      rec.steps, rec.step_source = steps, "wrapper" if rep.counted_steps > 0 else "yield"
      rec.self_reported.update(agent_steps=rep.agent_steps, counted_steps=rep.counted_steps)
      rec.agent_profile = rep.profile or None
      if clock.elapsed > task.time_budget_s:
        raise RunFailed("unsolved", f"time budget ({task.time_budget_s:g} s) ran out during train()")
      due = (every_n and steps // every_n > last_eval_steps // every_n) or \
            (every_t and clock.elapsed // every_t > last_eval_t // every_t) or \
            steps >= task.step_budget or rep.finished
      if due:
        last_eval_steps, last_eval_t = steps, clock.elapsed
        if passes(steps):
          if rep.finished:
            raise RunFailed("flagged", "passed after train() had returned: a solve needs a train() that is still training")
          if steps < task.step_floor:
            raise RunFailed("flagged", f"passed with {steps:,} env steps, under the task's floor of {task.step_floor:,} "
                                       "(no training the referee saw can have produced it)")
          rec.finish_solved(clock.elapsed, steps, rec.confirmations[-1]["return"])
          if len([p for p in rec.curve if p["steps"] > 0]) == 1:
            rec.review.append(f"no learning curve on the clock: it went from the untrained policy (return {rec.curve[0]['return']:.1f}) "
                              f"to a pass at its first evaluation ({steps:,} steps, {clock.elapsed:.2f} s): was it learned or written "
                              "before the clock? (PROTOCOL.md 12)")
          return
      if steps >= task.step_budget:
        raise RunFailed("unsolved", f"step budget ({task.step_budget:,} steps) reached")
      if rep.finished:
        raise RunFailed("unsolved", "train() returned before the threshold was reached")
  except RunFailed as e:
    rec.finish_unsolved(e.status, e.reason, clock.elapsed)
    return
  except AgentError as e:  # bad actions during evaluation
    rec.finish_unsolved("failed", f"agent broke the interface in act(): {e}", clock.elapsed)
    return
  except TimeoutError as e:
    rec.finish_unsolved("failed", f"hang: no reply from {e} for {config.hang_timeout_s:g} s", clock.elapsed)
    return
  except Exception as e:   # whatever went wrong, this run is recorded and the session goes on
    rec.finish_unsolved("failed", f"referee error while running the agent: {type(e).__name__}: {e}", clock.elapsed)
    return
  finally:
    br["train_clock_s"] = clock.elapsed
    try:
      rec.eval_seed_root = root
      for k, v in shared.summary(clock.elapsed).items(): setattr(rec, k, v)
      br["act_calls"] = len(act_times)
      br["act_roundtrip_ms_median"] = float(np.median(act_times) * 1e3) if act_times else None
      rec.sources = hash_sources(os.path.dirname(agent.source), ROOT, skip=config.hidden_dirs)
    finally:
      try:
        if child is not None: child.close()
      finally:
        shutil.rmtree(scratch, ignore_errors=True)
