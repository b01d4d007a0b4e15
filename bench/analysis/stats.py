"""Comparing an entry with a baseline on a task, from run records (scipy.stats; no hand-written tests).

Every number is over *timed* runs (warm kernel cache). An unsolved run counts as censored at the
task's time budget, never dropped: it sits at the top of the ranking, which is what the rank test
and the medians need (both only ask whether a run took longer than another).

- solve rate of each side;
- median and IQM (mean of the middle 50 %) of time-to-threshold;
- speed-up = median(baseline) / median(entry), with a percentile bootstrap 95 % CI (scipy.stats.bootstrap,
  the two sides resampled independently);
- one-sided Mann-Whitney U p-values (entry faster; entry slower);
- probability of improvement P(entry's run is faster than the baseline's), ties count one half (= U / n m);
- a verdict: "fails to solve" (the entry's solve rate is under the task's bar), else "faster" or "slower"
  when the matching one-sided p-value is under VERDICT_ALPHA, else "no significant difference";
  "not comparable" when the two sides ran on different hardware, unless forced.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

VERDICT_ALPHA = 0.05     # the level of a comparison's verdict (faster / slower); the regression gate has its own (gate.GATE_ALPHA)
CONFIDENCE = 0.95
N_RESAMPLES = 10_000
DEFAULT_SOLVE_BAR = 0.9
# what must match for two sets of runs to be timed on "the same machine" (host names may differ)
FINGERPRINT_KEYS = ("fingerprint.cpu", "fingerprint.cores", "fingerprint.memory_gb", "fingerprint.gpu", "device")
VERDICTS = ("faster", "no significant difference", "slower", "fails to solve", "not comparable")


def iqm(x) -> float:
  """Interquartile mean: the mean of the middle 50 % (rliable's aggregate)."""
  return float(stats.trim_mean(np.asarray(x, dtype=float), 0.25))


def speedup_ci(entry, baseline, *, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
               seed: int = 0) -> tuple[float, float]:
  """Percentile bootstrap CI of median(baseline) / median(entry), each side resampled on its own."""
  e, b = np.asarray(entry, dtype=float), np.asarray(baseline, dtype=float)
  if len(e) < 2 or len(b) < 2: return (float("nan"), float("nan"))
  ratio = lambda b_, e_, axis=-1: np.median(b_, axis=axis) / np.median(e_, axis=axis)  # noqa: E731
  res = stats.bootstrap((b, e), ratio, vectorized=True, paired=False, confidence_level=confidence,
                        n_resamples=n_resamples, method="percentile", rng=np.random.default_rng(seed))
  return float(res.confidence_interval.low), float(res.confidence_interval.high)


@dataclass
class Comparison:
  task: str
  entry: str
  baseline: str
  runs_entry: int
  runs_baseline: int
  solve_rate_entry: float
  solve_rate_baseline: float
  solve_bar: float
  median_entry_s: float
  median_baseline_s: float
  iqm_entry_s: float
  iqm_baseline_s: float
  speedup: float            # median(baseline) / median(entry): > 1 means the entry is faster
  speedup_ci_low: float
  speedup_ci_high: float
  p_faster: float           # one-sided Mann-Whitney U: entry's times are stochastically smaller
  p_slower: float
  prob_improvement: float   # P(entry run faster than baseline run), ties one half
  verdict: str
  notes: str = ""
  budget_s: float = float("inf")   # the time budget unsolved runs are censored at


def compare(entry_times, baseline_times, entry_solved, baseline_solved, *, task: str = "", entry: str = "entry",
            baseline: str = "baseline", solve_bar: float = DEFAULT_SOLVE_BAR, comparable: bool = True,
            why_not: str = "", review: list[str] = (), alpha: float = VERDICT_ALPHA, seed: int = 0,
            budget_s: float = float("inf")) -> Comparison:
  """Compare two sets of censored times-to-threshold (unsolved runs already set to the budget `budget_s`). Where
  either median is censored (it falls on an unsolved run) there is no speed-up: the ratio would be the budget's."""
  e, b = np.asarray(entry_times, dtype=float), np.asarray(baseline_times, dtype=float)
  es, bs = np.asarray(entry_solved, dtype=bool), np.asarray(baseline_solved, dtype=bool)
  if len(e) == 0 or len(b) == 0: raise ValueError(f"{task}: nothing to compare ({len(e)} entry runs, {len(b)} baseline runs)")
  if len(e) != len(es) or len(b) != len(bs): raise ValueError("times and solved flags differ in length")
  if not (np.isfinite(e).all() and np.isfinite(b).all()): raise ValueError(f"{task}: non-finite time-to-threshold")
  # U of the baseline's sample = pairs where the baseline took longer (+ half the ties)
  u_base = stats.mannwhitneyu(b, e, alternative="greater")
  p_faster = float(u_base.pvalue)
  p_slower = float(stats.mannwhitneyu(b, e, alternative="less").pvalue)
  poi = float(u_base.statistic) / (len(e) * len(b))
  notes = []
  speedup, (lo, hi) = float(np.median(b) / np.median(e)), speedup_ci(e, b, seed=seed)
  if max(np.median(e), np.median(b)) >= budget_s:
    speedup, lo, hi = float("nan"), float("nan"), float("nan")
    notes.append("a median censored at the budget: no speed-up")
  if not comparable: verdict = "not comparable"; notes.append(why_not or "hardware fingerprints differ")
  elif es.mean() < solve_bar: verdict = "fails to solve"
  elif p_faster < alpha: verdict = "faster"
  elif p_slower < alpha: verdict = "slower"
  else: verdict = "no significant difference"
  if bs.mean() < solve_bar: notes.append(f"baseline solves only {bs.sum()}/{len(bs)}")
  notes += [f"review: {r}" for r in review]
  if min(len(e), len(b)) < 5 and verdict == "no significant difference":
    notes.append(f"{len(e)} vs {len(b)} runs: too few for the test to find a difference (use 10 seeds)")
  return Comparison(task=task, entry=entry, baseline=baseline, runs_entry=len(e), runs_baseline=len(b),
                    solve_rate_entry=float(es.mean()), solve_rate_baseline=float(bs.mean()), solve_bar=solve_bar,
                    median_entry_s=float(np.median(e)), median_baseline_s=float(np.median(b)),
                    iqm_entry_s=iqm(e), iqm_baseline_s=iqm(b), speedup=speedup,
                    speedup_ci_low=lo, speedup_ci_high=hi, p_faster=p_faster, p_slower=p_slower,
                    prob_improvement=poi, verdict=verdict, notes="; ".join(notes), budget_s=budget_s)


def fingerprints(runs: pd.DataFrame) -> set[tuple]:
  cols = [c for c in FINGERPRINT_KEYS if c in runs.columns]
  return {tuple(str(v) for v in row) for row in runs[cols].itertuples(index=False)}


def concurrency(runs: pd.DataFrame) -> set[str]:
  """How the runs shared their machine with the session's other runs (records' placement, bench/parallel.py): 'one at a
  time' (unpinned), or 'N at once (local|ray), K cores each' (pinned; N may be 1: `--workers 1 --cores-per-run K`).
  Runs made side by side are not timed like runs made alone (README: Many runs at once): verdicts and the regression gate never mix the two."""
  n = len(runs)
  workers = runs["placement.workers"] if "placement.workers" in runs else pd.Series([None] * n, index=runs.index)
  cores = runs["placement.cores"] if "placement.cores" in runs else pd.Series([None] * n, index=runs.index)
  where = runs["placement.scheduler"] if "placement.scheduler" in runs else pd.Series(["local"] * n, index=runs.index)
  out = set()
  for w, c, s in zip(workers, cores, where):
    alone = not isinstance(w, (int, float)) or w != w or w <= 1
    if alone and not isinstance(c, list): out.add("one at a time")
    else: out.add(f"{1 if alone else int(w)} at once ({s}), {len(c) if isinstance(c, list) else '?'} cores each")
  return out


def pick_baseline(timed: pd.DataFrame, task: str, baseline: str | None = None) -> str:
  """The named baseline, else the reference agent (as its records say) with the lowest median time on this task."""
  present = set(timed.loc[timed["task"] == task, "agent"])
  if baseline is not None:
    if baseline not in present: raise ValueError(f"baseline {baseline!r} has no timed runs on {task} (agents: {', '.join(sorted(present))})")
    return baseline
  g = timed[timed["task"] == task]
  refs = sorted(set(g.loc[g["agent_kind"] == "reference", "agent"]))
  if not refs: raise ValueError(f"{task}: no verdict, no reference agent ran on it (add --with-references, or name a --baseline)")
  return min(refs, key=lambda a: (float(np.median(g.loc[g["agent"] == a, "censored_time_s"])), a))


def compare_runs(runs: pd.DataFrame, baseline: str | None = None, force: bool = False) -> tuple[pd.DataFrame, list[str]]:
  """Every agent against the baseline on each task: one row per (task, entry). Returns the table
  and warnings (hardware mismatch, mixed agent versions, missing baseline)."""
  timed = runs[runs["role"] == "timed"]
  rows, warnings = [], []
  for task in sorted(timed["task"].unique()):
    g = timed[timed["task"] == task]
    try: base = pick_baseline(timed, task, baseline)
    except ValueError as e:
      warnings.append(str(e))
      continue
    b = g[g["agent"] == base]
    for agent in sorted(set(g["agent"]) - {base}):
      e = g[g["agent"] == agent]
      fe, fb = fingerprints(e), fingerprints(b)
      same = fe == fb and len(fe) == 1
      if not same:
        warnings.append(f"{task}: {agent} and {base} ran on different hardware/devices "
                        f"({' | '.join(map(', '.join, sorted(fe)))} vs {' | '.join(map(', '.join, sorted(fb)))})"
                        + ("; compared anyway (forced)" if force else "; no verdict (force it with --force)"))
      unboxed = sorted({str(x) for x in e.get("sandbox", pd.Series(["none: not recorded (schema 1)"])) if str(x) != "bwrap"}) \
        if (e["agent_kind"] == "entry").any() else []
      if unboxed:
        warnings.append(f"{task}: {agent} ran without a sandbox ({'; '.join(unboxed)})"
                        + ("; compared anyway (forced)" if force else "; no verdict for an entry without one (force it with --force)"))
      ce, cb = concurrency(e), concurrency(b)
      if ce != cb:
        warnings.append(f"{task}: {agent} ran {' | '.join(sorted(ce))} and {base} {' | '.join(sorted(cb))}"
                        + ("; compared anyway (forced)" if force else "; no verdict (force it with --force)"))
      review = fewer_steps_than_references(e, g) + faster_than_a_first_update(e, g) + flagged_runs(e)
      warnings += [f"{task}: {agent}: {r}" for r in review]
      why = "; ".join(filter(None, ["hardware fingerprints differ" if not same else "",
                                    "one side ran side by side with other runs, the other not alike" if ce != cb else "",
                                    "the entry ran without a sandbox" if unboxed else ""]))
      c = compare(e["censored_time_s"], b["censored_time_s"], e["solved"], b["solved"], task=task, entry=agent,
                  baseline=base, solve_bar=float(e["solve_bar"].max()), comparable=(same and ce == cb and not unboxed) or force,
                  why_not=why, review=review, budget_s=float(g["time_budget_s"].max()))
      rows.append(asdict(c))
  for (agent, task), g in timed.groupby(["agent", "task"]):
    if g["agent_sha256"].nunique() > 1:
      warnings.append(f"{task}: the runs of {agent} come from {g['agent_sha256'].nunique()} different versions of its source")
  return pd.DataFrame(rows, columns=list(Comparison.__dataclass_fields__)), warnings


REVIEW_STEP_RATIO = 4.0   # a solve with this many times fewer steps than every reference run is flagged for review


def fewer_steps_than_references(entry: pd.DataFrame, task_runs: pd.DataFrame) -> list[str]:
  """MLPerf's reference convergence points, simply: the entry's solved runs that needed far fewer env steps
  than the fewest any reference agent needed on the task in these records (the steps are self-reported)."""
  refs = task_runs[(task_runs["agent_kind"] == "reference") & task_runs["solved"]]
  if (entry["agent_kind"] == "reference").all() or refs.empty: return []
  floor = float(refs["steps_to_threshold"].min()) / REVIEW_STEP_RATIO
  few = entry[entry["solved"] & (entry["steps_to_threshold"] < floor)]
  if few.empty: return []
  return [f"{len(few)} solved run(s) with fewer than 1/{REVIEW_STEP_RATIO:g} of the fewest env steps any reference run needed "
          f"({int(refs['steps_to_threshold'].min()):,}): seeds {', '.join(str(s) for s in few['seed'])}; check how it trains"]


def faster_than_a_first_update(entry: pd.DataFrame, task_runs: pd.DataFrame) -> list[str]:
  """The entry's solved runs that took less training clock than any reference run on the task took to its *first*
  update (the clock at train()'s first yield, measured by the referee): no learning the references know of fits."""
  col = "breakdown.first_update_s"
  if col not in task_runs or (entry["agent_kind"] == "reference").all(): return []
  firsts = task_runs.loc[task_runs["agent_kind"] == "reference", col].dropna()
  if firsts.empty: return []
  fast = entry[entry["solved"] & (entry["time_to_threshold_s"] < float(firsts.min()))]
  if fast.empty: return []
  return [f"{len(fast)} solved run(s) faster than any reference run's first update ({float(firsts.min()):.2f} s): seeds "
          f"{', '.join(str(s) for s in fast['seed'])}; was it learned or written before the clock?"]


def flagged_runs(entry: pd.DataFrame) -> list[str]:
  """The referee's own review flags on the entry's runs (a record's `review`), counted once per kind."""
  if "review" not in entry or (entry["agent_kind"] == "reference").all(): return []
  flags = [str(x).split(":")[0] for r in entry["review"] if isinstance(r, list) for x in r]
  return [f"{flags.count(f)} run(s): {f} (the records say more)" for f in dict.fromkeys(flags)]


def performance_profile(runs: pd.DataFrame, baselines: dict[str, str], taus: np.ndarray) -> pd.DataFrame:
  """Fraction of each agent's runs (pooled over tasks) solved within tau x the baseline's median time
  on that task; unsolved runs never count. Columns: agent, tau, fraction."""
  timed = runs[runs["role"] == "timed"]
  ratios: dict[str, list[float]] = {}
  for task, base in baselines.items():
    g = timed[timed["task"] == task]
    ref = float(np.median(g.loc[g["agent"] == base, "censored_time_s"]))
    for _, r in g.iterrows():
      ratios.setdefault(r["agent"], []).append(r["time_to_threshold_s"] / ref if r["solved"] else np.inf)
  rows = [{"agent": a, "tau": float(t), "fraction": float(np.mean(np.asarray(v) <= t))} for a, v in ratios.items() for t in taus]
  return pd.DataFrame(rows, columns=["agent", "tau", "fraction"])
