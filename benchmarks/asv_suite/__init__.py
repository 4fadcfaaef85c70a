"""asv benchmarks: thin adapters over fwbench's own task specs and backends (no second implementation).

asv treats lower as better, so every ``track_*`` here is lower-is-better (error rate, seconds per
sample, bytes). Backends come from ``FWBENCH_ASV_BACKENDS`` (default: all four); an unavailable one
is skipped (``NotImplementedError`` in ``setup``), not failed.
"""
