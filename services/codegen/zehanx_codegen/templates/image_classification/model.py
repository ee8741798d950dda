"""A small convolutional network: three conv blocks, then two linear layers.

Each block is conv 3x3 → batch norm → ReLU → max-pool, so the image shrinks by half per block while
the number of channels grows: edges, then strokes, then parts of shapes.
"""

import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, channels, height, width, conv_channels, stem_stride, num_classes, dropout):
        super().__init__()
        blocks = []
        width_in = channels
        for i, width_out in enumerate(conv_channels):
            stride = stem_stride if i == 0 else 1  # a stride-2 first layer makes big images cheap
            blocks += [
                nn.Conv2d(width_in, width_out, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(width_out),
                nn.ReLU(),
                nn.MaxPool2d(2, ceil_mode=True),  # ceil_mode: an odd or tiny image never shrinks to 0
            ]
            width_in = width_out
        self.features = nn.Sequential(*blocks)
        with torch.no_grad():  # how many numbers come out of the conv blocks for one image
            flat = self.features(torch.zeros(1, channels, height, width)).numel()
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(flat, 128),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, x):
        return self.head(self.features(x))


class Ensemble(nn.Module):
    """A few SmallCNNs trained apart (different seeds), their probabilities averaged: each makes
    different mistakes, so together they make fewer. Returns log-probabilities, so softmax gives the
    averaged probabilities back and argmax the ensemble's class."""

    def __init__(self, members, *args):
        super().__init__()
        self.members = nn.ModuleList(SmallCNN(*args) for _ in range(members))

    def forward(self, x):
        probabilities = torch.stack([m(x).softmax(1) for m in self.members]).mean(0)
        return probabilities.clamp(min=1e-12).log()
