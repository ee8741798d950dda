"""Quality benchmark of the offline generator (``make bench``): for each real dataset, plan and
generate a program, train it for real (full budget, 2 CPU threads), predict the held-out split, and
print the model's metric beside the best classical baseline fitted here on the same split.

    .venv/bin/python bench/bench_codegen.py [dataset ...] [--budget SECONDS]

Datasets: sentiment, mr, sms, penguins, mnist5k, airline, diamonds, arrowhead (default: all). Needs
../shared/data. Baselines (scikit-learn): text TF-IDF 1-2-grams + LogisticRegression(C=10) and binary
counts + MultinomialNB, the better one; penguins LogisticRegression on standardised + one-hot inputs;
MNIST SVC(rbf) on pixels/255; diamonds HistGradientBoostingRegressor with defaults on the training
split (categories as categorical features), the README's split; ArrowHead 1-NN Euclidean on the 36
official training series (MiniRocket + ridge, 0.887 in the README, needs sktime, not installed here);
airline Holt-Winters is quoted from ../shared/data/README.md (MAPE 0.051), since statsmodels is not
installed. Ratio > 1 means the generated model is better.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "codegen"))

import realdata  # noqa: E402
import running  # noqa: E402
from zehanx_codegen.app import build_codegen  # noqa: E402
from zehanx_codegen.settings import CodegenSettings  # noqa: E402

PROMPTS = {
    "sentiment": (realdata.sentiment, "create a sentiment analysis model for review sentences"),
    "mr": (realdata.movie_reviews, "classify the sentiment of movie reviews"),
    "sms": (realdata.sms_spam, "detect spam messages"),
    "penguins": (realdata.penguins, "predict the species of a penguin"),
    "mnist5k": (realdata.mnist5k, "classify handwritten digits"),
    "airline": (realdata.airline, "forecast monthly airline passengers"),
    "diamonds": (realdata.diamonds, "predict the price of a diamond"),
    "arrowhead": (realdata.arrowhead, "classify arrowhead outlines"),
}


def text_baseline(data: realdata.Prepared) -> float:
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import MultinomialNB

    column = next(c for c in data.fit_rows[0] if c != data.target)
    x_fit = [r[column] for r in data.fit_rows]
    y_fit = [str(r[data.target]) for r in data.fit_rows]
    x_test = [r[column] for r in data.test_rows]
    tfidf = TfidfVectorizer(ngram_range=(1, 2))
    lr = LogisticRegression(C=10, max_iter=1000).fit(tfidf.fit_transform(x_fit), y_fit)
    counts = CountVectorizer(ngram_range=(1, 2), binary=True)
    nb = MultinomialNB().fit(counts.fit_transform(x_fit), y_fit)
    scores = [
        realdata.accuracy(data.test_targets, lr.predict(tfidf.transform(x_test))),
        realdata.accuracy(data.test_targets, nb.predict(counts.transform(x_test))),
    ]
    return max(scores)


def penguins_baseline(data: realdata.Prepared) -> float:
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    numeric = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    means = {c: np.mean([r[c] for r in data.fit_rows if r[c] is not None]) for c in numeric}
    levels = {c: sorted({str(r[c]) for r in data.fit_rows}) for c in ("island", "sex")}

    def features(rows: list[dict]) -> np.ndarray:
        return np.array([[r[c] if r[c] is not None else means[c] for c in numeric]
                         + [float(str(r[c]) == v) for c in levels for v in levels[c]] for r in rows])  # fmt: skip

    scaler = StandardScaler().fit(features(data.fit_rows))
    model = LogisticRegression(max_iter=1000).fit(scaler.transform(features(data.fit_rows)),
                                                  [r["species"] for r in data.fit_rows])  # fmt: skip
    return realdata.accuracy(
        data.test_targets, list(model.predict(scaler.transform(features(data.test_rows))))
    )


def mnist_baseline(data: realdata.Prepared) -> float:
    import numpy as np
    from sklearn.svm import SVC

    x = np.array([r["image"] for r in data.fit_rows]) / 255.0
    y = [r["label"] for r in data.fit_rows]
    model = SVC(kernel="rbf").fit(x, y)
    return realdata.accuracy(
        data.test_targets, list(model.predict(np.array([r["image"] for r in data.test_rows]) / 255.0))
    )


def _train_rows(data: realdata.Prepared) -> list[dict]:
    import json

    return [json.loads(line) for line in (data.folder / "data" / "train.jsonl").read_text().splitlines()]


def diamonds_baseline(data: realdata.Prepared) -> float:
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingRegressor

    train = _train_rows(data)  # the README's baseline is fitted on the training split only
    columns = [c for c in train[0] if c != "price"]
    levels = {c: sorted({r[c] for r in train}) for c in ("cut", "color", "clarity")}

    def features(rows: list[dict]) -> np.ndarray:
        return np.array(
            [[levels[c].index(r[c]) if c in levels else r[c] for c in columns] for r in rows], dtype=float
        )

    model = HistGradientBoostingRegressor(
        random_state=42, categorical_features=[c in levels for c in columns]
    )
    model.fit(features(train), [r["price"] for r in train])
    return realdata.rmse(data.test_targets, list(model.predict(features(data.test_rows))))


def arrowhead_baseline(data: realdata.Prepared) -> float:
    import numpy as np

    def series(rows: list[dict]) -> np.ndarray:
        return np.array([[r[f"t{i}"] for i in range(251)] for r in rows])

    fit, test = series(data.fit_rows), series(data.test_rows)
    nearest = ((test[:, None, :] - fit[None, :, :]) ** 2).sum(2).argmin(1)
    return realdata.accuracy(data.test_targets, [data.fit_rows[i]["label"] for i in nearest])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", default=list(PROMPTS))
    parser.add_argument("--budget", type=float, default=180.0, help="training seconds per dataset")
    args = parser.parse_args()
    if not realdata.SHARED_DATA.exists():
        print(f"skipped: {realdata.SHARED_DATA} is absent")
        return
    codegen = build_codegen(CodegenSettings(time_budget_s=args.budget))
    out = Path(tempfile.mkdtemp(prefix="bench-codegen-"))
    rows = []
    for name in args.datasets:
        build, prompt = PROMPTS[name]
        data = build(out)
        plan = codegen.plan(prompt, data.profile)
        generated = codegen.generate(prompt, plan, data.profile)
        work = running.lay_out(generated.program, out / f"{name}-work", data.folder / "data")
        started = time.time()
        try:
            run = running.train(
                work, smoke=False, budget_s=args.budget, timeout=args.budget * 1.5 + 120, threads=2
            )
        except subprocess.TimeoutExpired:
            print(f"{name}: training did not finish in {args.budget * 1.5 + 120:.0f} s", flush=True)
            continue
        seconds = time.time() - started
        if run.returncode != 0:
            print(f"{name}: training failed\n{run.stderr[-2000:]}")
            continue
        predicted = [p["prediction"] for p in running.predict(work, data.test_inputs)]
        if name == "airline":
            ours, base, metric = realdata.mape(data.test_targets, predicted), 0.051, "MAPE"
            ratio = base / ours
        elif name == "diamonds":
            ours, base, metric = realdata.rmse(data.test_targets, predicted), diamonds_baseline(data), "RMSE"
            ratio = base / ours
        else:
            baselines = {
                "penguins": penguins_baseline,
                "mnist5k": mnist_baseline,
                "arrowhead": arrowhead_baseline,
            }
            base = baselines.get(name, text_baseline)(data)
            ours, metric = realdata.accuracy(data.test_targets, predicted), "accuracy"
            ratio = ours / base
        extra = f"  MCC {realdata.mcc(data.test_targets, predicted):.4f}" if name == "sms" else ""
        if name == "diamonds":
            extra = f"  MAPE {realdata.mape(data.test_targets, predicted):.4f}"
        rows.append((name, plan.model_family, metric, ours, base, ratio, seconds, extra))
        print(f"{name:10s} {plan.model_family:26s} {metric:8s} ours {ours:.4f}  baseline {base:.4f}  "
              f"ratio {ratio:.3f}  train {seconds:6.1f} s{extra}", flush=True)  # fmt: skip
    print("\n| dataset | model | metric | generated | baseline (same split) | ratio | training s |")
    print("|---|---|---|---|---|---|---|")
    for name, family, metric, ours, base, ratio, seconds, extra in rows:
        print(
            f"| {name} | {family} | {metric} | {ours:.4f}{extra} | {base:.4f} | {ratio:.3f} | {seconds:.1f} |"
        )


if __name__ == "__main__":
    main()
