"""A peer run plainly, without the referee: what its own user would write, to check that the adapters cost it nothing.

One fresh process per seed; the library is imported before the clock starts (as the referee preloads it), the
clock counts construction and training and pauses for evaluation; every `eval_every_steps` env steps (the first
update boundary at or past each multiple, as the referee evaluates) the greedy policy plays `eval_episodes`
episodes (seeds 10**6 + k, in this process, no sandbox, no confirmation) and the run ends at the first mean return
at or over the threshold. Printed: one JSON line per seed.

    python -m bench.peers.plain sb3-ppo --task CartPole-v1 --seeds 5 [--torch-threads 1]

`python -m bench.peers.overhead` runs this beside the referee's run of the same peer, interleaved, and compares.
"""
from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time


def run(peer: str, task_name: str, seed: int, torch_threads: int | None) -> dict:
  """One seed of `peer` (a name in bench.peers.PEER_AGENTS) on `task_name`, in this process."""
  from bench.peers import PEER_AGENTS, PEER_PRELOAD, preload
  from envs import get_task
  task = get_task(task_name)
  for m in PEER_PRELOAD.get(peer, ()): preload(m, task)   # as the referee's start-up: imports, a peer's build for the task
  module, cls = PEER_AGENTS[peer].split(":")
  Agent = getattr(importlib.import_module(module), cls)
  if torch_threads is not None: Agent.torch_threads = torch_threads
  state = {"train_s": 0.0, "t0": time.perf_counter(), "next": task.eval_every_steps}
  evals: list[tuple[float, int, float]] = []

  def on_update(steps: int) -> bool:
    """Between updates: evaluate (clock paused) when due; True stops training."""
    if steps < state["next"]: return False
    state["train_s"] += time.perf_counter() - state["t0"]
    ret = float(task.run_episodes(agent.act, [10**6 + k for k in range(task.eval_episodes)]).mean())
    evals.append((round(state["train_s"], 3), steps, ret))
    state["next"] = (steps // task.eval_every_steps + 1) * task.eval_every_steps
    state["t0"] = time.perf_counter()
    return ret >= task.threshold or state["train_s"] > task.time_budget_s

  agent = Agent(task, seed)
  agent.learn_plainly(on_update)
  solved = bool(evals) and evals[-1][2] >= task.threshold
  return {"peer": peer, "task": task_name, "seed": seed, "solved": solved, "time_s": evals[-1][0] if evals else None,
          "steps": evals[-1][1] if evals else 0,
          "torch_threads": getattr(agent, "profile", {}).get("torch_threads"), "evals": evals}


def run_fresh(peer: str, task_name: str, seed: int, torch_threads: int | None = None) -> dict:
  """`run` in a fresh Python process (as the referee starts one per run)."""
  argv = [sys.executable, "-m", "bench.peers.plain", peer, "--task", task_name, "--seed-list", str(seed)]
  if torch_threads is not None: argv += ["--torch-threads", str(torch_threads)]
  out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("peer", help="a peer name: sb3-ppo, sb3-dqn, sb3-sac, ...")
  p.add_argument("--task", default="CartPole-v1")
  p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1, each in a fresh process")
  p.add_argument("--seed-list", type=int, nargs="*", help="run these seeds in this process")
  p.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads (default: the peer's setting)")
  args = p.parse_args(argv)
  if args.seed_list is not None:
    for s in args.seed_list: print(json.dumps(run(args.peer, args.task, s, args.torch_threads)), flush=True)
    return 0
  for s in range(args.seeds): print(json.dumps(run_fresh(args.peer, args.task, s, args.torch_threads)), flush=True)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
