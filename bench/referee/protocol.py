"""The wire between the referee and the agent's process: every message either side may send, with its
fields and their types, and the framing. This is the one home of the protocol (PROTOCOL.md section 12).

No pickle crosses it. A frame is

    8-byte little-endian length N | N bytes: 4-byte header length H | H bytes of JSON header | raw array bytes

The header names the message's verb, its request number and its fields; arrays travel as raw bytes
after the header, described by a whitelisted dtype and a shape. The referee reads at most
MAX_REPLY_BYTES per reply (a longer one is refused before it is read), with a deadline for the whole
frame, and validates every field against the message's declared type: nothing the agent's process
sends is trusted.

Referee -> agent (requests)                         agent -> referee (replies)
  Load(task, preload)           untimed start-up      Loaded(pid, tinygrad_version, tinygrad_device)
  Import(target)                timed                 Ok()
  Construct(seed)               timed                 Ok()
  Train(until_steps, max_s)     timed                 Trained(finished, agent_steps, counted_steps, profile)
  Snapshot()                    timed                 State(blob, arrays)
  Restore(blob)                 (an evaluator) untimed Ok()
  Act(obs)                      (an evaluator) untimed, capped   Actions(actions)
  Close()                       -                     (none: the process exits)

The training process gets Load, Import, Construct, Train and Snapshot; an evaluator (a process of its own, PROTOCOL.md
section 3) gets Load, Import, Construct, then Restore and Act for each evaluation. A State reply may be up to
MAX_STATE_BYTES (the referee reads it with that limit); every other reply up to MAX_REPLY_BYTES.
  any request                                         Error(phase, kind, message, traceback)
"""
from __future__ import annotations

import functools
import json
import math
import re
import socket
import struct
import time
import typing
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

