"""The report: a Markdown page with PNGs, fit for a pull-request comment, from run records.

    python -m bench.report results/                      # every session below results/, pooled
    python -m bench.report results/<session> --baseline ppo --out report/

Writes report.md (verdict table, summary, hardware, method), time_to_threshold.png, learning_curves.png,
speedup.png, performance_profile.png and summary.csv. Statistics: bench/analysis/stats.py; rules: PROTOCOL.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.analysis.loaders import load_runs
from bench.analysis.stats import VERDICT_ALPHA, compare_runs, performance_profile  # noqa: E402
from bench.analysis.tables import markdown, median_ci, settings_of  # noqa: E402
from bench.referee.protocol import printable  # noqa: E402
from bench.referee.records import TamperedRecords  # noqa: E402
from bench.referee.signing import BadSignature, key_id, load_public  # noqa: E402

VERDICT_COLORS = {"faster": "tab:green", "no significant difference": "tab:gray", "slower": "tab:red",
                  "fails to solve": "black", "not comparable": "tab:orange"}
PNGS = ("time_to_threshold.png", "learning_curves.png", "speedup.png", "performance_profile.png")


def fmt_time(t: float, budget: float) -> str:
  """A time-to-threshold for people: '>budget' where it is censored (an unsolved run, or a median that falls on one)."""
  if not np.isfinite(t): return "-"
  return f">{budget:g}" if t >= budget else f"{t:.2f}"


def _failures(timed: pd.DataFrame) -> str:
  """'2 unsolved (seeds 3, 4: time budget (120 s) ran out during train())', one part per status and reason."""
  bad = timed[~timed["solved"]]
  if bad.empty: return "-"
  reasons = bad["failure_reason"].fillna("?").map(lambda r: printable(str(r)).splitlines()[0][:90] if str(r).strip() else "?")
  parts = []
  for (status, reason), g in bad.assign(reason=reasons).groupby(["status", "reason"], sort=True):
    parts.append(f"{len(g)} {status} (seed{'s' if len(g) > 1 else ''} {', '.join(str(s) for s in sorted(g['seed']))}: {reason})")
  return "; ".join(parts)


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
  """One row per (agent, task): timed runs solved/seeds, median and range of time-to-threshold (unsolved runs counted
  at the budget, shown as '>budget', as in the verdicts), median steps of the solved runs, the cold-start run's time,
  and what went wrong in the others (count, seeds, reason)."""
  if runs.empty: return pd.DataFrame()
  rows = []
  for (agent, task), g in runs.groupby(["agent", "task"], sort=True):
    timed, cold = g[g["role"] == "timed"], g[g["role"] == "cold-start"]
    solved = timed[timed["solved"]]
    budget = float(g["time_budget_s"].max())
    t = timed["censored_time_s"].astype(float)
    rows.append({
      "agent": agent, "task": task,
      "solved/seeds": f"{len(solved)}/{len(timed)}",
      "median time (s)": fmt_time(float(np.median(t)), budget) if len(timed) else "-",
      "min-max time (s)": f"{fmt_time(t.min(), budget)} - {fmt_time(t.max(), budget)}" if len(timed) else "-",
      "median steps (solved)": f"{int(solved['steps_to_threshold'].median()):,}" if len(solved) else "-",
      "cold-start (s)": (f"{cold['time_to_threshold_s'].iloc[-1]:.2f}" if len(cold) and cold["solved"].iloc[-1]
                         else (cold["status"].iloc[-1] if len(cold) else "-")),
      "tinygrad settings": settings_of(timed if len(timed) else g),
      "failures": _failures(timed),
    })
  return pd.DataFrame(rows)


def verdict_table(comparisons: pd.DataFrame, bold: bool = True) -> pd.DataFrame:
  """The comparisons, formatted for people; the verdict in Markdown bold unless bold=False (terminals)."""
  mark = "**" if bold else ""
  return pd.DataFrame({
    "task": comparisons["task"], "entry": comparisons["entry"], "baseline": comparisons["baseline"],
    "solved (entry / baseline)": [f"{e:.0%} / {b:.0%}" for e, b in zip(comparisons["solve_rate_entry"], comparisons["solve_rate_baseline"])],
    "median s (entry / baseline)": [f"{fmt_time(e, t)} / {fmt_time(b, t)}" for e, b, t in
                                    zip(comparisons["median_entry_s"], comparisons["median_baseline_s"], comparisons["budget_s"])],
    "IQM s (entry / baseline)": [f"{fmt_time(e, t)} / {fmt_time(b, t)}" for e, b, t in
                                 zip(comparisons["iqm_entry_s"], comparisons["iqm_baseline_s"], comparisons["budget_s"])],
    "speed-up [95% CI]": [f"{s:.2f}x [{lo:.2f}, {hi:.2f}]" if np.isfinite(s) else "- (median censored)" for s, lo, hi in
                          zip(comparisons["speedup"], comparisons["speedup_ci_low"], comparisons["speedup_ci_high"])],
    "p (entry faster)": [f"{p:.2g}" for p in comparisons["p_faster"]],
    "P(improvement)": [f"{p:.2f}" for p in comparisons["prob_improvement"]],
    "runs": [f"{e} / {b}" for e, b in zip(comparisons["runs_entry"], comparisons["runs_baseline"])],
    "verdict": [f"{mark}{v}{mark}" + (f" ({n})" if n else "") for v, n in zip(comparisons["verdict"], comparisons["notes"])],
  })


# ---------------------------------------------------------------------------------------------- plots
def _colors(agents) -> dict:
  return {a: plt.get_cmap("tab10")(i % 10) for i, a in enumerate(sorted(agents))}


def plot_time_to_threshold(runs: pd.DataFrame, path: str) -> str:
  """One panel per task: each seed a point (x = unsolved, drawn at the budget), the median a bar
  with its bootstrap 95 % CI, the budget dotted. Log scale labelled 1-2-5: references and entries differ by 10x."""
  timed = runs[runs["role"] == "timed"]
  tasks, agents = sorted(timed["task"].unique()), sorted(timed["agent"].unique())
  colors = _colors(agents)
  fig, axes = plt.subplots(1, len(tasks), figsize=(max(6.5, 1.9 * len(agents) + 3.5) * len(tasks), 4.8), squeeze=False)
  rng = np.random.default_rng(0)
  for ax, task in zip(axes[0], tasks):
    g = timed[timed["task"] == task]
    budget, threshold = float(g["time_budget_s"].max()), float(g["threshold"].max())
    present = [a for a in agents if (g["agent"] == a).any()]
    for i, agent in enumerate(present):
      a = g[g["agent"] == agent]
      s, u = a[a["solved"]], a[~a["solved"]]
      ax.scatter(i + rng.uniform(-0.15, 0.15, len(s)), s["time_to_threshold_s"], color=colors[agent], alpha=0.75, zorder=3, s=22)
      if len(u): ax.scatter(i + rng.uniform(-0.15, 0.15, len(u)), np.full(len(u), budget), marker="x", color="black", zorder=3)
      t = a["censored_time_s"].to_numpy(float)
      med, (lo, hi) = float(np.median(t)), median_ci(t)
      ax.hlines(med, i - 0.3, i + 0.3, color=colors[agent], linewidth=3, zorder=4)
      ax.vlines(i + 0.3, lo, hi, color=colors[agent], linewidth=1.5)
      ax.annotate(f"{med:.2f} s\n{len(s)}/{len(a)} solved", (i + 0.34, med), fontsize=8.5, va="center")
    ax.axhline(budget, color="black", linestyle=":", linewidth=1)
    ax.annotate(f"budget {budget:g} s (x = unsolved, drawn on it)", (1.0, budget), xycoords=("axes fraction", "data"),
                xytext=(0, 6), textcoords="offset points", fontsize=8, va="bottom", ha="right")
    ax.set_yscale("log")
    lo = float(g["censored_time_s"].min())
    ax.set_ylim(lo / 1.6, budget * 1.6)
    _log_125(ax, "y")
    ax.set_xticks(range(len(present)), present, rotation=15 if len(present) > 3 else 0)
    ax.set_xlim(-0.5, len(present) - 0.5 + 0.6)
    ax.set_ylabel("time-to-threshold (s, training clock, log)")
    ax.set_title(f"{task}: time to mean return {threshold:g}\nbar = median, whisker = its 95% CI, dot = one seed", fontsize=10)
    ax.grid(axis="y", which="both", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def curves_on_grid(runs: pd.DataFrame, grid: np.ndarray) -> np.ndarray:
  """Eval return of each run at each grid time (runs x grid): the latest evaluation so far; NaN before the first.
  A solved run's last value is held after it ended (it stopped because it solved); any other run has no value after
  its last evaluation (the referee knows nothing of it there: an entry evaluated once at step 0 is not a flat line)."""
  out = np.full((len(runs), len(grid)), np.nan)
  for i, (_, r) in enumerate(runs.iterrows()):
    pts = sorted(r["curve"], key=lambda p: p["t"])
    if not pts: continue
    t, v = np.array([p["t"] for p in pts]), np.array([p["return"] for p in pts])
    idx = np.searchsorted(t, grid, side="right") - 1
    row = np.where(idx >= 0, v[np.clip(idx, 0, None)], np.nan)
    if r["status"] != "solved": row[grid > t[-1]] = np.nan
    out[i] = row
  return out


def _log_125(ax, axis: str) -> None:
  """A log axis labelled at 1-2-5 steps (0.5, 1, 2, 5, 10, ...), not only at the powers of ten."""
  a = ax.xaxis if axis == "x" else ax.yaxis
  a.set_major_locator(mticker.LogLocator(subs=(1.0, 2.0, 5.0)))
  a.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
  a.set_minor_formatter(mticker.NullFormatter())


def plot_learning_curves(runs: pd.DataFrame, path: str) -> str:
  """One panel per task: mean evaluation return against training wall-clock (log), median across seeds with the
  inter-quartile band where most seeds have a value; every evaluation a dot (the untrained one at the left edge);
  threshold dashed. An evaluation that stopped once it could no longer pass shows the upper bound of its mean."""
  timed = runs[runs["role"] == "timed"]
  tasks, agents = sorted(timed["task"].unique()), sorted(timed["agent"].unique())
  colors = _colors(agents)
  fig, axes = plt.subplots(1, len(tasks), figsize=(7.5 * len(tasks), 5.4), squeeze=False)
  for ax, task in zip(axes[0], tasks):
    g = timed[timed["task"] == task]
    threshold = float(g["threshold"].max())
    ts = np.array([p["t"] for c in g["curve"] for p in c], dtype=float)
    left = max(min(ts[ts > 0].min() if (ts > 0).any() else 1.0, float(g["training_clock_s"].max())) / 2, 1e-3)
    right = max(float(g["training_clock_s"].max()), left * 4) * 1.15
    grid = np.geomspace(left, right, 400)
    for agent in agents:
      a = g[g["agent"] == agent]
      if a.empty: continue
      pts = [(max(p["t"], left), p["return"]) for c in a["curve"] for p in c]
      if pts: ax.scatter(*zip(*pts), color=colors[agent], s=9, alpha=0.35, linewidths=0, zorder=2)
      vals = curves_on_grid(a, grid)
      ok = (~np.isnan(vals)).sum(0) * 2 > len(a)           # drawn where most seeds have a value
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        q25, med, q75 = np.nanpercentile(vals, [25, 50, 75], axis=0)
      ax.plot(np.where(ok, grid, np.nan), np.where(ok, med, np.nan), color=colors[agent], linewidth=2,
              label=f"{agent} (median of {len(a)} seed{'s' if len(a) > 1 else ''}, IQR band; dots: evaluations)")
      ax.fill_between(grid, q25, q75, where=ok, color=colors[agent], alpha=0.2, linewidth=0)
    ax.axhline(threshold, color="black", linestyle="--", linewidth=1)
    ax.annotate(f"threshold {threshold:g}", (0.99, threshold), xycoords=("axes fraction", "data"), fontsize=8,
                va="bottom", ha="right")
    ax.set_xscale("log")
    ax.set_xlim(left, right)
    _log_125(ax, "x")
    ax.set_xlabel("training clock (s, log; evaluations of the untrained policy at the left edge)")
    ax.set_ylabel("mean evaluation return (below the threshold: at most)")
    ax.set_title(f"{task}: learning curves", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8.5, ncol=2, frameon=False)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_speedup(comparisons: pd.DataFrame, path: str) -> str:
  """Forest plot: one row per (task, entry vs baseline), the speed-up of medians and its 95 % CI on a
  log axis, 1x marked; the verdict written at the right of each row, its colour on the point."""
  c = comparisons.iloc[::-1].reset_index(drop=True)
  fig, ax = plt.subplots(figsize=(10, 1.2 + 0.55 * max(len(c), 1)))
  for i, r in c.iterrows():
    col = VERDICT_COLORS.get(r["verdict"], "tab:blue")
    if not np.isfinite(r["speedup"]): continue     # a median censored at the budget has no speed-up
    if np.isfinite(r["speedup_ci_low"]): ax.hlines(i, r["speedup_ci_low"], r["speedup_ci_high"], color=col, linewidth=2)
    ax.plot(r["speedup"], i, "o", color=col, markersize=8)
  ax.axvline(1.0, color="black", linewidth=1)
  ax.set_xscale("log")
  lo = np.nanmin(np.r_[c["speedup_ci_low"], c["speedup"], 0.5]) / 1.3
  hi = np.nanmax(np.r_[c["speedup_ci_high"], c["speedup"], 2.0]) * 1.3
  ax.set_xlim(lo, hi)
  _log_125(ax, "x")
  ax.set_yticks(range(len(c)), [f"{r['task']}: {r['entry']} vs {r['baseline']}" for _, r in c.iterrows()])
  ax.set_ylim(-0.7, len(c) - 0.3)
  for i, r in c.iterrows():
    label = f"{r['speedup']:.2f}x  {r['verdict']}" if np.isfinite(r["speedup"]) else f"-  {r['verdict']} (median censored)"
    ax.annotate(label, (1.01, i), xycoords=("axes fraction", "data"), va="center", fontsize=9,
                color=VERDICT_COLORS.get(r["verdict"], "black"))
  ax.set_xlabel("speed-up of median time-to-threshold = baseline / entry (log; > 1: entry faster), 95% bootstrap CI")
  ax.set_title("Speed-up over the baseline")
  ax.grid(axis="x", which="both", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return path


def plot_performance_profile(profile: pd.DataFrame, baselines: dict[str, str], path: str) -> str:
  """Fraction of each agent's runs (all tasks) solved within tau x the baseline's median time."""
  fig, ax = plt.subplots(figsize=(7.5, 4.8))
  colors = _colors(profile["agent"].unique())
  for agent, g in profile.groupby("agent"):
    is_base = agent in baselines.values()
    ax.step(g["tau"], g["fraction"], where="post", color=colors[agent], linewidth=2, linestyle="--" if is_base else "-",
            label=f"{agent} (baseline)" if is_base else agent)
  ax.axvline(1.0, color="black", linewidth=1, linestyle=":")
  ax.annotate(" tau = 1: the baseline's median", (1.0, 0.02), fontsize=8)
  ax.set_xscale("log")
  _log_125(ax, "x")
  ax.set_ylim(-0.02, 1.05)
  ax.set_xlabel("tau = time-to-threshold / baseline's median on the same task (log)")
  ax.set_ylabel("fraction of runs solved within tau")
  ax.set_title("Performance profile (all tasks pooled; higher and further left is better)", fontsize=10)
  ax.legend(loc="upper left", fontsize=9)
  ax.grid(which="both", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return path


# --------------------------------------------------------------------------------------------- report
def _hardware(runs: pd.DataFrame) -> pd.DataFrame:
  cols = {"agent": "agent", "device": "device", "fingerprint.cpu": "cpu", "fingerprint.cores": "cores",
          "fingerprint.memory_gb": "memory GB", "fingerprint.gpu": "gpu", "fingerprint.host": "host",
          "fingerprint.tinygrad_version": "tinygrad", "fingerprint.tinygrad_commit": "tinygrad commit", "sandbox": "sandbox",
          "git.commit": "commit", "git.dirty": "dirty"}
  have = [c for c in cols if c in runs.columns]
  hw = runs[have].astype(object).where(runs[have].notna(), "-").astype(str).drop_duplicates().rename(columns=cols)
  for c in ("commit", "tinygrad commit"):
    if c in hw: hw[c] = hw[c].str[:10]
  return hw.sort_values(list(hw.columns)).reset_index(drop=True)


SPLIT = {"training (on the clock)": "breakdown.train_clock_s", "evaluation (off the clock)": "breakdown.eval_s",
         "process start-up": "breakdown.start_up_s", "evaluators' start-up": "breakdown.evaluator_start_s",
         "calibration": "breakdown.calibration_s"}


def time_split(runs: pd.DataFrame) -> pd.DataFrame:
  """Where the runs' wall time went, per (agent, task): seconds summed over its runs (every role) and the pair's untimed
  warm-up, by phase, with each phase's share; `other` is the rest of the runs' wall time (the referee's own work between
  requests, clean-up). Records without a run's wall time (schema 6 and older) are left out."""
  if "breakdown.wall_s" not in runs: return pd.DataFrame()
  runs = runs[runs["breakdown.wall_s"].notna()]
  rows = []
  for (agent, task), g in runs.groupby(["agent", "task"], sort=True):
    row = {"agent": agent, "task": task, "runs": len(g)}
    for name, col in SPLIT.items(): row[name] = float(g[col].fillna(0).sum()) if col in g else 0.0
    warm = g["warm_up.wall_s"].dropna() if "warm_up.wall_s" in g else pd.Series(dtype=float)
    start = g["warm_up.start_up_s"].dropna() if "warm_up.start_up_s" in g else pd.Series(dtype=float)
    row["warm-up"] = float(warm.iloc[0] if len(warm) else 0) + float(start.iloc[0] if len(start) else 0)
    wall = float(g["breakdown.wall_s"].sum())
    row["other"] = max(wall - sum(row[n] for n in SPLIT), 0.0)
    row["total"] = wall + row["warm-up"]
    rows.append(row)
  return pd.DataFrame(rows)


