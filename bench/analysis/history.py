"""`python -m bench.history [RESULTS ...]`: every session it is given (default: results/, the named baselines under
results/baselines left out unless named), per (agent, task): the median time-to-threshold with its bootstrap 95 % CI
and the solve rate per session, ordered by date, labelled by project commit and tinygrad version, one line per machine
(fingerprint and host: two machines of one fingerprint differ 2x) and configuration override (PPO_CONFIG, ...), each
session judged by the regression gate against the one before it on the same line (bench/analysis/gate.py). Writes
history.md and one history-<agent>-<task>.png each.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd

from bench.analysis.gate import GATE_ALPHA, GATE_TOLERANCE, gate_runs
from bench.analysis.loaders import load_runs
from bench.referee.records import AGENT_VARS, TamperedRecords, records_files

MACHINE_KEYS = ("fingerprint.cpu", "fingerprint.cores", "fingerprint.gpu", "device", "fingerprint.host")
MARKS = {"regressed": ("v", "tab:red"), "improved": ("^", "tab:green")}


def _own_config(agent: str, recorded: list[str]) -> str | None:
  """This agent's configuration variable, if recorded: PPO_CONFIG for ppo, PPO_JIT_CONFIG for ppo_jit (of the
  variables bench/referee/records.py records, the longest NAME_CONFIG whose NAME begins the agent's name)."""
  mine = max((n for n in AGENT_VARS if n.endswith("_CONFIG") and agent.lower().startswith(n[:-len("_CONFIG")].lower())), key=len, default=None)
  return mine if mine in recorded else None


def session_files(paths: list[str]) -> list[str]:
  """The runs.jsonl of each session below the given paths (bench.referee.records.records_files: baselines left out)."""
  return sorted({f for p in paths for f in ([p] if os.path.isfile(p) else records_files(p))})


def _col(df: pd.DataFrame, c: str) -> pd.Series:
  return df[c].astype(object).where(df[c].notna(), "-").astype(str) if c in df else pd.Series("-", index=df.index)


def sessions_table(runs: pd.DataFrame, *, alpha: float, tolerance: float) -> pd.DataFrame:
  """One row per (agent, task, session): date, labels, median and CI, solve rate, verdict against the machine's
  previous session."""
  from bench.analysis.tables import median_ci
  timed = runs[runs["role"] == "timed"].copy()
  if timed.empty: return pd.DataFrame()
  timed["machine"] = [" · ".join(v) for v in zip(*(_col(timed, c) for c in MACHINE_KEYS))]
  timed["session"] = [os.path.basename(os.path.dirname(f)) for f in timed["source_file"]]
  rows = []
  for (agent, task), g in timed.groupby(["agent", "task"]):
    previous: dict[str, pd.DataFrame] = {}
    for session, s in sorted(g.groupby("session"), key=lambda kv: kv[1]["timestamp"].min()):
      t = s["censored_time_s"].to_numpy(float)
      lo, hi = median_ci(t)
      own = _own_config(agent, [c.split(".", 1)[1] for c in s.columns if c.startswith("agent_env.")])
      config = f"{own}={v}" if own and isinstance(v := s[f"agent_env.{own}"].iloc[0], str) and v else ""
      series = s["machine"].iloc[0] + (f" · {config}" if config else "")    # an overridden config is its own line
      verdict, why = "-", "first on this machine" + (" with this config" if config else "")
      if series in previous:
        df, _ = gate_runs(previous[series], s, alpha=alpha, tolerance=tolerance)
        if len(df): verdict, why = df["verdict"][0], df["why"][0]
        else: why = "under 2 runs on a side"
      previous[series] = s
      commit = _col(s, "git.commit").iloc[0][:7] + ("*" if _col(s, "git.dirty").iloc[0] == "True" else "")
      rows.append({"agent": agent, "task": task, "session": session, "date": s["timestamp"].min()[:16].replace("T", " "),
                   "commit": commit, "tinygrad": _col(s, "fingerprint.tinygrad_version").iloc[0] +
                   (f"@{c[:7]}" if (c := _col(s, "fingerprint.tinygrad_commit").iloc[0]) != "-" else ""),
                   "config": config, "series": series,
                   "machine": s["machine"].iloc[0], "runs": len(s), "solved": float(s["solved"].mean()), "median_s": float(np.median(t)),
                   "ci_low": lo, "ci_high": hi, "contended": int(s["contended"].fillna(False).astype(bool).sum()) if "contended" in s else 0,
                   "verdict": verdict, "why": why})
  return pd.DataFrame(rows)


