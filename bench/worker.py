"""`python -m bench.worker`: this version of the project's referee running one (agent, task) on request, for another
process of the session: another version's `pytest bench/ --regress-against REF` (bench/regress.py), which starts it in
a copy of the project at REF and interleaves its runs with its own, and the slots of `pytest bench/ --workers N`
(bench/parallel.py), each pinned to its own cores. Its commands are lines on stdin, its answers one JSON line each on
stdout after a PREFIX (anything else on stdout is not an answer):

  warm-up        -> {"ok": true} | {"error": "..."}     the untimed warm-up (bench/suite.py)
  run SEED [ROLE] -> {"record": {...}}                   one timed run with a warm cache, also appended to --records
                                                        (ROLE: "timed", or "rerun" for the gate's confirmation)
  cold SEED      -> {"record": {...}}                   the cold-start run (an empty kernel cache), reported apart
  (end of input) -> exits

The wire is kept this small on purpose: a later version of the project must still be able to drive this one (a
version without `cold` answers it with an error). A Ray actor (bench/ray_slots.py) answers the same commands with
`Handler`, in its own process on a cluster's node.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys

PREFIX = "@rlspeedrun-worker "


def answer(obj: dict) -> None:
  sys.stdout.write(PREFIX + json.dumps(obj, default=float) + "\n")
  sys.stdout.flush()


def ask(proc, line: str) -> dict | None:
  """Send a command to a worker process (text pipes) and read its answer; None when the worker stopped instead."""
  try:
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    for out in proc.stdout:
      if out.startswith(PREFIX): return json.loads(out[len(PREFIX):])
  except (OSError, ValueError): pass
  return None


def agent_arg(spec) -> str:
  """The agent as `--agent` takes it again in another process: a reference or peer by name, anything else NAME=TARGET."""
  return spec.name if spec.kind in ("reference", "peer") else f"{spec.name}={spec.target}"


def referee_json(referee) -> dict:
  """A RefereeConfig as JSON-ready fields (tuples as lists), for another process's referee_fields."""
  return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(referee).items()}


def referee_fields(cfg: dict) -> dict:
  """RefereeConfig's fields from JSON (fields this version lacks are ignored; lists back to tuples)."""
  from bench.runner import RefereeConfig
  known = {f.name for f in dataclasses.fields(RefereeConfig)}
  return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items() if k in known}


def die_with_parent(sig: int = signal.SIGTERM) -> None:
  """In a process before exec: `sig` when its parent dies (Linux), so that no worker or agent outlives its referee."""
  try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))    # PR_SET_PDEATHSIG
  except (OSError, AttributeError): pass


class Handler:
  """The referee of one (agent, task) answering the commands above, in this process."""
  def __init__(self, agent: str, task: str, referee: dict, records: str | None):
    from bench.agent_api import resolve_agent
    from bench.records import RecordWriter
    from bench.runner import RefereeConfig
    from bench.suite import Suite
    from envs import get_task
    self.suite = Suite(resolve_agent(agent), get_task(task), RefereeConfig(**referee_fields(referee)),
                       RecordWriter(records) if records else None)

  def handle(self, line: str) -> dict:
    from bench.agent_api import AgentError
    cmd = line.split()
    if cmd == ["warm-up"]:
      try:
        self.suite.warm_up()
        return {"ok": True}
      except AgentError as e: return {"error": str(e)}
    if len(cmd) in (2, 3) and cmd[0] == "run" and cmd[1].isdigit(): return {"record": dataclasses.asdict(self.suite.run(int(cmd[1]), *cmd[2:]))}
    if len(cmd) == 2 and cmd[0] == "cold" and cmd[1].isdigit(): return {"record": dataclasses.asdict(self.suite.cold_start(int(cmd[1])))}
    return {"error": f"unknown command {line.strip()!r}"}

  def close(self) -> None: self.suite.close()


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m bench.worker", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--agent", required=True, help="as pytest bench/ --agent takes it")
  p.add_argument("--task", required=True)
  p.add_argument("--referee", default="{}", help="RefereeConfig fields as JSON (fields this version lacks are ignored)")
  p.add_argument("--records", required=True, help="runs.jsonl to append this side's records to")
  args = p.parse_args(argv)
  import bench
  from bench.agent_api import AgentError
  here = os.path.dirname(os.path.dirname(os.path.abspath(bench.__file__)))
  if os.path.realpath(here) != os.path.realpath(os.getcwd()):     # else the baseline would silently be the other version
    answer({"error": f"this worker imported the project from {here}, not from {os.getcwd()} (put it first on PYTHONPATH)"})
    return 2
  try: handler = Handler(args.agent, args.task, json.loads(args.referee), args.records)
  except (AgentError, KeyError) as e:
    answer({"error": str(e).strip('"')})
    return 2
  def stop(signum, frame): raise SystemExit(128 + signum)    # the session's process died: end the run, kill its agent
  signal.signal(signal.SIGTERM, stop)
  try:
    for line in sys.stdin:
      if line.strip(): answer(handler.handle(line))
  finally:
    handler.close()
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