def _split_section(runs: pd.DataFrame) -> list[str]:
  split = time_split(runs)
  if split.empty: return []
  phases = [*SPLIT, "warm-up", "other"]
  total = split[phases].sum()
  shown = split.copy()
  for c in [*phases, "total"]: shown[c] = [f"{x:.1f}" for x in shown[c]]
  grand = float(split["total"].sum())
  return ["## Where the session's time went", "",
          "Wall-clock seconds of the runs and warm-ups in these records, by phase (bench/analysis/report.py time_split). Only "
          "training is on the clock (a snapshot of the policy for each evaluation is part of it); the rest is what a "
          "session waits for besides.", "", markdown(shown), "",
          "All pairs: " + ", ".join(f"{p} {total[p]:.0f} s ({total[p] / grand:.0%})" for p in phases if grand) + f"; {grand:.0f} s in all.", ""]


def _power_section(timed: pd.DataFrame) -> list[str]:
  """How many seeds the regression gate needs, from this session's spread (bench/analysis/gate.py power_table)."""
  from bench.analysis.gate import GATE_ALPHA, GATE_TOLERANCE, power_table, recommend_seeds
  table = power_table(timed)
  if table.empty: return []
  rec = recommend_seeds(table)
  shown = table.copy()
  for c in shown.columns[3:]: shown[c] = [f"{x:.2f}" for x in shown[c]]
  return ["## How many seeds the regression gate needs", "",
          f"The chance that `--regress-against` calls a slowdown *regressed* (alpha {GATE_ALPHA:g}, tolerance {GATE_TOLERANCE:.0%}) "
          "with n seeds a side, from this session's runs resampled with their times multiplied by the slowdown (100 "
          "trials each; `false alarms`: unchanged times). A slowdown within the tolerance is never called one.", "",
          markdown(shown), "",
          "Seeds to catch a 20 % slowdown 80 % of the time: "
          + "; ".join(f"{a} on {t}: {n or 'more than 20'}" for (a, t), n in rec.items()) + ".", ""]


