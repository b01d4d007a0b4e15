"""The reference PPO on CartPole-v1 through the referee on a GPU device, with and without the sandbox: does the
GPU stay reachable from inside bubblewrap, and what does the sandbox cost there?

    python scripts/gpu_sandbox_check.py --device CUDA --seeds 2"""
from __future__ import annotations

import argparse
import time

from bench.referee.agent_api import resolve_agent
from bench.referee.config import RefereeConfig
from bench.referee.run import run_one
from bench.referee.sandbox import probe
from envs import get_task


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--device", default="CUDA")
  p.add_argument("--seeds", type=int, default=2)
  p.add_argument("--agent", default="ppo")
  p.add_argument("--task", default="CartPole-v1")
  args = p.parse_args(argv)
  print(f"sandbox here: {probe().label}", flush=True)
  agent, task = resolve_agent(args.agent), get_task(args.task)
  for seed in range(args.seeds):
    for sandbox in ("bwrap", "none"):
      t0 = time.perf_counter()
      rec = run_one(agent, task, seed, RefereeConfig(device=args.device, sandbox=sandbox, hang_timeout_s=120.0))
      print(f"seed {seed} sandbox {rec.sandbox[:40]:40s} {rec.status:8s} ttt {rec.time_to_threshold_s} s, steps "
            f"{rec.steps_to_threshold}, device reported {rec.self_reported.get('tinygrad_device')}, construct "
            f"{rec.breakdown['construct_s']}, act {rec.breakdown['act_roundtrip_ms_median']} ms, "
            f"{rec.breakdown['snapshot_s']:.2f} s snapshots, evaluator cpu {rec.breakdown['evaluator_cpu_s']:.2f} s, wall "
            f"{time.perf_counter() - t0:.1f} s; {(rec.failure_reason or '')[:300]}", flush=True)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
