"""The referee's settings for one session's runs (RefereeConfig: every default defined here once; the pytest options
in bench/plugin.py read theirs from it), and the rule for rebuilding a settings dataclass from JSON written by another
version of the project."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class RefereeConfig:
  device: str | None = "CPU"          # tinygrad DEV= in the agent's process; None leaves the environment alone
  hang_timeout_s: float = 300.0       # no reply for this long (outside the time budget) = hang
  startup_timeout_s: float = 120.0    # process start, library imports and device start-up (untimed)
  eval_seed: int | None = None        # fixed evaluation seed root (reproductions); None = secret
  extra_env: dict[str, str] = field(default_factory=dict)
  sandbox: str = "bwrap"              # "bwrap" (required: the session refuses to start without it) or "none" (recorded)
  hidden_dirs: tuple[str, ...] = ()   # directories the agent must not see (the results directory)
  memory_limit_gb: float | None = 8.0  # memory of each agent process tree (its cgroup; RLIMIT_AS per process on the CPU device)
  max_processes: int = 1024           # processes and threads of each agent process tree (its cgroup; RLIMIT_NPROC of its uid)
  act_call_cap_s: float = 10.0        # one act() call longer than this fails the run
  act_eval_cap_s: float = 120.0       # act() time in one evaluation longer than this fails the run
  eval_cpu_cap_s: float = 30.0        # CPU-seconds an evaluator's processes may use in one evaluation (restore + act calls)
  freezer: bool = True                # freeze the agent's processes between requests (False: only to show what it stops)
  warm_up_cap_s: float = 120.0        # the untimed warm-up's agent code (import to its last act()), all requests together
  calibrate: bool = True              # time the machine-speed workload before each run (calibrate.py), outside the clock
  placement: dict = field(default_factory=dict)  # runs side by side (bench/parallel.py): slot, cores (pinned), workers; recorded

  def to_json(self) -> dict:
    """JSON-ready fields (tuples as lists), for another process's `from_json`."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_json(cls, fields: dict) -> RefereeConfig:
    """From `to_json`'s fields, written by this or another version (lists back to tuples)."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in known_fields(cls, fields).items()})


DEFAULTS = RefereeConfig()


def known_fields(cls, fields: dict) -> dict:
  """The items of `fields` that dataclass `cls` has: a record or settings written by another version of the project
  may carry fields this one lacks, and those are dropped rather than refused."""
  known = {f.name for f in dataclasses.fields(cls)}
  return {k: v for k, v in fields.items() if k in known}
