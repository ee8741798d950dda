"""The model and the data reading shared by train.py and predict.py."""

import json
from pathlib import Path

import torch
import torch.nn as nn


class SmallCNN(nn.Module):
    """Three 3x3 conv blocks for small grey images: H x W -> H/4 x W/4 feature maps -> classes."""

    def __init__(
        self, num_classes: int, height: int, width: int, channels: int = 32, dropout: float = 0.25
    ) -> None:
        super().__init__()

        def block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
            layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
            if pool:
                layers.append(nn.MaxPool2d(2))
            return nn.Sequential(*layers)

        self.features = nn.Sequential(
            block(1, channels, pool=False),
            block(channels, 2 * channels, pool=True),
            block(2 * channels, 2 * channels, pool=True),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(2 * channels * (height // 4) * (width // 4), 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def images_to_tensor(images: list[list[float]], shape: list[int], scale: float) -> torch.Tensor:
    """Flat row-major pixel lists -> a float tensor N x 1 x H x W in [0, 1]."""
    height, width = shape
    x = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, height, width)
    return x / scale
