"""The one thing the untimed warm-up may hand to the timed runs: tinygrad's kernel cache, checked first.

tinygrad keeps compiled kernels in an SQLite file (CACHEDB): one table per compiler (`compile_<name>_<version>`)
and, with BEAM, one of chosen optimisations (`beam_search_<version>`); each value is a pickle. The referee
never unpickles it. `verify` refuses any other table, view or trigger, and any value whose pickle is not a
plain byte string (a compiled kernel) or, in beam_search tables, a structure of tinygrad's own classes
(read with pickletools, which executes nothing). `seal` writes a fresh, compacted copy (VACUUM INTO: no free
pages, no write-ahead log) that the referee keeps out of every sandbox; each timed run gets its own copy of it.

What this cannot see: data hidden in the bytes of a cache entry (PROTOCOL.md 12, what review must check).
"""
from __future__ import annotations

import os
import pickletools
import re
import sqlite3

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
  if not os.path.exists(path): return 0
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
