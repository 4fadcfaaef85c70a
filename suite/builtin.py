"""Built-in datasets and executors, registered through the same hooks a third-party plugin uses."""
from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl
def fwbench_register_datasets(register):
    from .datasets.packaged import Digits, Mnist5k, Synthetic
    from .datasets.remote import Cifar10, FashionMnist, Mnist

    for dataset in (Mnist5k(), Digits(), Synthetic(), Mnist(), FashionMnist(), Cifar10()):
        register.dataset(dataset)


@hookimpl
def fwbench_register_executors(register):
    from .run.dask_executor import DaskExecutor
    from .run.local import LocalExecutor

    register.executor("local", LocalExecutor)
    register.executor("dask", DaskExecutor)


@hookimpl
def fwbench_register_commands(subparsers):
    from .gate.ab import add_ab_command
    from .report.commands import add_commands
    from .studies.command import add_study_command

    add_commands(subparsers)
    add_ab_command(subparsers)
    add_study_command(subparsers)
    from .run.tune import add_tune_command

    add_tune_command(subparsers)