def _plots_section(runs: pd.DataFrame, timed: pd.DataFrame, comparisons: pd.DataFrame, out_dir: str) -> list[str]:
  """The PNGs (written into out_dir), each under its title."""
  pngs = []
  if len(timed):
    pngs.append(plot_time_to_threshold(runs, os.path.join(out_dir, PNGS[0])))
    pngs.append(plot_learning_curves(runs, os.path.join(out_dir, PNGS[1])))
    if len(comparisons):
      pngs.append(plot_speedup(comparisons, os.path.join(out_dir, PNGS[2])))
      baselines = dict(zip(comparisons["task"], comparisons["baseline"]))   # as compare_runs picked them
      taus = np.exp(np.linspace(np.log(0.05), np.log(20), 300))
      pngs.append(plot_performance_profile(performance_profile(runs, baselines, taus), baselines, os.path.join(out_dir, PNGS[3])))
  titles = {PNGS[0]: "Time-to-threshold", PNGS[1]: "Learning curves", PNGS[2]: "Speed-up", PNGS[3]: "Performance profile"}
  lines = []
  for p in pngs:
    name = os.path.basename(p)
    lines += [f"### {titles[name]}", "", f"![{titles[name]}]({name})", ""]
  return lines


def _machines_section(runs: pd.DataFrame, timed: pd.DataFrame) -> list[str]:
  """The machines, their speed, the contended runs and how many ran at once."""
  lines = ["## Machines", "", markdown(_hardware(runs)), ""]
  if "calibration.score_s" in timed and timed["calibration.score_s"].notna().any():
    lines += [f"Machine speed (bench/referee/calibrate.py, timed before each run; smaller is faster): median "
              f"{timed['calibration.score_s'].median():.4f} s, from {timed['calibration.score_s'].min():.4f} to "
              f"{timed['calibration.score_s'].max():.4f} s over {timed['calibration.score_s'].notna().sum()} runs.", ""]
  if "contended" in timed:
    contended = timed[timed["contended"].fillna(False).astype(bool)]
    lines += [f"Contended runs (other processes shared the cores while they trained; bench/referee/contention.py): {len(contended)} of "
              f"{len(timed)}" + (f", e.g. {contended['agent'].iloc[0]} seed {contended['seed'].iloc[0]}: {contended['contended_why'].iloc[0]}. "
                                 "Their times are not this machine's quiet speed." if len(contended) else "."), ""]
  if len(timed):
    from bench.analysis.stats import concurrency
    ways = sorted(concurrency(timed))
    beside = timed["placement.beside"] if "placement.beside" in timed else None
    lines += [f"Runs made: {'; '.join(ways)}" + (f" (at most {int(beside.max())} other runs beside one)" if beside is not None
                                                    and beside.notna().any() else "") +
              (". Runs made side by side are not compared with runs made one at a time (PROTOCOL.md section 14)." if len(ways) > 1 else "."), ""]
  return lines


