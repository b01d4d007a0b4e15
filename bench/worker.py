"""`python -m bench.worker`: this version of the project's referee running one (agent, task) on request, for another
process of the session: another version's `pytest bench/ --regress-against REF` (bench/regress.py), which starts it in
a copy of the project at REF and interleaves its runs with its own, and the slots of `pytest bench/ --workers N`
(bench/parallel.py), each pinned to its own cores. Its commands are lines on stdin, its answers one JSON line each on
stdout after a PREFIX (anything else on stdout is not an answer):

  warm-up        -> {"ok": true} | {"error": "..."}     the untimed warm-up (bench/referee/pair.py)
  run SEED [ROLE] -> {"record": {...}}                   one timed run with a warm cache, also appended to --records
                                                        (ROLE: "timed", or "rerun" for the gate's confirmation)
  cold SEED      -> {"record": {...}}                   the cold-start run (an empty kernel cache), reported apart
  (end of input) -> exits

The wire is kept this small on purpose: a later version of the project must still be able to drive this one (a
version without `cold` answers it with an error). A Ray actor (bench/ray_slots.py) answers the same commands with
`WorkerServer`, in its own process on a cluster's node.
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


class WorkerServer:
  """The referee of one (agent, task) answering the commands above, in this process (the client's side:
  bench/worker_client.py)."""
  def __init__(self, agent: str, task: str, referee: dict, records: str | None):
    from bench.referee.agent_api import resolve_agent
    from bench.referee.config import RefereeConfig
    from bench.referee.pair import Pair
    from bench.referee.records import RecordWriter
    from envs import get_task
    self.pair = Pair(resolve_agent(agent), get_task(task), RefereeConfig.from_json(referee), RecordWriter(records) if records else None)

  def handle(self, line: str) -> dict:
    from bench.referee.agent_api import AgentError
    cmd = line.split()
    if cmd == ["warm-up"]:
      try:
        self.pair.warm_up()
        return {"ok": True}
      except AgentError as e: return {"error": str(e)}
    if len(cmd) in (2, 3) and cmd[0] == "run" and cmd[1].isdigit(): return {"record": dataclasses.asdict(self.pair.run(int(cmd[1]), *cmd[2:]))}
    if len(cmd) == 2 and cmd[0] == "cold" and cmd[1].isdigit(): return {"record": dataclasses.asdict(self.pair.cold_start(int(cmd[1])))}
    return {"error": f"unknown command {line.strip()!r}"}

  def close(self) -> None: self.pair.close()


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m bench.worker", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--agent", required=True, help="as pytest bench/ --agent takes it")
  p.add_argument("--task", required=True)
  p.add_argument("--referee", default="{}", help="RefereeConfig fields as JSON (fields this version lacks are ignored)")
  p.add_argument("--records", required=True, help="runs.jsonl to append this side's records to")
  args = p.parse_args(argv)
  from bench import ROOT as here
  from bench.referee.agent_api import AgentError
  if os.path.realpath(here) != os.path.realpath(os.getcwd()):     # else the baseline would silently be the other version
    answer({"error": f"this worker imported the project from {here}, not from {os.getcwd()} (put it first on PYTHONPATH)"})
    return 2
  try: server = WorkerServer(args.agent, args.task, json.loads(args.referee), args.records)
  except (AgentError, KeyError) as e:
    answer({"error": str(e).strip('"')})
    return 2
  def stop(signum, frame): raise SystemExit(128 + signum)    # the session's process died: end the run, kill its agent
  signal.signal(signal.SIGTERM, stop)
  try:
    for line in sys.stdin:
      if line.strip(): answer(server.handle(line))
  finally:
    server.close()
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
