"""rlspeedrun's referee and the tools around it, in three rooms (README "Architecture", CONTRIBUTING.md):

- bench/referee/   what is measured: the agent's process and its sandbox, the wire, the clock, the evaluation, the
                   accounting, the budgets and the records' writer. Governed by PROTOCOL.md: a change here needs a
                   PROTOCOL note, a hostile test, and a schema bump where a record changes.
- bench/analysis/  what is read from the records: statistics, the regression gate, the report, the history page.
                   Nothing on the run path imports it.
- bench/ (top)     the orchestration: the pytest plugin and session, the worker processes, runs side by side, the
                   interleaved gate against another version.

bench/report.py, gate.py, history.py, baseline.py, signing.py and clock.py forward to their rooms, so that
`python -m bench.report` and the rest, their imports, and `--benchmark-timer bench.clock.training_timer` work as they
always have."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the project's directory (bound into every agent's sandbox)
