"""Records as pandas DataFrames for the analysis (bench/referee/records.py reads and checks them): one row per run,
one row per evaluation. Kept apart so that no process on the run path imports pandas."""
from __future__ import annotations

import pandas as pd

from bench.referee.records import read_records


def frame(recs: list[dict]) -> pd.DataFrame:
  """Records (dicts) as one row per run; nested fields flattened with dots (fingerprint.cpu, breakdown.eval_s, ...)."""
  if not recs: return pd.DataFrame()
  recs = [dict(r) for r in recs]
  curves = [r.pop("curve") for r in recs]
  confirmations = [r.pop("confirmations") for r in recs]
  sources = [r.pop("sources", {}) for r in recs]
  df = pd.json_normalize(recs)
  df["curve"], df["confirmations"], df["sources"] = curves, confirmations, sources
  return df


def load_runs(paths: str | list[str], public_key=None) -> pd.DataFrame:
  """One row per run; nested fields flattened with dots (fingerprint.cpu, breakdown.eval_s, ...)."""
  return frame(read_records(paths, public_key))


def load_curves(paths: str | list[str] | pd.DataFrame) -> pd.DataFrame:
  """Learning curves, tidy: one row per evaluation (agent, task, seed, role, t, steps, return; curtailed_at where the
  evaluation stopped once it could not pass: its return is then an upper bound)."""
  runs = paths if isinstance(paths, pd.DataFrame) else load_runs(paths)
  if runs.empty: return pd.DataFrame(columns=["agent", "task", "seed", "role", "t", "steps", "return"])
  keys = ["agent", "task", "seed", "role", "kernel_cache", "timestamp"]
  rows = [{**{k: run[k] for k in keys}, **pt} for _, run in runs.iterrows() for pt in run["curve"]]
  return pd.DataFrame(rows)
