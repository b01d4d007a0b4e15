"""The benchmark's pytest plugin (options, parametrization, report): bench/plugin.py."""
pytest_plugins = ["bench.plugin"]
