"""Data: official-format loaders, seeded splits, and a device-resident augmenting loader.

splits = load_data("cifar10", "data/", val_size=5000, seed=0)
loader = DeviceLoader(splits.train, 128, augment=splits.augment, device="cuda")
for epoch in range(epochs):
    loader.set_epoch(epoch)
    for x, y in loader:  # x float32 in [0, 1], on the device
        ...
"""

from oat.data.arrays import ArrayDataset, DataSplits
from oat.data.device_loader import DeviceLoader
from oat.data.registry import DATASETS, DatasetSpec, list_datasets, load_data

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "DataSplits",
    "DatasetSpec",
    "DeviceLoader",
    "list_datasets",
    "load_data",
]
