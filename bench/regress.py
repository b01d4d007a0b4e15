"""`pytest bench/ --regress-against BASELINE`: where the baseline's runs come from, and the gate (bench/analysis/gate.py)
on each (agent, task) at the end of its test.

- **A git ref** (`main`, `HEAD~1`, a tag, a commit): that version of the project is exported (`git archive`) to a
  temporary directory and its own referee runs there (`python -m bench.worker`, same interpreter, same tinygrad),
  interleaved with this version's runs, made by a worker of this checkout (PairGate says why), in the same session:
  same seeds, alternating which side runs first, so that a machine that drifts drifts on both sides. The mode for
  shared CI runners, whose absolute speed differs between machines.
- **Stored runs**: a session directory, a runs.jsonl, or a named baseline (`python -m bench.baseline save NAME`,
  under results/baselines/NAME). The mode for a dedicated machine tracked nightly; the machine-speed calibration of
  each side's runs (bench/referee/calibrate.py) must agree within the tolerance, or the pair is not comparable.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field

import pandas as pd

from bench import ROOT
from bench.analysis.baseline import BASELINES_DIR
from bench.analysis.loaders import frame, load_runs
from bench.referee.procs import die_with_parent
from bench.referee.records import settings_text
from bench.worker_client import WorkerClient, WorkerDied


class BaselineError(Exception):
  """The baseline cannot be had: not a path, a named baseline or a git ref; or that version cannot run."""


def _git(*args: str, cwd: str = ROOT) -> subprocess.CompletedProcess:
  return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@dataclass
class Stored:
  """Baseline runs recorded earlier."""
  label: str
  runs: pd.DataFrame

  def runs_for(self, agent: str, task: str) -> pd.DataFrame:
    r = self.runs
    return r[(r["agent"] == agent) & (r["task"] == task) & (r["role"] == "timed")] if len(r) else r


@dataclass
class GitRef:
  """Another version of this project, exported to `root`, whose referee runs the baseline side."""
  ref: str
  commit: str
  root: str = ""
  workers: list = field(default_factory=list)

  @property
  def label(self) -> str: return self.commit[:10] if self.commit.startswith(self.ref) else f"{self.ref} ({self.commit[:10]})"

  def build(self) -> GitRef:
    self.root = tempfile.mkdtemp(prefix=f"rlspeedrun-{self.commit[:10]}-")
    os.chmod(self.root, 0o755)     # its agents read it as the sandbox's own uid (bench/referee/sandbox.py), not as root
    archive = subprocess.run(["git", "archive", self.commit], cwd=ROOT, capture_output=True, timeout=300)
    if archive.returncode: raise BaselineError(f"git archive {self.commit[:10]} failed: {archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", self.root], input=archive.stdout, check=True, timeout=300)
    if not os.path.exists(os.path.join(self.root, "bench", "worker.py")):
      raise BaselineError(f"{self.label} predates --regress-against (it has no bench/worker.py to run its side): compare "
                          "against a later commit, or against stored runs of it (a session directory)")
    return self

  def close(self) -> None:
    for w in self.workers: w.close()
    if self.root: shutil.rmtree(self.root, ignore_errors=True)


def resolve(spec: str) -> Stored | GitRef:
  """A path (session directory, runs.jsonl), a named baseline under results/baselines, or a git ref, in that order."""
  named = os.path.join(BASELINES_DIR, spec)
  for path in (spec, named):
    if os.path.exists(path):
      runs = load_runs(path)
      if runs.empty: raise BaselineError(f"{path}: no run records in it")
      return Stored(label=path, runs=runs)
  out = _git("rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
  if out.returncode == 0 and out.stdout.strip(): return GitRef(ref=spec, commit=out.stdout.strip()).build()
  names = sorted(os.listdir(BASELINES_DIR)) if os.path.isdir(BASELINES_DIR) else []
  raise BaselineError(f"--regress-against {spec!r}: not a session directory or runs.jsonl, not a named baseline "
                      f"({', '.join(names) or 'none saved: python -m bench.baseline save NAME'}), and not a git ref of {ROOT}")


class Side:
  """One side of an interleaved (agent, task): a worker (bench/worker_client.py) in a version's directory (`root`; the
  exported commit, or this checkout), a process of the same kind on both sides."""
  def __init__(self, root: str, commit: str | None, label: str, agent_spec, task, referee, records: str):
    self.label = f"baseline {label}" if commit else label
    self.client = WorkerClient(root, agent_spec, task, referee.to_json(), records, name=f"the referee of {self.label}",
                               before_exec=die_with_parent, env={"RLSPEEDRUN_EXPORTED_COMMIT": commit} if commit else None)

  def call(self, line: str) -> dict:
    try: rep = self.client.call(line)
    except WorkerDied as e: raise BaselineError(str(e)) from None
    if "error" in rep: raise BaselineError(f"{self.label}: {rep['error']}")
    return rep

  def warm_up(self) -> None: self.call("warm-up")

  def run_role(self, seed: int, role: str = "timed") -> dict:
    return self.call(f"run {seed}" if role == "timed" else f"run {seed} {role}")["record"]

  def close(self) -> None: self.client.close()


class PairGate:
  """The gate of one (agent, task): the baseline side's runs (stored, or run here interleaved), and the verdict.
  Interleaved, *both* sides run in worker processes of the same kind (this version's from this checkout): a run made
  inside the pytest process carries a harness bias (README "Did a change make training slower?") that a comparison of
  two versions must not carry on one side only."""
  def __init__(self, base: Stored | GitRef, agent_spec, task, referee, session_dir: str, *, alpha: float, tolerance: float,
               force: bool, adopt=None, on_baseline=None):
    self.base, self.agent, self.task = base, agent_spec.name, task.name
    self.adopt, self.on_baseline = adopt, on_baseline or (lambda rec: None)
    self.alpha, self.tolerance, self.force = alpha, tolerance, force
    self.worker = self.current = None
    self.scratch = None
    if isinstance(base, GitRef):
      self.scratch = tempfile.mkdtemp(prefix="rlspeedrun-current-")
      self.current = Side(ROOT, None, "this version", agent_spec, task, referee, os.path.join(self.scratch, "runs.jsonl"))
      base.workers.append(self.current)
      self.worker = Side(base.root, base.commit, base.label, agent_spec, task, referee,
                           os.path.join(session_dir, f"baseline-{base.commit[:10]}.jsonl"))
      base.workers.append(self.worker)
    self.baseline_records: list[dict] = []
    self.rounds = 0

  @property
  def interleaved(self) -> bool: return self.worker is not None

  def warm_up(self) -> None:
    """Interleaved: both workers' warm-ups (this version's first). Stored: nothing (the session's own warm-up ran)."""
    if self.interleaved:
      self.current.warm_up()
      self.worker.warm_up()

  def run(self, seed: int, run_current, role: str = "timed"):
    """One seed: the current side's run (returned) and, interleaved, the baseline's (baseline first on even rounds).
    Stored: `run_current(seed)`. Interleaved: this version's worker runs it, and `adopt` records it in the session."""
    if not self.interleaved: return run_current(seed)
    first = self.rounds % 2 == 0
    self.rounds += 1
    if first: self._baseline(seed, role)
    rec = self.adopt(self.current.run_role(seed, role))
    if not first: self._baseline(seed, role)
    return rec

  def _baseline(self, seed: int, role: str) -> None:
    self.baseline_records.append(rec := self.worker.run_role(seed, role))
    self.on_baseline(rec)

  def baseline_runs(self, role: str = "timed") -> pd.DataFrame:
    if self.worker is None: return self.base.runs_for(self.agent, self.task)
    return records_frame([r for r in self.baseline_records if r["role"] == role])

  def judge(self, current: list, role: str = "timed") -> tuple[dict | None, list[str]]:
    """The gate's row for this pair (None when a side has under 2 runs: then the warnings say so)."""
    from bench.analysis.gate import gate_runs
    cur = records_frame([r for r in current if r.role == role]).assign(role="timed")
    base = self.baseline_runs(role)
    if len(base): base = base.assign(role="timed")
    if base.empty: return None, [f"{self.agent} on {self.task}: no baseline runs in {self.base.label}"]
    df, warns = gate_runs(base, cur, alpha=self.alpha, tolerance=self.tolerance, force=self.force, interleaved=self.interleaved)
    return (df.iloc[0].to_dict() if len(df) else None), warns

  def close(self) -> None:
    for w in (self.current, self.worker):
      if w: w.close()
    if self.scratch: shutil.rmtree(self.scratch, ignore_errors=True)


def baseline_line(rec: dict, label: str) -> str:
  """The baseline side's run as one line (a record of another version: only fields every version has)."""
  head = f"[{rec.get('agent')} · {rec.get('task')} · seed {rec.get('seed')} · baseline {label}{settings_text(rec.get('tinygrad_env') or {}, ' · ')}]"
  if rec.get("solved"): return f"{head} solved in {rec.get('time_to_threshold_s', 0):.2f} s, {rec.get('steps_to_threshold') or 0:,} steps"
  return f"{head} {str(rec.get('status')).upper()}: {(rec.get('failure_reason') or '?').splitlines()[0]}"


def records_frame(recs: list) -> pd.DataFrame:
  """RunRecords or record dicts as a run frame (bench.analysis.loaders.frame)."""
  return frame([r if isinstance(r, dict) else asdict(r) for r in recs])
