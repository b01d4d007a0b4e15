"""The referee against hostile entries (tests/hostile_agents.py): one test per class of attack in issue 10.
Each attack worked on the referee before this hardening; here each is refused, failed or flagged, and an
honest agent run after it in the same session keeps its time and its record."""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time

import psutil
import pytest

from bench.analysis.loaders import load_runs
from bench.referee.agent_api import AgentError, resolve_agent
from bench.referee.pair import Pair
from bench.referee.records import RecordWriter
from bench.referee.run import run_one
from bench.referee.sandbox import SandboxError, probe
from tests.host import judged_run
from tests.hostile_agents import MARKER
from tests.test_referee import CONFIG, TASK, fake, sleepy_on_time

HERE = os.path.dirname(os.path.abspath(__file__))
def _no_sandbox() -> str:
  try: return "" if probe("bwrap") else "?"
  except SandboxError as e: return str(e)


needs_bwrap = pytest.mark.skipif(bool(_no_sandbox()), reason=f"no sandbox here: {_no_sandbox()}")


def hostile(name: str):
  return resolve_agent(os.path.join(HERE, "hostile_agents.py") + ":" + name)


def run(name: str, seed: int = 0, task=TASK, config=CONFIG):
  return run_one(hostile(name), task, seed, config)


def honest_run_is_unchanged():
  """The honest SleepyTrainer after an attack: its known time (4 x 0.25 s of training) and a clean record. Made again
  only while the hypervisor steals the cores (tests/host.py): slow on a quiet host (an attack's process left running, a
  slower referee) it fails."""
  rec = judged_run(lambda: run_one(fake("SleepyTrainer"), TASK, 0, CONFIG), sleepy_on_time, "the honest run after the attack")
  why = f"{rec.failure_reason or ''} (breakdown {rec.breakdown}, contention {rec.contention})"
  assert rec.solved and 1.0 <= rec.time_to_threshold_s < 1.8 and 3900 <= rec.steps_to_threshold <= 4000, why
  assert rec.evaluation == "snapshot" and rec.breakdown["eval_on_clock_s"] == 0 and rec.breakdown["snapshot_s"] < 0.1, why


def _marked_processes() -> list[int]:
  return [p.pid for p in psutil.process_iter(["cmdline"]) if MARKER in " ".join(p.info["cmdline"] or [])]


# --- 1. code execution in the referee; replies it cannot read ---
def test_unreadable_replies_fail_one_run_and_the_other_seeds_go_on(tmp_path):
  writer = RecordWriter(str(tmp_path / "runs.jsonl"))
  pair = Pair(hostile("ObjectActions"), TASK, CONFIG, writer)
  try: recs = [pair.run(s) for s in range(2)]
  finally: pair.close()
  assert [r.status for r in recs] == ["failed", "failed"]
  assert all("dtype object" in r.failure_reason for r in recs)
  assert len(load_runs(str(tmp_path))) == 2


@pytest.mark.parametrize("name, words", [
  ("PickleOnTheWire", "wire protocol"),
  ("ForgedReply", "wire protocol"),
  ("HugeReply", "over the limit"),
])
def test_the_wire_takes_no_pickle_no_forgery_no_flood(name, words, tmp_path, monkeypatch):
  marker = tmp_path / "unpickled"
  monkeypatch.setenv("HOSTILE_MARKER_FILE", str(marker))
  rss0 = psutil.Process().memory_info().rss
  rec = run(name, config=dataclasses.replace(CONFIG, sandbox="none"))   # the wire alone, whatever the sandbox
  assert rec.status == "failed" and words in rec.failure_reason, rec.failure_reason
  assert not marker.exists()                                            # nothing ran in the referee
  assert psutil.Process().memory_info().rss - rss0 < 200 * 2**20        # the 1 GiB reply was never read
  honest_run_is_unchanged()


# --- 2. rewriting results; 4. escaping the run ---
@needs_bwrap
def test_sandbox_hides_the_referee_the_results_and_the_network(tmp_path):
  results = tmp_path / "results"
  results.mkdir()
  (results / "runs.jsonl").write_text('{"earlier": "session"}\n')
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen()
  try:
    config = dataclasses.replace(CONFIG, hidden_dirs=(str(results),),
                                 extra_env={"HOSTILE_RESULTS_DIR": str(results), "HOSTILE_PORT": str(server.getsockname()[1])})
    rec = run("Snooper", config=config)
  finally:
    server.close()
  assert rec.solved and rec.sandbox == "bwrap", rec.failure_reason   # Snooper raises if any door was open
  assert (results / "runs.jsonl").read_text() == '{"earlier": "session"}\n'


