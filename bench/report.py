"""Summary table and comparison plot of run records. `python -m bench.report [results_dir_or_jsonl]`."""
from __future__ import annotations

import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.records import load_curves, load_runs  # noqa: E402


def _censored_median(group: pd.DataFrame) -> str:
  """Median time-to-threshold with unsolved runs counted at the budget; '>budget' if that is where it falls."""
  t = group["censored_time_s"].astype(float)
  med = float(np.median(t))
  solved_med = group.loc[group["solved"], "time_to_threshold_s"]
  if (~group["solved"]).sum() * 2 >= len(group) and med >= group["time_budget_s"].max():
    return f">{group['time_budget_s'].max():g}"
  return f"{med:.2f}" if len(solved_med) else "-"


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
  """One row per (agent, task): timed runs solved/seeds, median time-to-threshold (censored at the
  budget), its spread, median steps, and the cold-start run's time."""
  if runs.empty: return pd.DataFrame()
  rows = []
  for (agent, task), g in runs.groupby(["agent", "task"], sort=True):
    timed, cold = g[g["role"] == "timed"], g[g["role"] == "cold-start"]
    solved = timed[timed["solved"]]
    rows.append({
      "agent": agent, "task": task,
      "solved/seeds": f"{len(solved)}/{len(timed)}",
      "median time (s)": _censored_median(timed) if len(timed) else "-",
      "min-max time (s)": f"{solved['time_to_threshold_s'].min():.2f}-{solved['time_to_threshold_s'].max():.2f}" if len(solved) else "-",
      "median steps": f"{int(solved['steps_to_threshold'].median()):,}" if len(solved) else "-",
      "cold-start (s)": (f"{cold['time_to_threshold_s'].iloc[-1]:.2f}" if len(cold) and cold["solved"].iloc[-1]
                         else (cold["status"].iloc[-1] if len(cold) else "-")),
      "failures": ", ".join(sorted(set(timed.loc[~timed["solved"], "status"]))) or "-",
    })
  return pd.DataFrame(rows)


def plot_runs(runs: pd.DataFrame, path: str) -> str:
  """Top row: time-to-threshold per agent for each task (points = seeds, bar = median, x = unsolved,
  drawn at the budget). Bottom row: evaluation return against training wall-clock, one line per seed,
  threshold dashed."""
  timed = runs[runs["role"] == "timed"]
  tasks = sorted(timed["task"].unique())
  agents = sorted(timed["agent"].unique())
  colors = {a: plt.get_cmap("tab10")(i % 10) for i, a in enumerate(agents)}
  fig, axes = plt.subplots(2, len(tasks), figsize=(max(6.0, 5.5 * len(tasks)), 8.5), squeeze=False)
  curves = load_curves(timed)
  for j, task in enumerate(tasks):
    g = timed[timed["task"] == task]
    budget, threshold = float(g["time_budget_s"].max()), float(g["threshold"].max())
    ax = axes[0, j]
    rng = np.random.default_rng(0)
    for i, agent in enumerate(agents):
      a = g[g["agent"] == agent]
      if a.empty: continue
      s = a[a["solved"]]
      ax.scatter(i + rng.uniform(-0.12, 0.12, len(s)), s["time_to_threshold_s"], color=colors[agent], alpha=0.8, zorder=3)
      u = a[~a["solved"]]
      if len(u): ax.scatter(i + rng.uniform(-0.12, 0.12, len(u)), np.full(len(u), budget), marker="x", color="black", zorder=3,
                            label="unsolved (at budget)" if i == 0 else None)
      med = float(np.median(a["censored_time_s"]))
      ax.hlines(med, i - 0.3, i + 0.3, color=colors[agent], linewidth=2.5)
      ax.annotate(f"median {med:.2f} s\n{len(s)}/{len(a)} solved", (i + 0.32, med), fontsize=9, va="center")
    ax.set_xticks(range(len(agents)), agents)
    ax.set_xlim(-0.6, len(agents) - 0.1 + 0.6)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("time-to-threshold (s, training clock)")
    ax.set_title(f"{task}: time to reach {threshold:g}")
    ax.grid(axis="y", alpha=0.3)
    ax = axes[1, j]
    c = curves[curves["task"] == task]
    for agent in agents:
      for k, (_, run) in enumerate(c[c["agent"] == agent].groupby("seed")):
        ax.plot(run["t"], run["return"], color=colors[agent], alpha=0.7, marker=".", label=agent if k == 0 else None)
    ax.axhline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_xlabel("training clock (s)")
    ax.set_ylabel(f"mean eval return ({'/'.join(map(str, sorted(set(g['task']))))})")
    ax.set_title(f"{task}: learning curves (one line per seed)")
    ax.legend(loc="lower right", fontsize=9)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def write_session_report(runs: pd.DataFrame, out_dir: str) -> str | None:
  os.makedirs(out_dir, exist_ok=True)
  summary_table(runs).to_csv(os.path.join(out_dir, "summary.csv"), index=False)
  if (runs["role"] == "timed").any():
    return plot_runs(runs, os.path.join(out_dir, "time_to_threshold.png"))
  return None


def main(argv: list[str]) -> int:
  src = argv[0] if argv else "results"
  if not os.path.exists(src):
    print(f"no such file or directory: {src}", file=sys.stderr)
    return 1
  runs = load_runs(src)
  if runs.empty:
    print(f"no run records under {src}", file=sys.stderr)
    return 1
  print(summary_table(runs).to_string(index=False))
  out = src if os.path.isdir(src) else os.path.dirname(src)
  print("plot:", write_session_report(runs, out))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
