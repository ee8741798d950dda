"""Text → features, shared by train.py and predict.py so both see a text the same way.

Word n-grams weighted by TF-IDF, computed the way scikit-learn's TfidfVectorizer does by default
(lower case, words of two or more letters, smooth idf, each text L2-normalised), so the result
can be checked against that well-known baseline.
"""

import math
import re
from collections import Counter

import torch

WORD = re.compile(r"(?u)\b\w\w+\b")


def ngrams(text, n_max):
    """Words, then runs of 2..n_max words: "not good" carries what "good" alone does not."""
    words = WORD.findall(text.lower())
    grams = list(words)
    for n in range(2, n_max + 1):
        grams += [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
    return grams


def build_vocabulary(texts, n_max, min_df, max_features):
    """The n-grams seen in at least `min_df` texts (the `max_features` most common), and their idf."""
    df = Counter()
    for text in texts:
        df.update(set(ngrams(text, n_max)))
    kept = sorted((g for g, c in df.items() if c >= min_df), key=lambda g: (-df[g], g))[:max_features]
    kept.sort()
    n = len(texts)
    idf = [math.log((1 + n) / (1 + df[g])) + 1.0 for g in kept]  # rare n-grams weigh more
    return kept, torch.tensor(idf)


def tfidf_bags(texts, vocabulary, idf, n_max):
    """Each text as a bag: (n-gram ids, weights, offsets), the input of nn.EmbeddingBag."""
    index = {g: i for i, g in enumerate(vocabulary)}
    ids, weights, offsets = [], [], []
    for text in texts:
        counts = Counter(index[g] for g in ngrams(text, n_max) if g in index)
        values = {i: c * float(idf[i]) for i, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in values.values())) or 1.0
        offsets.append(len(ids))
        for i, v in values.items():
            ids.append(i)
            weights.append(v / norm)
    return (
        torch.tensor(ids, dtype=torch.long),
        torch.tensor(weights, dtype=torch.float32),
        torch.tensor(offsets, dtype=torch.long),
    )