@needs_bwrap
def test_no_root_and_no_capability_in_the_sandbox(tmp_path):
  """Issue 25: the agent's process has no capability and not uid 0 (CI runs the referee as root): it cannot remount `/`
  read-write, unmount the empty directory over a hidden results directory (here under the entry's own directory,
  which is bound into the sandbox), write a root-owned file or take uid 0, not even in a user namespace of its own."""
  entry = tmp_path / "entry"
  (entry / "results").mkdir(parents=True)
  (entry / "results" / "runs.jsonl").write_text('{"earlier": "session"}\n')
  (entry / "agent.py").write_text("from tests.hostile_agents import RootInTheSandbox  # noqa: F401\n")
  config = dataclasses.replace(CONFIG, hidden_dirs=(str(entry / "results"),), extra_env={"HOSTILE_HIDDEN": str(entry / "results")})
  rec = run_one(resolve_agent(f"{entry / 'agent.py'}:RootInTheSandbox"), TASK, 0, config)
  assert rec.solved and rec.sandbox == "bwrap", rec.failure_reason     # RootInTheSandbox raises if anything worked
  assert (entry / "results" / "runs.jsonl").read_text() == '{"earlier": "session"}\n'


def test_root_in_the_sandbox_finds_doors_without_one():
  """The same attack with the sandbox off, the referee as it is run here: the check can fail."""
  rec = run("RootInTheSandbox", config=dataclasses.replace(CONFIG, sandbox="none"))
  if os.geteuid() == 0: assert rec.status == "failed" and "Escaped: Cap" in rec.failure_reason, rec.failure_reason


def test_the_agent_inherits_only_allow_listed_variables(tmp_path, monkeypatch):
  """Nothing of the referee's environment reaches the agent but the allow-listed names (bench/referee/sandbox.py agent_environ)."""
  from bench.referee.sandbox import agent_environ
  monkeypatch.setenv("RLSPEEDRUN_SIGNING_KEY", "secret")
  monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
  monkeypatch.setenv("BEAM", "2")
  env = agent_environ({"DEV": "CPU"})
  assert "RLSPEEDRUN_SIGNING_KEY" not in env and "AWS_SECRET_ACCESS_KEY" not in env
  assert env["BEAM"] == "2" and env["DEV"] == "CPU"     # recorded tinygrad settings pass, and what the referee sets


def test_snooper_finds_open_doors_without_a_sandbox(tmp_path):
  """The same attack with the sandbox off: it does get through (so the test above can fail), and the record says so."""
  rec = run("Snooper", config=dataclasses.replace(CONFIG, sandbox="none"))
  assert rec.status == "failed" and "Escaped" in rec.failure_reason and "sees process" in rec.failure_reason
  assert rec.sandbox == "none: switched off (--sandbox none)"


@pytest.mark.parametrize("sandbox", [pytest.param("bwrap", marks=needs_bwrap), "none"])
def test_no_process_outlives_its_run(sandbox):
  rec = run("Daemon", config=dataclasses.replace(CONFIG, sandbox=sandbox))
  assert rec.solved
  assert not _marked_processes(), "a process of the agent outlived its run"
  honest_run_is_unchanged()


def test_kill_all_returns_once_every_process_of_the_tree_has_died():
  """A SIGKILL is delivered asynchronously: right after kill() about half of such burners still ran here (and a CI
  run found one alive after its run had ended), so the referee waits until each has died."""
  from bench.referee.accounting import TreeCPU
  from tests.procs import alive
  code = f"import subprocess, sys, time\nfor _ in range(2): subprocess.Popen([sys.executable, '-c', 'while True: pass', '{MARKER}'])\ntime.sleep(60)"
  for _ in range(3):
    parent = subprocess.Popen([sys.executable, "-c", code, MARKER])
    try:
      while len(psutil.Process(parent.pid).children()) < 2: time.sleep(0.01)
      tree = TreeCPU(parent.pid)
      procs = tree.snapshot()
      tree.kill_all()
      assert not [p.pid for p in procs if p.pid != parent.pid and alive(p)]
      tree.close()
    finally:
      parent.kill(); parent.wait()


