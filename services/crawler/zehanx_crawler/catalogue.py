"""Datasets that ship inside installed packages (no network), with descriptions to rank against a prompt.

Today: scikit-learn's bundled sets. Its ``fetch_*`` loaders download and are deliberately not listed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from zehanx_runtime.errors import NotFound

from zehanx_crawler.domain import RawTable, Resource, TaskFamily
from zehanx_crawler.ranking import Match, content_tokens, match


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    title: str
    description: str
    keywords: tuple[str, ...]
    task: TaskFamily
    rows: int
    features: int
    target: str
    licence: str
    package: str
    loader: str
    files: tuple[str, ...]
    classes: int = 0

    @property
    def document(self) -> str:
        return " ".join(
            [self.name.replace(".", " ").replace("_", " "), self.title, self.description, *self.keywords]
        )


_UCI = "CC BY 4.0 (UCI Machine Learning Repository); copy shipped with scikit-learn (BSD-3-Clause)"

ENTRIES: tuple[CatalogueEntry, ...] = (
    CatalogueEntry(
        name="sklearn.iris",
        title="Iris flowers (Fisher 1936)",
        description="Measurements of sepals and petals of 150 iris flowers from three species.",
        keywords=(
            "iris",
            "flower",
            "species",
            "setosa",
            "versicolor",
            "virginica",
            "sepal",
            "petal",
            "botany",
        ),
        task=TaskFamily.TABULAR_CLASSIFICATION,
        rows=150,
        features=4,
        target="species",
        licence=_UCI,
        package="scikit-learn",
        loader="load_iris",
        files=("iris.csv",),
        classes=3,
    ),
    CatalogueEntry(
        name="sklearn.wine",
        title="Wine recognition (UCI)",
        description="Chemical analysis of 178 Italian wines from three grape cultivars grown in one region.",
        keywords=(
            "wine",
            "wines",
            "cultivar",
            "grape",
            "vineyard",
            "alcohol",
            "chemical",
            "italian",
            "vintner",
        ),
        task=TaskFamily.TABULAR_CLASSIFICATION,
        rows=178,
        features=13,
        target="cultivar",
        licence=_UCI,
        package="scikit-learn",
        loader="load_wine",
        files=("wine_data.csv",),
        classes=3,
    ),
    CatalogueEntry(
        name="sklearn.breast_cancer",
        title="Breast cancer Wisconsin (diagnostic)",
        description="Features of cell nuclei from 569 breast mass biopsies, labelled malignant or benign.",
        keywords=(
            "breast",
            "cancer",
            "tumor",
            "tumour",
            "malignant",
            "benign",
            "diagnosis",
            "biopsy",
            "medical",
            "oncology",
            "wisconsin",
        ),
        task=TaskFamily.TABULAR_CLASSIFICATION,
        rows=569,
        features=30,
        target="diagnosis",
        licence=_UCI,
        package="scikit-learn",
        loader="load_breast_cancer",
        files=("breast_cancer.csv",),
        classes=2,
    ),
    CatalogueEntry(
        name="sklearn.digits",
        title="Optical recognition of handwritten digits (8x8)",
        description="1797 handwritten digits 0-9 as 8x8 grey-level images.",
        keywords=(
            "digit",
            "digits",
            "handwritten",
            "handwriting",
            "number",
            "numeral",
            "image",
            "images",
            "ocr",
            "pixel",
            "mnist",
            "writing",
        ),
        task=TaskFamily.IMAGE_CLASSIFICATION,
        rows=1797,
        features=64,
        target="digit",
        licence=_UCI,
        package="scikit-learn",
        loader="load_digits",
        files=("digits.csv.gz",),
        classes=10,
    ),
    CatalogueEntry(
        name="sklearn.diabetes",
        title="Diabetes disease progression (Efron et al. 2004)",
        description="Age, sex, BMI, blood pressure and six blood serum measurements of 442 diabetes patients, "
        "with a measure of disease progression one year later.",
        keywords=(
            "diabetes",
            "diabetic",
            "disease",
            "progression",
            "patient",
            "blood",
            "serum",
            "bmi",
            "medical",
            "glucose",
            "health",
        ),
        task=TaskFamily.TABULAR_REGRESSION,
        rows=442,
        features=10,
        target="disease_progression",
        licence="as distributed with scikit-learn (BSD-3-Clause); data from Efron, Hastie, Johnstone and "
        "Tibshirani (2004), Least Angle Regression",
        package="scikit-learn",
        loader="load_diabetes",
        files=("diabetes_data_raw.csv.gz", "diabetes_target.csv.gz"),
    ),
)

#: A match needs at least this weight of shared content words.
MIN_SCORE = 1.0


@dataclass(frozen=True)
class Ranked:
    entry: CatalogueEntry
    match: Match


class Catalogue:
    """The built-in catalogue: list, rank against a prompt, load."""

    def __init__(self, entries: tuple[CatalogueEntry, ...] = ENTRIES) -> None:
        self.entries = entries

    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def get(self, name: str) -> CatalogueEntry:
        wanted = name.strip().lower()
        for entry in self.entries:
            short = entry.name.split(".", 1)[1]
            if wanted in (entry.name, short, entry.loader, f"sklearn/{short}", f"sklearn:{short}"):
                return entry
        raise NotFound(
            f"no catalogue dataset named {name!r}; the catalogue holds: {', '.join(self.names())}",
            reason="CATALOGUE_ENTRY_NOT_FOUND",
            metadata={"name": name},
        )

    def rank(self, prompt: str) -> list[Ranked]:
        """Entries sharing content words with the prompt, best first."""
        terms = content_tokens(prompt)
        ranked = [Ranked(e, match(terms, e.document)) for e in self.entries]
        ranked = [r for r in ranked if r.match.score >= MIN_SCORE]
        return sorted(ranked, key=lambda r: (-r.match.score, r.entry.name))

    def load(self, entry: CatalogueEntry) -> RawTable:
        """The entry as a table (values already numbers), with the package's data files as provenance."""
        from sklearn import datasets

        loader = getattr(datasets, entry.loader)
        kwargs: dict[str, Any] = {"scaled": False} if entry.loader == "load_diabetes" else {}
        bunch = loader(**kwargs)
        data = bunch.data
        target = bunch.target
        if entry.loader == "load_digits":
            side = math.isqrt(data.shape[1])
            names = [f"pixel_{i // side}_{i % side}" for i in range(data.shape[1])]
        else:
            names = [str(n) for n in bunch.feature_names]
        target_names = getattr(bunch, "target_names", None)
        rows: list[list[Any]] = []
        for x, y in zip(data.tolist(), target.tolist(), strict=True):
            values: list[Any] = [
                int(v) if float(v).is_integer() and entry.loader == "load_digits" else v for v in x
            ]
            if entry.task.is_classification:
                label: Any = (
                    str(target_names[int(y)])
                    if target_names is not None and entry.loader != "load_digits"
                    else int(y)
                )
            else:
                label = float(y)
            rows.append([*values, label])
        files = [Path(datasets.__file__).parent / "data" / f for f in entry.files]
        raw = b"".join(f.read_bytes() for f in files)
        version = importlib.metadata.version(entry.package)
        resource = Resource(
            uri=files[0].as_uri(),
            name=entry.name,
            data=raw,
            content_type="text/csv",
            fetched_at=datetime.now(UTC),
            sha256=hashlib.sha256(raw).hexdigest(),
            licence=entry.licence,
        )
        return RawTable(
            columns=[*names, entry.target],
            rows=rows,
            origin=f"catalogue:{entry.name} ({entry.package} {version}, {entry.loader})",
            format="catalogue",
            notes=[],
            context=entry.document,
            title=entry.title,
            resource=resource,
        )
