"""What the report and the history page both print: a Markdown table safe for any record's text, a median's CI."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from bench.referee.protocol import printable
from bench.referee.records import settings_text


def markdown(df: pd.DataFrame) -> str:
  """A Markdown table; every text cell made printable and its '|' escaped (a record's text cannot add a column)."""
  if not len(df): return "_none_"
  cells = df.astype(object).map(lambda v: printable(v).replace("|", "\\|") if isinstance(v, str) else v)
  return cells.to_markdown(index=False, disable_numparse=True)


def median_ci(x: np.ndarray) -> tuple[float, float]:
  """A median and its bootstrap 95 % CI (percentile, a fixed seed)."""
  if len(x) < 2 or np.ptp(x) == 0: return float(np.median(x)), float(np.median(x))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    ci = stats.bootstrap((x,), np.median, vectorized=True, method="percentile", n_resamples=5000,
                         rng=np.random.default_rng(0)).confidence_interval
  return float(ci.low), float(ci.high)


def settings_of(runs: pd.DataFrame, empty: str = "-") -> str:
  """The tinygrad settings runs ran with (their tinygrad_env: the session's and the agent's declared), each as
  records.settings_text writes it, 'HCQ2=1 SPEC=0'; ' | ' between different ones; `empty` for tinygrad's defaults."""
  cols = sorted(c for c in runs.columns if c.startswith("tinygrad_env."))
  envs = [{c.removeprefix("tinygrad_env."): v for c, v in zip(cols, row) if isinstance(v, str) and v} for row in runs[cols].itertuples(index=False)]
  return " | ".join(t or empty for t in sorted({settings_text(e) for e in envs})) or empty