# --- 3. work while the clock is stopped (issue 26) ---
OFF_CLOCK = dataclasses.replace(TASK, step_budget=12_000)     # 12 updates, every one evaluated


def test_what_act_learns_in_an_evaluation_never_reaches_a_verdict():
  """LearnsInAct learns from the evaluations' episodes in act(): its regular evaluator (one process across a run's regular
  evaluations) passes once it has, but no confirmation (a fresh evaluator each) does, and its training process never
  saw any of it: unsolved, with nothing on the clock but its snapshots."""
  rec = run("LearnsInAct", task=OFF_CLOCK)
  assert rec.status == "unsolved" and "step budget" in rec.failure_reason, rec.failure_reason
  assert any(p["return"] >= TASK.threshold for p in rec.curve), rec.curve        # it did learn, in its evaluator ...
  assert rec.confirmations and all(c["return"] < TASK.threshold for c in rec.confirmations)   # ... which decides nothing
  assert rec.evaluation == "snapshot" and rec.breakdown["eval_on_clock_s"] == 0


def test_an_evaluator_that_works_hard_in_one_evaluation_fails_the_run_at_its_cap():
  rec = run("BurnsInItsEvaluator", config=dataclasses.replace(CONFIG, eval_cpu_cap_s=1.0))
  assert rec.status == "failed" and "over the cap of 1" in rec.failure_reason, rec.failure_reason
  assert rec.breakdown["evaluator_cpu_max_s"] > 1.0


@needs_bwrap
def test_an_evaluator_cannot_write_where_the_training_process_reads():
  rec = run("EvaluatorFeedsTrainer")      # raises Escaped in train() where it finds its evaluator's file
  assert rec.solved, rec.failure_reason


@pytest.mark.parametrize("name", ["TrainsBetweenRequests", "WorksWhileFrozen"])
def test_work_between_requests_is_frozen(name):
  """A thread that trains whenever the process runs, and processes of its own that burn CPU all the time: frozen
  between requests, they work only inside the clock. What the tree used while frozen is ~0 (the cgroup's count)."""
  rec = run(name, task=OFF_CLOCK)
  assert rec.status in ("unsolved", "solved") or "step budget" in (rec.failure_reason or ""), rec.failure_reason
  assert rec.freezer.endswith("freezer") or rec.freezer == "SIGSTOP", rec.freezer
  assert rec.breakdown["cpu_between_requests_s"] < 0.1, rec.breakdown
  if name == "TrainsBetweenRequests":     # one thread: at most one core's worth, and only while the clock ran
    assert rec.agent_profile["thread_cpu_s"] <= rec.training_clock_s + 0.05, (rec.agent_profile, rec.training_clock_s)
  assert not _marked_processes()
  honest_run_is_unchanged()


@pytest.mark.parametrize("name", ["TrainsBetweenRequests", "WorksWhileFrozen"])
def test_without_the_freezer_the_same_attacks_work_off_the_clock(name):
  """The counterfactual, so that the test above can fail: the freezer switched off, the same agents work between
  requests (while the referee evaluates, starts evaluators, does its bookkeeping) for far longer than their clock."""
  rec = run(name, task=OFF_CLOCK, config=dataclasses.replace(CONFIG, freezer=False))
  assert rec.freezer == "none (switched off)"
  assert rec.breakdown["cpu_between_requests_s"] > 0.5, rec.breakdown
  if name == "TrainsBetweenRequests":
    assert rec.agent_profile["thread_cpu_s"] > rec.training_clock_s + 0.5, (rec.agent_profile, rec.training_clock_s)
  assert not _marked_processes()


def test_an_agent_cannot_feign_a_shared_machine_with_processes_of_its_own():
  """Its own CPU burners make its threads wait for a core, but they are in its process tree (the sandbox keeps them
  there): counted as its CPU, not as other processes', so the run is not `contended` and its slowness stands."""
  rec = run("FeignsASharedMachine")
  c = rec.contention
  # not `contended` by other processes (the hypervisor's steal, tests/host.py, is the host's, and would say so)
  assert rec.solved and "other processes used" not in rec.contended_why, (rec.contended_why, c)
  assert not rec.contended or "(steal)" in rec.contended_why, (rec.contended_why, c)
  assert c["wait_share"] > 0.1 and c["cpu_share"] > 1.5 and c["others_cores"] < 0.25, c
  assert not _marked_processes()


