"""What the sandbox adds to each run's wall time: the agent process's start-up (spawn, library imports, device
open, up to its first reply) and its shutdown, with and without bubblewrap, alternating, N times each.

    .venv/bin/python scripts/sandbox_overhead.py --reps 10

(The time-to-threshold side of the overhead is measured through the referee: `pytest bench/ --task CartPole-v1
--agent ppo --seeds 10 --no-cold-start --sandbox none` against the same with `--sandbox bwrap`.)"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from bench.referee import protocol as P
from bench.referee.agent_process import AgentProcess
from bench.referee.config import RefereeConfig
from envs import get_task


def start_and_stop(sandbox: str) -> tuple[float, float]:
  with tempfile.TemporaryDirectory() as scratch:
    t0 = time.perf_counter()
    child = AgentProcess(RefereeConfig(device="CPU", sandbox=sandbox), scratch, None)
    child.request(P.Load(task=get_task("CartPole-v1").to_wire(), preload=[]), 120, "start-up", P.Loaded)
    t1 = time.perf_counter()
    child.close()
    return t1 - t0, time.perf_counter() - t1


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--reps", type=int, default=10)
  args = p.parse_args(argv)
  times: dict[str, list[tuple[float, float]]] = {"none": [], "bwrap": []}
  start_and_stop("none")            # warm the page cache once
  for _ in range(args.reps):
    for mode in times: times[mode].append(start_and_stop(mode))
  for mode, ts in times.items():
    up, down = zip(*ts)
    print(f"sandbox {mode:5s}: start-up median {statistics.median(up):.3f} s (min {min(up):.3f}, max {max(up):.3f}), "
          f"shutdown median {statistics.median(down):.3f} s, {len(ts)} runs")
  d = statistics.median(u for u, _ in times["bwrap"]) - statistics.median(u for u, _ in times["none"])
  print(f"bwrap adds {d * 1e3:.0f} ms of start-up per run (medians)")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
