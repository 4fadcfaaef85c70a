"""Built-in datasets, executors and commands, registered through the same hooks a third-party plugin uses."""
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
    from .commands import ab, compare, report, study, tune

    for command in (report, compare, ab, study, tune):  # tune last: it takes `bench run`'s flags
        command.add_parser(subparsers)
