"""The options of `pytest bench/` (declared in bench/plugin.py), read once per session into one frozen dataclass."""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Options:
  """The session's options, read once from pytest's config (`options(config)`); each is `--NAME` below, with `-` for `_`."""
  agent: list[str]
  with_references: bool
  baseline: str | None
  force_compare: bool
  task: list[str]
  tier: str
  seeds: int
  agent_device: str
  results_dir: str
  cold_start: bool
  hang_timeout: float
  eval_seed: int | None
  sandbox: str
  agent_memory_gb: float
  regress_against: str | None
  gate_alpha: float
  gate_tolerance: float
  confirm_regressions: bool
  workers: int | None
  devices: list[str] | None
  cores_per_run: int | None
  ray: str | None
  signing_key: str | None
  eval_cpu_cap: float


def options(config) -> Options:
  if not hasattr(config, "_rlspeedrun_options"):
    config._rlspeedrun_options = Options(**{f.name: config.getoption(f"rl_{f.name}") for f in fields(Options)})
  return config._rlspeedrun_options
