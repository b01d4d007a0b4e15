"""The regression gate: did a change make training slower, or stop it converging, beyond what noise explains? Used by
`pytest bench/ --regress-against` (bench/regress.py), `python -m bench.gate` and `python -m bench.history`. One (agent,
task) at a time, from censored times-to-threshold (unsolved runs at the budget) of a baseline and of the current code:

- **not comparable**: different hardware fingerprints or tinygrad settings, runs side by side against runs alone
  (--workers), or, against stored runs, machine-speed scores 25 % apart (bench/referee/calibrate.py; an interleaved git ref
  runs on this machine: recorded, not judged) (unless forced);
- **regressed**: the current code solves fewer seeds than the task's bar while the baseline met it; or it is slower
  with a one-sided Mann-Whitney p under `alpha` (default 0.01) *and* the whole bootstrap CI of the ratio of medians
  (current / baseline) above 1 + `tolerance` (default 10 %): significant and large, not one or the other;
- **improved**: the mirror image (p under alpha, the CI under 1 / (1 + tolerance));
- **unchanged**: neither, and the CI inside [1 / (1 + tolerance), 1 + tolerance], from 5 or more runs a side;
- **inconclusive**: neither, and the CI too wide to say; or a slowdown measured on contended runs (the machine was
  shared: the runs say so, bench/referee/contention.py, PROTOCOL.md §13), which is not called a regression. Where the clean
  runs are most of each side (2 or more), the contended ones are left out and the verdict is the clean runs' (one
  contended run cannot veto it).

Only *regressed* fails a gate. `power` estimates, by resampling recorded runs, how often the gate catches a given
slowdown with n seeds a side.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from bench.analysis.stats import speedup_ci
from bench.analysis.tables import settings_of
from bench.referee.calibrate import SPEED_TOLERANCE, speed_ratio

GATE_ALPHA = 0.01        # the one-sided Mann-Whitney level a slowdown must reach (the verdicts of a comparison: stats.VERDICT_ALPHA)
GATE_TOLERANCE = 0.10    # the slowdown the whole CI of the ratio of medians must exceed
MIN_RUNS_UNCHANGED = 5   # a bootstrap CI of a median from fewer runs a side is too narrow to trust (and Mann-Whitney
                         # cannot reach p < 0.01 one-sided under 5 a side: 4 and 4 give at best 1/70)
VERDICTS = ("regressed", "improved", "unchanged", "inconclusive", "not comparable")


@dataclass
class GateResult:
  runs_baseline: int
  runs_current: int
  solve_rate_baseline: float
  solve_rate_current: float
  solve_bar: float
  median_baseline_s: float
  median_current_s: float
  ratio: float              # median(current) / median(baseline): > 1 is slower
  ratio_ci_low: float
  ratio_ci_high: float
  p_slower: float           # one-sided Mann-Whitney U: current times stochastically larger
  p_faster: float
  contended_runs: int       # current runs marked contended
  verdict: str
  why: str

  def as_dict(self) -> dict: return asdict(self)


def judge(baseline_times, current_times, baseline_solved, current_solved, *, solve_bar: float, alpha: float = GATE_ALPHA,
          tolerance: float = GATE_TOLERANCE, comparable: bool = True, why_not: str = "", contended_runs: int = 0,
          n_resamples: int = 2000, seed: int = 0) -> GateResult:
  """The gate's verdict on one (agent, task). Times are censored (an unsolved run at its budget), never dropped."""
  b, c = np.asarray(baseline_times, float), np.asarray(current_times, float)
  bs, cs = np.asarray(baseline_solved, bool), np.asarray(current_solved, bool)
  if len(b) < 2 or len(c) < 2: raise ValueError(f"the gate needs 2 or more runs a side ({len(b)} baseline, {len(c)} current)")
  if len(b) != len(bs) or len(c) != len(cs): raise ValueError("times and solved flags differ in length")
  p_slower = float(stats.mannwhitneyu(c, b, alternative="greater").pvalue)
  p_faster = float(stats.mannwhitneyu(c, b, alternative="less").pvalue)
  ratio = float(np.median(c) / np.median(b))
  lo, hi = speedup_ci(b, c, n_resamples=n_resamples, seed=seed)     # CI of median(c) / median(b)
  rb, rc = float(bs.mean()), float(cs.mean())

  def result(verdict: str, why: str) -> GateResult:
    return GateResult(runs_baseline=len(b), runs_current=len(c), solve_rate_baseline=rb, solve_rate_current=rc,
                      solve_bar=solve_bar, median_baseline_s=float(np.median(b)), median_current_s=float(np.median(c)),
                      ratio=ratio, ratio_ci_low=lo, ratio_ci_high=hi, p_slower=p_slower, p_faster=p_faster,
                      contended_runs=contended_runs, verdict=verdict, why=why)

  if not comparable: return result("not comparable", why_not or "the two sides ran on different machines or settings")
  too_contended = (f"{contended_runs} of {len(c)} current runs were contended (the machine was shared while they trained: rerun "
                   "on a quiet machine)") if contended_runs else ""
  if rc < solve_bar <= rb:
    if too_contended: return result("inconclusive", f"solves {cs.sum()}/{len(c)}, under the bar {solve_bar:.0%}, but {too_contended}")
    return result("regressed", f"solves {cs.sum()}/{len(c)} seeds, under the bar {solve_bar:.0%} (baseline {bs.sum()}/{len(b)})")
  up, down = 1 + tolerance, 1 / (1 + tolerance)
  if p_slower < alpha and lo > up:
    if too_contended: return result("inconclusive", f"{ratio:.2f}x slower [{lo:.2f}, {hi:.2f}], p {p_slower:.2g}, but {too_contended}")
    return result("regressed", f"{ratio:.2f}x slower [{lo:.2f}, {hi:.2f}], p {p_slower:.2g} < {alpha:g}")
  if too_contended and ratio > 1:
    return result("inconclusive", f"ratio {ratio:.2f} [{lo:.2f}, {hi:.2f}], p {p_slower:.2g}: {too_contended}")
  if p_faster < alpha and hi < down: return result("improved", f"{1 / ratio:.2f}x faster [{1 / hi:.2f}, {1 / lo:.2f}]")
  if min(len(b), len(c)) < MIN_RUNS_UNCHANGED:
    return result("inconclusive", f"ratio {ratio:.2f} [{lo:.2f}, {hi:.2f}] from {min(len(b), len(c))} runs a side: "
                                  f"{MIN_RUNS_UNCHANGED} needed to call it unchanged")
  if down <= lo and hi <= up: return result("unchanged", f"ratio {ratio:.2f} [{lo:.2f}, {hi:.2f}] within {tolerance:.0%}")
  return result("inconclusive", f"ratio {ratio:.2f} [{lo:.2f}, {hi:.2f}]: too wide to tell (more seeds)")


