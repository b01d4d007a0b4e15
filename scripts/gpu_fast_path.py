"""The fast path on a GPU, as one short script: envs/batched.py's throughput on the device (tinygrad only: gymnasium's
numbers are the CPU's, from `python -m bench.env_throughput` on the CPU), then agents/ppo_jit.py on CartPole-v1 through
the referee (its clock, its evaluation on gymnasium, confirmation included): one cold-start run (empty kernel cache),
then timed runs with the warm-up's verified cache, for each setting in --modes. The goal on an H100/H200 is under 1 s of training time to the
threshold with a warm cache.

    DEV=CUDA python scripts/gpu_fast_path.py --device CUDA --seeds 3 --out /tmp/fast-path

The device machine's image has no clang and no gymnasium: carry gymnasium's wheels and install them first (README
"The fast path"). The agent's process is not sandboxed here (`--sandbox none`, bubblewrap is not on that image).
`--modes` runs it with each of several settings (PPO_JIT_CONFIG values, recorded in each run's `agent_env`): its
defaults, the whole iteration in one call, and that with 1,024 envs."""
from __future__ import annotations

import argparse
import json
import os
import time

from bench import env_throughput
from bench.referee.agent_api import resolve_agent
from bench.referee.config import RefereeConfig
from bench.referee.pair import Pair
from bench.referee.records import RecordWriter
from envs import get_task


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--device", default="CUDA", help="tinygrad device of the agent's process")
  p.add_argument("--seeds", type=int, default=3, help="timed runs with a warm cache, after one cold-start run")
  p.add_argument("--task", default="CartPole-v1")
  p.add_argument("--sandbox", default="none", help="the referee's --sandbox: none, auto or bwrap")
  p.add_argument("--batches", default="1,256,4096,65536,1048576", help="throughput: numbers of envs stepped together")
  p.add_argument("--out", default="fast-path", help="folder for throughput.json and runs.jsonl")
  p.add_argument("--modes", default=";steps_per_call=0 updates_per_call=0;num_envs=1024 steps_per_call=0 updates_per_call=0",
                 help="PPO_JIT_CONFIG values, ';'-separated: the defaults, the whole iteration in one call, more envs")
  args = p.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  env_throughput.main(["--batches", args.batches, "--gym-max", "0", "--seconds", "0.5", "--envs", "CartPole-v1,Acrobot-v1",
                       "--json", os.path.join(args.out, "throughput.json")])
  task = get_task(args.task)
  config = RefereeConfig(device=args.device, sandbox=args.sandbox, calibrate=False)
  for mode in args.modes.split(";"):
    os.environ["PPO_JIT_CONFIG"] = mode                  # recorded in each run's agent_env
    print(f"== ppo_jit {mode or '(its defaults)'}", flush=True)
    pair = Pair(resolve_agent("ppo_jit"), task, config, RecordWriter(os.path.join(args.out, "runs.jsonl")))
    try:
      t0 = time.perf_counter()
      pair.warm_up()
      print(f"warm-up (untimed, fills the kernel cache): {time.perf_counter() - t0:.1f} s", flush=True)
      for seed, role in [(0, "cold-start")] + [(s, "timed") for s in range(args.seeds)]:
        rec = pair.cold_start(seed) if role == "cold-start" else pair.run(seed)
        prof = {k: round(v, 3) for k, v in (rec.agent_profile or {}).items()}
        print(f"{role:10s} seed {seed}: {rec.status}, time to threshold {rec.time_to_threshold_s} s, "
              f"{rec.steps_to_threshold} steps; construct {rec.breakdown.get('construct_s')} s; agent profile {json.dumps(prof)}; "
              f"{(rec.failure_reason or '')[:200]}", flush=True)
    finally:
      pair.close()
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
