"""The agent's sandbox: bubblewrap (`bwrap`, Debian package `bubblewrap`), not home-made, built as contest judges
build theirs (isolate, nsjail): nothing is visible that a run does not need, and nothing in it is privileged.

- **No root, no capability.** Where the referee runs as root (CI and these machines), bwrap makes the namespaces
  without a user namespace (which would map the agent to the host's uid 0) and the agent's command starts under
  util-linux's `setpriv`, which takes the uid and gid `UID` (no supplementary groups), clears every capability set
  (bounding set included) and sets no_new_privs before it executes Python: the agent is an ordinary unprivileged user
  of the host, who owns nothing but its scratch directory. Where the referee is not root, bwrap's user namespace maps
  the referee's own uid and bwrap drops every capability.
- **Only the paths a run needs**, never `/` whole: an empty root (tmpfs), the system's programs and libraries
  (`/usr` and its merged-/usr links), a few files of `/etc` (`ETC`), the Python installation, the project, the entry's
  own directory and the device files of a GPU, all read-only; a private scratch directory (working directory, HOME,
  TMPDIR, the run's kernel cache) read-write; an empty `/tmp`; the results directory, where it lies under a bound
  path, covered by an empty read-only directory.
- Its own PID, network, IPC, UTS and cgroup namespaces (it cannot see or signal the referee or other runs; no network).
- **An allow-listed environment** (`agent_environ`): only the variables named in `ENV`, the tinygrad and agent settings
  that records record, and those the referee sets; nothing else of the referee's environment reaches the agent.

`probe` starts one sandbox and checks from inside it that it is what this says (uid, capabilities, no_new_privs); where
it is not, the session refuses to start with the reason and its fix, unless `--sandbox none` switches it off (and every
record says `sandbox: none: ...`).
"""
from __future__ import annotations

import glob
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache

from bench import ROOT

MODES = ("bwrap", "none")
UID = 61000        # the agent's uid and gid under a referee run as root: one no account of the machine uses
NAMESPACES = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
BASE = ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
ROOT_CAPS = ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]   # setpriv's, dropped by it
SETPRIV = ["--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
TMPFS_BYTES = 1 << 30     # the agent's /tmp and /dev/shm (memory): a GiB each
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "nsswitch.conf", "passwd", "group", "hosts")
USR_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# what the agent's process may inherit of the referee's environment (besides records.TINYGRAD_VARS and AGENT_VARS)
ENV = ("PATH", "LANG", "LANGUAGE", "TZ", "NUM_CPU_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
       "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")
ENV_PREFIXES = ("LC_",)
PASS_ENV = "RLSPEEDRUN_AGENT_ENV"   # more names to pass on, comma-separated (a reviewer's choice, e.g. an entry's setting)
CHECK = ("import os; s = dict(l.split(':', 1) for l in open('/proc/self/status')); "
         "print(os.getuid(), os.getgid(), len(os.getgroups()), sum(int(s[c], 16) for c in ('CapEff', 'CapPrm', 'CapInh', 'CapAmb')), "
         "int(s['CapBnd'], 16), int(s['NoNewPrivs']), int(s['Seccomp']))")


class SandboxError(Exception):
  """The sandbox cannot be made here (and --sandbox none was not given)."""


