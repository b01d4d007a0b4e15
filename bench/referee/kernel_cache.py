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
does not reach a timed run. Keys of other compilers are dropped, and so are BEAM's rows (their keys and values are
free-form enough to carry data: under BEAM a timed run searches on its clock). What can still cross: the compile keys
themselves, kernel sources the agent's process chose (PROTOCOL.md 12); their bytes are bounded, the rebuilt cache's
SHA-256 is in every record of the pair and the session keeps a copy for review.
"""
from __future__ import annotations

import hashlib
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
MAX_CACHE_BYTES = 1 << 30         # a warm-up's cache file over this is refused before it is read
MAX_VALUE_BYTES = 64 << 20        # one value (a compiled kernel) over this is refused
MAX_KEY_BYTES = 32 << 20          # the compile keys (kernel sources) the rebuild takes, all together


class CacheRejected(Exception):
  """The warm-up left something in the kernel cache that is not tinygrad's."""


def _connect(path: str) -> sqlite3.Connection:
  con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
  con.execute("PRAGMA trusted_schema=OFF")
  con.execute("PRAGMA cell_size_check=ON")
  return con


def take(scratch: str, dst: str) -> str | None:
  """The warm-up's cache (scratch/kernel-cache/cache.db, in a directory its agent owned) copied to `dst`, the referee's
  own, following no link at any step (the agent could have made `kernel-cache` a link to any file on the machine);
  None where it wrote none."""
  fds = []
  try:
    try:
      fds.append(os.open(scratch, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW))
      fds.append(os.open("kernel-cache", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fds[-1]))
      fds.append(os.open("cache.db", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fds[-1]))
    except FileNotFoundError: return None
    except OSError as e: raise CacheRejected(f"the kernel cache's path is not a plain directory and file (a link?): {e.strerror}") from None
    st = os.fstat(fds[-1])
    if not stat.S_ISREG(st.st_mode): raise CacheRejected("the kernel cache is not a regular file")
    if st.st_size > MAX_CACHE_BYTES: raise CacheRejected(f"the kernel cache is {st.st_size:,} bytes, over {MAX_CACHE_BYTES:,}")
    with open(fds.pop(), "rb", closefd=True) as src, open(dst, "wb") as out: shutil.copyfileobj(src, out)
    return dst
  finally:
    for fd in fds: os.close(fd)


def verify(path: str) -> int:
  """Check a warm-up's cache; returns its number of entries, or raises CacheRejected saying what is wrong."""
  if not os.path.lexists(path): return 0
  if not stat.S_ISREG(os.lstat(path).st_mode): raise CacheRejected("the kernel cache is not a regular file (a link?)")
  if os.path.getsize(path) > MAX_CACHE_BYTES: raise CacheRejected(f"the kernel cache is over {MAX_CACHE_BYTES:,} bytes")
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
  if len(val) > MAX_VALUE_BYTES: raise CacheRejected(f"a value in {table!r} is {len(val):,} bytes, over {MAX_VALUE_BYTES:,}")
  if table.startswith("compile_"):
    try:
      for op, _, _ in pickletools.genops(val):     # streamed: a plain byte string is a handful of opcodes
        if op.name not in PLAIN: raise CacheRejected(f"a value in {table!r} is not a plain byte string (opcode {op.name})")
    except CacheRejected: raise
    except Exception as e: raise CacheRejected(f"a value in {table!r} is not a well-formed pickle: {e}") from None
    return
  try: ops = [(op.name, arg) for op, arg, _ in pickletools.genops(val)]
  except Exception as e: raise CacheRejected(f"a value in {table!r} is not a well-formed pickle: {e}") from None
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


