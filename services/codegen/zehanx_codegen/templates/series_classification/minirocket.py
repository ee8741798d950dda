"""MiniRocket features and a ridge classifier in torch, shared by train.py and predict.py.

MiniRocket (Dempster, Schmidt and Webb, KDD 2021) turns a series into about 10,000 numbers without
learning any convolution: 84 fixed kernels of length 9 (weights -1, and +2 at three of the nine
places), each at several dilations (spacings, 1 up to the series length / 8), with biases taken from
quantiles of the kernels' own outputs on training series. Each feature is the share of positions
where a kernel's output exceeds one bias (PPV). A linear classifier over these features is strong on
small training sets, where a network trained from scratch would overfit.

Everything learnt (dilations, feature counts, biases, the classifier's weights) is stored as tensors.
"""

import itertools
import math

import torch

KERNEL_LENGTH = 9
#: The 84 kernels: every choice of 3 of the 9 positions gets weight 2, the others -1.
INDICES = list(itertools.combinations(range(KERNEL_LENGTH), 3))


def kernels():
    weights = -torch.ones(len(INDICES), 1, KERNEL_LENGTH, dtype=torch.float64)
    for k, places in enumerate(INDICES):
        weights[k, 0, list(places)] = 2.0
    return weights


def read_series(rows, series_columns, series_column):
    """Rows → float64 tensor (rows, length). A missing value takes its series' mean."""
    out = []
    for row in rows:
        values = row.get(series_column) if series_column else [row.get(c) for c in series_columns]
        if not isinstance(values, list):
            raise ValueError(f"column {series_column!r} must hold a list of numbers, got {type(values).__name__}")
        numbers = [float(v) if isinstance(v, int | float) and math.isfinite(v) else math.nan for v in values]
        out.append(numbers)
    lengths = {len(v) for v in out}
    if len(lengths) > 1:
        raise ValueError(f"series of different lengths {sorted(lengths)[:5]}: every row needs the same length")
    x = torch.tensor(out, dtype=torch.float64)
    missing = torch.isnan(x)
    if missing.any():
        means = torch.nan_to_num(x, nan=0.0).sum(1, keepdim=True) / (~missing).sum(1, keepdim=True).clamp(min=1)
        x = torch.where(missing, means.expand_as(x), x)
    return x