MAX_REPLY_BYTES = 1 << 20          # the largest reply the referee reads (a batch of actions is far smaller) ...
MAX_STATE_BYTES = 256 << 20        # ... but a State (the policy's weights, for the evaluator)
MAX_TEXT = 16_000                  # characters of any one string field (a traceback is cut to fit)
MAX_LIST = 4096                    # items of a list or dict field
DTYPES = frozenset(["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                    "float16", "float32", "float64"])


# what no string from the agent may hold: NUL and the other C0 controls but tab, DEL, the C1 controls (0x9b is a terminal's
# CSI), lone surrogates (not UTF-8), and the bidirectional overrides that make a line read otherwise than it is stored
_FORMAT = "\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff"   # invisible and direction marks, line/paragraph separators
UNSAFE = re.compile(f"[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff{_FORMAT}]")
UNSAFE_MULTILINE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff{_FORMAT}]")   # newline allowed
MULTILINE = frozenset({"error.message", "error.traceback"})


class ProtocolError(Exception):
  """A frame or message that breaks this protocol (the sender is then treated as broken)."""


# --- requests: referee -> agent ---
@dataclass(frozen=True)
class Load:
  verb: ClassVar[str] = "load"
  task: str                   # the task as JSON (envs.Task.to_wire)
  preload: list[str]          # library modules imported before the agent's module (untimed), e.g. torch for a peer

@dataclass(frozen=True)
class Import:
  verb: ClassVar[str] = "import"
  target: str                 # AgentSpec.target: "package.module:Class" or "/abs/path/file.py:Class"

@dataclass(frozen=True)
class Construct:
  verb: ClassVar[str] = "construct"
  seed: int

@dataclass(frozen=True)
class Train:
  verb: ClassVar[str] = "train"
  until_steps: int            # advance train() until the steps reach this ...
  max_s: float                # ... or this many seconds passed in the agent's process

@dataclass(frozen=True)
class Snapshot:
  verb: ClassVar[str] = "snapshot"

@dataclass(frozen=True)
class Restore:
  verb: ClassVar[str] = "restore"
  blob: np.ndarray            # a State's blob, as the training process sent it

@dataclass(frozen=True)
class Act:
  verb: ClassVar[str] = "act"
  obs: np.ndarray

@dataclass(frozen=True)
class Close:
  verb: ClassVar[str] = "close"


# --- replies: agent -> referee (every field self-reported by the agent's process) ---
@dataclass(frozen=True)
class Loaded:
  verb: ClassVar[str] = "loaded"
  pid: int
  tinygrad_version: str
  tinygrad_device: str

@dataclass(frozen=True)
class Ok:
  verb: ClassVar[str] = "ok"

@dataclass(frozen=True)
class Trained:
  verb: ClassVar[str] = "trained"
  finished: bool              # train() returned
  agent_steps: int            # the last step count train() yielded
  counted_steps: int          # steps counted by the task's wrappers in that process (0: none built through the task)
  profile: dict[str, float]   # the agent's optional `profile`, empty when it has none

  @property
  def steps(self) -> int: return env_steps(self.counted_steps, self.agent_steps)

  @property
  def step_source(self) -> str: return "wrapper" if self.counted_steps > 0 else "yield"


def env_steps(counted: int, yielded: int) -> int:
  """A run's env steps: those the task's counting wrappers saw where the agent built its environments through the task,
  else the count train() yielded."""
  return counted if counted > 0 else yielded


@dataclass(frozen=True)
class State:
  verb: ClassVar[str] = "state"
  blob: np.ndarray            # uint8: an .npz archive (no pickle) of the policy's arrays (bench/referee/agent_host.py pack)
  arrays: int                 # how many arrays it holds (0: nothing to evaluate from; the run is evaluated in place)

@dataclass(frozen=True)
class Actions:
  verb: ClassVar[str] = "actions"
  actions: np.ndarray

@dataclass(frozen=True)
class Error:
  verb: ClassVar[str] = "error"
  phase: str                  # the verb being handled
  kind: str                   # "interface" (broke the agent interface) | "exception"
  message: str
  traceback: str


REQUESTS = {m.verb: m for m in (Load, Import, Construct, Train, Snapshot, Restore, Act, Close)}
REPLIES = {m.verb: m for m in (Loaded, Ok, Trained, State, Actions, Error)}


def encode(msg, seq: int) -> bytes:
  """One frame (without the outer length, which Wire adds)."""
  header, arrays = {"verb": msg.verb, "seq": int(seq), "fields": {}}, []
  for f in fields(msg):
    v = getattr(msg, f.name)
    if isinstance(v, np.ndarray):
      if v.dtype.name not in DTYPES: raise ProtocolError(f"{msg.verb}.{f.name}: dtype {v.dtype} cannot be sent (numbers and bools only)")
      v = np.ascontiguousarray(v)
      header["fields"][f.name] = {"array": len(arrays), "dtype": v.dtype.newbyteorder("<").str, "shape": list(v.shape)}
      arrays.append(v.astype(v.dtype.newbyteorder("<"), copy=False).tobytes())
    else:
      header["fields"][f.name] = v
  h = json.dumps(header, allow_nan=True).encode()
  return struct.pack("<I", len(h)) + h + b"".join(arrays)


def decode(frame: bytes, allowed: dict[str, type]):
  """(seq, message) from one frame, every field checked against its declared type; ProtocolError otherwise."""
  try:
    if len(frame) < 4: raise ProtocolError("frame shorter than its header length")
    (hlen,) = struct.unpack_from("<I", frame)
    if hlen > len(frame) - 4: raise ProtocolError("header length past the end of the frame")
    header = json.loads(frame[4:4 + hlen].decode())
    if not isinstance(header, dict) or set(header) != {"verb", "seq", "fields"}: raise ProtocolError("malformed header")
    cls = allowed.get(header["verb"]) if isinstance(header["verb"], str) else None
    if cls is None: raise ProtocolError(f"unexpected message {str(header['verb'])[:40]!r}")
    seq, raw = header["seq"], header["fields"]
    if type(seq) is not int or not isinstance(raw, dict): raise ProtocolError("malformed header")
    spec = _spec(cls)
    if raw.keys() != spec.keys(): raise ProtocolError(f"{cls.verb}: fields {sorted(raw)}, expected {sorted(spec)}")
    body, offset, values = memoryview(frame)[4 + hlen:], 0, {}
    for name, kind in spec.items():
      v = raw[name]
      if kind is np.ndarray:
        v, used = _array(v, body, offset, f"{cls.verb}.{name}")
        offset += used
      else:
        _check(v, kind, f"{cls.verb}.{name}")
      values[name] = v
    if offset != len(body): raise ProtocolError(f"{cls.verb}: {len(body) - offset} bytes after the arrays")
    return seq, cls(**values)
  except ProtocolError: raise
  except Exception as e:   # json errors, recursion, bad unicode...: all the sender's fault
    raise ProtocolError(f"undecodable message: {type(e).__name__}: {str(e)[:200]}") from None


@functools.cache
def _spec(cls) -> dict[str, type]:
  """A message's fields and their declared types, in order."""
  hints = typing.get_type_hints(cls)
  return {f.name: hints[f.name] for f in fields(cls)}


def _array(desc, body: memoryview, offset: int, where: str) -> tuple[np.ndarray, int]:
  if not isinstance(desc, dict) or set(desc) != {"array", "dtype", "shape"}: raise ProtocolError(f"{where}: malformed array")
  dtype, shape = desc["dtype"], desc["shape"]
  if not isinstance(dtype, str) or not isinstance(shape, list) or len(shape) > 8 or \
     not all(type(d) is int and 0 <= d < 2**31 for d in shape): raise ProtocolError(f"{where}: malformed array")
  try: dt = np.dtype(dtype)
  except TypeError: raise ProtocolError(f"{where}: unknown dtype {dtype[:20]!r}") from None
  if dt.name not in DTYPES or dt.byteorder == ">": raise ProtocolError(f"{where}: dtype {dtype[:20]!r} is not allowed")
  n = math.prod(shape) * dt.itemsize
  if offset + n > len(body): raise ProtocolError(f"{where}: {n} bytes announced, {len(body) - offset} sent")
  return np.frombuffer(body[offset:offset + n], dtype=dt).reshape(shape).copy(), n


def _check(v, kind, where: str) -> None:
  ok = {int: lambda: type(v) is int and abs(v) < 2**63,
        float: lambda: type(v) in (int, float),
        bool: lambda: type(v) is bool,
        str: lambda: type(v) is str and len(v) <= MAX_TEXT}.get(kind)
  if ok is not None:
    if not ok(): raise ProtocolError(f"{where}: expected {kind.__name__}, got {type(v).__name__}")
    if kind is str and (bad := (UNSAFE_MULTILINE if where in MULTILINE else UNSAFE).search(v)):
      raise ProtocolError(f"{where}: a string with the character U+{ord(bad.group()):04X} (no NUL, surrogate, control or "
                          "direction-override character but tab, and newline in a message or traceback)")
    return
  origin, args = typing.get_origin(kind), typing.get_args(kind)
  if origin is list:
    if type(v) is not list or len(v) > MAX_LIST: raise ProtocolError(f"{where}: expected a list of at most {MAX_LIST}")
    for x in v: _check(x, args[0], where)
  elif origin is dict:
    if type(v) is not dict or len(v) > MAX_LIST: raise ProtocolError(f"{where}: expected a dict of at most {MAX_LIST}")
    for k, x in v.items():
      _check(k, args[0], where)
      _check(x, args[1], where)
  else:
    raise ProtocolError(f"{where}: no rule for {kind}")


def text(s: str) -> str:
  """A message or traceback made fit for its field: characters the wire refuses escaped (printable), cut to fit
  (keeps the end, where a traceback says what went wrong)."""
  s = printable(s, keep="\n")
  return s if len(s) <= MAX_TEXT else "..." + s[-(MAX_TEXT - 3):]


def printable(s: str, keep: str = "") -> str:
  """`s` with every character a terminal, a CSV or a Markdown table could act on escaped as \\xNN, \\uNNNN: what the
  referee does to any text of the agent's it prints or writes (a failure reason, a log tail), besides the wire's check.
  `keep`: newline, where a text has lines (the referee's own line breaks)."""
  pattern = UNSAFE_MULTILINE if keep == "\n" else UNSAFE
  return pattern.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(s))   # all BMP: \xNN, \uNNNN


