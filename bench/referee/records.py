"""Run records: one JSON line per finished run, flushed at once, hash-chained (and signed where a key is given); the
reader that checks the chain and upgrades older schemas. The DataFrame loaders are bench/analysis/loaders.py."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

from agents import CONFIG_VARS
from bench import ROOT
from bench.peers import PEER_VARS
from bench.referee.agent_api import ALLOWED_SETTINGS

SCHEMA_VERSION = 9                 # 6: lines signed (bench/referee/signing.py); 7: evaluation of a snapshot, freezer, budget_scale;
                                   # 8: evaluations stop once they cannot pass (a curve point's curtailed_at; its return a bound);
                                   # 9: the tinygrad settings the agent declared (tinygrad_declared), applied in tinygrad_env
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6, 7, 8, 9)
GENESIS = "0" * 64                 # prev_sha256 of a file's first record
# the agents' own settings (the references' Config overrides, the peers'): recorded when set, passed into the sandbox
AGENT_VARS = (*CONFIG_VARS, *PEER_VARS)
# tinygrad settings that change what is measured: recorded when the session sets them or the agent declares them (those
# an agent may declare: bench/referee/agent_api.py ALLOWED_SETTINGS; HCQ2: agents/TUNING.md "HCQ2")
TINYGRAD_VARS = ("CACHELEVEL", "IGNORE_BEAM_CACHE", "DEBUG", "JIT", "OPTIM_DTYPE", *ALLOWED_SETTINGS)


@dataclass
class Breakdown:
  """Where one run's wall time went (a record's `breakdown`), as the referee measured it."""
  import_s: float | None = None            # clock at the end of the agent module's import
  construct_s: float | None = None         # the constructor's time on the clock
  first_update_s: float | None = None      # clock at train()'s first yield (its first update)
  first_update_steps: int | None = None    # env steps at that yield
  start_up_s: float | None = None          # untimed: process start, libraries, device, task (trainer and evaluator side by side)
  eval_s: float = 0.0                      # wall time of the evaluations
  evaluations: int = 0
  snapshot_s: float = 0.0                  # snapshot() calls, on the clock
  snapshot_bytes: int = 0                  # the last snapshot's size
  eval_on_clock_s: float = 0.0             # evaluations in place: act() on the clock
  evaluator_cpu_s: float = 0.0             # CPU-s of the evaluators' processes in evaluations
  evaluator_start_s: float = 0.0           # wall time the referee waited for evaluators to start, import and construct
  calibration_s: float = 0.0               # the machine-speed workload before the run
  wall_s: float | None = None              # the whole run, calibration to clean-up
  train_clock_s: float | None = None       # the clock when the run ended
  act_calls: int | None = None             # act() requests of the evaluations
  act_roundtrip_ms_median: float | None = None
  evaluator_cpu_max_s: float | None = None  # the most CPU-s one evaluation took (its cap: RefereeConfig.eval_cpu_cap_s)
  cpu_between_requests_s: float | None = None  # CPU the training process's tree used while no request of it was answered


@dataclass
class RunRecord:
  agent: str
  agent_target: str
  agent_sha256: str
  agent_kind: str           # "reference" | "peer" | "entry": what the report may use as a baseline, what needs a sandbox
  task: str
  env_id: str
  threshold: float
  time_budget_s: float
  step_budget: int
  solve_bar: float          # the fraction of seeds the agent must solve (the task's min_solve_rate when it ran)
  seed: int
  role: str                 # "timed" | "cold-start"
  kernel_cache: str         # "warm" | "cold"
  device: str | None
  status: str = "running"   # "solved" | "unsolved" (censored at a budget) | "failed" | "flagged"
  solved: bool = False
  time_to_threshold_s: float | None = None    # training clock at the confirmed checkpoint
  censored_time_s: float | None = None        # = time_to_threshold_s, or the time budget if not solved
  steps_to_threshold: int | None = None
  steps: int = 0                               # last env steps the agent's process reported (self-reported)
  step_source: str = "wrapper"                 # "wrapper" (the task's counting wrappers) | "yield" (train()'s yields)
  confirmation_return: float | None = None
  failure_reason: str | None = None
  passes_untrained: bool = False
  training_clock_s: float = 0.0                # clock when the run ended
  curve: list = field(default_factory=list)    # [{"t", "steps", "return"}] at each evaluation
  confirmations: list = field(default_factory=list)
  breakdown: dict = field(default_factory=dict)
  agent_profile: dict | None = None
  eval_seed_root: int | None = None
  fingerprint: dict = field(default_factory=dict)   # what the referee knows itself
  sandbox: str = ""                            # "bwrap", or "none: <why>"
  self_reported: dict = field(default_factory=dict)  # what the agent's process said: pid, tinygrad version/device, steps
  sources: dict = field(default_factory=dict)  # {file: sha256} of the entry's directory and the project's code (agent_api.hash_sources)
  review: list = field(default_factory=list)   # reasons a reviewer must look at this run
  git: dict = field(default_factory=dict)
  tinygrad_env: dict = field(default_factory=dict)  # the tinygrad settings it ran with: the session's and the agent's declared
  tinygrad_declared: dict = field(default_factory=dict)  # what the agent's file declared for the task (TINYGRAD_SETTINGS)
  agent_env: dict = field(default_factory=dict)     # AGENT_VARS set when it ran
  contended: bool | None = None                # the machine was shared while it trained (bench/referee/contention.py); None: not measured
  contended_why: str = ""
  contention: dict = field(default_factory=dict)    # CPU-s, run-queue wait, steal, load average of the timed sections
  calibration: dict = field(default_factory=dict)   # the machine-speed workload timed before the run (bench/referee/calibrate.py)
  placement: dict = field(default_factory=dict)     # where it ran and beside how many runs (bench/parallel.py); {}: alone, unpinned
  warm_up: dict = field(default_factory=dict)       # the pair's untimed warm-up: start_up_s, wall_s, cpu_s, env_steps, cap_s, cache
  budget_scale: float = 1.0                    # the task's time budget times this (bench/referee/calibrate.py budget_scale) = time_budget_s
  freezer: str = ""                            # what froze the agent between requests: "cgroup v1 freezer", "SIGSTOP", "none"
  evaluation: str = ""                         # "snapshot" (an evaluator process, off the clock) | "in place" (act() on the clock)
  timestamp: str = ""
  schema_version: int = SCHEMA_VERSION

  @classmethod
  def start(cls, agent, task, seed: int, *, role: str, kernel_cache: str, device: str | None,
            settings: tuple[dict, dict] = ({}, {})) -> RunRecord:
    """`settings`: the tinygrad settings the agent declared and those of them the referee applied (agent_api.applied_settings)."""
    return cls(agent=agent.name, agent_target=agent.target, agent_sha256=agent.source_sha256, agent_kind=agent.kind,
               task=task.name, env_id=task.env_id, threshold=task.threshold, time_budget_s=task.time_budget_s,
               step_budget=task.step_budget, solve_bar=task.min_solve_rate, seed=seed, role=role, kernel_cache=kernel_cache, device=device,
               breakdown=asdict(Breakdown()),
               fingerprint=hardware_fingerprint(), git=git_info(),
               tinygrad_env={**{k: os.environ[k] for k in TINYGRAD_VARS if k in os.environ}, **settings[1]}, tinygrad_declared=dict(settings[0]),
               agent_env={k: os.environ[k] for k in AGENT_VARS if os.environ.get(k)},
               timestamp=datetime.now(UTC).isoformat(timespec="seconds"))

  def add_eval(self, t: float, steps: int, ret: float, curtailed_at: int | None = None) -> None:
    """One evaluation on the curve; `curtailed_at`: it stopped at that step because its mean could no longer reach the
    threshold, and `return` is then an upper bound (bench/referee/evaluation.py)."""
    self.curve.append({"t": round(t, 6), "steps": int(steps), "return": float(ret), **({"curtailed_at": int(curtailed_at)} if curtailed_at else {})})

  def finish_solved(self, t: float, steps: int, confirm: float) -> None:
    self.status, self.solved = "solved", True
    self.time_to_threshold_s = self.censored_time_s = self.training_clock_s = t
    self.steps_to_threshold, self.confirmation_return = int(steps), float(confirm)

  def finish_unsolved(self, status: str, reason: str, t: float) -> None:
    """Not solved: `reason` (which may quote the agent: its exception, its output) kept with every character a terminal,
    a CSV or a Markdown table could act on escaped (bench/referee/protocol.py printable)."""
    from bench.referee.protocol import printable
    self.status, self.solved, self.failure_reason = status, False, printable(reason, keep="\n")
    self.training_clock_s, self.censored_time_s = t, self.time_budget_s
    self.time_to_threshold_s = self.steps_to_threshold = self.confirmation_return = None   # a solve undone by a later fault

  def to_json(self) -> str: return json.dumps(asdict(self), default=float)


class TamperedRecords(ValueError):
  """A records file whose hash chain is broken: a line was altered, deleted or inserted."""


def settings_text(env: dict, lead: str = "") -> str:
  """The tinygrad settings a run ran with (its tinygrad_env), as `lead` + 'HCQ2=1 SPEC=0'; nothing for tinygrad's defaults."""
  return lead + " ".join(f"{k}={v}" for k, v in sorted(env.items())) if env else ""