def fit_dilations(length, num_features, max_dilations=32):
    """Dilations spaced exponentially up to (length - 1) / 8, and how many features each gets."""
    per_kernel = max(1, num_features // len(INDICES))
    count = min(per_kernel, max_dilations)
    top = math.log2(max((length - 1) / (KERNEL_LENGTH - 1), 1.0))
    raw = [int(2 ** (top * i / max(count - 1, 1))) for i in range(count)]
    dilations = sorted(set(raw))
    features = [int(raw.count(d) * per_kernel / count) for d in dilations]
    i = 0
    while sum(features) < per_kernel:
        features[i % len(features)] += 1
        i += 1
    return dilations, features


def convolve(x, dilation):
    """All 84 kernels at one dilation, zero-padded to the input length: (rows, 84, length)."""
    padding = (KERNEL_LENGTH - 1) * dilation // 2
    return torch.nn.functional.conv1d(x.unsqueeze(1), kernels(), padding=padding, dilation=dilation)


def fit_biases(x, dilations, features, generator):
    """Per dilation, per kernel: biases at low-discrepancy quantiles of the output on one random series."""
    total = len(INDICES) * sum(features)
    golden = (math.sqrt(5) + 1) / 2
    quantiles = torch.tensor([(i * golden) % 1 for i in range(1, total + 1)], dtype=torch.float64)
    biases, start = [], 0
    for dilation, count in zip(dilations, features):
        picks = torch.randint(len(x), (len(INDICES),), generator=generator)
        outputs = convolve(x[picks], dilation)  # (84, 84, length): row k is series picks[k]
        for k in range(len(INDICES)):
            q = quantiles[start : start + count]
            biases.append(torch.quantile(outputs[k, k], q))
            start += count
    return torch.cat(biases)


def transform(x, dilations, features, biases, chunk=256):
    """PPV features (rows, 84 * sum(features)); padded and unpadded outputs alternate as in MiniRocket."""
    parts = []
    for begin in range(0, len(x), chunk):
        xs, row, start = x[begin : begin + chunk], [], 0
        for d_index, (dilation, count) in enumerate(zip(dilations, features)):
            output = convolve(xs, dilation)
            padding = (KERNEL_LENGTH - 1) * dilation // 2
            for k in range(len(INDICES)):
                c = output[:, k]
                if (d_index + k) % 2 == 1 and padding > 0 and c.shape[1] > 2 * padding:
                    c = c[:, padding:-padding]
                b = biases[start : start + count]
                row.append((c.unsqueeze(1) > b.view(1, -1, 1)).double().mean(2))
                start += count
        parts.append(torch.cat(row, 1))
    return torch.cat(parts)


def one_hot_signs(y, classes):
    out = -torch.ones(len(y), classes, dtype=torch.float64)
    out[torch.arange(len(y)), y] = 1.0
    return out


def ridge_loo(features, y, classes, alphas):
    """Leave-one-out squared error of ridge regression on ±1 class codes, per alpha (dual form)."""
    xc = features - features.mean(0)
    targets = one_hot_signs(y, classes)
    yc = targets - targets.mean(0)
    eigenvalues, q = torch.linalg.eigh(xc @ xc.T)
    eigenvalues = eigenvalues.clamp(min=0.0)
    qty = q.T @ yc
    errors = []
    for alpha in alphas:
        shrink = eigenvalues / (eigenvalues + alpha)
        fitted = q @ (shrink.unsqueeze(1) * qty)
        leverage = (q * q * shrink).sum(1) + 1.0 / len(y)  # + the intercept's share
        residual = (yc - fitted) / (1.0 - leverage).clamp(min=1e-12).unsqueeze(1)
        errors.append(float((residual**2).mean()))
    return errors


def ridge_fit(features, y, classes, alpha):
    """Weights and intercept of ridge regression on ±1 class codes (dual form: rows << features)."""
    mean = features.mean(0)
    xc = features - mean
    targets = one_hot_signs(y, classes)
    offset = targets.mean(0)
    gram = xc @ xc.T + alpha * torch.eye(len(y), dtype=torch.float64)
    weights = xc.T @ torch.linalg.solve(gram, targets - offset)
    return weights, offset - mean @ weights


def scores(features, weights, intercept):
    return features @ weights + intercept


def logistic_fit(f_train, y_train, f_val, y_val, classes, max_epochs, generator, batch_size=256, patience=10):
    """Softmax regression on standardised features, for many rows (the dual ridge grows with rows²):
    AdamW on mini-batches, the epoch with the lowest validation loss kept. Returns weights and an
    intercept on the raw features, like ridge_fit."""
    mean, spread = f_train.mean(0), f_train.std(0).clamp(min=1e-8)
    x_train, x_val = ((f_train - mean) / spread).float(), ((f_val - mean) / spread).float()
    linear = torch.nn.Linear(x_train.shape[1], classes)
    optimizer = torch.optim.AdamW(linear.parameters(), lr=1e-3, weight_decay=1e-4)
    best, waited = (math.inf, None), 0
    for _ in range(max_epochs):
        order = torch.randperm(len(y_train), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            loss = torch.nn.functional.cross_entropy(linear(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            val_loss = torch.nn.functional.cross_entropy(linear(x_val), y_val).item()
        if val_loss < best[0]:
            best, waited = (val_loss, (linear.weight.detach().clone(), linear.bias.detach().clone())), 0
        else:
            waited += 1
            if waited >= patience:
                break
    weight, bias = best[1]
    weights = (weight.double() / spread.unsqueeze(0)).T  # (features, classes) on the raw features
    return weights, bias.double() - mean @ weights
