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
from bench.calibrate import budget_scale, calibrate
from bench.cgroup import Group, SignalGroup
from bench.clock import TrainingClock
from bench.contention import Contention
from bench.evaluation import EvalSeeds, evaluate
from bench.records import RunRecord
from bench.sandbox import agent_environ, probe
from bench.worker import die_with_parent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
  memory_limit_gb: float | None = 8.0  # memory of each agent process tree (its cgroup; RLIMIT_AS per process on the CPU device)
  max_processes: int = 1024           # processes and threads of each agent process tree (its cgroup; RLIMIT_NPROC of its uid)
  act_call_cap_s: float = 10.0        # one act() call longer than this fails the run
  act_eval_cap_s: float = 120.0       # act() time in one evaluation longer than this fails the run
  eval_cpu_cap_s: float = 30.0        # CPU-seconds an evaluator's processes may use in one evaluation (restore + act calls)
  freezer: bool = True                # freeze the agent's processes between requests (False: only to show what it stops)
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
  """An agent's process (in its sandbox and its own cgroup) and the wire to it: the training process, or an evaluator
  (`role`). Replies are waited for with a deadline, read with a size limit and checked against the type the request
  expects. The process tree is frozen whenever no request of it is being answered (bench/cgroup.py): `request` thaws
  it, waits for the reply, freezes it again; `hold()` keeps it thawed across several requests (an evaluation)."""
  def __init__(self, config: RefereeConfig, scratch: str, cache_db: str | None, readable: list[str] = (), role: str = "trainer"):
    self.config, self.sandbox, self.cache_db, self.role = config, probe(config.sandbox), cache_db, role
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
    gb = config.memory_limit_gb
    self.group = Group.make(role, int(gb * 2**30) if gb else None, config.max_processes)
    fds = [theirs.fileno()]
    argv = self.sandbox.wrap([sys.executable, "-m", "bench.child", str(theirs.fileno())], scratch=scratch,
                             readable=[ROOT, *readable], hidden=list(config.hidden_dirs), device=config.device, uid=self.uid, pass_fds=fds)
    self.log = tempfile.TemporaryFile()
    group = self.group

    def before_exec():
      limits(config, self.uid, self.sandbox.kind != "none")
      if group is not None: group.enter()
    try:
      self.proc = subprocess.Popen(argv, pass_fds=fds, env=env, cwd=scratch, stdin=subprocess.DEVNULL,
                                   stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,  # Ctrl-C reaches the referee only
                                   preexec_fn=before_exec)
    except BaseException:
      if group is not None: group.remove()
      raise
    finally:
      for fd in fds[1:]: os.close(fd)     # the seccomp filter's pipe: bwrap has its own copy
    theirs.close()
    if self.group is None and config.freezer: self.group = SignalGroup(self.proc.pid)
    self.freezes = config.freezer and self.group is not None
    self.freezer = self.group.label if self.freezes else "none (switched off)"
    self.cpu_between_requests_s, self._cpu_at_freeze = 0.0, None   # CPU its tree used while no request was answered
    self.wire = P.Wire(ours, accept=P.REPLIES, max_in=P.MAX_REPLY_BYTES)
    self.cpu = TreeCPU(self.proc.pid)
    self.seq, self.idle, self.held = 0, False, False    # idle: the last request got its reply (the agent waits for the next)
    self.pending: list[int] = []                          # requests sent ahead whose replies are not collected yet

  @classmethod
  def for_agent(cls, config: RefereeConfig, agent: AgentSpec, scratch: str, cache_db: str | None = None, role: str = "trainer") -> Child:
    """The agent's process for one run (or the warm-up) in `scratch`, with its own copy of a verified kernel cache
    (kernel_cache.seal), or an empty one."""
    cache = os.path.join(scratch, "kernel-cache", "cache.db")
    os.makedirs(os.path.dirname(cache))
    if cache_db and os.path.exists(cache_db): shutil.copyfile(cache_db, cache)
    entry = os.path.dirname(agent.source)
    return cls(dataclasses.replace(config, hidden_dirs=(*config.hidden_dirs, *bytecode_dirs(entry))), scratch, cache,
               readable=[entry], role=role)

  def load(self, task, agent: AgentSpec) -> P.Loaded:
    """Untimed start-up: libraries (and the agent's preloads), the tinygrad device, the task."""
    self.send_ahead(P.Load(task=task.to_wire(), preload=list(agent.preload)))
    return self.collect_load()

  def collect_load(self) -> P.Loaded:
    try: return self.collect(self.config.startup_timeout_s, "start-up", P.Loaded)
    except TimeoutError:
      raise RunFailed("failed", f"hang: agent process did not start within {self.config.startup_timeout_s:g} s") from None

  def send_ahead(self, msg) -> None:
    """Send a request whose reply `collect` waits for later (two processes starting up side by side; an evaluator's
    start-up, import and construction sent at once). Replies are collected in the order the requests were sent."""
    self.seq, self.idle = self.seq + 1, False
    self.pending.append(self.seq)
    self._thaw()
    try: self.wire.send(msg, self.seq, 10.0)
    except TimeoutError: raise TimeoutError(msg.verb) from None
    except OSError: raise RunFailed("failed", f"agent process died before {msg.verb} ({self._exit()}){self._log_tail()}") from None

  def collect(self, timeout: float, what: str, expect: type, max_in: int | None = None):
    self._thaw()
    try: return self.reply(timeout, what, expect, max_in, self.pending.pop(0))
    finally: self._freeze()

  def request(self, msg, timeout: float, what: str, expect: type, max_in: int | None = None):
    assert not self.pending, "replies sent ahead not collected"
    self.seq, self.idle = self.seq + 1, False
    t0 = time.monotonic()
    self._thaw()
    try:
      try: self.wire.send(msg, self.seq, timeout)
      except TimeoutError: raise TimeoutError(what) from None
      except OSError: raise RunFailed("failed", f"agent process died before {what} ({self._exit()}){self._log_tail()}") from None
      return self.reply(timeout - (time.monotonic() - t0), what, expect, max_in)
    finally:
      self._freeze()

  def hold(self, on: bool) -> None:
    """Keep the process thawed between requests (on), or freeze it (off)."""
    self.held = on
    if on: self._thaw()
    else: self._freeze()

  def _thaw(self) -> None:
    if self._cpu_at_freeze is not None:
      self.cpu_between_requests_s += max(self._tree_cpu() - self._cpu_at_freeze, 0.0)
      self._cpu_at_freeze = None
    if self.freezes: self.group.thaw()

  def _freeze(self) -> None:
    if self.held: return
    if self.freezes: self.group.freeze()
    self._cpu_at_freeze = self._tree_cpu()

  def _tree_cpu(self) -> float:
    return self.group.cpu_s() if isinstance(self.group, Group) else self.cpu.read()

  def cpu_s(self) -> float:
    """CPU seconds of the whole tree so far: its cgroup's count where it has one (exited processes included), else /proc's."""
    return self.group.cpu_s() if isinstance(self.group, Group) else self.cpu.scan()

  def reply(self, timeout: float, what: str, expect: type, max_in: int | None = None, expect_seq: int | None = None):
    expect_seq = self.seq if expect_seq is None else expect_seq
    try: seq, rep = self.wire.recv(timeout, max_in)
    except TimeoutError: raise TimeoutError(what) from None
    except (EOFError, OSError):
      raise RunFailed("failed", f"agent process died during {what} ({self._exit()}){self._log_tail()}") from None
    except P.ProtocolError as e:
      raise RunFailed("failed", f"agent process broke the wire protocol during {what}: {e}") from None
    if isinstance(rep, P.Error):
      if rep.kind == "interface": raise RunFailed("failed", f"agent broke the interface during {rep.phase}: {rep.message}")
      raise RunFailed("failed", f"agent raised during {rep.phase}: {rep.message}\n{rep.traceback}")
    if seq != expect_seq or not isinstance(rep, expect):
      raise RunFailed("failed", f"agent process broke the wire protocol during {what}: reply {rep.verb!r} #{seq} "
                                f"to request #{expect_seq}, expected {expect.verb!r}")
    self.idle = not self.pending
    return rep

  def _exit(self) -> str:
    self._thaw_quietly()
    try: code = self.proc.wait(timeout=5)
    except subprocess.TimeoutExpired: return "still running"
    if 128 < code < 128 + signal.NSIG and self.sandbox.kind == "bwrap": code = 128 - code    # 128+N: killed by signal N
    try: return f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    except ValueError: return f"killed by signal {-code}"

  def _thaw_quietly(self) -> None:
    try: self._thaw()
    except (OSError, TimeoutError): pass

  def _log_tail(self, n: int = 2000) -> str:
    self.log.seek(0, os.SEEK_END)
    self.log.seek(max(self.log.tell() - n, 0))
    tail = P.printable(self.log.read().decode(errors="replace"), keep="\n")
    return f"; its output ended with:\n{tail}" if tail.strip() else ""

  def close(self) -> None:
    """Ask the child to exit (thawed: the training process's tinygrad writes its kernel cache as it exits), then kill
    every process of its tree and its cgroup, those seen before it exited included (a sandbox's whole PID namespace
    dies with it)."""
    try:
      tree = self.cpu.snapshot()
      self.held = False
      self._thaw_quietly()
      try: self.wire.send(P.Close(), self.seq + 1, timeout=1.0)
      except (OSError, P.ProtocolError): pass
      try: self.proc.wait(timeout=0.5 if self.role == "evaluator" else 2.0)
      except subprocess.TimeoutExpired: pass
      self.cpu.kill_all(tree)
    finally:
      self.release()

  def release(self) -> None:
    """Kill whatever is left (its cgroup's tasks, its process group) and free what the handle holds; also after a
    failed close()."""
    if self.group is not None:
      try: self.group.remove()
      except OSError: pass
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


