"""The machine's speed, timed by the referee before every run (outside the clock, ~0.25 s), so that runs stored on
one machine can be put beside runs on another of the same kind: two quiet machines with the same CPU model string ran
PPO CartPole at 1.7 s and 4 s.

The workload is what a small RL agent's process does on the CPU: Python-level loop work (an environment's step, the
agent's bookkeeping) and many small float32 matrix products (a 64-wide MLP). One pass is ~0.04 s on a 2-core EPYC VM;
a run's score is the *fastest* of REPEATS passes (interference only ever slows a pass), and a session's speed the
median of its runs' scores (the stored-baseline check compares those). Eleven passes, not five: ten runs' scores on
one quiet EPYC spread 1.02x with the fastest of 11, 1.37x with the fastest of 5 (issue 26).

Budgets travel with it: each task's time budget is stated for a machine that scores REFERENCE_SCORE_S (the 2-core AMD
EPYC VM the budgets were set on) and each run's budget is scaled by this machine's speed (`budget_scale`: the median
score of the session's runs so far over the reference, never below 1), recorded in every run. One score timed at session start was not enough: on this quiet machine two sessions'
start-up scores (median of 5 passes of twice this workload) were 0.115 s and 0.082 s while their PPO runs were equally fast. The name changes whenever the
workload or the score does: scores of different workloads are never compared."""
from __future__ import annotations

import statistics
import time

import numpy as np

WORKLOAD = "python-loop+numpy-64-matmul/v3-min"
REPEATS = 11
REFERENCE_SCORE_S = 0.025   # the score of the machine the tasks' time budgets are stated for
SESSION_SCORES: list[float] = []   # this process's run scores so far (a session's speed: their median)
SPEED_TOLERANCE = 0.25   # two sides' median scores further apart than this: different machine speeds (runs of one
                         # quiet machine scored within ~15 % of each other; the machines this is for differ 2x)


def _matrices() -> tuple[np.ndarray, np.ndarray]:
  """The start and the weights of the matrix products: a gain of 2 (w's entries ~ N(0, (2/8)^2), 64 wide) keeps tanh's
  values of order 0.1-1 for good. v2 multiplied by 0.1 (a gain of 0.8): its values decayed into subnormal floats
  (~1e-45 by the 800th product), which run ~30x slower on an Intel Xeon and not on an AMD EPYC, so its score said
  nothing comparable about the two (issue 25: 0.26 s on a Xeon where PPO CartPole took 3.4 s, 0.13 s on an EPYC where
  it took 12 s)."""
  rng = np.random.default_rng(0)
  return rng.standard_normal((64, 64), dtype=np.float32), (rng.standard_normal((64, 64)) * (2.0 / 8)).astype(np.float32)


def _one_pass() -> float:
  a, w = _matrices()
  t0 = time.perf_counter()
  x = 0.0
  for i in range(150_000): x += (i % 7) * 0.5 - (i & 3)        # the interpreter
  for _ in range(1500): a = np.tanh(a @ w)                       # small matrix products, in normal floats throughout
  return time.perf_counter() - t0 + 0.0 * x


def calibrate(repeats: int = REPEATS) -> dict:
  """{"workload", "score_s" (the fastest pass, seconds: larger is slower), "passes_s"}."""
  np.tanh(np.ones((64, 64), np.float32) @ np.ones((64, 64), np.float32))   # first-call costs (BLAS start-up) are not speed
  passes = [_one_pass() for _ in range(repeats)]
  SESSION_SCORES.append(min(passes))
  return {"workload": WORKLOAD, "score_s": round(min(passes), 5), "passes_s": [round(p, 5) for p in passes],
          "session_median_s": round(statistics.median(SESSION_SCORES), 5)}


def budget_scale(calibration: dict) -> float:
  """How many times a task's time budget this machine gets: its session's median score over REFERENCE_SCORE_S, at
  least 1 (a faster machine keeps the stated budget); 1 where the speed was not measured."""
  score = calibration.get("session_median_s") or calibration.get("score_s") if calibration.get("workload") == WORKLOAD else None
  return round(max(1.0, score / REFERENCE_SCORE_S), 3) if score else 1.0


def speed_ratio(current: list[dict], baseline: list[dict]) -> float | None:
  """How many times slower the current machine ran the workload than the baseline's (the median of each side's run
  scores); None when a side has no score, or the workloads differ."""
  def scores(cals):
    return [c["score_s"] for c in cals if isinstance(c, dict) and c.get("workload") == WORKLOAD and c.get("score_s")]
  c, b = scores(current), scores(baseline)
  return statistics.median(c) / statistics.median(b) if c and b else None