@dataclass(frozen=True)
class Sandbox:
  kind: str                  # "bwrap" | "none"
  reason: str | None = None  # why there is none
  bwrap: str | None = None   # the bwrap binary
  setpriv: str | None = None  # util-linux's setpriv, where the referee is root

  @property
  def label(self) -> str:
    """What a record says: 'bwrap', or 'none: <why>'."""
    return self.kind if self.kind != "none" else f"none: {self.reason}"

  def uid(self, slot: int = 0) -> int | None:
    """The uid (and gid) the agent of a run in `slot` (runs side by side: bench/parallel.py) runs as, where it is not the
    referee's own: one per slot, so that runs side by side share no process limit."""
    return UID + int(slot) if self.setpriv else None

  def give(self, scratch: str, *paths: str, uid: int | None) -> None:
    """Make the agent's uid own its scratch directory and what the referee put there. The scratch directory is left
    searchable (0711: not listable) to others, so that bwrap, which is root without CAP_DAC_OVERRIDE, can enter it."""
    if uid is None: return
    for p in (scratch, *paths): os.chown(p, uid, uid, follow_symlinks=False)
    os.chmod(scratch, 0o711)

  def wrap(self, argv: list[str], *, scratch: str, readable: list[str], hidden: list[str], device: str | None,
           pass_fds: list[int], uid: int | None = None) -> list[str]:
    """argv run inside the sandbox (unchanged where there is none), as `uid` (Sandbox.uid) where the referee is root.
    `readable`: what the run needs (the project, the entry's directory); a path the agent's uid cannot read, or one
    that holds the machine's temporary directory or HOME (an entry at /tmp/x.py), is refused with the reason.
    `pass_fds`: the caller's list of descriptors for Popen, to which the seccomp filter's is added (the caller closes it
    after the start)."""
    if self.kind == "none": return argv
    if self.setpriv and uid is None: uid = self.uid()
    real = os.path.realpath
    under = lambda p, r: p == r or p.startswith(r.rstrip("/") + "/")  # noqa: E731
    scratch = real(scratch)
    private = [real(tempfile.gettempdir()), real(os.path.expanduser("~"))]
    covered = []      # a TMPDIR or HOME inside the project: an empty directory over it (the run's scratch may lie below)
    for p in {real(p) for p in readable if os.path.exists(p)}:
      held = [x for x in private if under(x, p)]
      if held and p == real(ROOT): covered += held
      elif held: raise SandboxError(f"{p} holds {', '.join(held)}: put the entry in a directory of its own")
      if uid is not None and os.stat(p).st_mode & 0o005 != 0o005:     # bound, but closed to the agent's uid
        raise SandboxError(f"the agent's uid {uid} cannot read {p} (mode {os.stat(p).st_mode & 0o777:o}): chmod o+rx it, "
                           "or put the entry where others can read it")
    # the interpreter's paths (sys.path) are bound where the agent's uid can read them and they hold nothing private
    python = [p for p in map(real, python_paths()) if os.path.exists(p) and (p == real(ROOT) or not any(under(x, p) for x in private))
              and (uid is None or os.stat(p).st_mode & 0o005 == 0o005)]
    # the read-only binds: none under another (bound with it), none of the system's, which come whole
    paths = sorted({real(p) for p in readable if os.path.exists(p)} | set(python))
    binds = [p for p in paths if not any(under(p, q) for q in paths if q != p) and not under(p, "/usr")]
    args = [self.bwrap, *NAMESPACES, *BASE, *(ROOT_CAPS if self.setpriv else []), "--tmpfs", "/", "--ro-bind", "/usr", "/usr"]
    for d in USR_LINKS:
      if os.path.islink(f"/{d}"): args += ["--symlink", os.readlink(f"/{d}"), f"/{d}"]
      elif os.path.isdir(f"/{d}"): args += ["--ro-bind", f"/{d}", f"/{d}"]
    args += ["--perms", "0755", "--dir", "/etc"]
    for name in ETC:
      if os.path.exists(f"/etc/{name}"): args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    args += ["--dev", "/dev", "--perms", "01777", "--size", str(TMPFS_BYTES), "--tmpfs", "/dev/shm", "--proc", "/proc",
             "--perms", "01777", "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp"]
    for node in device_nodes(device): args += ["--dev-bind", node, node]
    if device_nodes(device): args += ["--ro-bind", "/sys", "/sys"]     # GPU drivers read the PCI tree
    made = {"/", "/etc", "/tmp", "/usr", "/dev", "/proc", "/sys"}
    for p in [*binds, scratch]:        # the parents bwrap would make 0700 (unreadable to the agent's uid): made 0755
      for a in ancestors(p):
        if a not in made and not any(under(a, b) for b in binds): args += ["--perms", "0755", "--dir", a]; made.add(a)
    for p in binds: args += ["--ro-bind", p, p]
    for h in sorted({real(h) for h in hidden if os.path.isdir(h)}):
      if any(under(h, b) for b in binds): args += ["--tmpfs", h, "--remount-ro", h]
    for h in covered: args += ["--tmpfs", h]
    args += ["--bind", scratch, scratch, "--chdir", scratch, "--remount-ro", "/"]
    if (prog := seccomp_filter()) is not None:
      r, w = os.pipe()
      os.write(w, prog)
      os.close(w)
      pass_fds.append(r)
      args += ["--seccomp", str(r)]
    drop = [self.setpriv, f"--reuid={uid}", f"--regid={uid}", *SETPRIV, "--"] if self.setpriv else []
    return [*args, "--", *drop, *argv]