class Evaluators:
  """The run's evaluator processes (PROTOCOL.md section 3): the regular one, which serves every regular evaluation, and a
  fresh one for each confirmation evaluation (nothing an evaluator learned in an earlier evaluation can decide a pass).
  Each starts up (untimed) before it is needed: its start-up, import and construction requests are sent at once, the
  regular one's beside the training process's start-up, the next fresh one's during a regular evaluation; each is
  frozen whenever no evaluation needs it, so that it never competes with training."""
  def __init__(self, config: RefereeConfig, agent: AgentSpec, task, seed: int, cache_db: str | None, workdir: str | None):
    self.config, self.agent, self.task, self.seed, self.cache_db, self.workdir = config, agent, task, seed, cache_db, workdir
    self.regular: Child | None = None
    self.spare: Child | None = None
    self.started: list[Child] = []
    self.start_s = 0.0               # wall time the referee waited for evaluators to start up, import and construct

  def new(self) -> Child:
    scratch = tempfile.mkdtemp(prefix="eval-", dir=self.workdir)
    c = Child.for_agent(self.config, self.agent, scratch, self.cache_db, role="evaluator")
    c.scratch, c.loaded, c.ready = scratch, False, False
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

  def get(self, fresh: bool) -> Child:
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

  def done(self, c: Child) -> None:
    """A fresh evaluator after its one evaluation: killed."""
    if c is not self.regular: self._release(c)

  def _release(self, c: Child) -> None:
    c.released = True
    try: c.release()
    finally: shutil.rmtree(c.scratch, ignore_errors=True)

  def cpu_max_s(self) -> float:
    return max([getattr(c, "eval_cpu_max_s", 0.0) for c in self.started] or [0.0])

  def close(self) -> None:
    for c in self.started:
      if not getattr(c, "released", False): self._release(c)
    self.started = []


