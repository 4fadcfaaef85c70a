"""Built-in datasets and executors, registered through the same hooks a third-party plugin uses."""
from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl
def fwbench_register_datasets(register):
    from .datasets.packaged import Digits, Mnist5k, Synthetic

    for dataset in (Mnist5k(), Digits(), Synthetic()):
        register.dataset(dataset)