def line_sha256(line: str) -> str:
  return hashlib.sha256(line.rstrip("\n").encode()).hexdigest()


class RecordWriter:
  """Appends records to one JSON-lines file, flushing and fsyncing each, so that a crash or Ctrl-C
  loses nothing that finished. Each line carries `prev_sha256`, the SHA-256 of the line before it
  (GENESIS for the first), so that a reader detects an altered, deleted or inserted line; `head`, the
  last line's hash, is printed at the end of the session to pin the file's end. With a `signer` (bench/referee/signing.py) each
  line is also signed, its chain field included, so that a rewritten file with a recomputed chain is refused."""
  def __init__(self, path: str, signer=None):
    self.path, self.signer = path, signer
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self.head, self.count = GENESIS, 0
    if os.path.exists(path):
      with open(path) as f:
        for line in f:
          if line.strip(): self.head, self.count = line_sha256(line), self.count + 1

  def write(self, rec: RunRecord) -> None:
    line = json.dumps({**asdict(rec), "prev_sha256": self.head}, default=float)
    if self.signer is not None: line = self.signer.sign(line)
    with open(self.path, "a") as f:
      f.write(line + "\n")
      f.flush()
      os.fsync(f.fileno())
    self.head, self.count = line_sha256(line), self.count + 1


