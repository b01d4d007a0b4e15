"""`python -m bench.baseline` and `from bench.baseline import ...`, as they have always been called: bench/analysis/baseline.py."""
from bench.analysis.baseline import *  # noqa: F403
from bench.analysis.baseline import main

if __name__ == "__main__": raise SystemExit(main())