@pytest.mark.slow
def test_slow_act_costs_the_session_not_the_clock():
  rec = run("SlowAct")
  assert rec.solved and rec.breakdown["eval_on_clock_s"] == 0 and rec.breakdown["eval_s"] >= 0.015 * rec.breakdown["act_calls"]
  assert rec.time_to_threshold_s < 0.5 * rec.breakdown["eval_s"]


def test_the_agents_import_is_on_the_clock():
  rec = run_one(resolve_agent(os.path.join(HERE, "hostile_import.py") + ":ImportTrainer"), TASK, 0, CONFIG)
  assert rec.solved
  assert rec.breakdown["import_s"] >= 1.4 and rec.time_to_threshold_s >= 1.4   # measured by the referee, not the agent


def warmed_run(name: str):
  """A hostile agent's warm-up, then its timed run of seed 0: (its pair, closed; the record)."""
  pair = Pair(hostile(name), TASK, CONFIG)
  try:
    pair.warm_up()
    return pair, pair.run(0)
  finally:
    pair.close()


@needs_bwrap
def test_warm_up_leaves_nothing_but_a_verified_cache(tmp_path):
  _, rec = warmed_run("SmugglesFiles")
  assert rec.solved, rec.failure_reason        # SmugglesFiles raises Escaped when it finds its warm-up's files


@pytest.mark.parametrize("name, words", [("SmugglesInCache", "'weights' that is not tinygrad's"),
                                         ("PicklesInCache", "not a plain byte string")])
def test_warm_up_cache_with_foreign_content_is_refused(name, words):
  pair = Pair(hostile(name), TASK, CONFIG)
  try:
    with pytest.raises(AgentError, match=words): pair.warm_up()
  finally:
    pair.close()
  assert not os.path.exists("/tmp/rlspeedrun-boom")


def test_a_value_the_warm_up_stored_in_a_compile_table_does_not_reach_a_timed_run():
  """The referee rebuilds the timed runs' cache from the warm-up's keys (bench/referee/kernel_cache.py rebuild): every value is
  what tinygrad's compiler gives for its key, so the weights stored as a 'compiled kernel' are gone."""
  pair, rec = warmed_run("StoresWeightsInTheCache")
  assert pair.cache_rebuilt["compiled"] >= 1, pair.cache_rebuilt
  assert rec.solved, rec.failure_reason        # StoresWeightsInTheCache raises Escaped when it finds its weights
  assert rec.warm_up["wall_s"] > 0 and rec.warm_up["cpu_s"] > 0 and rec.warm_up["env_steps"] > 0 and rec.warm_up["cache"]["compiled"] >= 1


def test_the_warm_up_is_capped():
  """Learning in the warm-up is bounded: its agent code gets warm_up_cap_s in all (here 3 s; an agent that trains on
  in it fails with the reason), and what it used is in every record of the pair (above)."""
  pair = Pair(fake("HangsInTrain"), TASK, dataclasses.replace(CONFIG, warm_up_cap_s=3.0, hang_timeout_s=60.0))
  t0 = time.perf_counter()
  try:
    with pytest.raises(AgentError, match="warm-up ran over its cap of 3 s"): pair.warm_up()
  finally:
    pair.close()
  assert time.perf_counter() - t0 < 20


def test_a_solve_with_no_learning_on_the_clock_is_flagged_for_review():
  """Issue 25: a hand-written controller behind random steps solved 582x faster than PPO with no flag. Its record says
  it went from untrained to a pass in one evaluation, and the verdict says it was faster than any reference's first
  update (the referee times each run's first update: the clock at train()'s first yield)."""
  import pandas as pd

  from bench.analysis.loaders import frame
  from bench.analysis.stats import compare_runs
  from tests.synthetic import runs_of
  rec = run("HandWrittenController")
  assert rec.solved and rec.review and rec.review[0].startswith("no learning curve on the clock"), (rec.failure_reason, rec.review)
  assert rec.breakdown["first_update_steps"] > 10_000 and rec.breakdown["first_update_s"] <= rec.time_to_threshold_s
  honest = run_one(fake("SleepyTrainer"), TASK, 0, CONFIG)
  assert honest.solved and not honest.review and honest.breakdown["first_update_steps"] == 1000, honest.failure_reason
  first = rec.time_to_threshold_s * 1.5       # a reference whose first update came later than this entry's solve
  refs = runs_of("ppo", [first * 10, first * 11, first * 12])
  for r in refs: r.breakdown["first_update_s"] = first
  entry = [dataclasses.replace(rec, seed=s, agent="controller", agent_kind="entry", task="CartPole-v1") for s in range(3)]
  comps, warns = compare_runs(frame([dataclasses.asdict(r) for r in refs + entry]), force=True)
  notes = " ".join(comps["notes"][0]) if isinstance(comps["notes"][0], list) else str(comps["notes"][0])
  assert f"faster than any reference run's first update ({first:.2f} s)" in notes and "no learning curve on the clock" in notes, notes
  assert isinstance(comps, pd.DataFrame)


