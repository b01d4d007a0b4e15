"""The one thing the untimed warm-up may hand to the timed runs: tinygrad's kernel cache, checked first.

tinygrad keeps compiled kernels in an SQLite file (CACHEDB): one table per compiler (`compile_<name>_<version>`)
and, with BEAM, one of chosen optimisations (`beam_search_<version>`); each value is a pickle. The referee
never unpickles it. `verify` refuses any other table, view or trigger, and any value whose pickle is not a
plain byte string (a compiled kernel) or, in beam_search tables, a structure of tinygrad's own classes
(read with pickletools, which executes nothing). `seal` writes a fresh, compacted copy (VACUUM INTO: no free
pages, no write-ahead log) that the referee keeps out of every sandbox; each timed run gets its own copy of it.

`rebuild` then makes the cache the timed runs get anew from the warm-up's keys alone: in a sandboxed process of its
own (the agent's uid, no agent code), tinygrad's compiler for the run's device compiles each key of its compile table
(a kernel's source) into a fresh cache, so that every value is what tinygrad's compiler gives for its key: a value
the warm-up wrote (issue 25: a trained PPO's weights stored with tinygrad's own diskcache_put in a compile table)
does not reach a timed run. Keys of other compilers are dropped; beam_search rows are copied through tinygrad's own
diskcache_put. What can still cross: the keys themselves, kernel sources the agent's process chose (PROTOCOL.md 12).
"""
from __future__ import annotations

import json
import os
import pickletools
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile

