"""The agent's process. It imports libraries and the agent's module, then obeys the referee's
commands over a pipe. It has no clock the referee trusts and no evaluation seeds.

Commands (tuple, first item is the verb) and replies:
  ("load", target, task)             -> ("loaded", info)           untimed (task: envs.Task)
  ("construct", seed)                -> ("ok",)                    timed: Agent(task, seed)
  ("train", until_steps, max_s)      -> ("trained", steps, info)   timed: advance train() until
                                         the counted steps reach until_steps or max_s pass locally
                                      or ("finished", steps, info) when train() returned
  ("act", obs)                       -> ("actions", actions)       untimed (evaluation)
  any failure                        -> ("error", phase, message, traceback)
"""
from __future__ import annotations

import math
import os
import sys
import time
import traceback
from multiprocessing.connection import Connection


def _preload() -> dict:
  """Library imports and device start-up: process start-up, not agent time."""
  import numpy  # noqa: F401
  import gymnasium  # noqa: F401
  info = {"pid": os.getpid()}
  try:
    import tinygrad
    from tinygrad import Device
    Device[Device.DEFAULT]
    info.update(tinygrad_version=getattr(tinygrad, "__version__", None) or _dist_version("tinygrad"),
                tinygrad_device=Device.DEFAULT)
  except ImportError:
    info.update(tinygrad_version=None, tinygrad_device=None)
  return info


def _dist_version(name: str) -> str | None:
  from importlib.metadata import PackageNotFoundError, version
  try: return version(name)
  except PackageNotFoundError: return None


def serve(conn: Connection) -> None:
  import numpy as np
  from bench.agent_api import AgentError, load_agent_class
  from envs.counting import STEPS
  info = _preload()
  agent, gen, task, agent_steps, phase = None, None, None, 0, "load"

  def report() -> dict:
    nonlocal agent_steps
    prof = getattr(agent, "profile", None)
    return {"agent_steps": agent_steps, "counted_steps": STEPS.count,
            "profile": {k: float(v) for k, v in prof.items()} if isinstance(prof, dict) else None}

  def steps() -> int: return STEPS.count if STEPS.count > 0 else agent_steps

  while True:
    try: msg = conn.recv()
    except EOFError: return
    verb, args = msg[0], msg[1:]
    phase = verb
    try:
      if verb == "load":
        target, task = args
        t0 = time.perf_counter()
        cls = load_agent_class(target)
        info["import_s"] = time.perf_counter() - t0
        conn.send(("loaded", info))
      elif verb == "construct":
        agent = cls(task, args[0])
        conn.send(("ok",))
      elif verb == "train":
        until_steps, max_s = args
        if gen is None:
          gen = agent.train()
          if not hasattr(gen, "__next__"): raise AgentError("train() must return a generator (use `yield steps`)")
        t0 = time.perf_counter()
        while True:
          try: y = next(gen)
          except StopIteration:
            conn.send(("finished", steps(), report()))
            break
          try: y_ok = float(y) == int(y) and int(y) >= agent_steps
          except (TypeError, ValueError, OverflowError): y_ok = False
          if not y_ok:
            bad = "a non-finite" if isinstance(y, float) and not math.isfinite(y) else "an invalid"
            raise AgentError(f"train() yielded {bad} step count {y!r}: yield the cumulative env steps (a non-decreasing int)")
          agent_steps = int(y)
          if steps() >= until_steps or time.perf_counter() - t0 >= max_s:
            conn.send(("trained", steps(), report()))
            break
      elif verb == "act":
        conn.send(("actions", np.asarray(agent.act(args[0]))))
      elif verb == "close":
        return
      else:
        raise RuntimeError(f"unknown command {verb!r}")
    except BaseException as e:  # report everything, then die: the referee records the reason
      kind = "interface" if isinstance(e, AgentError) else "exception"
      try: conn.send(("error", phase, kind, f"{type(e).__name__}: {e}", traceback.format_exc(limit=20)))
      except Exception: pass
      return


def _die_with_the_referee() -> None:
  """Linux: SIGKILL this process when the referee's process dies (killed, crashed), instead of training on
  alone; the other direction (this process dying) the referee sees on the pipe."""
  if not sys.platform.startswith("linux"): return
  import ctypes
  import signal
  ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
  if os.getppid() == 1: os._exit(1)                             # the referee died before prctl


def main() -> None:
  _die_with_the_referee()
  fd = int(sys.argv[1])
  conn = Connection(fd)
  try: serve(conn)
  finally: conn.close()


if __name__ == "__main__":
  main()