# --- 5. fake progress; honest provenance ---
def test_train_that_returns_at_once_is_flagged():
  rec = run("ReturnsAtOnce")
  assert rec.status == "flagged" and not rec.solved and "train() had returned" in rec.failure_reason


def test_forged_step_counts_are_labelled_and_a_pass_under_the_floor_is_flagged():
  rec = run("ForgesSteps", task=dataclasses.replace(TASK, step_floor=1500))
  assert rec.status == "flagged" and "floor of 1,500" in rec.failure_reason
  assert rec.self_reported["counted_steps"] == 1000 and rec.step_source == "wrapper"     # 2,000 real steps


def test_fingerprint_is_the_referees_own():
  from importlib.metadata import version
  rec = run("ForgesFingerprint")
  assert rec.solved
  assert rec.fingerprint["tinygrad_version"] == version("tinygrad") and rec.device == "CPU"
  assert rec.self_reported["tinygrad_version"] == version("tinygrad")   # read before the agent's code ran
  assert any(p.endswith("hostile_agents.py") for p in rec.sources)      # what ran, hashed by the referee
  assert any(p.endswith("fake_agents.py") for p in rec.sources)


# --- issue 25: agent data cannot hurt the referee ---
def test_control_characters_from_the_agent_are_escaped_in_the_record_and_the_run_line():
  from bench.session import run_line
  rec = run("EscapesInItsError")
  assert rec.status == "failed" and "RuntimeError" in rec.failure_reason
  assert "\\x1b[2K" in rec.failure_reason and "\x1b" not in rec.failure_reason and "\x00" not in rec.failure_reason
  assert not {"\ud800", "\u202e", "\r"} & set(rec.failure_reason)
  line = run_line(rec, TASK)
  assert line.isprintable() and "FAILED" in line, line


def test_a_string_with_control_characters_on_the_wire_is_refused():
  rec = run("EscapesOnTheWire", config=dataclasses.replace(CONFIG, hang_timeout_s=10.0))
  assert rec.status == "failed" and "wire protocol" in rec.failure_reason and "U+001B" in rec.failure_reason, rec.failure_reason


STAGES = ["bench.referee.run.calibrate", "bench.referee.run.AgentProcess.for_agent", "bench.referee.run.AgentProcess.collect_load",
          "bench.referee.run.evaluate", "bench.referee.run.Evaluators.get", "bench.referee.run.AgentProcess.hold",
          "bench.referee.run.hash_sources", "bench.referee.run.AgentProcess.close", "bench.referee.run.Evaluators.close"]


@pytest.mark.parametrize("stage", STAGES)
def test_a_fault_of_the_referee_at_any_stage_fails_that_seed_and_the_session_goes_on(stage, tmp_path, monkeypatch):
  """Issue 25: a NUL in a module's __file__ made hash_sources raise in run_one's clean-up, and the seed had no record."""
  import importlib
  calls = []

  def fault(*args, **kwargs):
    calls.append(stage)
    raise ValueError(f"injected fault in {stage}")
  module, _, attr = stage.rpartition(".")
  run_module = importlib.import_module("bench.referee.run")
  owner = run_module if module == "bench.referee.run" else getattr(run_module, module.split(".")[-1])
  real = getattr(owner, attr)
  writer = RecordWriter(str(tmp_path / "runs.jsonl"))
  pair = Pair(fake("SleepyTrainer"), TASK, dataclasses.replace(CONFIG, calibrate=True), writer)
  try:
    monkeypatch.setattr(owner, attr, fault)
    first = pair.run(0)
    monkeypatch.setattr(owner, attr, real)
    second = pair.run(1)
  finally:
    pair.close()
  assert calls and first.status == "failed" and f"injected fault in {stage}" in first.failure_reason, first.failure_reason
  assert not first.solved and first.time_to_threshold_s is None
  assert second.solved, second.failure_reason
  assert [r["seed"] for r in load_runs(str(tmp_path)).to_dict("records")] == [0, 1]
  assert not [p for p in psutil.process_iter(["cmdline"]) if "bench.referee.agent_host" in " ".join(p.info["cmdline"] or [])
              and p.pid in {c.pid for c in psutil.Process().children(recursive=True)}]   # no agent process left


