"""A hostile entry that trains at import time (untimed under the old referee) and patches its own clock so
that the import it reports looks instant."""
import time

from tests.fake_agents import Scripted
from tests.hostile_agents import _burn

_burn(1.5)                                   # "training" at import
time.perf_counter = lambda: 0.0              # and its own clock says the import took no time


class ImportTrainer(Scripted):
  updates_to_learn = 0 + 1
