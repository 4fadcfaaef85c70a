"""Studies: named, reproducible experiments (a set of cells) that end in a report section.

- `spec`: the study file format (``[study]`` + ``[[cells]]``) and its validation.
- `command`: ``bench study NAME`` - run a study's cells and write its report.
"""