def _run(rec: RunRecord, agent: AgentSpec, task, seed: int, config: RefereeConfig, cache_db: str | None, workdir: str | None) -> None:
  wall0 = time.perf_counter()
  cores = tuple(config.placement.get("cores") or ()) or None
  if config.calibrate: rec.calibration = calibrate()
  rec.breakdown["calibration_s"] = time.perf_counter() - wall0
  rec.budget_scale = budget_scale(rec.calibration)
  budget = rec.time_budget_s = round(task.time_budget_s * rec.budget_scale, 3)
  clock, shared = TrainingClock(), Contention(cores)
  root = config.eval_seed if config.eval_seed is not None else secrets.randbits(63)
  seeds = EvalSeeds(root)
  br = rec.breakdown
  act_times: list[float] = []
  scratch = tempfile.mkdtemp(prefix="run-", dir=workdir)
  child = evals = None

  def timed(msg, what: str, expect: type, max_in: int | None = None):
    """Send a command that runs agent code, with the clock running, under the time budget."""
    remaining = budget - clock.elapsed
    if remaining <= 0: raise RunFailed("unsolved", f"time budget ({budget:g} s) ran out before {what}")
    wait = min(remaining, config.hang_timeout_s)
    shared.enter(child.cpu)
    clock.start()
    try: rep = child.request(msg, wait, what, expect, max_in)
    except TimeoutError:
      if wait >= remaining:
        raise RunFailed("unsolved", f"time budget ({budget:g} s) ran out during {what}") from None
      raise RunFailed("failed", f"hang: no reply from {what} for {config.hang_timeout_s:g} s") from None
    finally:
      clock.stop()
      shared.leave(child.cpu)
    if cores and (out := outside_cores(child.cpu.snapshot(), cores)):
      raise RunFailed("failed", f"the agent's {out} may run outside the cores it was given ({','.join(map(str, cores))}) after "
                                f"{what}: runs side by side each keep to their own cores (PROTOCOL.md section 14)")
    return rep

  def run_eval(n: int, fresh: bool, info: dict) -> float:
    """One evaluation of the policy as it is now. The training process (frozen) gives a snapshot, on the clock; an
    evaluator process restores it and answers act() off the clock, its CPU capped; nothing reaches the training process.
    An agent whose snapshot holds nothing is evaluated in place: its act() calls are on the clock."""
    c0 = clock.elapsed
    state = timed(P.Snapshot(), "snapshot()", P.State, max_in=P.MAX_STATE_BYTES)
    br["snapshot_s"] += clock.elapsed - c0
    br["snapshot_bytes"] = int(state.blob.nbytes)
    rec.evaluation = "snapshot" if state.arrays else "in place"
    t0 = time.perf_counter()
    if not state.arrays:
      def policy(obs: np.ndarray) -> np.ndarray:
        t1 = time.perf_counter()
        rep = timed(P.Act(obs=obs), "act() (evaluated in place: on the clock)", P.Actions)
        act_times.append(time.perf_counter() - t1)
        return rep.actions
      c1 = clock.elapsed
      try: return float(evaluate(task, policy, seeds.next(n), info).mean())
      finally:
        br["eval_on_clock_s"] += clock.elapsed - c1
        br["eval_s"] += time.perf_counter() - t0
        br["evaluations"] += 1

    if not fresh: evals.prestart()
    ev = evals.get(fresh)
    acct = {"wall": 0.0}
    cpu0 = ev.cpu_s()

    def over_cpu() -> None:
      used = ev.cpu_s() - cpu0
      ev.eval_cpu_max_s = max(getattr(ev, "eval_cpu_max_s", 0.0), used)
      if used > config.eval_cpu_cap_s:
        raise RunFailed("failed", f"its evaluator used {used:.1f} CPU-s in one evaluation, over the cap of {config.eval_cpu_cap_s:g} "
                                  "(an evaluation restores a snapshot and answers act(); PROTOCOL.md section 3)")

    def policy(obs: np.ndarray) -> np.ndarray:
      cap, why = min((config.act_call_cap_s, f"act() took more than {config.act_call_cap_s:g} s for one batch (the cap per call)"),
                     (config.hang_timeout_s, f"hang: no reply from act() for {config.hang_timeout_s:g} s"),
                     (config.act_eval_cap_s - acct["wall"],
                      f"act() took more than {config.act_eval_cap_s:g} s in one evaluation (the cap per evaluation)"))
      t1 = time.perf_counter()
      try: rep = ev.request(P.Act(obs=obs), cap, "act()", P.Actions)
      except TimeoutError: raise RunFailed("failed", why) from None
      dt = time.perf_counter() - t1
      act_times.append(dt)
      acct["wall"] += dt
      over_cpu()
      return rep.actions

    ev.hold(True)
    try:
      try: ev.request(P.Restore(blob=state.blob), config.hang_timeout_s, "restore()", P.Ok)
      except TimeoutError: raise RunFailed("failed", f"hang: no reply from restore() for {config.hang_timeout_s:g} s") from None
      except RunFailed as e: raise RunFailed(e.status, f"in its evaluator: {e.reason}") from None
      over_cpu()
      ret = float(evaluate(task, policy, seeds.next(n), info).mean())
      over_cpu()
      return ret
    finally:
      ev.hold(False)
      evals.pause()
      br["evaluator_cpu_s"] += max(ev.cpu_s() - cpu0, 0.0)
      br["eval_s"] += time.perf_counter() - t0
      br["evaluations"] += 1
      evals.done(ev)

  try:
    child = Child.for_agent(config, agent, scratch, cache_db)
    rec.sandbox, rec.freezer = child.sandbox.label, child.freezer
    evals = Evaluators(config, agent, task, seed, cache_db, workdir)   # their scratch never inside the trainer's
    t0 = time.perf_counter()
    child.send_ahead(P.Load(task=task.to_wire(), preload=list(agent.preload)))
    evals.regular = evals.new()                 # its start-up beside the training process's
    loaded = child.collect_load()
    evals.regular.collect_load()                # its import and construction: at its first evaluation
    evals.regular.loaded = True
    br["start_up_s"] = time.perf_counter() - t0
    rec.self_reported.update(pid=loaded.pid, tinygrad_version=loaded.tinygrad_version, tinygrad_device=loaded.tinygrad_device)

    timed(P.Import(target=agent.target), "import of the agent's module", P.Ok)
    br["import_s"] = clock.elapsed
    timed(P.Construct(seed=seed), "construction", P.Ok)
    br["construct_s"] = clock.elapsed - br["import_s"]

    def passes(steps: int) -> bool:
      """A regular evaluation; a pass counts only if a confirmation evaluation (new seeds, a fresh evaluator) agrees."""
      ret = run_eval(task.eval_episodes, fresh=False, info=(info := {}))
      rec.add_eval(clock.elapsed, steps, ret, info.get("curtailed_at"))
      if ret < task.threshold: return False
      confirm = run_eval(task.confirm_episodes, fresh=True, info=(info := {}))
      rec.confirmations.append({"t": clock.elapsed, "steps": steps, "return": confirm, **info})
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
      max_s = min(budget - clock.elapsed, PROGRESS_EVERY_S)   # a reply at least this often: steps done so far
      if every_t: max_s = min(max_s, (last_eval_t // every_t + 1) * every_t - clock.elapsed)
      # the first request returns at train()'s first yield: the clock then is the run's first update (first_update_s)
      until = 1 if br.get("first_update_s") is None else min(targets)
      rep = timed(P.Train(until_steps=until, max_s=max(max_s, 0.0)), "train()", P.Trained)
      steps = rep.counted_steps if rep.counted_steps > 0 else rep.agent_steps
      if br.get("first_update_s") is None and steps > 0: br["first_update_s"], br["first_update_steps"] = clock.elapsed, steps
      rec.steps, rec.step_source = steps, "wrapper" if rep.counted_steps > 0 else "yield"
      rec.self_reported.update(agent_steps=rep.agent_steps, counted_steps=rep.counted_steps)
      rec.agent_profile = rep.profile or None
      if clock.elapsed > budget:
        raise RunFailed("unsolved", f"time budget ({budget:g} s) ran out during train()")
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
      if evals is not None: br["evaluator_start_s"], br["evaluator_cpu_max_s"] = evals.start_s, evals.cpu_max_s()
      if child is not None:
        child._thaw_quietly()     # counts the last gap
        br["cpu_between_requests_s"] = round(child.cpu_between_requests_s, 4)
      rec.sources = hash_sources(os.path.dirname(agent.source), ROOT, skip=config.hidden_dirs)
    finally:
      try:
        try:
          if evals is not None: evals.close()
        except BaseException:       # whatever failed, no evaluator outlives its run
          for c in evals.started:
            try: c.release()
            except Exception: pass
          raise
        finally:
          if child is not None: child.close()
      finally:
        shutil.rmtree(scratch, ignore_errors=True)
        br["wall_s"] = time.perf_counter() - wall0
