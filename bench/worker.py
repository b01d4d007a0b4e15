"""`python -m bench.worker`: this version of the project's referee running one (agent, task) on request, for another
version's `pytest bench/ --regress-against REF` (bench/regress.py), which starts it in a copy of the project at REF and
interleaves its runs with its own. Its commands are lines on stdin, its answers one JSON line each on stdout after a
PREFIX (anything else on stdout is not an answer):

  warm-up        -> {"ok": true} | {"error": "..."}     the untimed warm-up (bench/suite.py)
  run SEED [ROLE] -> {"record": {...}}                   one timed run with a warm cache, also appended to --records
                                                        (ROLE: "timed", or "rerun" for the gate's confirmation)
  (end of input) -> exits

The wire is kept this small on purpose: a later version of the project must still be able to drive this one.
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


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m bench.worker", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--agent", required=True, help="as pytest bench/ --agent takes it")
  p.add_argument("--task", required=True)
  p.add_argument("--referee", default="{}", help="RefereeConfig fields as JSON (fields this version lacks are ignored)")
  p.add_argument("--records", required=True, help="runs.jsonl to append this side's records to")
  args = p.parse_args(argv)
  import bench
  from bench.agent_api import AgentError, resolve_agent
  from bench.records import RecordWriter
  from bench.runner import RefereeConfig
  from bench.suite import Suite
  from envs import get_task
  here = os.path.dirname(os.path.dirname(os.path.abspath(bench.__file__)))
  if os.path.realpath(here) != os.path.realpath(os.getcwd()):     # else the baseline would silently be the other version
    answer({"error": f"this worker imported the project from {here}, not from {os.getcwd()} (put it first on PYTHONPATH)"})
    return 2
  known = {f.name for f in dataclasses.fields(RefereeConfig)}
  fields = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(args.referee).items() if k in known}
  try: spec, task = resolve_agent(args.agent), get_task(args.task)
  except (AgentError, KeyError) as e:
    answer({"error": str(e).strip('"')})
    return 2
  def stop(signum, frame): raise SystemExit(128 + signum)    # the session's process died: end the run, kill its agent
  signal.signal(signal.SIGTERM, stop)
  suite = Suite(spec, task, RefereeConfig(**fields), RecordWriter(args.records))
  try:
    for line in sys.stdin:
      cmd = line.split()
      if not cmd: continue
      if cmd[0] == "warm-up":
        try:
          suite.warm_up()
          answer({"ok": True})
        except AgentError as e: answer({"error": str(e)})
      elif cmd[0] == "run" and len(cmd) in (2, 3): answer({"record": dataclasses.asdict(suite.run(int(cmd[1]), *cmd[2:]))})
      else: answer({"error": f"unknown command {line.strip()!r}"})
  finally:
    suite.close()
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