def power(times, solved, slowdown: float, n: int, *, solve_bar: float, trials: int = 200, alpha: float = GATE_ALPHA,
          tolerance: float = GATE_TOLERANCE, seed: int = 0) -> float:
  """The fraction of `trials` in which the gate says *regressed* when the current side is the recorded runs times
  `slowdown` (1.3: 30 % slower; 1.0: an A/A test, whose answer is the false-alarm rate), n seeds a side drawn with
  replacement from the records. Solved runs slowed past the budget are not re-censored: a lower bound on the alarm."""
  rng = np.random.default_rng(seed)
  t, s = np.asarray(times, float), np.asarray(solved, bool)
  hits = 0
  for k in range(trials):
    i, j = rng.integers(0, len(t), n), rng.integers(0, len(t), n)
    r = judge(t[i], t[j] * slowdown, s[i], s[j], solve_bar=solve_bar, alpha=alpha, tolerance=tolerance, n_resamples=500, seed=k)
    hits += r.verdict == "regressed"
  return hits / trials


POWER_SLOWDOWNS = (1.1, 1.2, 1.5)
POWER_SEEDS = (5, 10, 20)


def power_table(runs, *, alpha: float = GATE_ALPHA, tolerance: float = GATE_TOLERANCE, trials: int = 100, min_runs: int = 5):
  """For each (agent, task) with `min_runs` or more timed runs: the gate's chance of calling a 10, 20 and 50 %
  slowdown *regressed* with 5, 10 and 20 seeds a side, and its false-alarm rate (A/A) at 10, by resampling the
  recorded runs (`power`). A slowdown no larger than the tolerance is, by design, never called a regression."""
  import pandas as pd
  timed = runs[runs["role"] == "timed"]
  rows = []
  for (agent, task), g in timed.groupby(["agent", "task"]):
    if len(g) < min_runs: continue
    t, s, bar = g["censored_time_s"].to_numpy(float), g["solved"].to_numpy(bool), float(g["solve_bar"].max())
    row = {"agent": agent, "task": task, "runs": len(g)}
    for k, sd in enumerate(POWER_SLOWDOWNS):
      for n in POWER_SEEDS:
        row[f"+{sd - 1:.0%} @ {n}"] = power(t, s, sd, n, solve_bar=bar, trials=trials, alpha=alpha, tolerance=tolerance, seed=k)
    row["false alarms @ 10"] = power(t, s, 1.0, 10, solve_bar=bar, trials=trials, alpha=alpha, tolerance=tolerance, seed=99)
    rows.append(row)
  return pd.DataFrame(rows)


