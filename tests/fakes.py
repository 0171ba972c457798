"""In-memory samples that follow utils/datasets/CONTRACT.md, for engine and DDP tests."""

import torch
from torch.utils.data import Dataset


SIZE = 8  # crop side of TwoSourceSITS


class FakeSITS(Dataset):
    """Random series whose class is encoded in a per-class temporal pattern (learnable)."""

    classes = [f"class {k}" for k in range(4)]
    num_classes = 4
    ignore_index = 3
    background_index = None
    in_channels = 5
    red_index, nir_index = 0, 1

    def __init__(self, n: int = 8, size: int = 8, dates=(4, 7), seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.samples = []
        for i in range(n):
            T = int(torch.randint(dates[0], dates[1] + 1, (1,), generator=gen))
            label = torch.randint(0, self.num_classes, (size, size), generator=gen)
            days = torch.sort(torch.randperm(300, generator=gen)[:T]).values
            pattern = torch.sin(days[:, None, None, None] / 40.0 * (1 + label[None, None]))  # (T, 1, H, W)
            image = pattern + 0.1 * torch.randn(T, self.in_channels, size, size, generator=gen)
            ndvi = torch.full((T, size, size), 0.6)
            self.samples.append({"image": image.float(), "ndvi": ndvi, "days": days.long(), "label": label.long(), "id": f"fake{i}"})

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return dict(self.samples[index])


class TwoSourceSITS(Dataset):
    """Optical (5 bands, 3-5 dates, NDVI 0.6) + S1A (3 bands, 4-7 dates) + S1D (2 bands, 2-6 dates)."""

    num_classes = 4
    extra_sources = ("S1A", "S1D")

    def __init__(self, n=6, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.samples = []
        for i in range(n):
            label = torch.randint(0, 4, (SIZE, SIZE), generator=gen)
            sample = {"label": label, "id": f"ms{i}"}
            for name, bands, (low, high) in (("", 5, (3, 5)), ("_S1A", 3, (4, 7)), ("_S1D", 2, (2, 6))):
                T = int(torch.randint(low, high + 1, (1,), generator=gen))
                days = torch.sort(torch.randperm(300, generator=gen)[:T]).values
                signal = torch.sin(days[:, None, None, None] / 40.0 * (1 + label[None, None]))  # (T, 1, H, W)
                sample[f"image{name}"] = (signal + 0.1 * torch.randn(T, bands, SIZE, SIZE, generator=gen)).float()
                sample[f"days{name}"] = days.long()
            sample["ndvi"] = torch.full((sample["image"].shape[0], SIZE, SIZE), 0.6)
            self.samples.append(sample)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return dict(self.samples[index])