TABLE = re.compile(r"^(compile_[A-Za-z0-9_]+|beam_search)_\d+$")
PLAIN = {"PROTO", "FRAME", "SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "MEMOIZE", "STOP"}


class CacheRejected(Exception):
  """The warm-up left something in the kernel cache that is not tinygrad's."""


def _connect(path: str) -> sqlite3.Connection:
  con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
  con.execute("PRAGMA trusted_schema=OFF")
  con.execute("PRAGMA cell_size_check=ON")
  return con


def verify(path: str) -> int:
  """Check a warm-up's cache; returns its number of entries, or raises CacheRejected saying what is wrong."""
  if not os.path.lexists(path): return 0
  if not stat.S_ISREG(os.lstat(path).st_mode): raise CacheRejected("the kernel cache is not a regular file (a link?)")
  try:
    con = _connect(path)
    try:
      objects = con.execute("SELECT type, name, tbl_name FROM sqlite_master").fetchall()
      for kind, name, table in objects:
        if kind == "index" and name.startswith("sqlite_autoindex_") and TABLE.match(table): continue
        if kind != "table" or not TABLE.match(name):
          raise CacheRejected(f"the kernel cache holds a {kind} {name[:60]!r} that is not tinygrad's")
      n = 0
      for _, name, _ in objects:
        if not TABLE.match(name): continue
        cols = [r[1] for r in con.execute(f"PRAGMA table_info('{name}')")]
        if not cols or cols[-1] != "val": raise CacheRejected(f"table {name!r} has columns {cols}, not tinygrad's (..., val)")
        for (val,) in con.execute(f"SELECT val FROM '{name}'"):
          _check_value(name, val)
          n += 1
      return n
    finally:
      con.close()
  except sqlite3.Error as e:
    raise CacheRejected(f"the kernel cache is not a readable SQLite file: {e}") from None


def _check_value(table: str, val) -> None:
  if not isinstance(val, bytes): raise CacheRejected(f"a value in {table!r} is {type(val).__name__}, not a pickle")
  try: ops = [(op.name, arg) for op, arg, _ in pickletools.genops(val)]
  except Exception as e: raise CacheRejected(f"a value in {table!r} is not a well-formed pickle: {e}") from None
  if table.startswith("compile_"):
    if not {name for name, _ in ops} <= PLAIN:
      raise CacheRejected(f"a value in {table!r} is not a plain byte string (opcodes {sorted({n for n, _ in ops} - PLAIN)})")
    return
  # beam_search: tinygrad's Opt objects; every class a pickle names must be tinygrad's (memo lookups followed)
  memo, recent, last = {}, [], None
  for name, arg in ops:
    if name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"): last = arg; recent.append(arg)
    elif name == "MEMOIZE": memo[len(memo)] = last
    elif name in ("PUT", "BINPUT", "LONG_BINPUT"): memo[arg] = last
    elif name in ("GET", "BINGET", "LONG_BINGET"): last = memo.get(arg); recent.append(last)
    elif name == "GLOBAL": module = str(arg).split(" ")[0]
    elif name == "STACK_GLOBAL": module = recent[-2] if len(recent) >= 2 else None
    else: last = None
    if name in ("GLOBAL", "STACK_GLOBAL") and not (isinstance(module, str) and module.startswith("tinygrad.")):
      raise CacheRejected(f"a value in {table!r} refers to a class outside tinygrad ({module!r})")
    if name in ("INST", "OBJ"): raise CacheRejected(f"a value in {table!r} uses the pickle opcode {name}")


def seal(src: str, dst: str) -> None:
  """A fresh compacted copy of a verified cache (or nothing, when the warm-up wrote none)."""
  if not os.path.exists(src): return
  os.makedirs(os.path.dirname(dst), exist_ok=True)
  if os.path.exists(dst): os.remove(dst)
  con = _connect(src)
  try: con.execute("VACUUM INTO ?", (dst,))
  finally: con.close()


REBUILD_TIMEOUT_S = 600.0


def rebuild(src: str, dst: str, *, sandbox, device: str | None, workdir: str) -> dict:
  """A verified warm-up cache `src` made anew into `dst` (then verified and sealed) from its keys alone, compiled by
  tinygrad in a sandboxed process of its own. Returns what it kept and dropped; raises CacheRejected where it fails."""
  from bench.runner import ROOT
  from bench.sandbox import agent_environ
  if not os.path.exists(src): return {"compiled": 0, "copied": 0, "dropped": 0}
  scratch = tempfile.mkdtemp(prefix="rebuild-", dir=workdir)
  try:
    given, made = os.path.join(scratch, "warm-up.db"), os.path.join(scratch, "rebuilt.db")
    shutil.copyfile(src, given)
    sandbox.give(scratch, given)
    env = agent_environ({"PYTHONPATH": ROOT, "HOME": scratch, "TMPDIR": scratch, "CACHEDB": made, "PYTHONDONTWRITEBYTECODE": "1",
                         **({"DEV": device} if device else {})})
    argv = sandbox.wrap([sys.executable, "-m", "bench.kernel_cache", given], scratch=scratch, readable=[ROOT], hidden=[], device=device)
    try: out = subprocess.run(argv, env=env, cwd=scratch, capture_output=True, text=True, timeout=REBUILD_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired: raise CacheRejected(f"rebuilding the kernel cache took over {REBUILD_TIMEOUT_S:g} s") from None
    if out.returncode != 0: raise CacheRejected(f"rebuilding the kernel cache failed: {out.stderr.strip()[-500:]}")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    verify(made)
    seal(made, dst)
    return summary
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def _rebuild_here(src: str) -> dict:
  """In the rebuild's sandbox, CACHEDB naming the new cache: every key of the device compiler's table compiled afresh
  (tinygrad's compile_cached puts what its compiler gives), beam_search rows put again, everything else dropped."""
  from tinygrad import Device
  from tinygrad.helpers import VERSION, diskcache_put
  compiler = Device[Device.DEFAULT].compiler
  compile_table = f"{compiler.cachekey}_{VERSION}" if compiler.cachekey else None
  con = _connect(src)
  counts = {"compiled": 0, "copied": 0, "dropped": 0}
  try:
    for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
      if name == compile_table:
        for (key,) in con.execute(f"SELECT key FROM '{name}'").fetchall():
          if isinstance(key, str): compiler.compile_cached(key); counts["compiled"] += 1
          else: counts["dropped"] += 1
      elif name == f"beam_search_{VERSION}":
        cur = con.execute(f"SELECT * FROM '{name}'")
        cols = [d[0] for d in cur.description]
        for row in cur.fetchall():
          diskcache_put("beam_search", dict(zip(cols[:-1], row[:-1])), row[-1], prepickled=True)
          counts["copied"] += 1
      else: counts["dropped"] += con.execute(f"SELECT count(*) FROM '{name}'").fetchone()[0]
  finally:
    con.close()
  return counts


if __name__ == "__main__":
  print(json.dumps(_rebuild_here(sys.argv[1])))
