"""`python -m bench.history` and `from bench.history import ...`, as they have always been called: bench/analysis/history.py."""
from bench.analysis.history import *  # noqa: F403
from bench.analysis.history import main

if __name__ == "__main__": raise SystemExit(main())