def test_the_referee_chooses_the_sources_it_hashes(tmp_path):
  """The entry's own directory, files read in bounded chunks, no link followed: a sparse 2 GiB file and a link to a
  hidden file are listed, not read."""
  entry = tmp_path / "entry"
  entry.mkdir()
  (entry / "agent.py").write_text("from tests.hostile_agents import SourcesEverywhere  # noqa: F401\n")
  with open(entry / "sparse.bin", "wb") as f: f.truncate(2 * 2**30)
  secret = tmp_path / "secret.txt"
  secret.write_text("not the entry's")
  (entry / "link.txt").symlink_to(secret)
  rss0 = psutil.Process().memory_info().rss
  t0 = time.perf_counter()
  rec = run_one(resolve_agent(f"{entry / 'agent.py'}:SourcesEverywhere"), TASK, 0, CONFIG)
  assert rec.solved, rec.failure_reason
  src = rec.sources
  assert "over" in src[str(entry / "sparse.bin")] and "not followed" in src[str(entry / "link.txt")]
  assert len(src[str(entry / "agent.py")]) == 64 and any(p.endswith("bench/referee/run.py") for p in src)
  assert psutil.Process().memory_info().rss - rss0 < 200 * 2**20 and time.perf_counter() - t0 < 20


# --- 6. resources ---
def test_memory_limit():
  rec = run("MemoryHog", config=dataclasses.replace(CONFIG, memory_limit_gb=2.0))
  assert rec.status == "failed" and "MemoryError" in rec.failure_reason


@needs_bwrap
def test_the_agents_processes_are_limited():
  """RLIMIT_NPROC on the agent's own uid (the referee is root): a fork bomb stops at the limit (here 64)."""
  if os.geteuid() != 0: pytest.skip("the limit needs a uid of the agent's own: the referee must be root")
  config = dataclasses.replace(CONFIG, max_processes=64, extra_env={"HOSTILE_MAX": "64"})
  rec = run("ForkBomb", config=config)
  assert rec.solved, rec.failure_reason      # ForkBomb raises Escaped if it got more than 64


# --- the records ---
def test_records_are_chained_and_tampering_is_detected(tmp_path):
  from bench.analysis.report import main as report_main
  from bench.referee.records import TamperedRecords
  path = tmp_path / "runs.jsonl"
  writer = RecordWriter(str(path))
  for s in range(3): writer.write(run_one(fake("Scripted"), TASK, s, CONFIG))
  assert len(load_runs(str(path))) == 3 and writer.count == 3
  lines = path.read_text().splitlines()
  for tampered in ([lines[0], lines[2]],                                                        # a line deleted
                   [lines[0], lines[1].replace('"seed": 1', '"seed": 7'), lines[2]],            # a line altered
                   [lines[0], lines[1], lines[1], lines[2]]):                                   # a line inserted
    path.write_text("\n".join(tampered) + "\n")
    with pytest.raises(TamperedRecords, match="hash chain"): load_runs(str(path))
    assert report_main([str(path), "--out", str(tmp_path / "report")]) == 2
  path.write_text("\n".join(lines) + "\n")
  assert json.loads(lines[0])["prev_sha256"] == "0" * 64


