"""`python -m bench.report` and `from bench.report import ...`, as they have always been called: bench/analysis/report.py."""
from bench.analysis.report import *  # noqa: F403
from bench.analysis.report import main

if __name__ == "__main__": raise SystemExit(main())