def recommend_seeds(table, slowdown: float = 1.2, target: float = 0.8) -> dict:
  """The fewest seeds (of POWER_SEEDS) that catch `slowdown` with at least `target` power, per (agent, task)."""
  out = {}
  for _, r in table.iterrows():
    ok = [n for n in POWER_SEEDS if r[f"+{slowdown - 1:.0%} @ {n}"] >= target]
    out[(r["agent"], r["task"])] = min(ok) if ok else None
  return out


ORDER = {v: i for i, v in enumerate(("regressed", "not comparable", "inconclusive", "improved", "unchanged"))}


def _settings(runs) -> set[tuple]:
  """What must match besides the hardware: the device and the tinygrad settings (BEAM, ...) the runs were made with."""
  cols = sorted(c for c in runs.columns if c.startswith("tinygrad_env.")) + ["device"]
  return {tuple(str(v) for v in row) for row in runs.reindex(columns=cols).itertuples(index=False)}


def paired(baseline, current, *, n_resamples: int = 2000, seed: int = 0) -> dict:
  """Shown beside the verdict, not deciding it: when both sides ran the same seeds (interleaved runs: the same seed took
  the same env steps on both sides), the per-seed ratios current / baseline cancel the seed-to-seed spread (DQN
  CartPole: log-time spread 0.17 across seeds, 0.075 across paired ratios). Their median, its bootstrap 95 % CI, and a
  one-sided Wilcoxon signed-rank p (current slower); NaN when the seeds do not pair (or under 5 pairs)."""
  none = {"paired_runs": 0, "paired_ratio": float("nan"), "paired_ci_low": float("nan"), "paired_ci_high": float("nan"),
          "p_paired_slower": float("nan")}
  if "seed" not in baseline or "seed" not in current: return none
  bs, cs = baseline.set_index("seed")["censored_time_s"], current.set_index("seed")["censored_time_s"]
  if not bs.index.is_unique or not cs.index.is_unique or set(bs.index) != set(cs.index) or len(bs) < 5: return none
  r = np.log(cs.sort_index().to_numpy(float) / bs.sort_index().to_numpy(float))
  if np.ptp(r) == 0: lo = hi = float(r[0])
  else:
    ci = stats.bootstrap((r,), np.median, vectorized=True, method="percentile", n_resamples=n_resamples,
                         rng=np.random.default_rng(seed)).confidence_interval
    lo, hi = float(ci.low), float(ci.high)
  p = float(stats.wilcoxon(r, alternative="greater").pvalue) if np.any(r != 0) else 1.0
  return {"paired_runs": len(r), "paired_ratio": float(np.exp(np.median(r))), "paired_ci_low": float(np.exp(lo)),
          "paired_ci_high": float(np.exp(hi)), "p_paired_slower": p}


def _calibrations(runs) -> list[dict]:
  """Each run's machine-speed score (bench/referee/calibrate.py), from the frame's flattened columns."""
  if "calibration.score_s" not in runs: return []
  return [{"workload": w, "score_s": x} for w, x in zip(runs["calibration.workload"], runs["calibration.score_s"]) if x == x]


