"""Predict with the trained text classifier: python predict.py INPUT.jsonl OUTPUT.jsonl

Loads the model from $ZX_OUTPUT (safetensors and JSON only) and writes one JSON object per input
row: {"prediction": label, "probabilities": {label: p}}.

The platform's resident predictor imports this file, calls load(model_dir) once and then
predict(state, rows) for each batch of rows; main() is the same for one file of rows.
"""

import json
import os
import sys

import torch
from safetensors.torch import load_file

from features import tfidf_bags
from model import TextClassifier

#% if use_encoder
from encoder import PACKAGE, SentenceEncoder, package_version
#% endif


def load(output_dir):
    with open(os.path.join(output_dir, "model_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    tensors = load_file(os.path.join(output_dir, "model.safetensors"))
    idf = tensors.pop("idf")
    model = TextClassifier(len(config["vocabulary"]), config["sentence_dim"], len(config["classes"]))
    model.load_state_dict(tensors)
#% if use_encoder
    # The linear layer was fitted on this encoder's vectors: another version's would not fit it.
    trained_with = (config["encoder_package"], config["encoder_version"])
    if trained_with != (PACKAGE, package_version()):
        raise SystemExit(f"the model was trained with the sentence encoder {trained_with[0]}=={trained_with[1]}, "
                         f"but {PACKAGE}=={package_version()} is installed: install the one it was trained with")
    # Built once here: a resident predictor then encodes every batch without reloading the encoder.
    encoder = SentenceEncoder(config["encoder_max_tokens"])
#% else
    encoder = None
#% endif
    return model.eval(), idf, config, encoder


def predict(state, rows):
    model, idf, config, encoder = state
    texts = ["" if r.get(config["text_column"]) is None else str(r[config["text_column"]]) for r in rows]
    ids, weights, offsets = tfidf_bags(texts, config["vocabulary"], idf, config["ngram_max"])
    sentences = None if encoder is None else encoder.encode(texts)
    with torch.no_grad():
        probabilities = model(ids, weights, offsets, sentences).softmax(1)
    classes = config["classes"]
    out = []
    for p in probabilities.tolist():
        best = max(range(len(classes)), key=lambda i: p[i])
        out.append({"prediction": classes[best], "probabilities": {str(c): q for c, q in zip(classes, p)}})
    return out


#% include predict_main
