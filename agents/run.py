"""Train one agent on one task in this process, with a progress line per evaluation: the quick way to try or debug an
agent before the referee times it. Not the referee (no sandbox, no confirmation on fresh episodes, no secret seeds,
evaluation on this process's clock but off the printed training time): `pytest bench/ --agent ...` gives the numbers.

    python -m agents.run path/to/entry.py:MyAgent --task CartPole-v1 --seed 0
    python -m agents.ppo --task Pendulum-v1               # a reference agent's own file runs the same loop
    python -m agents.run ppo --task Acrobot-v1 --seconds 30

An entry file can end with `if __name__ == "__main__": from agents.run import main; main("path/to/entry.py:MyAgent")`
to run as a script (a target, not the class: run as a script, the file's classes are __main__'s, not the module's).
"""
from __future__ import annotations

import argparse
import sys
import time

import gymnasium as gym
import numpy as np

from envs import TASKS, get_task

HEARTBEAT_S = 10.0   # a line at least this often while no evaluation is due


def evaluate(agent, task, episodes: int, seed: int) -> float:
  """Mean return of `episodes` greedy episodes (agent.act on the whole batch each step, as the referee calls it)."""
  return float(task.run_episodes(agent.act, [seed + i for i in range(episodes)], check=check).mean())


def check(actions, space: gym.Space, n: int) -> np.ndarray:
  """What the referee refuses too (bench/referee/agent_api.py check_actions), said with the fix; the actions to step with."""
  if not isinstance(actions, np.ndarray):
    sys.exit(f"act() returned a {type(actions).__name__}: return a numpy array (np.asarray(actions))")
  want = (n,) if isinstance(space, gym.spaces.Discrete) else (n, *space.shape)
  if actions.shape != want: sys.exit(f"act() returned shape {actions.shape} for {n} observations, expected {want}")
  if isinstance(space, gym.spaces.Discrete) and actions.dtype.kind not in "iu":
    sys.exit(f"act() returned dtype {actions.dtype}: a Discrete space needs integers (return actions.astype(np.int64))")
  return actions


def main(cls: type | str | None = None, argv: list[str] | None = None) -> int:
  """The command line; `cls` is the agent class (or its 'module:Class' target), else the first argument names it."""
  prog = "python -m agents.run" if cls is None else f"python -m {(cls if isinstance(cls, str) else cls.__module__).split(':')[0]}"
  p = argparse.ArgumentParser(prog=prog, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  if cls is None: p.add_argument("agent", help="'path/to/file.py:Class', 'package.module:Class' or a reference (ppo, dqn, sac)")
  p.add_argument("--task", default="CartPole-v1", help=f"one of {', '.join(TASKS)} (default: %(default)s)")
  p.add_argument("--seed", type=int, default=0, help="the agent's seed (default: %(default)s)")
  p.add_argument("--seconds", type=float, default=None, help="stop after this much training (default: the task's time budget)")
  p.add_argument("--steps", type=int, default=None, help="stop after this many env steps (default: the task's step budget)")
  p.add_argument("--eval-every", type=int, default=None, metavar="STEPS",
                 help="evaluate every this many env steps (default: the task's cadence, as the referee's)")
  args = p.parse_args(argv)
  try: task = get_task(args.task)
  except KeyError as e: p.error(str(e).strip('"'))
  from agents import REFERENCE_AGENTS, load_class
  target = cls if isinstance(cls, str) else args.agent if cls is None else f"{cls.__module__}:{cls.__name__}"
  agent_name = next((k for k, v in REFERENCE_AGENTS.items() if v == target), target)
  if cls is None or isinstance(cls, str):
    try: cls = load_class(target)
    except (ValueError, AttributeError, ImportError, OSError) as e: p.error(f"cannot load {target!r}: {e}")
  seconds, max_steps = args.seconds or task.time_budget_s, args.steps or task.step_budget
  every = args.eval_every or task.eval_every_steps or 10_000
  name = f"{cls.__name__} on {task.name} (seed {args.seed})"
  print(f"{name}: threshold {task.threshold:g} (mean of {task.eval_episodes} greedy episodes), evaluated every {every:,} env "
        f"steps, at most {seconds:g} s / {max_steps:,} steps", flush=True)
  t0 = time.perf_counter()
  agent = cls(task, args.seed)
  train_s, start = time.perf_counter() - t0, time.perf_counter()
  print(f"  constructed in {train_s:.2f} s", flush=True)
  # the untrained policy first, as the referee does: act() is called (and jitted) before train() ever runs
  e0 = time.perf_counter()
  ret, evals = evaluate(agent, task, task.eval_episodes, seed=0), 1
  print(f"  {train_s:8.2f} s  {0:>10,} steps  return {ret:9.2f}  (untrained; evaluation {time.perf_counter() - e0:.2f} s)", flush=True)
  start += time.perf_counter() - e0
  steps, next_eval, said = 0, every, 0.0
  for steps in agent.train():
    if not isinstance(steps, (int, np.integer)): sys.exit(f"train() yielded {steps!r}: yield the cumulative env steps (an int)")
    clock = train_s + time.perf_counter() - start
    if clock - said >= HEARTBEAT_S and steps < next_eval:   # a slow agent is not evaluated for a long time: say it steps
      print(f"  {clock:8.2f} s  {steps:>10,} steps  (next evaluation at {next_eval:,} steps)", flush=True)
      said = clock
    if steps >= next_eval or clock >= seconds or steps >= max_steps:
      e0 = time.perf_counter()
      ret, evals = evaluate(agent, task, task.eval_episodes, seed=10_000 * evals), evals + 1
      eval_s = time.perf_counter() - e0
      start += eval_s                      # evaluation is off the training time, as the referee's
      print(f"  {clock:8.2f} s  {steps:>10,} steps  return {ret:9.2f}  (evaluation {eval_s:.2f} s)", flush=True)
      said = clock
      next_eval = (steps // every + 1) * every
      if ret >= task.threshold:
        print(f"{name}: reached {ret:.2f} >= {task.threshold:g} after {clock:.2f} s of training, {steps:,} env steps. "
              f"The referee would now confirm it on {task.confirm_episodes} fresh episodes: "
              f"pytest bench/ --agent {agent_name} --task {task.name}")
        return 0
    if clock >= seconds or steps >= max_steps: break
  print(f"{name}: not reached after {train_s + time.perf_counter() - start:.2f} s, {steps:,} env steps; last return {ret:.2f}")
  return 1


if __name__ == "__main__":
  sys.exit(main())
