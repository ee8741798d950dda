"""{{title}}

Written by Zehanx codegen (template text_classification). Reads train.jsonl and validation.jsonl
from $ZX_DATA, writes the model to $ZX_OUTPUT, reports through zxrt. ZX_SMOKE=1 runs a quick check.

Recipe: {{summary}}
"""

import json
import os
import time

import torch
import torch.nn.functional as F

import zxrt
from features import build_vocabulary, tfidf_bags
from model import TextClassifier

#% if use_encoder
from encoder import PACKAGE, SentenceEncoder, package_version
#% endif

# -----------------------------------------------------------------------------
# config: chosen by the planner from the data profile; edit and rerun
# {{config}}
# -----------------------------------------------------------------------------
#% if use_encoder
sentence_dim = 384  # width of the MiniLM sentence vector
encoder_package = PACKAGE  # where the encoder's weights come from (recorded with the model)
encoder_version = package_version()
#% else
sentence_dim = 0  # no sentence encoder: n-grams only
encoder_package = encoder_version = ""
#% endif
lbfgs_inner_steps = 20  # L-BFGS iterations per round; the loss is logged between rounds
converged_tolerance = 1e-5  # stop a fit when a round lowers the loss by less than this (relative)


def read_rows(data_dir, name):
    """One JSON object per line; rows missing the text or the label are skipped."""
    rows = []
    with open(os.path.join(data_dir, name), encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            if row.get(text_column) is None or row.get(target_column) is None:
                continue
            rows.append(row)
    return rows


def featurize(texts, vocabulary, idf, sentence_vectors):
    ids, weights, offsets = tfidf_bags(texts, vocabulary, idf, ngram_max)
    return {"ids": ids, "weights": weights, "offsets": offsets, "sentences": sentence_vectors}


def accuracy_and_loss(model, batch, labels):
    with torch.no_grad():
        logits = model(batch["ids"], batch["weights"], batch["offsets"], batch["sentences"])
        return (logits.argmax(1) == labels).float().mean().item(), F.cross_entropy(logits, labels).item()


def fit(batch, labels, num_classes, vocabulary_size, c, steps):
    """Minimise mean cross-entropy + |W|^2 / (2 C n) with L-BFGS on the whole training set at once.

    This is L2-regularised logistic regression, the objective scikit-learn's LogisticRegression(C=c)
    minimises; the data fit in memory, so full-batch L-BFGS converges in a few hundred steps.
    """
    model = TextClassifier(vocabulary_size, sentence_dim, num_classes)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=lbfgs_inner_steps,
                                  history_size=20, line_search_fn="strong_wolfe")
    penalty = 1.0 / (2.0 * c * len(labels))

    def closure():
        optimizer.zero_grad()
        logits = model(batch["ids"], batch["weights"], batch["offsets"], batch["sentences"])
        loss = F.cross_entropy(logits, labels) + penalty * model.weight_norm2()
        loss.backward()
        return loss

    started = time.time()
    previous = None
    for step in range(1, steps + 1):
        loss = optimizer.step(closure).item()
        zxrt.log_metrics(step=step, loss=loss, total_steps=steps,
                         samples_per_s=len(labels) * step * lbfgs_inner_steps / (time.time() - started))
        # The objective is convex: once a round no longer lowers it, more rounds only cost time.
        if previous is not None and previous - loss <= converged_tolerance * max(1.0, abs(loss)):
            break
        previous = loss
    return model


def main():
    cfg = zxrt.env()
    torch.manual_seed(cfg.seed)
    started = time.time()

    zxrt.phase("data_loading")
    train_rows = read_rows(cfg.data_dir, "train.jsonl")
    val_rows = read_rows(cfg.data_dir, "validation.jsonl")
    if cfg.smoke:  # a quick check that everything runs: a few rows, a few steps
        train_rows, val_rows = train_rows[:64], val_rows[:32]
    if not train_rows or not val_rows:
        raise SystemExit("train.jsonl and validation.jsonl need rows with both the text and the label")

    # Class labels keep their JSON type (0/1 stay numbers, "spam" stays a string).
    by_key = {}
    for row in train_rows + val_rows:
        by_key.setdefault(str(row[target_column]), row[target_column])
    keys = sorted(by_key)
    classes = [by_key[k] for k in keys]
    class_index = {k: i for i, k in enumerate(keys)}
    if len(classes) < 2:
        raise SystemExit(f"only one class in {target_column!r}: nothing to learn")

    train_texts = [str(r[text_column]) for r in train_rows]
    val_texts = [str(r[text_column]) for r in val_rows]
    train_y = torch.tensor([class_index[str(r[target_column])] for r in train_rows])
    val_y = torch.tensor([class_index[str(r[target_column])] for r in val_rows])

#% if use_encoder
    zxrt.phase("model_building")
    # The sentence encoder is frozen, so each text is embedded once and reused by every fit.
    sentence_encoder = SentenceEncoder(encoder_max_tokens, device=cfg.device)
    t0 = time.time()
    train_vectors = sentence_encoder.encode(train_texts)
    val_vectors = sentence_encoder.encode(val_texts)
    zxrt.log(f"embedded {len(train_texts) + len(val_texts)} texts in {time.time() - t0:.1f} s")
#% else
    train_vectors = val_vectors = None
#% endif

    # 1) choose the regularisation strength on the validation split
    zxrt.phase("training")
    vocabulary, idf = build_vocabulary(train_texts, ngram_max, min_df, max_features)
    train_batch = featurize(train_texts, vocabulary, idf, train_vectors)
    val_batch = featurize(val_texts, vocabulary, idf, val_vectors)
    steps = 2 if cfg.smoke else lbfgs_steps
    grid = c_grid[:1] if cfg.smoke else c_grid
    best = None
    for epoch, c in enumerate(grid, start=1):
        model = fit(train_batch, train_y, len(classes), len(vocabulary), c, steps)
        val_accuracy, val_loss = accuracy_and_loss(model, val_batch, val_y)
        zxrt.log_metrics(epoch=epoch, val={"accuracy": val_accuracy, "loss": val_loss, "c": c})
        if best is None or val_accuracy > best[1]:
            best = (c, val_accuracy, val_loss)
    c, val_accuracy, val_loss = best

    # 2) refit on train + validation with that strength: the validation rows are data too
    all_texts = train_texts + val_texts
    all_y = torch.cat([train_y, val_y])
    all_vectors = None if train_vectors is None else torch.cat([train_vectors, val_vectors])
    vocabulary, idf = build_vocabulary(all_texts, ngram_max, min_df, max_features)
    model = fit(featurize(all_texts, vocabulary, idf, all_vectors), all_y, len(classes), len(vocabulary), c, steps)

    tensors = {name: p.detach().contiguous() for name, p in model.state_dict().items()}
    tensors["idf"] = idf
    zxrt.save_model(tensors, {
        "family": "text_classification",
        "text_column": text_column,
        "target_column": target_column,
        "classes": classes,
        "ngram_max": ngram_max,
        "vocabulary": vocabulary,
        "sentence_dim": sentence_dim,
        "encoder": encoder,
        "encoder_package": encoder_package,
        "encoder_version": encoder_version,
        "encoder_max_tokens": encoder_max_tokens,
        "c": c,
    })
    zxrt.report_final({"val_accuracy": val_accuracy, "val_loss": val_loss, "c": c,
                       "train_rows": len(train_rows), "train_seconds": time.time() - started})


if __name__ == "__main__":
    main()
