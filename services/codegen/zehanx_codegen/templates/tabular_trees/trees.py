"""Gradient-boosted decision trees in numpy, shared by train.py and predict.py.

Rows become small integers first ("bins"): each number falls into one of up to 255 intervals cut at
quantiles of the training values, each category gets its own bin, and a missing value has bin 255.
A tree asks one question per node, "is this column's bin in this set?", so numeric thresholds,
category groups and where missing values go are all the same kind of split. The whole forest is a
handful of arrays (node features, child indices, leaf values, the bin sets packed as bits) that
zxrt saves as safetensors; predict.py walks them with numpy, no pickle anywhere.

The tree growing follows the usual histogram recipe (LightGBM, scikit-learn's
HistGradientBoosting): per node, sum the gradients and hessians of its rows per bin, scan the bins
in order (numbers) or sorted by their mean gradient (categories), split the leaf whose best split
gains the most, until a tree has `max_leaves` leaves.
"""

import heapq
import math

import numpy as np

BINS = 256
MISSING = 255  # the bin of a missing value


def is_missing(value):
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def as_number(value):
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan  # unparseable counts as missing
    return number if math.isfinite(number) else math.nan


def numbers(rows, column):
    return np.array([math.nan if is_missing(r.get(column)) else as_number(r.get(column)) for r in rows])


def fit_binning(rows, numeric_columns, categorical_columns, max_categories):
    """Bin edges per numeric column and the category list per categorical column, as plain JSON."""
    numeric = []
    for column in numeric_columns:
        values = numbers(rows, column)
        values = values[~np.isnan(values)]
        distinct = np.unique(values)
        if len(distinct) <= MISSING:  # few values: one bin each, cut half-way between them
            edges = (distinct[:-1] + distinct[1:]) / 2
        else:  # many values: 255 bins holding about as many training rows each
            edges = np.unique(np.percentile(values, np.linspace(0, 100, MISSING + 1)[1:-1], method="midpoint"))
        numeric.append([column, [float(e) for e in edges]])
    categories = []
    for column in categorical_columns:
        counts = {}
        for r in rows:
            if not is_missing(r.get(column)):
                counts[str(r[column])] = counts.get(str(r[column]), 0) + 1
        ranked = sorted(counts, key=lambda k: (-counts[k], k))
        categories.append([column, ranked[: min(max_categories, MISSING - 1)]])
    return {"numeric": numeric, "categories": categories}


def bin_rows(rows, binning):
    """Rows → uint8 matrix, one column per input column (numeric ones first)."""
    out = np.empty((len(rows), len(binning["numeric"]) + len(binning["categories"])), dtype=np.uint8)
    j = 0
    for column, edges in binning["numeric"]:
        values = numbers(rows, column)
        codes = np.searchsorted(np.array(edges, dtype=np.float64), values, side="left")
        codes[np.isnan(values)] = MISSING
        out[:, j] = codes
        j += 1
    for column, values in binning["categories"]:
        index = {v: i for i, v in enumerate(values)}
        other = len(values)  # a category not seen (often enough) in training
        out[:, j] = [MISSING if is_missing(r.get(column)) else index.get(str(r[column]), other) for r in rows]
        j += 1
    return out