def write_report(runs: pd.DataFrame, out_dir: str, *, baseline: str | None = None, force: bool = False,
                 sources: str = "") -> tuple[str, pd.DataFrame, list[str]]:
  """Writes report.md, its PNGs, summary.csv and comparisons.csv into out_dir; returns the path of
  report.md, the comparisons (bench.analysis.stats.compare_runs) and the warnings."""
  os.makedirs(out_dir, exist_ok=True)
  summary = summary_table(runs)
  summary.to_csv(os.path.join(out_dir, "summary.csv"), index=False)
  timed = runs[runs["role"] == "timed"]
  comparisons, warns = compare_runs(runs, baseline=baseline, force=force) if len(timed) else (pd.DataFrame(), [])
  comparisons.to_csv(os.path.join(out_dir, "comparisons.csv"), index=False)
  lines = ["# rlspeedrun report", ""]
  if sources: lines += [f"Records: `{sources}`", ""]
  lines += [f"{len(timed)} timed runs (warm kernel cache) of {timed['agent'].nunique()} agent(s) on "
            f"{timed['task'].nunique()} task(s); time-to-threshold is training wall-clock; unsolved runs count "
            "at the time budget.", ""]
  if warns: lines += ["> **Warnings**", ">"] + [f"> - {w}" for w in warns] + [""]
  lines += ["## Verdict", ""]
  if len(comparisons):
    lines += [markdown(verdict_table(comparisons)), ""]
  else:
    lines += ["_No comparison: the records hold one agent per task (run an entry beside a reference)._", ""]
  lines += ["## Runs", "", markdown(summary), ""]
  lines += _plots_section(runs, timed, comparisons, out_dir)
  lines += _machines_section(runs, timed)
  lines += _split_section(runs)
  lines += _power_section(timed)
  lines += ["## Method", "",
            f"Per task, every agent is compared with the baseline ({baseline or 'the fastest reference agent on the task'}). "
            "Times are censored at the budget for unsolved runs (never dropped). Speed-up = median(baseline) / median(entry) "
            "with a percentile bootstrap 95% CI (scipy.stats.bootstrap, each side resampled on its own). "
            f"Verdict: *fails to solve* if the entry's solve rate is under the task's bar; else *faster* / *slower* if the "
            f"one-sided Mann-Whitney U p-value is under {VERDICT_ALPHA}; else *no significant difference*. P(improvement) is the "
            "chance that a run of the entry beats a run of the baseline (ties count half). Rules: PROTOCOL.md.", ""]
  path = os.path.join(out_dir, "report.md")
  with open(path, "w") as f: f.write("\n".join(lines))
  return path, comparisons, warns


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("sources", nargs="*", default=["results"], help="results directories or runs.jsonl files (default: results/)")
  p.add_argument("--baseline", help="agent every other agent is compared with (default: the fastest reference agent per task)")
  p.add_argument("--out", help="where report.md and the PNGs go (default: the first source directory)")
  p.add_argument("--force", action="store_true", help="give verdicts even when the two sides ran on different hardware")
  p.add_argument("--public-key", metavar="PEM", help="refuse every record not signed with this key (bench/referee/signing.py): the key of "
                                                     "the referee that made the runs, from a channel the claimant does not control")
  args = p.parse_args(argv)
  missing = [s for s in args.sources if not os.path.exists(s)]
  if missing:
    print(f"no such file or directory: {', '.join(missing)}", file=sys.stderr)
    return 1
  inside = [s for s in args.sources if args.public_key and os.path.realpath(args.public_key).startswith(os.path.realpath(s).rstrip("/") + "/")]
  if inside:
    print(f"refused: the public key {args.public_key} lies among the records it would vouch for ({inside[0]}): whoever "
          "can rewrite them can replace it; give the referee's key from elsewhere", file=sys.stderr)
    return 2
  try:
    key = load_public(args.public_key) if args.public_key else None
    runs = pd.concat([load_runs(s, key) for s in args.sources], ignore_index=True)
  except (TamperedRecords, BadSignature, ValueError, OSError) as e:
    print(f"refused: {e}", file=sys.stderr)
    return 2
  if key is None: print("warning: signatures not checked (give --public-key): anyone holding these files could have written them",
                        file=sys.stderr)
  else: print(f"every record signed with key {key_id(key)}")
  if runs.empty:
    print(f"no run records under {', '.join(args.sources)}", file=sys.stderr)
    return 1
  first = args.sources[0]
  out = args.out or (first if os.path.isdir(first) else os.path.dirname(first) or ".")
  path, comparisons, warns = write_report(runs, out, baseline=args.baseline, force=args.force, sources=", ".join(args.sources))
  print(summary_table(runs).to_string(index=False))
  if len(comparisons): print("\n" + verdict_table(comparisons, bold=False).to_string(index=False))
  for w in warns: print(f"warning: {w}", file=sys.stderr)
  print(f"\nreport: {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