class Wire:
  """Frames over a stream socket, each direction with a deadline: a peer that stalls mid-frame is a
  timeout (TimeoutError), a frame longer than `max_in` is refused before it is read."""
  def __init__(self, sock: socket.socket, *, accept: dict[str, type], max_in: int | None = None):
    self.sock, self.accept, self.max_in = sock, accept, max_in

  def send(self, msg, seq: int, timeout: float | None = None) -> None:
    frame = encode(msg, seq)
    self.sock.settimeout(timeout)
    self.sock.sendall(struct.pack("<Q", len(frame)) + frame)

  def recv(self, timeout: float | None = None, max_in: int | None = None):
    """(seq, message). EOFError when the peer closed the stream; TimeoutError past the deadline. `max_in`: this
    message's size limit, instead of the wire's."""
    deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
    (n,) = struct.unpack("<Q", self._read(8, deadline))
    limit = max_in if max_in is not None else self.max_in
    if limit is not None and n > limit:
      raise ProtocolError(f"a message of {n:,} bytes, over the limit of {limit:,}")
    return decode(self._read(n, deadline), self.accept)

  def _read(self, n: int, deadline: float | None) -> bytes:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
      self.sock.settimeout(None if deadline is None else max(deadline - time.monotonic(), 1e-3))
      try: k = self.sock.recv_into(view[got:], min(n - got, 1 << 20))
      except TimeoutError: raise TimeoutError("no complete message before the deadline") from None
      if k == 0: raise EOFError("the peer closed the connection")
      got += k
    return bytes(buf)

  def close(self) -> None:
    self.sock.close()