def records_files(directory: str) -> list[str]:
  """Every session's runs.jsonl below a directory; the named baselines (a `baselines` folder below it: copies of
  sessions) are left out unless the directory is inside one. A session's other files (the interleaved baseline's
  baseline-<commit>.jsonl) are read only when named."""
  found = glob.glob(os.path.join(directory, "**", "runs.jsonl"), recursive=True)
  return sorted(f for f in found if "baselines" not in os.path.relpath(f, directory).split(os.sep)[:-1])


def read_records(paths: str | list[str], public_key=None) -> list[dict]:
  """Records from JSON-lines files, or from every session below a directory (records_files). With a `public_key`
  (bench/referee/signing.py), every line must be signed with it (else signing.BadSignature)."""
  if isinstance(paths, str): paths = records_files(paths) if os.path.isdir(paths) else [paths]
  out = []
  for p in paths:
    with open(p) as f:
      prev = GENESIS
      for i, line in enumerate(f, 1):
        if not line.strip(): continue
        if public_key is not None:
          from bench.referee.signing import verify_line
          verify_line(line, public_key, f"{p}:{i}")
        r = json.loads(line)
        if r.get("schema_version") not in READABLE_VERSIONS:
          raise ValueError(f"{p}:{i}: schema_version {r.get('schema_version')!r}, this loader reads {READABLE_VERSIONS}")
        if r["schema_version"] >= 2:
          if r.get("prev_sha256") != prev:
            raise TamperedRecords(f"{p}:{i}: the hash chain is broken (this line's prev_sha256 is not the hash of the line "
                                  "before it): a record was altered, deleted or inserted")
          prev = line_sha256(line)
        r["source_file"] = p
        out.append(upgrade(r))
  return out


LEGACY_SOLVE_BAR = 0.9   # every task's min_solve_rate while schemas 1 and 2 were written