def test_a_rewritten_file_with_a_recomputed_chain_is_refused_by_its_signatures(tmp_path, capsys):
  """Issue 25: the chain has no key, so a claimant rewrote runs.jsonl (a slower entry made faster) and recomputed it.
  Each line is signed with a key the agent's process never sees; `bench.analysis.report --public-key` refuses the rewrite and a
  file signed with another key, and exits non-zero; the genuine file passes."""
  from bench.analysis.report import main as report_main
  from bench.referee.records import GENESIS, line_sha256
  from bench.referee.signing import BadSignature, Signer, load_public, new_key
  key = tmp_path / "referee.pem"
  signer = new_key(str(key))
  assert oct(os.stat(key).st_mode & 0o777) == "0o600"
  path = tmp_path / "runs.jsonl"
  writer = RecordWriter(str(path), Signer.from_file(str(key)))
  for s in range(2): writer.write(run_one(fake("Scripted"), TASK, s, CONFIG))
  pub = str(key) + ".pub"
  assert len(load_runs(str(path), load_public(pub))) == 2
  assert report_main([str(path), "--out", str(tmp_path / "r0"), "--public-key", pub]) == 0
  genuine = path.read_text()

  def forge(resign=None):
    """Every time halved, the chain recomputed (and each line signed with `resign`, the forger's own key)."""
    out, prev = [], GENESIS
    for line in genuine.splitlines():
      r = json.loads(line)
      for k in ("signature", "key_id"): r.pop(k, None)
      r["time_to_threshold_s"] /= 2
      r["prev_sha256"] = prev
      text = json.dumps(r)
      if resign: text = resign.sign(text)
      out.append(text)
      prev = line_sha256(text)
    path.write_text("\n".join(out) + "\n")
  for forger, words in ((None, "not signed"), (Signer(), "signed with key")):
    forge(forger)
    assert len(load_runs(str(path))) == 2                                 # the chain alone accepts it
    with pytest.raises(BadSignature, match=words): load_runs(str(path), load_public(pub))
    assert report_main([str(path), "--out", str(tmp_path / "r1"), "--public-key", pub]) == 2
    assert "refused" in capsys.readouterr().err
  path.write_text(genuine.replace('"seed": 1', '"seed": 3'))                # one field of a signed line altered
  with pytest.raises(BadSignature, match="altered"): load_runs(str(path), load_public(pub))
  path.write_text(genuine)
  inner = tmp_path / "key-beside.pub"                      # a key among the records it would vouch for is refused
  inner.write_text(open(pub).read())
  assert report_main([str(tmp_path), "--out", str(tmp_path / "r2"), "--public-key", str(inner)]) == 2
  assert "lies among the records" in capsys.readouterr().err
  assert signer.key_id == Signer.from_file(str(key)).key_id
  os.chmod(key, 0o644)
  with pytest.raises(ValueError, match="can be read by others"): Signer.from_file(str(key))


