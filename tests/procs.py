"""Reading other processes in tests: any of them may end, or be a zombie, while it is read (psutil then raises)."""
from __future__ import annotations

import psutil

from bench.referee.accounting import alive

__all__ = ["alive", "cmdline", "tree", "agents"]


def cmdline(p: psutil.Process) -> str:
  """The process's command line, or "" once it has ended or is a zombie."""
  try: return " ".join(p.cmdline())
  except psutil.Error: return ""


def tree(pid: int) -> list[psutil.Process]:
  """The processes below `pid` ([] once it has ended)."""
  try: return psutil.Process(pid).children(recursive=True)
  except psutil.Error: return []


def agents(procs) -> list[psutil.Process]:
  """The agent processes (bench/referee/agent_host.py) among `procs` that are running."""
  return [p for p in procs if "bench.referee.agent_host" in cmdline(p) and alive(p)]
