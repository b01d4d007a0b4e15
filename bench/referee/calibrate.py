"""The machine's speed, timed before every run outside the clock, so that runs on different machines can be put side by
side and a task's time budget scaled to the machine (PROTOCOL.md §2 and §13, where the measurements behind each choice are).

The workload is what a small RL agent's process does on the CPU: Python-level loop work and many small float32 matrix
products (a 64-wide MLP). WIDTH processes run it at once, one pass each per round, and a round lasts until the last has
finished: an agent's tree uses more than one core. A run's score is its *fastest* round (interference only ever slows
one); a session's speed is the median of its runs' scores, and each run's budget is scaled by it (`budget_scale`).
The workload's name changes whenever the workload or the score does: scores of different workloads are never compared."""
from __future__ import annotations

import statistics
import subprocess
import sys
import time

import numpy as np

from bench import ROOT

WORKLOAD = "python-loop+numpy-64-matmul/v4-2proc-rounds-min"
REPEATS = 11
WIDTH = 2                  # processes running the passes at once
REFERENCE_SCORE_S = 0.025   # the score of the machine the tasks' time budgets are stated for
SESSION_SCORES: list[float] = []   # this process's run scores so far (a session's speed: their median)
SPEED_TOLERANCE = 0.25   # two sides' median scores further apart than this: different machine speeds (runs of one
                         # quiet machine scored within ~15 % of each other; the machines this is for differ 2x)


def _matrices() -> tuple[np.ndarray, np.ndarray]:
  """The start and the weights of the matrix products: a gain of 2 (w's entries ~ N(0, (2/8)^2), 64 wide) keeps tanh's
  values of order 0.1-1 for good, never subnormal floats, which some CPUs run ~30x slower than others (PROTOCOL.md §13)."""
  rng = np.random.default_rng(0)
  return rng.standard_normal((64, 64), dtype=np.float32), (rng.standard_normal((64, 64)) * (2.0 / 8)).astype(np.float32)


def _one_pass() -> float:
  a, w = _matrices()
  t0 = time.perf_counter()
  x = 0.0
  for i in range(150_000): x += (i % 7) * 0.5 - (i & 3)        # the interpreter
  for _ in range(1500): a = np.tanh(a @ w)                       # small matrix products, in normal floats throughout
  return time.perf_counter() - t0 + 0.0 * x


def calibrate(repeats: int = REPEATS, width: int = WIDTH) -> dict:
  """{"workload", "score_s" (the fastest round, seconds: larger is slower), "passes_s" (every round)}: `width`
  processes (python -m bench.referee.calibrate) each run one pass per round, all started together; a round lasts until the last
  of them has finished its pass."""
  procs = [subprocess.Popen([sys.executable, "-m", "bench.referee.calibrate"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            cwd=ROOT, text=True) for _ in range(width)]
  rounds = []
  try:
    for p in procs:
      if p.stdout.readline().strip() != "ready": raise RuntimeError("a calibration process did not start")
    for _ in range(repeats):
      t0 = time.monotonic()
      for p in procs: p.stdin.write("go\n"); p.stdin.flush()
      for p in procs:
        if p.stdout.readline().strip() != "done": raise RuntimeError("a calibration process stopped")
      rounds.append(time.monotonic() - t0)
  finally:
    for p in procs:
      try: p.stdin.close()
      except OSError: pass
      try: p.wait(timeout=5)
      except subprocess.TimeoutExpired: p.kill(); p.wait()
  SESSION_SCORES.append(min(rounds))
  return {"workload": WORKLOAD, "score_s": round(min(rounds), 5), "passes_s": [round(r, 5) for r in rounds],
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


if __name__ == "__main__":   # one of calibrate()'s processes: "ready", then one pass for each "go", "done" after it
  np.tanh(np.ones((64, 64), np.float32) @ np.ones((64, 64), np.float32))   # first-call costs (BLAS start-up) are not speed
  print("ready", flush=True)
  for _ in sys.stdin:
    _one_pass()
    print("done", flush=True)