def plot_pair(tab: pd.DataFrame, path: str) -> str:
  """Median time with its CI per session (x: sessions by date), a line per machine, regressions and improvements
  marked; the solve rate below. Hollow markers: sessions with contended runs."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  tab = tab.sort_values("date").reset_index(drop=True)
  fig, (ax, ax2) = plt.subplots(2, 1, figsize=(max(6.0, 1.1 * len(tab) + 2), 5.5), sharex=True,
                                gridspec_kw={"height_ratios": [3, 1]})
  machines = tab["machine"].nunique()
  for i, (_, m) in enumerate(tab.groupby("series", sort=False)):
    color = plt.get_cmap("tab10")(i % 10)
    x = m.index.to_numpy()
    label = (m["config"].iloc[0] or "reference config") + (f" · {m['machine'].iloc[0]}" if machines > 1 else "")
    ax.errorbar(x, m["median_s"], yerr=[m["median_s"] - m["ci_low"], m["ci_high"] - m["median_s"]], color=color, marker="o",
                capsize=3, label=label if len(label) < 80 else label[:77] + "...")
    hollow = m[m["contended"] > 0]
    if len(hollow): ax.scatter(hollow.index, hollow["median_s"], s=90, facecolors="white", edgecolors=color, zorder=3,
                               label="hollow: contended runs")
    for verdict, (mk, c) in MARKS.items():
      hit = m[m["verdict"] == verdict]
      if len(hit): ax.scatter(hit.index, hit["ci_high"] * 1.08, marker=mk, color=c, s=70, zorder=4, label=f"{verdict} vs the line's previous")
    ax2.bar(x, m["solved"], color=color, width=0.6)
  handles, labels = ax.get_legend_handles_labels()
  keep = dict(zip(labels, handles))
  ax.legend(keep.values(), keep.keys(), fontsize=7, loc="upper left")
  ax.set_ylabel("median time-to-threshold (s)\n95 % CI")
  ax.set_ylim(bottom=0)
  ax.set_title(f"{tab['agent'][0]} on {tab['task'][0]}: history" + (f" ({tab['machine'][0]})" if machines == 1 else ""), fontsize=10)
  ax2.set_ylabel("solved")
  ax2.set_ylim(0, 1.05)
  ax2.set_xticks(tab.index, [f"{d[5:]}\n{c}\ntg {v}" for d, c, v in zip(tab["date"], tab["commit"], tab["tinygrad"])], fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def write_history(runs: pd.DataFrame, out_dir: str, *, alpha: float = GATE_ALPHA, tolerance: float = GATE_TOLERANCE) -> str:
  from bench.analysis.tables import markdown
  os.makedirs(out_dir, exist_ok=True)
  tab = sessions_table(runs, alpha=alpha, tolerance=tolerance)
  lines = ["# History of time-to-threshold", "",
           f"{tab['session'].nunique() if len(tab) else 0} sessions. Each session is judged against the previous one on the same "
           f"machine (and configuration override) by the regression gate (alpha {alpha:g}, tolerance {tolerance:.0%}); `contended`: runs made while "
           "other processes shared the cores (their times are not the machine's quiet speed). tinygrad: version@commit.", ""]
  for (agent, task), t in tab.groupby(["agent", "task"]) if len(tab) else []:
    png = plot_pair(t.reset_index(drop=True), os.path.join(out_dir, f"history-{agent}-{task}.png".replace("/", "_")))
    shown = t.assign(solved=[f"{x:.0%}" for x in t["solved"]],
                     **{"median s [CI]": [f"{m:.2f} [{lo:.2f}, {hi:.2f}]" for m, lo, hi in zip(t["median_s"], t["ci_low"], t["ci_high"])]})
    lines += [f"## {agent} on {task}", "", f"![{agent} on {task}]({os.path.basename(png)})", "",
              markdown(shown[["date", "session", "commit", "tinygrad", "config", "runs", "solved", "median s [CI]", "contended", "verdict", "why"]]),
              "", "machines: " + "; ".join(sorted(set(t["machine"]))), ""]
  path = os.path.join(out_dir, "history.md")
  with open(path, "w") as f: f.write("\n".join(lines))
  return path


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("results", nargs="*", default=["results"], help="session directories, runs.jsonl files or folders of sessions (default: results)")
  p.add_argument("--out", default=None, help="where history.md and the PNGs go (default: <first RESULTS>/history)")
  p.add_argument("--alpha", type=float, default=GATE_ALPHA, help="the gate's level (default: %(default)r)")
  p.add_argument("--tolerance", type=float, default=GATE_TOLERANCE, help="the gate's tolerance (default: %(default)r)")
  args = p.parse_args(argv)
  files = session_files(args.results)
  if not files:
    print(f"no sessions (runs.jsonl) under {', '.join(args.results)}", file=sys.stderr)
    return 2
  try: runs = load_runs(files)
  except TamperedRecords as e:
    print(f"refused: {e}", file=sys.stderr)
    return 2
  out = args.out or os.path.join(args.results[0] if os.path.isdir(args.results[0]) else os.path.dirname(args.results[0]), "history")
  print(f"history of {len(files)} sessions: {write_history(runs, out, alpha=args.alpha, tolerance=args.tolerance)}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