def gate_runs(baseline, current, *, alpha: float = GATE_ALPHA, tolerance: float = GATE_TOLERANCE, force: bool = False,
              interleaved: bool = False):
  """Every (agent, task) with timed runs on both sides, judged; rows sorted with the failing pairs first. `baseline`
  and `current` are run frames (bench.analysis.loaders.load_runs). `interleaved`: both sides ran seed by seed on this machine in
  this session (a git-ref baseline): their machine-speed scores differ only by the moment's load (scores of one session
  on this VM spread 0.040-0.066 s, so 2 runs a side can be 25 %+ apart), the ratio is recorded, not judged, and load
  that slowed a run is what `contended` says. Returns (a DataFrame, warnings)."""
  import pandas as pd

  from bench.analysis.stats import concurrency, fingerprints
  b_all, c_all = baseline[baseline["role"] == "timed"], current[current["role"] == "timed"]
  rows, warnings = [], []
  keys = sorted(set(zip(b_all["agent"], b_all["task"])) | set(zip(c_all["agent"], c_all["task"])))
  for agent, task in keys:
    b = b_all[(b_all["agent"] == agent) & (b_all["task"] == task)]
    c = c_all[(c_all["agent"] == agent) & (c_all["task"] == task)]
    if len(b) < 2 or len(c) < 2:
      warnings.append(f"{agent} on {task}: {len(b)} baseline and {len(c)} current timed runs; the gate needs 2 a side")
      continue
    why = []
    if fingerprints(b) != fingerprints(c): why.append("hardware fingerprints differ")
    if _settings(b) != _settings(c):
      side = lambda runs: f"{settings_of(runs, empty='defaults')} on {'|'.join(sorted(map(str, set(runs['device']))))}"
      why.append(f"device or tinygrad settings differ (baseline {side(b)}, current {side(c)}): a different configuration")
    if concurrency(b) != concurrency(c):
      why.append(f"the baseline's runs ran {' | '.join(sorted(concurrency(b)))}, these {' | '.join(sorted(concurrency(c)))} "
                 "(runs side by side are timed apart from runs alone: README, Many runs at once)")
    speed = speed_ratio(_calibrations(c), _calibrations(b))
    if not interleaved and speed is not None and not 1 / (1 + SPEED_TOLERANCE) <= speed <= 1 + SPEED_TOLERANCE:
      how = f"{speed:.2f}x slower" if speed > 1 else f"{1 / speed:.2f}x faster"
      why.append(f"this machine ran the speed calibration {how} than the baseline's (a different machine speed, not different "
                 "code: compare on one machine, or interleaved with a git ref)")
    b, c, left_out = _clean_majority(b, c)
    contended = int(c["contended"].fillna(False).astype(bool).sum()) if "contended" in c else 0
    r = judge(b["censored_time_s"], c["censored_time_s"], b["solved"], c["solved"], solve_bar=float(c["solve_bar"].max()),
              alpha=alpha, tolerance=tolerance, comparable=force or not why, why_not="; ".join(why), contended_runs=contended)
    if left_out: r.why += f" ({left_out}: judged on the clean runs, which are most of each side)"
    rows.append({"agent": agent, "task": task, **r.as_dict(), "machine_speed_ratio": speed, **paired(b, c)})
  cols = ["agent", "task", *GateResult.__dataclass_fields__, "machine_speed_ratio", *paired(b_all[:0], c_all[:0])]
  df = pd.DataFrame(rows, columns=cols)
  return failing_first(df), warnings


def _clean_majority(b, c):
  """(baseline, current, note): where some runs were contended but the clean runs are most of each side (and 2 or
  more), the contended solved ones are left out, so that one run on a shared moment (or an agent that made its own run look
  shared) cannot veto the verdict; else both sides as they are (and contended runs make a slowdown inconclusive)."""
  def flags(f):    # contended and solved: an unsolved run is never left out (an agent cannot drop its failures so)
    return (f["contended"].fillna(False).astype(bool) & f["solved"].astype(bool)) if "contended" in f else None
  fb, fc = flags(b), flags(c)
  if fb is None or fc is None or not (fb.any() or fc.any()): return b, c, ""
  kb, kc = b[~fb], c[~fc]
  if len(kb) * 2 <= len(b) or len(kc) * 2 <= len(c) or min(len(kb), len(kc)) < 2: return b, c, ""
  return kb, kc, f"{int(fc.sum())} contended current and {int(fb.sum())} contended baseline run(s) left out"


def failing_first(df):
  """Gate rows in the order a reader wants them: regressed, not comparable, inconclusive, improved, unchanged; then by
  task and agent."""
  if not len(df): return df
  return df.sort_values(["verdict", "task", "agent"], key=lambda s: s.map(ORDER) if s.name == "verdict" else s).reset_index(drop=True)


