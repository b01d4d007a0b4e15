"""The client side of `python -m bench.worker` (bench/worker.py): one worker process in a version's directory, spoken to
in lines. The slots of `--workers` (bench/parallel.py) and both sides of the interleaved gate (bench/regress.py) use it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from bench.referee.procs import how_it_ended, output_tail
from bench.worker import PREFIX


class WorkerDied(Exception):
  """The worker process stopped instead of answering; the message says how and what it wrote last."""


def agent_arg(spec) -> str:
  """The agent as `--agent` takes it again in another process: a reference or peer by name, anything else NAME=TARGET."""
  return spec.name if spec.kind in ("reference", "peer") else f"{spec.name}={spec.target}"


class WorkerClient:
  """`python -m bench.worker` for one (agent, task), started in `root` (that version's project on PYTHONPATH first) with
  the session's referee settings (`referee`: RefereeConfig.to_json fields); `before_exec` runs in it before exec (pin it
  to cores, die with its parent). `name` says whose worker it is in errors."""
  def __init__(self, root: str, agent, task, referee: dict, records: str, *, name: str, before_exec=None,
               env: dict[str, str] | None = None, new_session: bool = False):
    self.name, self.log = name, tempfile.TemporaryFile()
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    self.proc = subprocess.Popen([sys.executable, "-m", "bench.worker", "--agent", agent_arg(agent), "--task", task.name,
                                  "--referee", json.dumps(referee), "--records", records], cwd=root, env=env, text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, preexec_fn=before_exec,
                                 start_new_session=new_session)

  def call(self, line: str) -> dict:
    """Send one command and read its answer, or WorkerDied."""
    try:
      self.proc.stdin.write(line + "\n")
      self.proc.stdin.flush()
      for out in self.proc.stdout:
        if out.startswith(PREFIX): return json.loads(out[len(PREFIX):])
    except (OSError, ValueError): pass
    try: code = self.proc.wait(timeout=10)
    except subprocess.TimeoutExpired: code = None
    raise WorkerDied(f"{self.name} (pid {self.proc.pid}) stopped during {line!r} ({how_it_ended(code)}){output_tail(self.log)}")

  def close(self, timeout: float = 60.0, terminate: bool = False) -> None:
    """End of input, or SIGTERM (`terminate`: now, mid-run); either way the worker ends its run, kills its agent and exits,
    or is killed if it has not within `timeout`."""
    if self.proc.poll() is None:
      try: self.proc.terminate() if terminate else self.proc.stdin.close()
      except OSError: pass
      try: self.proc.wait(timeout=timeout)
      except subprocess.TimeoutExpired: self.proc.kill()
    self.proc.wait()
    self.log.close()