def seccomp_filter() -> bytes | None:
  """A seccomp program (classic BPF, x86-64) that refuses to make a user namespace: unshare() and clone() with
  CLONE_NEWUSER fail with EPERM, clone3() (whose flags are out of reach in memory) with ENOSYS, on which glibc falls
  back to clone(); calls through the i386 and x32 ABIs (other numbers for the same calls) fail with ENOSYS. A user
  namespace of its own would hand the agent every capability over new namespaces, and with them kernel code
  (nf_tables, ...) with a long record of privilege escalations. None on other machines."""
  if platform.machine() != "x86_64": return None
  ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
  allow, eperm, enosys = 0x7FFF0000, 0x00050001, 0x00050026
  prog = [(ld, 0, 0, 4), (jeq, 0, 10, 0xC000003E),           # arch: i386 (int 0x80) -> ENOSYS, every call
          (ld, 0, 0, 0), (jge, 8, 0, 0x40000000),            # nr: the x32 ABI's numbers -> ENOSYS, every call
          (jeq, 7, 0, 435), (jeq, 2, 0, 272), (jeq, 1, 0, 56),   # clone3 -> ENOSYS; unshare, clone -> their flags
          (ret, 0, 0, allow),
          (ld, 0, 0, 16), (jset, 1, 0, 0x10000000),          # args[0] & CLONE_NEWUSER -> EPERM
          (ret, 0, 0, allow), (ret, 0, 0, eperm), (ret, 0, 0, enosys)]
  return b"".join(struct.pack("<HBBI", *ins) for ins in prog)


def ancestors(path: str) -> list[str]:
  """'/a/b/c' -> ['/a', '/a/b']."""
  parts = path.strip("/").split("/")[:-1]
  return ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def agent_environ(extra: dict[str, str]) -> dict[str, str]:
  """The agent's environment: the allow-listed variables of the referee's, then `extra` (what the referee sets)."""
  from bench.referee.records import AGENT_VARS, TINYGRAD_VARS
  named = {*ENV, *TINYGRAD_VARS, *AGENT_VARS, *filter(None, (n.strip() for n in os.environ.get(PASS_ENV, "").split(",")))}
  env = {k: v for k, v in os.environ.items() if k in named or k.startswith(ENV_PREFIXES)}
  return {**env, **extra}


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
def probe(mode: str = "bwrap") -> Sandbox:
  """The sandbox, checked from inside: bwrap with the agent's uid, no capability and no_new_privs, else SandboxError
  with the reason and its fix. Mode 'none' switches it off (every record then says so)."""
  if mode not in MODES: raise SandboxError(f"unknown sandbox mode {mode!r}: expected one of {', '.join(MODES)}")
  if mode == "none": return Sandbox("none", "switched off (--sandbox none)")
  bwrap, root = shutil.which("bwrap"), os.geteuid() == 0
  if bwrap is None: raise SandboxError("bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)")
  setpriv = shutil.which("setpriv") if root else None
  if root and setpriv is None: raise SandboxError("util-linux's setpriv is missing (Debian/Ubuntu: apt-get install util-linux)")
  box = Sandbox("bwrap", None, bwrap, setpriv)
  with tempfile.TemporaryDirectory(prefix="probe-") as scratch:
    box.give(scratch, uid=box.uid())
    fds: list[int] = []
    try: out = subprocess.run(box.wrap([sys.executable, "-c", CHECK], scratch=scratch, readable=[], hidden=[], device=None, uid=box.uid(),
                                       pass_fds=fds), capture_output=True, text=True, timeout=60, cwd=scratch, env=agent_environ({}),
                              pass_fds=fds)
    except (OSError, subprocess.SubprocessError) as e: raise SandboxError(f"bwrap failed to start: {e}") from None
    finally:
      for fd in fds: os.close(fd)
  if out.returncode != 0:
    raise SandboxError(f"bwrap cannot make the sandbox here ({out.stderr.strip()[-300:]}); see README: Sandbox "
                       "(user namespaces, for a referee that is not root)")
  uid, gid, groups, caps, cap_bnd, nnp, filtered = (int(x) for x in out.stdout.split())
  want = (box.uid(), box.uid()) if root else (os.getuid(), os.getgid())
  if (uid, gid) != want or uid == 0 or groups or caps or (root and cap_bnd) or not nnp or (seccomp_filter() and filtered != 2):
    raise SandboxError(f"the sandbox is not what it should be: uid {uid}, gid {gid}, {groups} groups, capabilities {caps:#x}, "
                       f"CapBnd {cap_bnd:#x}, no_new_privs {nnp}, seccomp mode {filtered} (want uid/gid {want}, no group, no "
                       "capability, no_new_privs, the seccomp filter)")
  return box

