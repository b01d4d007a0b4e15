"""The test agents' own settings (tests/fake_agents.py, hostile_agents.py) reach their sandboxed processes: the agent's
environment is allow-listed (bench/referee/sandbox.py agent_environ), and these names are added to it for the tests."""
import os

from bench.referee.sandbox import PASS_ENV

os.environ[PASS_ENV] = "TRAIN_SLEEP_S,SNOOP_FILE,HOSTILE_MARKER_FILE"
