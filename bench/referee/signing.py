"""Signed records: each line of a session's runs.jsonl carries an Ed25519 signature (the `cryptography` package) made
by the referee's process with a key the agent's process never sees (it runs as another uid, in its own PID namespace,
with an allow-listed environment: bench/referee/sandbox.py). A hash chain alone has no key: whoever holds the file can
rewrite it and recompute the chain; a signature can be made only with the private key, and checked by anyone with the
public one (`python -m bench.report --public-key KEY.pub`).

The signed bytes are the line as written before its signature: the record with `prev_sha256` (so that the chain is
signed too), then `"signature"` and `"key_id"` appended as the line's last two fields:

    {...record..., "prev_sha256": "...", "signature": "<128 hex>", "key_id": "<16 hex>"}

Keys: `python -m bench.signing new PATH` writes PATH (the private key, PEM, mode 0600) and PATH.pub; `pytest bench/
--signing-key PATH` signs with it. Without one, a session makes a key of its own that lives in its memory only: its
public half is written beside the records (signing-key.pub) and printed, so the session's records can be checked
against what its terminal (a CI log) said, and nobody, the session's own user included, can sign a record with it
later. A signature says who ran the referee: a bounty's verdict counts when its runs were made by the bounty's runner
or a reviewer, with a key the claimant never held (README: A bounty run).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import stat
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

TAIL = re.compile(r', "signature": "([0-9a-f]{128})", "key_id": "([0-9a-f]{16})"\}$')


class BadSignature(ValueError):
  """A record whose signature is missing, made with another key, or does not match its bytes."""


def key_id(public: Ed25519PublicKey) -> str:
  """The first 16 hex digits of the SHA-256 of the raw public key: what a line names its key by."""
  raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
  return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> str:
  return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class Signer:
  def __init__(self, private: Ed25519PrivateKey | None = None, source: str = "a key of this session's own"):
    self.private = private or Ed25519PrivateKey.generate()
    self.public, self.source = self.private.public_key(), source
    self.key_id = key_id(self.public)

  @classmethod
  def from_file(cls, path: str) -> Signer:
    """The private key at `path`, which only its owner may read (a key others can read signs nothing)."""
    st = os.stat(path)
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
      raise ValueError(f"the signing key {path} can be read by others (mode {stat.S_IMODE(st.st_mode):o}): chmod 600 it")
    with open(path, "rb") as f: key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, Ed25519PrivateKey): raise ValueError(f"{path} is not an Ed25519 private key")
    return cls(key, source=os.path.abspath(path))

  def sign(self, line: str) -> str:
    """A JSON object's line (no newline) with its signature and key id appended as its last fields."""
    assert line.endswith("}")
    sig = self.private.sign(line.encode()).hex()
    return f'{line[:-1]}, "signature": "{sig}", "key_id": "{self.key_id}"}}'

  def write_public(self, path: str) -> None:
    with open(path, "w") as f: f.write(public_pem(self.public))


def load_public(path: str) -> Ed25519PublicKey:
  with open(path, "rb") as f: key = serialization.load_pem_public_key(f.read())
  if not isinstance(key, Ed25519PublicKey): raise ValueError(f"{path} is not an Ed25519 public key")
  return key


def verify_line(line: str, public: Ed25519PublicKey, where: str) -> None:
  """Raises BadSignature unless `line` (without its newline) is signed by `public`."""
  m = TAIL.search(line.rstrip("\n"))
  if m is None: raise BadSignature(f"{where}: the record is not signed")
  if m.group(2) != key_id(public):
    raise BadSignature(f"{where}: signed with key {m.group(2)}, not with the given public key ({key_id(public)})")
  signed = line.rstrip("\n")[:m.start()] + "}"
  try: public.verify(bytes.fromhex(m.group(1)), signed.encode())
  except InvalidSignature: raise BadSignature(f"{where}: the signature does not match the record: it was altered") from None


def new_key(path: str) -> Signer:
  """A new private key at `path` (mode 0600) and its public half at `path`.pub."""
  s = Signer()
  pem = s.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
  fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
  with os.fdopen(fd, "wb") as f: f.write(pem)
  s.write_public(path + ".pub")
  return s


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m bench.signing", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="cmd", required=True)
  sub.add_parser("new", help="write a new private key (mode 0600) and PATH.pub").add_argument("path")
  args = p.parse_args(argv)
  try: s = new_key(args.path)
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"private key: {args.path} (key id {s.key_id}); public key: {args.path}.pub")
  return 0


if __name__ == "__main__":
  sys.exit(main())