def upgrade(r: dict) -> dict:
  """A record of an older schema with the fields that make it self-describing, from what it recorded itself: its
  agent's kind from its target (agents.* were the references, bench.peers.* the peers), the solve bar of its time;
  contention and machine speed (schema 4) as not measured; placement (schema 5) as one run at a time; schema 6 and older
  as evaluated in the training process with act() charged beyond an allowance, unfrozen, with the task's own budget."""
  v = r.get("schema_version", SCHEMA_VERSION)
  if v >= 9: return r
  r = {**r, "tinygrad_declared": r.get("tinygrad_declared", {})}    # schema 8 and older: agents declared none
  if v >= 7: return r
  r = {**r, "budget_scale": r.get("budget_scale", 1.0), "freezer": r.get("freezer", "none"),
       "evaluation": r.get("evaluation", "in place, act() charged beyond 2 ms a call")}
  if v >= 5: return r
  r = {**r, "placement": r.get("placement", {})}      # schema 4 and older: one run at a time, unpinned
  if v >= 4: return r
  r = {**r, "contended": r.get("contended"), "contended_why": r.get("contended_why", ""), "contention": r.get("contention", {}),
       "agent_env": r.get("agent_env", {}),
       "calibration": r.get("calibration", {})}     # schema 3: not measured
  if v >= 3: return r
  target = str(r.get("agent_target", ""))
  kind = "reference" if target.startswith("agents.") else "peer" if target.startswith("bench.peers.") else "entry"
  return {**r, "agent_kind": r.get("agent_kind", kind), "solve_bar": r.get("solve_bar", LEGACY_SOLVE_BAR)}


@lru_cache(maxsize=1)
def _static_fingerprint() -> tuple:
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
  except OSError: pass
  mem_gb = None
  try: mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
  except (ValueError, OSError): pass
  gpu = None
  try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
    gpu = ", ".join(sorted(set(out.stdout.split("\n")) - {""})) or None
  except (OSError, subprocess.SubprocessError): pass
  tinygrad, commit = tinygrad_info()
  return (("cpu", cpu), ("cores", os.cpu_count()), ("memory_gb", mem_gb), ("gpu", gpu), ("tinygrad_version", tinygrad),
          ("tinygrad_commit", commit), ("python", platform.python_version()), ("os", platform.platform()), ("host", platform.node()))


def tinygrad_info() -> tuple[str | None, str | None]:
  """The installed tinygrad's version and, where there is one, its git commit: from pip's record of a VCS install
  (`pip install git+https://...@commit`), or from the checkout it was installed from (`pip install -e path`) when
  the package sits at that checkout's top. The agent's process runs the same interpreter, hence the same tinygrad."""
  import importlib.util
  from importlib.metadata import PackageNotFoundError, distribution
  try: dist = distribution("tinygrad")
  except PackageNotFoundError: return None, None
  try: commit = json.loads(dist.read_text("direct_url.json") or "{}").get("vcs_info", {}).get("commit_id")
  except ValueError: commit = None
  spec = importlib.util.find_spec("tinygrad")
  if commit is None and spec and spec.origin:
    top = os.path.dirname(os.path.dirname(os.path.abspath(spec.origin)))
    try:
      out = subprocess.run(["git", "-C", top, "rev-parse", "--show-toplevel", "HEAD"], capture_output=True, text=True, timeout=10).stdout.split()
      if len(out) == 2 and os.path.realpath(out[0]) == os.path.realpath(top): commit = out[1]
    except (OSError, subprocess.SubprocessError): pass
  return dist.version, commit


def hardware_fingerprint() -> dict:
  return dict(_static_fingerprint())


@lru_cache(maxsize=1)
def _git() -> tuple:
  def git(*args):
    try: return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError): return ""
  if os.environ.get("RLSPEEDRUN_EXPORTED_COMMIT"):    # a `git archive` of that commit (bench/regress.py): no .git of its own
    return (("commit", os.environ["RLSPEEDRUN_EXPORTED_COMMIT"]), ("dirty", False))
  commit = git("rev-parse", "HEAD") or None
  return (("commit", commit), ("dirty", bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None))


def git_info() -> dict:
  return dict(_git())
