"""The wire format (bench/referee/protocol.py), the kernel-cache check (bench/referee/kernel_cache.py), the sandbox probe and
the verdict on an entry that ran without a sandbox: the pieces of the referee's hardening, one at a time."""
from __future__ import annotations

import os
import pickle
import socket
import sqlite3
import struct
import threading
from dataclasses import asdict

import numpy as np
import pytest

from bench.analysis.loaders import frame
from bench.analysis.stats import compare_runs
from bench.referee import protocol as P
from bench.referee.kernel_cache import CacheRejected, seal, verify
from bench.referee.sandbox import Sandbox, probe
from tests.synthetic import lognormal_times, runs_of


def roundtrip(msg, allowed=P.REPLIES):
  return P.decode(P.encode(msg, 7), allowed)


def test_messages_round_trip_with_their_types():
  seq, m = roundtrip(P.Trained(finished=False, agent_steps=2048, counted_steps=2040, profile={"update_s": 0.5}))
  assert seq == 7 and m == P.Trained(finished=False, agent_steps=2048, counted_steps=2040, profile={"update_s": 0.5})
  for a in (np.arange(6, dtype=np.int64).reshape(2, 3), np.zeros((4, 84, 84), np.uint8), np.array([True, False]),
            np.ones((3, 2), ">f4").astype(np.float32)):
    _, back = roundtrip(P.Actions(actions=a))
    assert back.actions.dtype == a.dtype.newbyteorder("<") and np.array_equal(back.actions, a)
  _, load = roundtrip(P.Load(task="{}", preload=["torch"]), P.REQUESTS)
  assert load.preload == ["torch"]


def _frame(header: dict, body: bytes = b"") -> bytes:
  import json
  h = json.dumps(header).encode()
  return struct.pack("<I", len(h)) + h + body


@pytest.mark.parametrize("frame, words", [
  (pickle.dumps(("trained", 1)), "header|undecodable|malformed"),                                 # pickle is not a frame
  (_frame({"verb": "trained", "seq": 1, "fields": {"finished": 0, "agent_steps": 1, "counted_steps": 1, "profile": {}}}),
   "expected bool"),
  (_frame({"verb": "trained", "seq": 1, "fields": {"finished": False, "agent_steps": 1.5, "counted_steps": 1, "profile": {}}}),
   "expected int"),
  (_frame({"verb": "trained", "seq": 1, "fields": {"finished": False, "agent_steps": 1, "counted_steps": 1, "profile": {},
                                                   "extra": 1}}), "fields"),
  (_frame({"verb": "exec", "seq": 1, "fields": {}}), "unexpected message"),
  (_frame({"verb": "load", "seq": 1, "fields": {"task": "x", "preload": []}}), "unexpected message"),   # a request, not a reply
  (_frame({"verb": "actions", "seq": 1, "fields": {"actions": {"array": 0, "dtype": "|O", "shape": [2]}}}, b"\0" * 16), "dtype"),
  (_frame({"verb": "actions", "seq": 1, "fields": {"actions": {"array": 0, "dtype": "<i8", "shape": [1000]}}}, b"\0" * 16),
   "announced"),
  (_frame({"verb": "actions", "seq": 1, "fields": {"actions": {"array": 0, "dtype": "<i8", "shape": [2]}}}, b"\0" * 24),
   "after the arrays"),
  (_frame({"verb": "error", "seq": 1, "fields": {"phase": "x", "kind": "x", "message": "x" * (P.MAX_TEXT + 1), "traceback": ""}}),
   "expected str"),
  (struct.pack("<I", 5) + b"[[[[[", "undecodable"),
])
def test_every_field_is_checked(frame, words):
  with pytest.raises(P.ProtocolError, match=words): P.decode(frame, P.REPLIES)


def test_object_arrays_cannot_be_sent():
  with pytest.raises(P.ProtocolError, match="cannot be sent"): P.encode(P.Actions(actions=np.array([object()])), 1)


def test_wire_refuses_a_long_frame_before_reading_it_and_times_out_on_a_stall():
  a, b = socket.socketpair()
  wire = P.Wire(a, accept=P.REPLIES, max_in=1024)
  b.sendall(struct.pack("<Q", 2**40))
  with pytest.raises(P.ProtocolError, match="over the limit"): wire.recv(1.0)
  a2, b2 = socket.socketpair()
  wire2 = P.Wire(a2, accept=P.REPLIES, max_in=1024)
  b2.sendall(struct.pack("<Q", 100) + b"x" * 10)          # a frame begun, never finished
  with pytest.raises(TimeoutError): wire2.recv(0.3)
  b2.close()
  a3, b3 = socket.socketpair()
  b3.close()
  with pytest.raises(EOFError): P.Wire(a3, accept=P.REPLIES).recv(1.0)
  for s in (a, b, a2, a3): s.close()


def test_wire_carries_large_arrays_both_ways():
  a, b = socket.socketpair()
  ref, agent = P.Wire(a, accept=P.REPLIES), P.Wire(b, accept=P.REQUESTS)
  obs = np.random.default_rng(0).integers(0, 255, (100, 4, 84, 84), dtype=np.uint8)   # a Pong confirmation batch
  t = threading.Thread(target=lambda: ref.send(P.Act(obs=obs), 3, timeout=10))
  t.start()
  seq, msg = agent.recv(10)
  t.join()
  assert seq == 3 and np.array_equal(msg.obs, obs)
  a.close(); b.close()


