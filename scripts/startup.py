"""An agent's start-up and pace in fresh processes, per tinygrad setting: construction, the first train() yield (its
first graphs scheduled and lowered), the first greedy act() at the referee's two batch sizes, and the time to a fixed
number of env steps (the same steps for every setting that leaves the arithmetic alone: HCQ2, THREADS, SPEC, ...).
Each process starts as the referee's agent host does (imports, device, compile workers and tinygrad's warm-up
untimed) on a kernel cache warmed first by a process of its own; variants alternate, so that drift hits all alike.

    .venv/bin/python scripts/startup.py dqn CartPole-v1 --steps 20000 --reps 3 --variant "" --variant HCQ2=1
    .venv/bin/python scripts/startup.py sac Pendulum-v1 --variant "@/tmp/before" --variant ""   # another checkout's code

A variant is tinygrad settings ('VAR=value ...'), and '@DIR' runs the project's code from checkout DIR (`git worktree
add DIR REF`) instead of this one; the agent's own declared settings (TINYGRAD_SETTINGS) are not applied here: name
them in the variant.

Not the referee: no sandbox, no evaluation on the clock, no threshold. Numbers for agents/TUNING.md "Start-up"."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def inner(agent: str, task_name: str, steps: int, seed: int) -> dict:
  """In the fresh process: the referee host's untimed start-up, then the agent's clock."""
  import numpy as np

  from bench.referee import agent_host
  from envs import get_task
  task = get_task(task_name)
  agent_host._preload([], task)
  from agents import load_class
  cls = load_class(agent)
  t0 = time.perf_counter()
  a = cls(task, seed)
  out = {"construct_s": time.perf_counter() - t0}
  gen, t1, n = a.train(), time.perf_counter(), 0
  n = next(gen)
  out["first_yield_s"], out["first_yield_steps"] = time.perf_counter() - t1, n
  obs = np.stack([task.spaces()[0].sample() for _ in range(100)]).astype(np.float32)
  for k in (10, 100):
    t = time.perf_counter()
    a.act(obs[:k])
    out[f"act{k}_first_s"] = time.perf_counter() - t
  t = time.perf_counter()
  while n < steps: n = next(gen)
  out["rest_s"], out["steps"] = time.perf_counter() - t, n
  out["total_s"] = out["construct_s"] + out["first_yield_s"] + out["act10_first_s"] + out["act100_first_s"] + out["rest_s"]
  out["profile"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in dict(getattr(a, "profile", {})).items()}
  return out


def run(agent: str, task: str, steps: int, seed: int, variant: str, cache: str) -> dict:
  tree = next((w[1:] for w in variant.split() if w.startswith("@")), None)
  env = {**os.environ, "CACHEDB": cache, **dict(kv.split("=", 1) for kv in variant.split() if not kv.startswith("@"))}
  if tree: env["PYTHONPATH"] = os.path.abspath(tree)
  p = subprocess.run([sys.executable, os.path.abspath(__file__), "--inner", agent, task, "--steps", str(steps), "--seed", str(seed)],
                     env=env, capture_output=True, text=True, check=False, cwd=os.path.abspath(tree) if tree else None)
  if p.returncode: raise SystemExit(f"{variant!r} failed:\n{p.stderr[-3000:]}")
  return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("agent")
  p.add_argument("task")
  p.add_argument("--steps", type=int, default=10_000, help="env steps to time (default: %(default)r)")
  p.add_argument("--seed", type=int, default=0, help="the agent's seed (default: %(default)r)")
  p.add_argument("--reps", type=int, default=3, help="processes per variant (default: %(default)r)")
  p.add_argument("--variant", action="append", default=None, help="'VAR=value ...' tinygrad settings; repeat (default: plain)")
  p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.inner:
    print(json.dumps(inner(args.agent, args.task, args.steps, args.seed)))
    return
  variants = args.variant or [""]
  with tempfile.TemporaryDirectory() as tmp:
    caches = {v: os.path.join(tmp, f"cache{i}.db") for i, v in enumerate(variants)}
    for v in variants: run(args.agent, args.task, min(args.steps, 2000), args.seed, v, caches[v])   # warm each cache
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for _ in range(args.reps):
      for v in variants: results[v].append(run(args.agent, args.task, args.steps, args.seed, v, caches[v]))
  keys = ["construct_s", "first_yield_s", "act10_first_s", "act100_first_s", "rest_s", "total_s"]
  print(f"{args.agent} {args.task}, {args.steps} env steps, seed {args.seed}, {args.reps} processes a variant, medians (s)")
  print("| variant | " + " | ".join(k.removesuffix("_s") for k in keys) + " | env steps |")
  print("|---|" + "---|" * (len(keys) + 1))
  for v, rs in results.items():
    print(f"| {v or 'plain'} | " + " | ".join(f"{statistics.median(r[k] for r in rs):.3f}" for k in keys) + f" | {rs[0]['steps']} |")
  for v, rs in results.items(): print(v or "plain", "profile:", rs[-1]["profile"])


if __name__ == "__main__":
  main()
