"""Does the referee cost a peer time? A peer through the referee (its adapter, sandbox, act() round trips) beside the
same peer in its library's own loop (bench/peers/plain.py), interleaved seed by seed in one session, alternating
which goes first; medians, the ratio of medians with its bootstrap CI, and the per-seed paired ratios.

    python -m bench.peers.overhead sb3-ppo --task CartPole-v1 --seeds 10 [--torch-threads 1]

A timing benchmark: run it with nothing else on the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("peer")
  p.add_argument("--task", default="CartPole-v1")
  p.add_argument("--seeds", type=int, default=10)
  p.add_argument("--torch-threads", type=int, default=None, help="both sides: torch.set_num_threads (default: the peer's)")
  p.add_argument("--out", default=None, help="write the runs here as JSON lines")
  args = p.parse_args(argv)
  from bench.analysis.stats import speedup_ci
  from bench.peers.plain import run_fresh
  from bench.referee.agent_api import resolve_agent
  from bench.referee.config import RefereeConfig
  from bench.referee.records import RecordWriter
  from envs import get_task
  if args.torch_threads is not None: os.environ["PEER_TORCH_THREADS"] = str(args.torch_threads)
  tmp = tempfile.mkdtemp(prefix="overhead-")
  from bench.referee.pair import Pair
  pair = Pair(resolve_agent(args.peer), get_task(args.task), RefereeConfig(), RecordWriter(os.path.join(tmp, "runs.jsonl")))
  rows = []
  try:
    pair.warm_up()
    for seed in range(args.seeds):
      for side in (("referee", "plain") if seed % 2 == 0 else ("plain", "referee")):
        if side == "plain":
          r = run_fresh(args.peer, args.task, seed, args.torch_threads)
          row = dict(side=side, seed=seed, solved=r["solved"], time_s=r["time_s"], steps=r["steps"])
        else:
          rec = pair.run(seed)
          row = dict(side=side, seed=seed, solved=rec.status == "solved", time_s=rec.time_to_threshold_s, steps=rec.steps,
                     contended=rec.contended)
        rows.append(row)
        print(json.dumps(row), flush=True)
  finally:
    pair.close()
  print(f"the referee's run records: {os.path.join(tmp, 'runs.jsonl')}")
  if args.out:
    with open(args.out, "w") as f: f.writelines(json.dumps(r) + "\n" for r in rows)
  t = {s: [r["time_s"] for r in rows if r["side"] == s and r["solved"]] for s in ("referee", "plain")}
  if not t["referee"] or not t["plain"]:
    print("no solved runs on one side: no comparison")
    return 1
  mid = statistics.median(t["referee"]) / statistics.median(t["plain"])
  lo, hi = speedup_ci(t["plain"], t["referee"])     # median(referee) / median(plain), each side resampled
  by = {(r["side"], r["seed"]): r["time_s"] for r in rows if r["solved"]}
  paired = [by["referee", s] / by["plain", s] for s in range(args.seeds) if ("referee", s) in by and ("plain", s) in by]
  print(f"{args.peer} on {args.task}, torch threads {args.torch_threads or 'peer default'}: referee median "
        f"{statistics.median(t['referee']):.2f} s ({len(t['referee'])} solved), plain median {statistics.median(t['plain']):.2f} s "
        f"({len(t['plain'])} solved); referee / plain {mid:.2f}x [{lo:.2f}, {hi:.2f}]; per-seed ratio median "
        f"{statistics.median(paired):.2f} ({len(paired)} pairs)")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
