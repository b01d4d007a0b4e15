"""CPU time of the agent's whole process tree, read by the referee from /proc.

A process's user + system time (all its threads), plus the time of the children it has reaped
(cutime, cstime), summed over the process and all its descendants: an exited child's time moves into
its parent's, so it is still counted. psutil finds the tree; the numbers are read from each process's
/proc/<pid>/stat through a file descriptor kept open (a few microseconds a process), because the referee
reads them around every act() call. Inside the sandbox the tree is closed (an orphan is adopted by the
namespace's init, which is in the tree); without it an orphan re-parented to the machine's init leaves the
tree, and its time with it (PROTOCOL.md 12).
"""
from __future__ import annotations

import os
import time

import psutil

TICK = os.sysconf("SC_CLK_TCK")


class TreeCPU:
  def __init__(self, pid: int):
    self.root = psutil.Process(pid)
    self.fds: dict[int, int] = {}
    self.last = 0.0            # the last reading (read() never goes below it)
    self._open(pid)

  def _open(self, pid: int) -> None:
    try: self.fds[pid] = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except OSError: pass

  def scan(self) -> float:
    """Find the tree's new processes (a /proc walk: milliseconds), then read()."""
    try: kids = self.root.children(recursive=True)
    except psutil.Error: kids = []
    for p in kids:
      if p.pid not in self.fds: self._open(p.pid)
    return self.read()

  def read(self) -> float:
    """CPU seconds of the processes found so far (those that exited: in their parents' numbers). Never less than the
    last reading: a process found earlier that is gone and was not reaped into one found (a child of a process that
    ignores SIGCHLD is reaped by no one) takes its time with it, which would make a later difference negative."""
    ticks = 0
    for pid, fd in list(self.fds.items()):
      try: fields = os.pread(fd, 4096, 0).rsplit(b")", 1)[1].split()
      except OSError:                 # gone (reaped): its time is in its parent's cutime/cstime now
        os.close(self.fds.pop(pid))
        continue
      ticks += sum(int(x) for x in fields[11:15])   # utime, stime, cutime, cstime
    self.last = max(self.last, ticks / TICK)
    return self.last

  def sched(self) -> tuple[float, float]:
    """(on-CPU seconds, run-queue wait seconds) of the threads of the processes found so far, from the kernel's
    /proc/<pid>/task/<tid>/schedstat: the wait is time a thread was ready to run and no core was free for it, the
    direct measure of a shared machine (threads that have exited are not in it)."""
    run = wait = 0
    for pid in list(self.fds):
      try: tids = os.listdir(f"/proc/{pid}/task")
      except OSError: continue
      for tid in tids:
        try:
          with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f: a = f.read().split()
          run, wait = run + int(a[0]), wait + int(a[1])
        except (OSError, ValueError, IndexError): pass
    return run / 1e9, wait / 1e9

  def snapshot(self) -> list[psutil.Process]:
    """The tree's processes now (psutil keeps them identified after they are re-parented)."""
    try: return [self.root, *self.root.children(recursive=True)]
    except psutil.Error: return [self.root]

  def kill_all(self, seen: list[psutil.Process] = (), timeout: float = 5.0) -> None:
    """SIGKILL every process of the tree that is still there, and those `seen` earlier that left it, and wait (up to
    `timeout` s) until each has died: a signal is delivered asynchronously, so a killed process can still run, and be
    seen, for a moment after kill() returns (a zombie has died: its parent reaps it)."""
    procs = list(reversed([*seen, *self.snapshot()]))
    for p in procs:
      try: p.kill()
      except psutil.Error: pass
    deadline = time.monotonic() + timeout
    while procs and time.monotonic() < deadline:
      procs = [p for p in procs if alive(p)]
      if procs: time.sleep(0.005)

  def close(self) -> None:
    for fd in self.fds.values(): os.close(fd)
    self.fds.clear()


def alive(p: psutil.Process) -> bool:
  """Whether the process is still running (not ended, not a zombie: a zombie has died and waits to be reaped)."""
  try: return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
  except psutil.Error: return False

