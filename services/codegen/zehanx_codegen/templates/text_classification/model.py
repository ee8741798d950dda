"""The classifier: one linear layer over TF-IDF n-grams (and sentence vectors, when used)."""

import torch
from torch import nn


class TextClassifier(nn.Module):
    def __init__(self, vocabulary_size, sentence_dim, num_classes):
        super().__init__()
        # An EmbeddingBag in "sum" mode with per-sample weights is a linear layer over a sparse
        # TF-IDF vector: it touches only the n-grams a text contains.
        self.ngrams = nn.EmbeddingBag(vocabulary_size, num_classes, mode="sum")
        nn.init.zeros_(self.ngrams.weight)
        self.sentence = nn.Linear(sentence_dim, num_classes, bias=False) if sentence_dim else None
        if self.sentence is not None:
            nn.init.zeros_(self.sentence.weight)
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, ids, weights, offsets, sentences=None):
        logits = self.ngrams(ids, offsets, per_sample_weights=weights) + self.bias
        if self.sentence is not None:
            logits = logits + self.sentence(sentences)
        return logits

    def weight_norm2(self):
        """Squared L2 norm of the weights (not the bias): what the regulariser penalises."""
        total = self.ngrams.weight.pow(2).sum()
        if self.sentence is not None:
            total = total + self.sentence.weight.pow(2).sum()
        return total
