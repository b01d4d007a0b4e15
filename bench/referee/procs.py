"""Process rules shared by the referee and the processes that drive it: no child outlives its parent, how a process
ended said in words, the end of its output."""
from __future__ import annotations

import os
import signal

from bench.referee.protocol import printable


def die_with_parent(sig: int = signal.SIGTERM) -> None:
  """In a process before exec: `sig` when its parent dies (Linux), so that no worker or agent outlives its referee."""
  try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))    # PR_SET_PDEATHSIG
  except (OSError, AttributeError): pass


def how_it_ended(code: int | None) -> str:
  """A return code (negative: killed by that signal; None: still running) in words."""
  if code is None: return "still running"
  if code >= 0: return f"exit code {code}"
  try: return f"killed by signal {signal.Signals(-code).name}"
  except ValueError: return f"killed by signal {-code}"


def output_tail(log, n: int = 2000) -> str:
  """'; its output ended with:\\n...' from the last `n` bytes of a process's log file (control characters made
  printable), or '' when it wrote nothing."""
  log.seek(0, os.SEEK_END)
  log.seek(max(log.tell() - n, 0))
  tail = printable(log.read().decode(errors="replace"), keep="\n").strip()
  return f"; its output ended with:\n{tail}" if tail else ""
