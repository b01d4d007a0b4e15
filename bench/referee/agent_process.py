"""The referee's handle on one agent's process (AgentProcess): started in its sandbox and its own cgroup with the
limits every process of it inherits, spoken to over the typed wire with a deadline per request, frozen whenever no
request of it is being answered, and killed whole at the end. The process itself runs bench/referee/agent_host.py."""
from __future__ import annotations

import dataclasses
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from bench import ROOT
from bench.referee import protocol as P
from bench.referee.accounting import TreeCPU
from bench.referee.agent_api import AgentSpec
from bench.referee.cgroup import Group, SignalGroup
from bench.referee.config import RefereeConfig
from bench.referee.procs import die_with_parent, how_it_ended, output_tail
from bench.referee.sandbox import agent_environ, probe


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


class AgentProcess:
  """An agent's process (in its sandbox and its own cgroup) and the wire to it: the training process, or an evaluator
  (`role`). Replies are waited for with a deadline, read with a size limit and checked against the type the request
  expects. The process tree is frozen whenever no request of it is being answered (bench/referee/cgroup.py): `request` thaws
  it, waits for the reply, freezes it again; `hold()` keeps it thawed across several requests (an evaluation)."""
  def __init__(self, config: RefereeConfig, scratch: str, cache_db: str | None, readable: list[str] = (), role: str = "trainer"):
    self.config, self.sandbox, self.cache_db, self.role = config, probe(config.sandbox), cache_db, role
    self.scratch, self.loaded, self.ready, self.released = scratch, False, False, False   # an evaluator's (run.py Evaluators)
    self.eval_cpu_max_s = 0.0             # the most CPU-s one evaluation took in it
    ours, theirs = socket.socketpair()
    env = agent_environ({**config.extra_env, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
                         "HOME": scratch, "TMPDIR": scratch, "USER": "agent", "LOGNAME": "agent", "PYTHONDONTWRITEBYTECODE": "1",
                         "BEAM_MAX_TASKS_PER_CHILD": os.environ.get("BEAM_MAX_TASKS_PER_CHILD", "1000000")})  # compile workers kept (agent_host.py)
    if config.device: env["DEV"] = config.device
    if cache_db: env["CACHEDB"] = cache_db
    if self.sandbox.kind != "none": env["RLSPEEDRUN_SANDBOX"] = self.sandbox.kind
    owned = [os.path.dirname(cache_db), cache_db] if cache_db else []
    self.uid = self.sandbox.uid(config.placement.get("slot") or 0)
    self.sandbox.give(scratch, *[p for p in owned if os.path.exists(p)], uid=self.uid)
    gb = config.memory_limit_gb
    self.group = Group.make(role, int(gb * 2**30) if gb else None, config.max_processes)
    fds = [theirs.fileno()]
    argv = self.sandbox.wrap([sys.executable, "-m", "bench.referee.agent_host", str(theirs.fileno())], scratch=scratch,
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
  def for_agent(cls, config: RefereeConfig, agent: AgentSpec, scratch: str, cache_db: str | None = None, role: str = "trainer") -> AgentProcess:
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
    except subprocess.TimeoutExpired: return how_it_ended(None)
    if 128 < code < 128 + signal.NSIG and self.sandbox.kind == "bwrap": code = 128 - code    # 128+N: killed by signal N
    return how_it_ended(code)

  def _thaw_quietly(self) -> None:
    try: self._thaw()
    except (OSError, TimeoutError): pass

  def _log_tail(self) -> str: return output_tail(self.log)

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
