"""What the reference agents take from tinygrad beyond its documented API, checked loudly: when tinygrad changes under
agents/common.py these fail first, with the reason, instead of the agents silently computing on stale buffers."""
from __future__ import annotations

import numpy as np
import pytest
from tinygrad import Tensor, TinyJit

from agents.common import Greedy, copyin, copyout, jit, overridden


def test_copyin_and_copyout_move_bytes_in_place_through_the_allocator():
  """copyin/copyout use Buffer.allocator._copyin/_copyout (private: tinygrad 0.14 has no public in-place copy of a
  numpy array into a realized buffer; Buffer.copy_from runs a copy program, and a new Tensor each step costs ~4 ms).
  If this fails, tinygrad renamed them: port the two functions in agents/common.py, nothing else uses them."""
  t = Tensor.zeros(3, 4).contiguous().realize()
  buf = t.uop.buffer
  assert hasattr(buf.allocator, "_copyin") and hasattr(buf.allocator, "_copyout"), \
    f"tinygrad {type(buf.allocator).__name__} lost _copyin/_copyout: port agents/common.py copyin/copyout"
  a = np.arange(12, dtype=np.float32).reshape(3, 4)
  copyin(t, a)
  assert t.uop.buffer is buf                                # in place: the same buffer
  np.testing.assert_array_equal(copyout(t, np.empty((3, 4), np.float32)), a)
  np.testing.assert_array_equal(t.numpy(), a)               # and tinygrad's own read agrees


def test_a_jitted_function_sees_what_copyin_wrote_on_every_replay():
  """The agents' pattern: one fixed buffer, rewritten in place before each call of a TinyJit (captured on call 2)."""
  x = Tensor.zeros(4).contiguous().realize()
  f = TinyJit(lambda: (x * 2 + 1).realize())
  for k in range(5):
    copyin(x, np.full(4, k, np.float32))
    np.testing.assert_array_equal(f().numpy(), np.full(4, 2 * k + 1, np.float32))


def test_jit_captures_on_its_first_call_and_replays_what_copyin_wrote():
  """agents/common.py jit sets TinyJit's call counter (`cnt`, tinygrad 0.14) so that call 1 captures; if tinygrad
  renames it, this fails here instead of the agents quietly scheduling each graph twice."""
  x = Tensor.zeros(4).contiguous().realize()
  f = jit(lambda: (x * 3).realize())
  assert f.cnt == 1, "TinyJit lost its `cnt` call counter: port agents/common.py jit"
  for k in range(4):
    copyin(x, np.full(4, k, np.float32))
    np.testing.assert_array_equal(f().numpy(), np.full(4, 3 * k, np.float32))
    assert f.captured is not None


def test_greedy_with_rows_is_one_graph_for_every_batch_size():
  w = Tensor(np.arange(8, dtype=np.float32).reshape(4, 2)).realize()
  g = Greedy(lambda x: (x @ w).argmax(-1), 4, dtype=np.int32, rows=16)
  rng = np.random.default_rng(0)
  for n in (3, 16, 1, 40):    # 40: three calls
    obs = rng.normal(size=(n, 4)).astype(np.float32)
    np.testing.assert_array_equal(g(obs), (obs @ w.numpy()).argmax(-1))
  assert list(g.cache) == [16]


def test_copyout_refuses_a_tensor_that_is_not_a_plain_buffer():
  with pytest.raises(AssertionError, match="not a plain buffer"): copyout(Tensor.ones(4) + 1, np.empty(4, np.float32))


def test_configuration_overrides_from_the_environment(monkeypatch):
  from agents.ppo import Config
  cfg = Config(lr=3e-3, num_envs=8)
  monkeypatch.setenv("PPO_CONFIG", "lr=1e-3 num_envs=16")
  assert overridden(cfg, "PPO_CONFIG") == Config(lr=1e-3, num_envs=16)
  monkeypatch.setenv("PPO_CONFIG", "learning_rate=1")
  with pytest.raises(ValueError, match="not FIELD=VALUE with a field of Config"): overridden(cfg, "PPO_CONFIG")
  monkeypatch.setenv("PPO_CONFIG", "num_envs=lots")
  with pytest.raises(ValueError, match="num_envs='lots' is not a int"): overridden(cfg, "PPO_CONFIG")
  monkeypatch.delenv("PPO_CONFIG")
  assert overridden(cfg, "PPO_CONFIG") is cfg


HCQ2_SNIPPET = """
import numpy as np
from tinygrad import Tensor
from agents.common import Adam, copyin, jit
rng = np.random.default_rng(0)
theta, x = Tensor(rng.normal(size=24).astype(np.float32)).realize(), Tensor.zeros(8, 4).contiguous().realize()
adam = Adam(theta, lr=1e-2, eps=1e-8)
lr = Tensor.zeros(1).contiguous().realize()
def step(x, lr):
  loss = (x @ theta[:16].reshape(4, 4)).relu().sum(-1).square().mean() + theta[16:].square().sum()
  g, = loss.gradient(theta)
  adam.step(0, theta, g, lr[0])
  Tensor.realize(loss, theta, *adam.moments)
  return loss
f = jit(step)
for k in range(5):
  copyin(x, rng.normal(size=(8, 4)).astype(np.float32)); copyin(lr, np.array([adam.next_lr()], np.float32))
  f(x, lr)
print(len(f.captured.linear.src), theta.numpy().tobytes().hex())
"""


def test_hcq2_runs_a_jitted_update_as_one_call_with_the_same_numbers():
  """HCQ2=1 (tinygrad 0.14, CPU): a captured graph replays as one compiled submitter instead of one Python dispatch per
  kernel (agents/TUNING.md "HCQ2": DQN's update 1.1 -> 0.6 ms). What that note relies on: the replay is one call, and
  the numbers are bit for bit those of the plain path. It is read when tinygrad is imported, hence the processes."""
  import os
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  def run(value):
    env = {**os.environ, "HCQ2": value, "DEV": "CPU"}
    r = subprocess.run([sys.executable, "-c", HCQ2_SNIPPET], env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    calls, weights = r.stdout.split()[-2:]
    return int(calls), weights
  (plain_calls, plain), (calls, weights) = run("0"), run("1")
  assert plain_calls > 1 and calls == 1, f"HCQ2 replays {calls} calls (plain: {plain_calls}): the note on HCQ2 is stale"
  assert weights == plain