class TreeBuilder:
    """Grows one tree at a time on fixed binned inputs."""

    def __init__(self, x, categorical, max_leaves, min_leaf_rows, l2, min_hessian=1e-3):
        self.x = x
        self.features = x.shape[1]
        # flat codes feature * 256 + bin, so one bincount makes the histograms of all features
        self.codes = x.astype(np.int32) + (np.arange(self.features, dtype=np.int32) * BINS)[None, :]
        self.categorical = categorical  # bool per feature
        self.max_leaves = max_leaves
        self.min_leaf_rows = min_leaf_rows
        self.l2 = l2
        self.min_hessian = min_hessian

    def _histograms(self, idx, g, h):
        codes = self.codes[idx].ravel()
        size = self.features * BINS
        hg = np.bincount(codes, weights=np.repeat(g[idx], self.features), minlength=size)
        hh = np.bincount(codes, weights=np.repeat(h[idx], self.features), minlength=size)
        hc = np.bincount(codes, minlength=size).astype(np.float64)
        return np.stack([hg, hh, hc]).reshape(3, self.features, BINS)

    def _best_split(self, hist):
        """(gain, feature, left-bin mask) of the best split of a node, or None."""
        sg, sh, sc = hist[0, 0].sum(), hist[1, 0].sum(), hist[2, 0].sum()
        parent = sg * sg / (sh + self.l2)
        best = None
        for f in range(self.features):
            g, h, c = hist[0, f], hist[1, f], hist[2, f]
            if self.categorical[f]:
                present = np.flatnonzero(c > 0)
                ratio = g[present] / (h[present] + self.l2)
                orders = [present[np.argsort(ratio, kind="stable")]]
            else:  # numbers in order; the missing bin tried on either side
                values = np.arange(MISSING)
                orders = [values, np.concatenate([[MISSING], values])] if c[MISSING] > 0 else [values]
            for order in orders:
                gl, hl, cl = np.cumsum(g[order]), np.cumsum(h[order]), np.cumsum(c[order])
                gr, hr, cr = sg - gl, sh - hl, sc - cl
                ok = (
                    (cl >= self.min_leaf_rows) & (cr >= self.min_leaf_rows)
                    & (hl >= self.min_hessian) & (hr >= self.min_hessian)
                )  # fmt: skip
                if not ok.any():
                    continue
                with np.errstate(divide="ignore", invalid="ignore"):  # empty sides are masked out by `ok`
                    gain = gl * gl / (hl + self.l2) + gr * gr / (hr + self.l2) - parent
                gain = np.where(ok, gain, -np.inf)
                k = int(np.argmax(gain))
                if gain[k] > 1e-12 and (best is None or gain[k] > best[0]):
                    mask = np.zeros(BINS, dtype=bool)
                    mask[order[: k + 1]] = True
                    best = (float(gain[k]), f, mask)
        return best

    def grow(self, idx, g, h, learning_rate):
        """One tree on the rows `idx`: node arrays plus each leaf's rows (to update the scores)."""
        feature, left, right, value, masks = [0], [0], [0], [0.0], [np.zeros(BINS, dtype=bool)]
        leaf_rows = {}
        heap = []  # (-gain, node, split, rows, histograms)

        def leaf_value(rows):
            return -learning_rate * g[rows].sum() / (h[rows].sum() + self.l2)

        def consider(node, rows, hist):
            split = self._best_split(hist) if len(rows) >= 2 * self.min_leaf_rows else None
            value[node] = leaf_value(rows)
            if split is None:
                leaf_rows[node] = rows
            else:
                heapq.heappush(heap, (-split[0], node, split, rows, hist))

        consider(0, idx, self._histograms(idx, g, h))
        leaves = 1
        while heap:
            _, node, (_, f, mask), rows, hist = heapq.heappop(heap)
            if leaves >= self.max_leaves:
                leaf_rows[node] = rows
                continue
            goes_left = mask[self.x[rows, f]]
            children = (rows[goes_left], rows[~goes_left])
            small = 0 if len(children[0]) <= len(children[1]) else 1
            small_hist = self._histograms(children[small], g, h)
            hists = [None, None]
            hists[small], hists[1 - small] = small_hist, hist - small_hist  # the subtraction trick
            ids = []
            for _ in range(2):
                ids.append(len(feature))
                feature.append(0)
                left.append(len(left))
                right.append(len(right))
                value.append(0.0)
                masks.append(np.zeros(BINS, dtype=bool))
            feature[node], left[node], right[node], masks[node] = f, ids[0], ids[1], mask
            leaves += 1
            for child, child_rows, child_hist in zip(ids, children, hists):
                consider(child, child_rows, child_hist)
        tree = {
            "feature": np.array(feature, dtype=np.int64),
            "left": np.array(left, dtype=np.int64),
            "right": np.array(right, dtype=np.int64),
            "value": np.array(value, dtype=np.float64),
            "mask": np.array(masks, dtype=bool),
        }
        return tree, leaf_rows


def tree_depth(tree):
    depth = np.zeros(len(tree["feature"]), dtype=np.int64)
    for node in range(len(depth)):  # children always come after their parent
        if tree["left"][node] != node:
            depth[tree["left"][node]] = depth[tree["right"][node]] = depth[node] + 1
    return int(depth.max())


def predict_tree(tree, x):
    """The value of one tree for each row of the binned matrix `x`."""
    node = np.zeros(len(x), dtype=np.int64)
    rows = np.arange(len(x))
    for _ in range(tree_depth(tree)):
        go_left = tree["mask"][node, x[rows, tree["feature"][node]]]
        node = np.where(go_left, tree["left"][node], tree["right"][node])
    return tree["value"][node]


def pack_forest(trees):
    """A list of trees → flat arrays (node ids offset per tree) for safetensors."""
    offsets = np.cumsum([0] + [len(t["feature"]) for t in trees])
    return {
        "roots": offsets[:-1].astype(np.int64),
        "feature": np.concatenate([t["feature"] for t in trees]),
        "left": np.concatenate([t["left"] + o for t, o in zip(trees, offsets)]),
        "right": np.concatenate([t["right"] + o for t, o in zip(trees, offsets)]),
        "value": np.concatenate([t["value"] for t in trees]),
        "mask_bits": np.packbits(np.concatenate([t["mask"] for t in trees]), axis=1),
        "depth": np.array([tree_depth(t) for t in trees], dtype=np.int64),
    }


def forest_scores(forest, x, outputs, base_score, chunk=2048):
    """Sum of the trees per output for each row: tree t adds to output t % outputs."""
    mask = np.unpackbits(forest["mask_bits"], axis=1)[:, :BINS].astype(bool)
    roots, depth = forest["roots"], int(forest["depth"].max(initial=0))
    scores = np.tile(np.asarray(base_score, dtype=np.float64), (len(x), 1))
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk]
        rows = np.arange(len(part))[:, None]
        node = np.broadcast_to(roots, (len(part), len(roots))).copy()
        for _ in range(depth):
            go_left = mask[node, part[rows, forest["feature"][node]]]
            node = np.where(go_left, forest["left"][node], forest["right"][node])
        values = forest["value"][node]  # (rows, trees)
        for k in range(outputs):
            # trees added one at a time in training: sum them in the same order for the same floats
            for t in range(k, len(roots), outputs):
                scores[start : start + chunk, k] += values[:, t]
    return scores


def softmax(scores):
    z = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