# --- the kernel cache the warm-up hands on ---
def _cache(path, rows: dict[str, list[tuple]]):
  con = sqlite3.connect(path)
  for table, vals in rows.items():
    con.execute(f"CREATE TABLE IF NOT EXISTS '{table}' (key text, val blob, PRIMARY KEY (key))")
    for k, v in vals: con.execute(f"INSERT INTO '{table}' VALUES (?, ?)", (k, v))
  con.commit()
  con.close()


def test_a_tinygrad_cache_is_verified_and_sealed(tmp_path):
  from tinygrad.codegen.opt import Opt, OptOps
  src = tmp_path / "cache.db"
  _cache(src, {"compile_clang_jit_22": [("void k(){}", pickle.dumps(b"\x7fELF..."))],
               "beam_search_22": [("k1", pickle.dumps([Opt(OptOps.UPCAST, 0, 4)]))]})
  assert verify(str(src)) == 2
  seal(str(src), str(tmp_path / "sealed" / "cache.db"))
  assert verify(str(tmp_path / "sealed" / "cache.db")) == 2
  assert verify(str(tmp_path / "none.db")) == 0


class _Evil:
  def __reduce__(self): return (os.system, ("true",))


@pytest.mark.parametrize("rows, words", [
  ({"weights": [("w", b"\0" * 8)]}, "not tinygrad's"),
  ({"compile_clang_jit_22": [("k", pickle.dumps(np.ones(3)))]}, "not a plain byte string"),
  ({"beam_search_22": [("k", pickle.dumps(_Evil()))]}, "outside tinygrad"),
  ({"compile_clang_jit_22": [("k", b"not a pickle")]}, "pickle"),
])
def test_anything_else_in_the_cache_is_refused(rows, words, tmp_path):
  _cache(tmp_path / "cache.db", rows)
  with pytest.raises(CacheRejected, match=words): verify(str(tmp_path / "cache.db"))


def test_views_and_triggers_are_refused(tmp_path):
  _cache(tmp_path / "cache.db", {"compile_clang_jit_22": [("k", pickle.dumps(b"x"))]})
  con = sqlite3.connect(tmp_path / "cache.db")
  con.execute("CREATE VIEW weights AS SELECT 1")
  con.commit(); con.close()
  with pytest.raises(CacheRejected, match="view"): verify(str(tmp_path / "cache.db"))


# --- no sandbox: said why, and no verdict on an entry ---
def test_probe_says_why_there_is_no_sandbox(monkeypatch):
  """Where the sandbox cannot be made the session refuses to start, naming the fix; only --sandbox none switches it off."""
  from bench.referee.sandbox import SandboxError
  probe.cache_clear()
  monkeypatch.setenv("PATH", "/nonexistent")
  try:
    with pytest.raises(SandboxError, match="not installed .*apt-get install bubblewrap"): probe("bwrap")
    with pytest.raises(SandboxError, match="unknown sandbox mode 'auto'"): probe("auto")
    assert probe("none").label == "none: switched off (--sandbox none)"
  finally:
    probe.cache_clear()
  assert Sandbox("none", "x").wrap(["python"], scratch="/tmp", readable=[], hidden=[], device=None, pass_fds=[]) == ["python"]


def test_no_verdict_for_an_entry_that_ran_without_a_sandbox():
  entry = runs_of("mine", lognormal_times(2.0, 10, 1))
  for r in entry: r.sandbox = "none: bubblewrap is not installed"
  runs = frame([asdict(r) for r in entry + runs_of("ppo", lognormal_times(8.0, 10, 2))])
  comps, warns = compare_runs(runs)
  assert list(comps["verdict"]) == ["not comparable"] and "without a sandbox" in comps["notes"][0]
  assert any("no verdict for an entry without one" in w for w in warns)
  forced, _ = compare_runs(runs, force=True)
  assert list(forced["verdict"]) == ["faster"]


def test_far_fewer_steps_than_any_reference_run_is_flagged_for_review():
  entry = runs_of("mine", lognormal_times(2.0, 10, 1))
  for r in entry[:2]: r.steps_to_threshold = 1000           # the references needed 5,000
  runs = frame([asdict(r) for r in entry + runs_of("ppo", lognormal_times(8.0, 10, 2))])
  comps, warns = compare_runs(runs)
  assert "review: 2 solved run(s) with fewer than 1/4" in comps["notes"][0] and "seeds 0, 1" in comps["notes"][0]


def test_printable_escapes_invisible_and_line_breaking_characters():
  from bench.referee.protocol import printable
  for ch in ("\u2028", "\u2029", "\u200e", "\u200f", "\u061c", "\ufeff", "\u2066", "\x1b", "\x9b"):
    assert ch not in printable(f"a{ch}b") and printable(f"a{ch}b").isprintable()
  assert printable("tab\tand | stay") == "tab\tand | stay"


def test_a_record_cannot_add_a_column_to_the_reports_tables():
  import pandas as pd

  from bench.analysis.tables import markdown as _md
  table = _md(pd.DataFrame({"agent": ["x"], "why": ["a | b | solved\u2028"]}))
  assert table.splitlines()[2].count(" | ") == 1 and "\\|" in table
