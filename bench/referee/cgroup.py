"""The agent's process tree as a control group: frozen whenever the referee is not waiting on a request of its (so no
thread, child or queue of it works off the clock), its CPU time counted over the whole tree (exited processes
included), its memory and process count limited. PROTOCOL.md section 12.

A group is made beside the referee's own in each cgroup-v1 hierarchy it needs (freezer, cpuacct, memory, pids), or in
the unified (v2) hierarchy where there is no v1 freezer. The agent's first process enters it before it executes
anything (Popen's preexec_fn), so everything it starts is in it: a process cannot leave a cgroup it has no write
access to, and the agent runs without capability as its own uid. The freezer stops every task of the group at once
(the kernel's, not signals: a frozen task cannot catch, block or observe it) and `freeze()` returns only when all are
frozen. Where no group can be made (the referee is not root, no freezer is mounted) `SignalGroup` stops the tree with
SIGSTOP, which a process in the tree can observe but not prevent (its children it started since are found by psutil);
every record says which (`freezer`).

Groups are named `rlspeedrun-<role>-<referee pid>-<random>`: one left by a referee that died (SIGKILL) is removed,
its tasks killed, by the next referee (`reap_orphans`).
"""
from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time

import psutil

V1 = "/sys/fs/cgroup"
V2 = "/sys/fs/cgroup/unified" if os.path.exists("/sys/fs/cgroup/unified/cgroup.controllers") else "/sys/fs/cgroup"
CONTROLLERS = ("freezer", "cpuacct", "memory", "pids")
NAME = re.compile(r"rlspeedrun-\w+-(\d+)-[0-9a-f]+$")
FREEZE_TIMEOUT_S = 10.0
_REAPED = False        # this process has removed the groups of dead referees (once, at its first group)


def _own_paths() -> dict[str, str]:
  """{controller or '' (v2): the referee's own cgroup path} from /proc/self/cgroup."""
  out = {}
  with open("/proc/self/cgroup") as f:
    for line in f:
      _, ctrls, path = line.rstrip("\n").split(":", 2)
      for c in ctrls.split(",") if ctrls else [""]: out[c] = path
  return out


def _write(path: str, value: str) -> None:
  with open(path, "w") as f: f.write(value)


def _read(path: str) -> str:
  with open(path) as f: return f.read()


# The group's watcher: a small process of the referee's (not in the group) that waits for the end of a pipe only the
# referee holds, then kills what is left in the group and removes it. A referee that dies (SIGKILL) with its agent frozen
# would leave it frozen for good: a v1-frozen task does not act on the SIGKILL its parent's death sends it until thawed.
WATCH = """
import os, sys, time
sys.stdin.buffer.read()
for _ in range(250):
  pids = set()
  for d in sys.argv[1:]:
    try: pids |= {int(p) for p in open(d + '/cgroup.procs').read().split()}
    except (OSError, ValueError): pass
  if not pids: break
  for p in pids:
    try: os.kill(p, 9)
    except OSError: pass
  for d in sys.argv[1:]:
    for f, v in (('/freezer.state', 'THAWED'), ('/cgroup.freeze', '0')):
      try: open(d + f, 'w').write(v)
      except OSError: pass
  time.sleep(0.02)
for d in sys.argv[1:]:
  try: os.rmdir(d)
  except OSError: pass
"""


