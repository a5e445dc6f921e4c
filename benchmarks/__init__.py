"""Side-by-side benchmarks of circuitbreaker_app and its peers (``python -m benchmarks``).

See ``docs/benchmarks.md`` (generated) for the method and the results.
"""