# --- issue 25, a second look (a hostile read of the change) ---
def test_a_pyc_shipped_beside_the_entry_is_not_what_runs(tmp_path):
  """A compiled file whose source check is off (unchecked-hash .pyc) in the entry's __pycache__ would run instead of the
  source the record hashes: the sandbox covers the entry's __pycache__ directories."""
  import py_compile
  entry = tmp_path / "entry"
  entry.mkdir()
  (entry / "agent.py").write_text("from tests.fake_agents import Scripted as Agent  # noqa: F401\n")
  other = tmp_path / "other.py"
  other.write_text("from tests.hostile_agents import Escaped\nraise Escaped('ran the shipped .pyc, not the source')\n")
  py_compile.compile(str(other), cfile=str(entry / "__pycache__" / f"agent.{sys.implementation.cache_tag}.pyc"),
                     invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
  rec = run_one(resolve_agent(f"{entry / 'agent.py'}:Agent"), TASK, 0, CONFIG)
  assert rec.solved, rec.failure_reason
  unsandboxed = run_one(resolve_agent(f"{entry / 'agent.py'}:Agent"), TASK, 0, dataclasses.replace(CONFIG, sandbox="none"))
  assert unsandboxed.status == "failed" and "ran the shipped .pyc" in unsandboxed.failure_reason   # the attack is real


def test_an_entry_whose_directory_holds_tmp_is_refused_with_the_reason():
  path = os.path.join(os.path.realpath("/tmp"), f"rlspeedrun-entry-{os.getpid()}.py")
  with open(path, "w") as f: f.write("from tests.fake_agents import Scripted as Agent  # noqa: F401\n")
  try: rec = run_one(resolve_agent(f"{path}:Agent"), TASK, 0, CONFIG)
  finally: os.remove(path)
  assert rec.status == "failed" and "put the entry in a directory of its own" in rec.failure_reason, rec.failure_reason


def test_the_warm_up_cache_is_taken_following_no_link(tmp_path):
  from bench.referee.kernel_cache import CacheRejected, take
  scratch = tmp_path / "scratch"
  scratch.mkdir()
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  (elsewhere / "cache.db").write_bytes(b"a host file")
  (scratch / "kernel-cache").symlink_to(elsewhere)
  with pytest.raises(CacheRejected, match="a link"): take(str(scratch), str(tmp_path / "taken.db"))
  (scratch / "kernel-cache").unlink()
  (scratch / "kernel-cache").mkdir()
  (scratch / "kernel-cache" / "cache.db").symlink_to(elsewhere / "cache.db")
  with pytest.raises(CacheRejected, match="a link"): take(str(scratch), str(tmp_path / "taken.db"))
  (scratch / "kernel-cache" / "cache.db").unlink()
  assert take(str(scratch), str(tmp_path / "taken.db")) is None


def test_the_rebuild_keeps_compiled_keys_only(tmp_path):
  """BEAM's rows (free-form keys and values) and other compilers' tables are dropped; the compile table's values are
  what tinygrad compiles from their keys, whatever the warm-up stored."""
  import pickle
  import sqlite3

  from tinygrad import Device
  from tinygrad.helpers import VERSION

  from bench.referee.kernel_cache import rebuild
  table = f"{Device['CPU'].compiler.cachekey}_{VERSION}"
  src = tmp_path / "warm-up.db"
  con = sqlite3.connect(src)
  con.execute(f"CREATE TABLE '{table}' (key text, val blob, PRIMARY KEY (key))")
  con.execute(f"INSERT INTO '{table}' VALUES ('void k(float* a) {{ a[0] = 1.0f; }}', ?)", (pickle.dumps(b"WEIGHTS"),))
  con.execute(f"CREATE TABLE 'beam_search_{VERSION}' (ast text, val blob, PRIMARY KEY (ast))")
  con.execute(f"INSERT INTO 'beam_search_{VERSION}' VALUES ('weights as a key', ?)", (pickle.dumps([1.0, 2.0]),))
  con.commit(); con.close()
  work = tmp_path / "work"
  work.mkdir()
  out = rebuild(str(src), str(tmp_path / "rebuilt.db"), CONFIG, str(work))
  assert out["compiled"] == 1 and out["dropped"] == 1 and len(out["sha256"]) == 64, out
  con = sqlite3.connect(tmp_path / "rebuilt.db")
  assert [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == [table]
  (val,) = con.execute(f"SELECT val FROM '{table}'").fetchone()
  assert b"WEIGHTS" not in pickle.loads(val) and len(pickle.loads(val)) > 100      # a compiled object, not what was stored


def test_cpu_accounting_never_goes_back():
  """A child of a process that ignores SIGCHLD is reaped by no one: its time leaves the tree's sum when it exits, which
  made a later difference negative (an allowance for work between act() calls). read() never goes below itself."""
  from bench.referee.accounting import TreeCPU
  code = ("import os, signal, time\nsignal.signal(signal.SIGCHLD, signal.SIG_IGN)\n"
          "if os.fork() == 0:\n  end = time.process_time() + 0.6\n  while time.process_time() < end: pass\n  os._exit(0)\n"
          "time.sleep(3)\n")
  p = subprocess.Popen([sys.executable, "-c", code])
  try:
    tree = TreeCPU(p.pid)
    time.sleep(0.3)
    seen = tree.scan()
    time.sleep(1.5)                      # the grandchild has burnt its time and gone, reaped by no one
    assert tree.read() >= seen and tree.scan() >= seen
  finally:
    p.kill(); p.wait()


def test_a_tmpdir_inside_the_project_is_covered_not_refused(monkeypatch):
  """The rule that refuses a directory holding the machine's TMPDIR (an entry at /tmp/x.py) does not refuse the project
  when TMPDIR lies inside it (a CI's choice): that directory is covered by an empty one, and the run's scratch below it."""
  import shutil
  import tempfile
  inner = os.path.join(os.path.dirname(HERE), f".tmp-test-{os.getpid()}")
  os.makedirs(inner)
  os.chmod(inner, 0o1777)
  try:
    monkeypatch.setattr(tempfile, "tempdir", inner)
    rec = run_one(fake("Scripted"), TASK, 0, CONFIG)
  finally:
    shutil.rmtree(inner, ignore_errors=True)
  assert rec.solved, rec.failure_reason