class Group:
  """One agent process tree's cgroup (v1: one directory per controller; v2: one directory)."""
  kind = "cgroup"

  def __init__(self, dirs: dict[str, str], v2: bool):
    self.dirs, self.v2 = dirs, v2
    self.label = "cgroup v2 freezer" if v2 else "cgroup v1 freezer"
    self.watcher: subprocess.Popen | None = None

  def watch(self) -> None:
    """Start the group's watcher (above), which cleans up after a referee that died."""
    self.watcher = subprocess.Popen([sys.executable, "-S", "-c", WATCH, *self.dirs.values()], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

  @classmethod
  def make(cls, role: str, memory_bytes: int | None = None, max_pids: int | None = None) -> Group | None:
    """A new group for an agent process of `role`, or None where none can be made here (not root, no freezer)."""
    if os.geteuid() != 0: return None
    global _REAPED
    if not _REAPED: _REAPED = bool(reap_orphans()) or True
    name, own = f"rlspeedrun-{role}-{os.getpid()}-{secrets.token_hex(4)}", _own_paths()
    made: dict[str, str] = {}
    try:
      if "freezer" in own and os.path.isdir(f"{V1}/freezer"):
        for c in CONTROLLERS:
          if c not in own or not os.path.isdir(f"{V1}/{c}"): continue
          d = os.path.join(f"{V1}/{c}{own[c]}", name)
          os.mkdir(d)
          made[c] = d
        g = cls(made, v2=False)
        if memory_bytes and "memory" in made: _write(f"{made['memory']}/memory.limit_in_bytes", str(memory_bytes))
        if max_pids and "pids" in made: _write(f"{made['pids']}/pids.max", str(max_pids))
        g.watch()
        return g
      if "" in own and os.path.exists(f"{V2}/cgroup.controllers"):
        d = os.path.join(f"{V2}{own['']}", name)
        os.mkdir(d)
        made[""] = d
        if not os.path.exists(f"{d}/cgroup.freeze"): raise OSError("no cgroup.freeze in the unified hierarchy")
        g = cls(made, v2=True)
        if memory_bytes and os.path.exists(f"{d}/memory.max"): _write(f"{d}/memory.max", str(memory_bytes))
        if max_pids and os.path.exists(f"{d}/pids.max"): _write(f"{d}/pids.max", str(max_pids))
        g.watch()
        return g
    except OSError:
      for d in made.values():
        try: os.rmdir(d)
        except OSError: pass
    return None

  def enter(self) -> None:
    """Move the calling process into the group (in the agent's process between fork and exec)."""
    for d in self.dirs.values(): _write(f"{d}/cgroup.procs", "0")

  def pids(self) -> list[int]:
    d = self.dirs.get("freezer") or self.dirs.get("")
    try: return [int(p) for p in _read(f"{d}/cgroup.procs").split()]
    except OSError: return []

  def freeze(self) -> None:
    """Stop every task of the group; returns when the kernel says all are frozen."""
    self._set(True)

  def thaw(self) -> None:
    self._set(False)

  def frozen(self) -> bool:
    if self.v2: return "frozen 1" in _read(f"{self.dirs['']}/cgroup.events")
    return _read(f"{self.dirs['freezer']}/freezer.state").strip() == "FROZEN"

  def _set(self, frozen: bool) -> None:
    if self.v2: _write(f"{self.dirs['']}/cgroup.freeze", "1" if frozen else "0")
    else: _write(f"{self.dirs['freezer']}/freezer.state", "FROZEN" if frozen else "THAWED")
    deadline = time.monotonic() + FREEZE_TIMEOUT_S
    while self.frozen() != frozen:
      if time.monotonic() > deadline: raise TimeoutError(f"the agent's group did not {'freeze' if frozen else 'thaw'} within {FREEZE_TIMEOUT_S:g} s")
      if self.v2: _write(f"{self.dirs['']}/cgroup.freeze", "1" if frozen else "0")
      else: _write(f"{self.dirs['freezer']}/freezer.state", "FROZEN" if frozen else "THAWED")
      time.sleep(0.0002)

  def cpu_s(self) -> float:
    """CPU seconds used by every task that was ever in the group (those that exited included)."""
    try:
      if self.v2: return int(re.search(r"usage_usec (\d+)", _read(f"{self.dirs['']}/cpu.stat")).group(1)) / 1e6
      return int(_read(f"{self.dirs['cpuacct']}/cpuacct.usage")) / 1e9
    except (OSError, KeyError, AttributeError, ValueError): return 0.0

  def kill(self) -> None:
    """SIGKILL every task of the group (thawed after, so that they die), until none is left (up to 5 s)."""
    deadline = time.monotonic() + 5.0
    while (pids := self.pids()) and time.monotonic() < deadline:
      for p in pids:
        try: os.kill(p, signal.SIGKILL)
        except ProcessLookupError: pass
      try: self._set(False)
      except (OSError, TimeoutError): pass
      time.sleep(0.002)

  def remove(self) -> None:
    self.kill()
    for d in self.dirs.values():
      for _ in range(50):
        try: os.rmdir(d); break
        except FileNotFoundError: break
        except OSError: time.sleep(0.01)
    if self.watcher is not None:
      self.watcher.stdin.close()      # nothing left for it to do: it finds the group gone and exits
      try: self.watcher.wait(timeout=2)
      except subprocess.TimeoutExpired: self.watcher.kill()
      self.watcher = None


class SignalGroup:
  """The fallback where no cgroup can be made: SIGSTOP / SIGCONT to every process of the tree (psutil)."""
  kind = "signals"
  label = "SIGSTOP"

  def __init__(self, pid: int):
    self.root = psutil.Process(pid)
    self.stopped: list[psutil.Process] = []

  def _tree(self) -> list[psutil.Process]:
    try: return [self.root, *self.root.children(recursive=True)]
    except psutil.Error: return [self.root]

  def freeze(self) -> None:
    seen: set[int] = set()
    for _ in range(3):         # a process may start a child between the walk and its stop: walk again until none is new
      new = [p for p in self._tree() if p.pid not in seen]
      if not new: break
      for p in new:
        seen.add(p.pid)
        try: p.suspend(); self.stopped.append(p)
        except psutil.Error: pass

  def thaw(self) -> None:
    for p in self.stopped:
      try: p.resume()
      except psutil.Error: pass
    self.stopped = []

  def cpu_s(self) -> float:
    return 0.0

  def remove(self) -> None:
    self.thaw()


def reap_orphans() -> list[str]:
  """Remove the groups of referees that are gone (killed with their agents frozen in them); the paths removed."""
  if os.geteuid() != 0: return []
  own, gone = _own_paths(), []
  roots = [f"{V1}/{c}{own[c]}" for c in CONTROLLERS if c in own and os.path.isdir(f"{V1}/{c}")]
  if "" in own: roots.append(f"{V2}{own['']}")
  for root in roots:
    try: names = os.listdir(root)
    except OSError: continue
    for n in names:
      if not (m := NAME.match(n)) or psutil.pid_exists(int(m.group(1))): continue
      d = os.path.join(root, n)
      g = Group({"freezer" if "/freezer" in root else os.path.basename(root): d}, v2=root.startswith(V2) and V2 != V1)
      if "/freezer" in root or g.v2: g.kill()
      else:
        for p in g.pids():
          try: os.kill(p, signal.SIGKILL)
          except ProcessLookupError: pass
      try: os.rmdir(d); gone.append(d)
      except OSError: pass
  return gone
