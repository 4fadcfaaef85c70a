"""The ``bench`` commands, one module per command: each has ``add_parser(subparsers)`` and its handler.

A command module turns parsed flags into a call of the library (``bench run`` builds a
`fwbench.run.options.RunOptions` for `fwbench.run.matrix.plan_run`); the wings keep the logic.
`fwbench.cli.build_parser` assembles them; ``report``, ``compare``, ``ab``, ``study`` and ``tune``
are registered through the built-in `fwbench_register_commands` hook, as a plugin's would be.
"""
