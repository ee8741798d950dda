"""A multi-layer perceptron: the plain, strong default for a few hundred to a few million rows."""

from torch import nn


class MLP(nn.Module):
    def __init__(self, inputs, hidden_size, hidden_layers, outputs, dropout):
        super().__init__()
        layers = []
        width = inputs
        for _ in range(hidden_layers):
            layers += [nn.Linear(width, hidden_size), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden_size
        layers.append(nn.Linear(width, outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)
