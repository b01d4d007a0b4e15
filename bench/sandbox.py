"""The agent's sandbox: bubblewrap (`bwrap`, Debian package `bubblewrap`), not home-made.

Each agent process runs in its own PID, network, IPC and UTS namespaces (it cannot see or signal the
referee or other runs; no network), with the whole file system read-only, the temporary directories and
the results directories replaced by empty ones, a private scratch directory as working directory, HOME and
TMPDIR, and only the paths a run needs bound back in (the project, the Python installation, the entry's
own directory, the run's kernel cache). When the run ends the referee kills bwrap; `--die-with-parent`
then kills the namespace's init, and the kernel kills every process left in the namespace.

Where bwrap is missing or cannot make namespaces (user namespaces disabled: Ubuntu 24.04 restricts them
through AppArmor, see README), `probe` says why and the run is recorded with `sandbox: none`.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache

MODES = ("auto", "bwrap", "none")
BASE = ["--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]


class SandboxError(Exception):
  """A sandbox was required (--sandbox bwrap) and cannot be made here."""


@dataclass(frozen=True)
class Sandbox:
  kind: str                 # "bwrap" | "none"
  reason: str | None = None  # why there is none
  bwrap: str | None = None   # the bwrap binary

  @property
  def label(self) -> str:
    """What a record says: 'bwrap', or 'none: <why>'."""
    return self.kind if self.kind != "none" else f"none: {self.reason}"

  def wrap(self, argv: list[str], *, scratch: str, readable: list[str], hidden: list[str], device: str | None) -> list[str]:
    """argv run inside the sandbox (unchanged where there is none)."""
    if self.kind == "none": return argv
    real = lambda p: os.path.realpath(p)  # noqa: E731
    tmps = sorted({real(p) for p in ("/tmp", "/var/tmp", "/dev/shm", "/run/user", tempfile.gettempdir()) if os.path.isdir(p)})
    under = lambda p, roots: any(p == r or p.startswith(r.rstrip("/") + "/") for r in roots)  # noqa: E731
    args = [self.bwrap, *BASE]
    for node in device_nodes(device): args += ["--dev-bind", node, node]
    for t in tmps: args += ["--tmpfs", t]
    for p in sorted({real(p) for p in readable + python_paths() if os.path.exists(p)}):
      if under(p, tmps): args += ["--ro-bind", p, p]
    for h in sorted({real(h) for h in hidden if os.path.isdir(h)}): args += ["--tmpfs", h, "--remount-ro", h]
    scratch = real(scratch)
    args += ["--bind", scratch, scratch, "--chdir", scratch, "--setenv", "HOME", scratch, "--setenv", "TMPDIR", scratch]
    return [*args, "--", *argv]


def python_paths() -> list[str]:
  """What the agent's Python needs to read: the interpreter's prefixes and sys.path."""
  return [sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable)), *filter(None, sys.path)]


def device_nodes(device: str | None) -> list[str]:
  """Device files a tinygrad GPU backend opens. NVIDIA and AMD drivers expose one control node for every GPU,
  so every GPU's node is bound: the run's GPU is chosen by DEV=, not by the sandbox."""
  base = (device or "CPU").split(":")[0].upper()
  if base in ("CUDA", "NV"): pats = ["/dev/nvidia*", "/dev/nvidia-caps/*"]
  elif base in ("AMD", "HIP", "CL"): pats = ["/dev/kfd", "/dev/dri/*"]
  elif base in ("QCOM",): pats = ["/dev/kgsl-3d0", "/dev/ion"]
  else: pats = []
  return sorted({p for pat in pats for p in glob.glob(pat) if not os.path.isdir(p)})


@cache
def probe(mode: str = "auto") -> Sandbox:
  """The sandbox this machine can make: bwrap if it runs here, else none with the reason.
  mode 'bwrap' raises SandboxError instead of falling back; 'none' switches it off."""
  if mode not in MODES: raise SandboxError(f"unknown sandbox mode {mode!r}: expected one of {', '.join(MODES)}")
  if mode == "none": return Sandbox("none", "switched off (--sandbox none)")
  bwrap = shutil.which("bwrap")
  if bwrap is None:
    reason = "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
  else:
    try:
      out = subprocess.run([bwrap, *BASE, "--", "true"], capture_output=True, text=True, timeout=30)
      reason = None if out.returncode == 0 else \
        f"bwrap cannot make namespaces here ({out.stderr.strip()[:200]}); see README: Sandbox, for allowing user namespaces"
    except (OSError, subprocess.SubprocessError) as e:
      reason = f"bwrap failed to start: {e}"
  if reason is None: return Sandbox("bwrap", None, bwrap)
  if mode == "bwrap": raise SandboxError(reason)
  return Sandbox("none", reason)