def reproduce(row, against: str | None = None) -> str:
  """The command that reruns one gated pair (with the baseline it was judged against, under --regress-against)."""
  return (f"pytest bench/ --agent {row['agent']} --task {row['task']} --seeds {row['runs_current']}" +
          (f" --regress-against {against}" if against else ""))


def regressed_lines(df, against: str | None = None) -> list[str]:
  """One line per regressed pair: why, and how to reproduce it."""
  return [f"regressed: {r['agent']} on {r['task']}: {r['why']}; reproduce: {reproduce(r, against)}"
          for _, r in df[df["verdict"] == "regressed"].iterrows()]


def gate_table(df):
  """The gate's rows for people: few columns, the verdict first."""
  import pandas as pd
  return pd.DataFrame({
    "verdict": df["verdict"], "agent": df["agent"], "task": df["task"],
    "median s (baseline -> current)": [f"{b:.2f} -> {c:.2f}" for b, c in zip(df["median_baseline_s"], df["median_current_s"])],
    "ratio [CI]": [f"{r:.2f} [{lo:.2f}, {hi:.2f}]" for r, lo, hi in zip(df["ratio"], df["ratio_ci_low"], df["ratio_ci_high"])],
    "p slower": [f"{p:.2g}" for p in df["p_slower"]],
    "paired by seed [CI], p": [f"{r:.2f} [{lo:.2f}, {hi:.2f}], {p:.2g}" if n else "-" for n, r, lo, hi, p in
                               zip(df["paired_runs"], df["paired_ratio"], df["paired_ci_low"], df["paired_ci_high"], df["p_paired_slower"])],
    "solved": [f"{b:.0%} -> {c:.0%}" for b, c in zip(df["solve_rate_baseline"], df["solve_rate_current"])],
    "runs": [f"{b} / {c}" for b, c in zip(df["runs_baseline"], df["runs_current"])],
    "why": df["why"],
  })


def main(argv: list[str] | None = None) -> int:
  """`python -m bench.gate BASELINE CURRENT`: the gate on two sets of stored runs; exit 1 when a pair regressed."""
  import argparse
  import sys

  import pandas as pd

  from bench.analysis.loaders import load_runs
  from bench.referee.records import TamperedRecords
  p = argparse.ArgumentParser(prog="python -m bench.gate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("baseline", help="the baseline's runs: a session directory, a runs.jsonl, or a directory of sessions")
  p.add_argument("current", nargs="*", help="the current runs (one or more sources, pooled; with --power: more sources)")
  p.add_argument("--alpha", type=float, default=GATE_ALPHA, help="one-sided Mann-Whitney level (default: %(default)r)")
  p.add_argument("--tolerance", type=float, default=GATE_TOLERANCE, help="slowdown the CI of the ratio must exceed (default: %(default)r)")
  p.add_argument("--force", action="store_true", help="judge even when hardware or settings differ")
  p.add_argument("--power", action="store_true", help="no verdict: pool every source given and print the gate's power "
                 "to catch a 10/20/50 %% slowdown with 5/10/20 seeds (power_table)")
  p.add_argument("--trials", type=int, default=200, help="resamplings per cell of --power (default: %(default)r)")
  args = p.parse_args(argv)
  if args.power:
    runs = pd.concat([load_runs(x) for x in [args.baseline, *args.current]], ignore_index=True)
    table = power_table(runs, alpha=args.alpha, tolerance=args.tolerance, trials=args.trials)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.2f}") if len(table) else "no (agent, task) with 5 or more timed runs")
    return 0
  if not args.current: p.error("the current runs are missing (BASELINE CURRENT...)")
  try: base, cur = load_runs(args.baseline), pd.concat([load_runs(s) for s in args.current], ignore_index=True)
  except (TamperedRecords, FileNotFoundError) as e:
    print(f"refused: {e}", file=sys.stderr)
    return 2
  if base.empty or cur.empty:
    print("no runs on one side", file=sys.stderr)
    return 2
  df, warns = gate_runs(base, cur, alpha=args.alpha, tolerance=args.tolerance, force=args.force)
  if len(df): print(gate_table(df).to_string(index=False))
  for w in warns: print(f"warning: {w}", file=sys.stderr)
  bad = regressed_lines(df)
  for line in bad: print(line)
  return 1 if bad else 0


if __name__ == "__main__":
  raise SystemExit(main())
