"""Running a matrix: backends x tasks x devices x overrides, one process per cell.

- `matrix`: ``bench run`` - plan the cells from the command line, run them, print the table.
- `local`: the `Cell`, the local executor and the execute loop (records, resume, timeouts).
- `worker`: the body of one cell process (``python -m fwbench.run.worker``), which never raises.
- `process`: what a cell process sets and reads about itself (CPU affinity, memory).
- `dask_executor`: the same cells on a Dask cluster.
"""
