"""`python -m bench.gate` and `from bench.gate import ...`, as they have always been called: bench/analysis/gate.py."""
from bench.analysis.gate import *  # noqa: F403
from bench.analysis.gate import main

if __name__ == "__main__": raise SystemExit(main())
