"""Env steps per second: envs/batched.py's tinygrad environments against gymnasium's vector envs, batch sizes 1 to 65,536.
A benchmark, not a test: run it alone on the machine (README "Noise").

    python -m bench.env_throughput                                  # the CPU (tinygrad's DEV, default CPU here)
    DEV=CUDA python -m bench.env_throughput --gym-max 0             # a GPU: tinygrad only
    python -m bench.env_throughput --envs CartPole-v1 --batches 1,1024 --seconds 0.5 --json out.json

gymnasium: `gymnasium.make_vec` with its native vector env where there is one (CartPole), else the sync vector env of
single envs; actions sampled beforehand. tinygrad: `BatchedEnv` stepped in a TinyJit of K steps a call (K = each of
--steps-per-call), random actions drawn on the device, auto-reset included, timed from the third call (capture is
reported apart, as `build s`) until --seconds have passed, with the device synchronized at the end.
"""
from __future__ import annotations

import argparse
import json
import time

from tinygrad import Device, Tensor, TinyJit, dtypes

from envs import get_task
from envs.batched import DYNAMICS, BatchedEnv


def gym_rate(env_id: str, n: int, seconds: float) -> float:
  envs = get_task(env_id).gym_make_vec(n)     # gymnasium's native vector env where there is one, else sync (envs/tasks.py)
  try:
    envs.reset(seed=0)
    envs.action_space.seed(0)
    actions = [envs.action_space.sample() for _ in range(64)]
    steps, t0 = 0, time.perf_counter()
    while True:
      for a in actions[:2] if steps == 0 else actions:
        envs.step(a)
        steps += 1
      if time.perf_counter() - t0 >= seconds: break
    return steps * n / (time.perf_counter() - t0)
  finally:
    envs.close()


def tinygrad_rate(env_id: str, n: int, k: int, seconds: float) -> tuple[float, float]:
  """(steps/s, seconds to build the jitted call): k steps a call, actions drawn on the device."""
  envs = BatchedEnv(env_id, n)
  envs.reset(seed=0)
  space = envs.single_action_space
  def steps() -> Tensor:
    s, el = envs.states, envs.elapsed
    for _ in range(k):
      u = Tensor.rand(n)
      a = (u * int(space.n)).floor().cast(dtypes.int32) if envs.discrete else (u * 2 - 1).reshape(n, 1) * float(space.high[0])
      tr = envs.transition(s, el, a)
      s, el = tr.states, tr.elapsed
    Tensor.realize(envs.states.assign(s), envs.elapsed.assign(el))
    return envs.states
  call = TinyJit(steps)
  t0 = time.perf_counter()
  for _ in range(2): call()
  Device[envs.device].synchronize()
  build = time.perf_counter() - t0
  calls, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < seconds or calls < 3:
    call()
    calls += 1
    if calls % 16 == 0: Device[envs.device].synchronize()
  Device[envs.device].synchronize()
  return calls * k * n / (time.perf_counter() - t0), build


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  ap.add_argument("--envs", default=",".join(DYNAMICS), help="environment ids, comma-separated")
  ap.add_argument("--batches", default="1,16,256,4096,65536", help="numbers of envs stepped together")
  ap.add_argument("--steps-per-call", default="1,16", help="tinygrad: steps unrolled in one jitted call (each a column)")
  ap.add_argument("--seconds", type=float, default=1.0, help="time spent stepping per measurement")
  ap.add_argument("--gym-max", type=int, default=65536, help="largest batch run through gymnasium's native vector envs (0: none)")
  ap.add_argument("--gym-sync-max", type=int, default=4096, help="largest batch run through gymnasium's sync vector env (one Python env each)")
  ap.add_argument("--json", default=None, help="also write the rows here")
  args = ap.parse_args(argv)
  ks = [int(k) for k in args.steps_per_call.split(",")]
  rows = []
  print(f"env steps per second; tinygrad device {Device.DEFAULT}; {args.seconds} s a measurement")
  print("| env | batch | gymnasium | " + " | ".join(f"tinygrad, {k} step(s) a call (build s)" for k in ks) + " |")
  print("|---|---:|---:|" + "---:|" * len(ks))
  for env_id in args.envs.split(","):
    for n in (int(b) for b in args.batches.split(",")):
      native = get_task(env_id).native_vector
      g = gym_rate(env_id, n, args.seconds) if n <= min(args.gym_max, args.gym_max if native else args.gym_sync_max) else None
      t = [tinygrad_rate(env_id, n, k, args.seconds) for k in ks]
      rows.append({"env": env_id, "batch": n, "gymnasium": g, "device": Device.DEFAULT,
                   **{f"tinygrad_k{k}": r for k, (r, _) in zip(ks, t)}, **{f"build_s_k{k}": b for k, (_, b) in zip(ks, t)}})
      cells = " | ".join(f"{r:,.0f} ({b:.1f})" for r, b in t)
      print(f"| {env_id} | {n:,} | {'—' if g is None else f'{g:,.0f}'} | {cells} |", flush=True)
  if args.json:
    with open(args.json, "w") as f: json.dump(rows, f, indent=1)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