def rebuild(src: str | None, dst: str, config, workdir: str) -> dict:
  """A verified warm-up cache `src` made anew into `dst` (then verified and sealed) from its keys alone, compiled by
  tinygrad in a sandboxed process of its own, under the runs' sandbox and limits (`config`: a RefereeConfig). Returns
  what it compiled and dropped, the keys' bytes and the new cache's SHA-256; raises CacheRejected where it fails."""
  from bench import ROOT
  from bench.referee.agent_process import limits
  from bench.referee.protocol import printable
  from bench.referee.sandbox import agent_environ, probe
  if src is None or not os.path.exists(src): return {"compiled": 0, "dropped": 0, "key_bytes": 0, "sha256": None}
  sandbox, device = probe(config.sandbox), config.device
  uid = sandbox.uid(config.placement.get("slot") or 0)
  scratch = tempfile.mkdtemp(prefix="rebuild-", dir=workdir)
  try:
    given, made = os.path.join(scratch, "warm-up.db"), os.path.join(scratch, "rebuilt.db")
    shutil.copyfile(src, given)
    sandbox.give(scratch, given, uid=uid)
    env = agent_environ({**config.extra_env, "PYTHONPATH": ROOT, "HOME": scratch, "TMPDIR": scratch, "CACHEDB": made,
                         "PYTHONDONTWRITEBYTECODE": "1", **({"DEV": device} if device else {})})   # extra_env: the agent's settings
    fds: list[int] = []
    argv = sandbox.wrap([sys.executable, "-m", "bench.referee.kernel_cache", given], scratch=scratch, readable=[ROOT],
                        hidden=list(config.hidden_dirs), device=device, uid=uid, pass_fds=fds)
    with tempfile.TemporaryFile() as log:
      try: code = subprocess.run(argv, env=env, cwd=scratch, stdout=log, stderr=subprocess.STDOUT, timeout=REBUILD_TIMEOUT_S,
                                 stdin=subprocess.DEVNULL, pass_fds=fds, preexec_fn=lambda: limits(config, uid, sandbox.kind != "none")).returncode
      except subprocess.TimeoutExpired: raise CacheRejected(f"rebuilding the kernel cache took over {REBUILD_TIMEOUT_S:g} s") from None
      finally:
        for fd in fds: os.close(fd)
      log.seek(max(os.fstat(log.fileno()).st_size - 2000, 0))
      tail = log.read().decode(errors="replace").strip()
    try:
      if code != 0: raise ValueError(f"exit code {code}")
      summary = json.loads(tail.splitlines()[-1])
      if not isinstance(summary, dict): raise ValueError("no summary")
    except (ValueError, IndexError) as e:
      raise CacheRejected(f"rebuilding the kernel cache failed ({e}): {printable(tail[-500:], keep=chr(10))}") from None
    verify(made)
    seal(made, dst)
    with open(dst, "rb") as f: summary["sha256"] = hashlib.file_digest(f, "sha256").hexdigest()
    return summary
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def _rebuild_here(src: str) -> dict:
  """In the rebuild's sandbox, CACHEDB naming the new cache: every key of the device compiler's table compiled afresh
  (tinygrad's compile_cached puts what its compiler gives) up to MAX_KEY_BYTES of keys, everything else dropped."""
  from tinygrad import Device
  from tinygrad.helpers import VERSION
  compiler = Device[Device.DEFAULT].compiler
  compile_table = f"{compiler.cachekey}_{VERSION}" if compiler.cachekey else None
  con = _connect(src)
  counts = {"compiled": 0, "dropped": 0, "key_bytes": 0}
  try:
    for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
      if name != compile_table:
        counts["dropped"] += con.execute(f"SELECT count(*) FROM '{name}'").fetchone()[0]
        continue
      for (key,) in con.execute(f"SELECT key FROM '{name}'"):
        size = len(key.encode()) if isinstance(key, str) else 0
        if not size or counts["key_bytes"] + size > MAX_KEY_BYTES: counts["dropped"] += 1; continue
        compiler.compile_cached(key)
        counts["compiled"], counts["key_bytes"] = counts["compiled"] + 1, counts["key_bytes"] + size
  finally:
    con.close()
  return counts


if __name__ == "__main__":
  print(json.dumps(_rebuild_here(sys.argv[1])))
