"""Matching prompts against descriptions and column names: tokens, a light stemmer, weighted overlap.

Deliberately simple and explainable: every score names the words that produced it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_TOKEN = re.compile(r"[a-z0-9]+")

#: Words that say what to do, not what about; they never make a dataset match.
GENERIC = frozenset(
    """
    a an the and or of for to in on with by from into using use based about this that these those it its
    is are be can should will would please i we you me my our want need some any all each per as at
    create build train make made get give write develop design model models classifier classifiers
    classify classification classifying class predict prediction predicting predictor regression regress
    regressor estimate estimation detect detection detector recognize recognise recognition recognizer
    forecast forecasting analysis analyze analyse analyzer learn learning machine deep neural network
    networks ml ai simple small good best accurate high quality task tasks dataset datasets data set
    type types kind kinds new based system tool program pytorch torch sklearn scikit model's which what
    whether how much many
    """.split()
)


def stem(word: str) -> str:
    """A deliberately light stemmer: plurals and a few verb endings."""
    if len(word) <= 3:
        return word
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("xes", "x"), ("ches", "ch"), ("shes", "sh")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 2:
            return word[: -len(suffix)] + repl
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    if word.endswith("ing") and len(word) > 5:
        return word[:-3]
    if word.endswith("ed") and len(word) > 4:
        return word[:-2]
    return word


def tokens(text: str) -> list[str]:
    """Lower-case word stems, in order."""
    return [stem(t) for t in _TOKEN.findall(text.lower())]


def content_tokens(text: str) -> set[str]:
    """Stems that carry meaning (generic task words removed)."""
    generic = {stem(g) for g in GENERIC} | GENERIC
    return {t for t in tokens(text) if t not in generic and not t.isdigit()}


@dataclass(frozen=True)
class Match:
    score: float
    words: tuple[str, ...]


def match(
    prompt_terms: set[str], document: str | Iterable[str], *, weights: dict[str, float] | None = None
) -> Match:
    """Weighted overlap of ``prompt_terms`` with ``document``'s content tokens."""
    doc_terms = content_tokens(document if isinstance(document, str) else " ".join(document))
    hits = sorted(prompt_terms & doc_terms)
    weights = weights or {}
    return Match(sum(weights.get(h, 1.0) for h in hits), tuple(hits))
