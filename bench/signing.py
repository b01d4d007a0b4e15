"""`python -m bench.signing` and `from bench.signing import ...`, as they have always been called: bench/referee/signing.py."""
from bench.referee.signing import *  # noqa: F403
from bench.referee.signing import main

if __name__ == "__main__": raise SystemExit(main())
