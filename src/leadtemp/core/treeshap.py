"""Exact path-dependent TreeSHAP for a LightGBM booster, with the per-leaf work done once per model.

Path-dependent TreeSHAP (what LightGBM's ``pred_contrib`` and ``shap.TreeExplainer`` compute) sums,
over the leaves of every tree, a Shapley value of a small game: the players are the distinct
features on the leaf's path, and a lead enters only through which of them it *satisfies* (goes
towards the leaf at every split of that feature on the path). With ``m`` players there are only
``2**m`` possible satisfaction masks, so each leaf's contributions for every mask are computed once
when the model is loaded (the "Fast TreeSHAP v2" idea of Yang, 2021). Scoring a lead then costs a
table lookup per leaf instead of LightGBM's O(leaves x depth^2) recursion per tree.

For one leaf with value ``v``, player cover fractions ``z`` (product of child/parent data counts
along the path, as LightGBM uses) and satisfaction ``o`` (0/1)::

    phi_u = v * (o_u - z_u) * prod_{w in B} z_w * sum_k k!(m-1-k)!/m! * e_{|A|-k}(z_A)

where, among the players other than ``u``, ``A`` are the satisfied ones, ``B`` the others and
``e_j`` is the elementary symmetric polynomial. This is the same quantity LightGBM computes, in a
different order of floating-point additions: results agree to ~1e-15 (the tests check 1e-9 and
identical top-3 reasons). Split decisions mirror LightGBM's ``Tree::NumericalDecision`` and
``CategoricalDecision``. As a guard, every lead's contributions must add up to LightGBM's own raw
prediction (SHAP's local accuracy): a lead sent to another leaf than LightGBM's misses by that
leaf's difference in value. If any lead misses by more than ``GUARD_TOLERANCE``, the whole batch is
computed by ``pred_contrib`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

MISSING = {"None": 0, "Zero": 1, "NaN": 2}
MAX_PLAYERS = 16  # 2**16 masks per leaf; deeper paths fall back to LightGBM's own pred_contrib
MAX_SPLITS = 62   # split directions of one tree are packed into an int64 (num_leaves <= 63)
GUARD_TOLERANCE = 1e-9  # |sum of contributions - raw prediction| above this sends the batch to pred_contrib


@dataclass(frozen=True)
class Compiled:
    """Every tree of a booster as flat arrays for the numba kernels (padded to the widest tree)."""

    # split nodes, (T, M)
    feature: np.ndarray
    threshold: np.ndarray
    categorical: np.ndarray
    default_left: np.ndarray
    missing: np.ndarray
    cat_start: np.ndarray
    cat_len: np.ndarray
    cat_words: np.ndarray       # (W,) uint32 bitsets of the categories that go left
    n_nodes: np.ndarray         # (T,)
    # leaves, flattened over trees: leaf i of tree t is leaf_start[t] + i
    leaf_start: np.ndarray      # (T + 1,)
    leaf_left: np.ndarray       # (L,) bit j set: the path to the leaf goes left at split j
    player_start: np.ndarray    # (L + 1,) into player_feature / player_nodes
    player_feature: np.ndarray
    player_nodes: np.ndarray    # bit j set: split j is on the leaf's path and splits on this player's feature
    player_local: np.ndarray    # the player's feature as an index into its tree's used features
    used_start: np.ndarray      # (T + 1,) into used_feature
    used_feature: np.ndarray    # per tree, the feature columns its splits use
    table_start: np.ndarray     # (L,) into table: 2**m rows of m contributions
    table: np.ndarray
    bias: np.ndarray            # (T,) expected value of each tree
    fallback: bool              # a path too deep for tables: use pred_contrib


@numba.njit(cache=True)
def _leaf_table(z: np.ndarray, value: float) -> np.ndarray:
    m = z.shape[0]
    weight = np.empty(max(m, 1))
    for k in range(m):  # k!(m-1-k)!/m!, by recurrence to stay exact-ish for larger m
        w = 1.0 / m
        for i in range(1, k + 1):
            w *= i / (m - i)
        weight[k] = w
    table = np.zeros((1 << m, m))
    e = np.zeros(m + 1)
    for mask in range(1 << m):
        for u in range(m):
            e[:] = 0.0
            e[0] = 1.0
            n_a = 0
            prod_b = 1.0
            for w in range(m):
                if w == u:
                    continue
                if (mask >> w) & 1:
                    for j in range(n_a + 1, 0, -1):
                        e[j] += z[w] * e[j - 1]
                    n_a += 1
                else:
                    prod_b *= z[w]
            total = 0.0
            for k in range(n_a + 1):
                total += weight[k] * e[n_a - k]
            table[mask, u] = value * (((mask >> u) & 1) - z[u]) * prod_b * total
    return table


def compile_booster(booster) -> Compiled:
    trees = booster.dump_model()["tree_info"]
    width = max(1, max(t["num_leaves"] - 1 for t in trees))
    shape = (len(trees), width)
    feature = np.full(shape, -1, dtype=np.int32)
    threshold = np.zeros(shape)
    categorical = np.zeros(shape, dtype=np.bool_)
    default_left = np.zeros(shape, dtype=np.bool_)
    missing = np.zeros(shape, dtype=np.int8)
    cat_start = np.zeros(shape, dtype=np.int32)
    cat_len = np.zeros(shape, dtype=np.int32)
    words: list[int] = []
    leaf_start, player_start, table_start = [0], [0], []
    leaf_left, player_nodes, player_feature, tables, bias = [], [], [], [], []
    player_local, used_start, used_feature = [], [0], []
    table_size, fallback = 0, False
    for t, tree in enumerate(trees):
        root = tree["tree_structure"]
        leaves = {}
        stack = [(root, [])]
        while stack:
            node, path = stack.pop()
            if "leaf_index" in node:
                leaves[node["leaf_index"]] = (node, path)
                continue
            i = node["split_index"]
            feature[t, i] = node["split_feature"]
            default_left[t, i] = node["default_left"]
            missing[t, i] = MISSING[node["missing_type"]]
            if node["decision_type"] == "==":
                cats = [int(c) for c in str(node["threshold"]).split("||")]
                bits = np.zeros(max(cats) // 32 + 1, dtype=np.uint32)
                for c in cats:
                    bits[c // 32] |= np.uint32(1 << (c % 32))
                categorical[t, i] = True
                cat_start[t, i], cat_len[t, i] = len(words), len(bits)
                words.extend(int(w) for w in bits)
            else:
                threshold[t, i] = float(node["threshold"])
            count = node["internal_count"]
            for side, goes_left in (("left_child", True), ("right_child", False)):
                child = node[side]
                child_count = child["internal_count"] if "split_index" in child else child["leaf_count"]
                stack.append((child, path + [(i, goes_left, node["split_feature"], child_count / count)]))
        used = sorted({p[2] for _, path in leaves.values() for p in path})
        used_feature.extend(used)
        used_start.append(len(used_feature))
        expected = 0.0
        for index in range(len(leaves)):
            leaf, path = leaves[index]
            players: list[int] = []
            z: list[float] = []
            nodes: list[int] = []
            left = 0
            for i, goes_left, feat, fraction in path:
                if feat not in players:
                    players.append(feat)
                    z.append(1.0)
                    nodes.append(0)
                p = players.index(feat)
                z[p] *= fraction
                nodes[p] |= 1 << i
                left |= int(goes_left) << i
            leaf_left.append(left)
            player_nodes.extend(nodes)
            player_feature.extend(players)
            player_local.extend(used.index(f) for f in players)
            player_start.append(len(player_feature))
            table_start.append(table_size)
            if len(players) > MAX_PLAYERS:
                fallback = True
                table = np.zeros((1, len(players)))
            else:
                table = _leaf_table(np.array(z, dtype=np.float64), float(leaf["leaf_value"]))
            tables.append(table.ravel())
            table_size += table.size
            if "internal_count" in root:  # LightGBM's Tree::ExpectedValue
                expected += leaf["leaf_count"] / root["internal_count"] * leaf["leaf_value"]
        leaf_start.append(leaf_start[-1] + len(leaves))
        bias.append(expected if len(leaves) > 1 else leaves[0][0]["leaf_value"])
    as_int = lambda v: np.array(v, dtype=np.int64)  # noqa: E731
    return Compiled(
        feature=feature, threshold=threshold, categorical=categorical, default_left=default_left, missing=missing,
        cat_start=cat_start, cat_len=cat_len, cat_words=np.array(words, dtype=np.uint32),
        n_nodes=np.array([t["num_leaves"] - 1 for t in trees], dtype=np.int32),
        leaf_start=as_int(leaf_start), leaf_left=as_int(leaf_left), player_start=as_int(player_start),
        player_feature=as_int(player_feature), player_nodes=as_int(player_nodes), player_local=as_int(player_local),
        used_start=as_int(used_start), used_feature=as_int(used_feature), table_start=as_int(table_start),
        table=np.concatenate(tables) if tables else np.zeros(0), bias=np.array(bias, dtype=np.float64),
        fallback=fallback or width > MAX_SPLITS,
    )


@numba.njit(cache=True, nogil=True)
def _goes_left(value, categorical, threshold, default_left, missing, cat_start, cat_len, cat_words):
    if not categorical:
        if np.isnan(value) and missing != 2:
            value = 0.0
        if (missing == 1 and abs(value) <= 1e-35) or (missing == 2 and np.isnan(value)):
            return default_left
        return value <= threshold
    if np.isnan(value):
        return False
    code = int(value)
    if code < 0 or code // 32 >= cat_len:
        return False
    return (cat_words[cat_start + code // 32] >> np.uint32(code % 32)) & np.uint32(1) == 1


DENSE_SPLITS = 16  # trees with at most this many splits find distinct patterns by direct addressing
BLOCK = 10000  # leads per block, about: many leads share a split pattern, and the block stays in cache


def block_size(n: int) -> int:
    """Leads per block: about BLOCK, and the same number of blocks for every thread.

    Numba hands each thread an equal share of the blocks, so 3 blocks on 2 threads take as long
    as 4; smaller blocks find fewer leads sharing a pattern (measured on the default model, one thread, CPU
    time: blocks of 2,461 leads ~100k leads/s, 4,922 ~112k, 9,844 ~120k, 17,718 ~123k; larger blocks
    cost memory, three arrays of features x block per thread).
    """
    threads = numba.get_num_threads()
    rounds = max(1, -(-n // (threads * BLOCK)))
    return max(1, -(-n // (threads * rounds)))


@numba.njit(cache=True, parallel=True, nogil=True)
def _contributions(X, feature, threshold, categorical, default_left, missing, cat_start, cat_len, cat_words, n_nodes,
                   leaf_start, leaf_left, player_start, player_nodes, player_local,
                   used_start, used_feature, table_start, table, bias, block):
    """Per block of leads and per tree: each lead's split pattern, then the tree's contributions once per
    distinct pattern in the block (from the leaf tables), then added to every lead with that pattern."""
    n, n_features = X.shape
    n_trees = feature.shape[0]
    out = np.empty((n, n_features + 1))
    base_value = 0.0
    for t in range(n_trees):  # the same sum, in the same order, as adding each tree's bias to every lead
        base_value += bias[t]
    code_row = np.full(n_features, -1, dtype=np.int64)  # a categorical feature's row in the block's codes
    n_categorical = 0
    n_bits = 32
    for t in range(n_trees):
        for j in range(n_nodes[t]):
            if categorical[t, j]:
                if code_row[feature[t, j]] < 0:
                    code_row[feature[t, j]] = n_categorical
                    n_categorical += 1
                n_bits = max(n_bits, 32 * cat_len[t, j])
    n_blocks = (n + block - 1) // block
    for b in numba.prange(n_blocks):
        lo = b * block
        nb = min(n, lo + block) - lo
        # The block by feature, so each split reads one contiguous column; categorical columns also as
        # codes, -1 where no split sends the value left (missing, negative, beyond every bitset).
        Xt = np.empty((n_features, nb))
        codes = np.full((n_categorical, nb), -1, dtype=np.int32)
        for r in range(nb):
            for f in range(n_features):
                v = X[lo + r, f]
                Xt[f, r] = v
                if code_row[f] >= 0 and v > -1.0 and v < n_bits:  # NaN compares false
                    codes[code_row[f], r] = np.int32(v)  # truncated, as LightGBM's static_cast<int>
        pattern = np.zeros(nb, dtype=np.int64)
        slot = np.zeros(nb, dtype=np.int64)
        distinct = np.zeros(nb, dtype=np.int64)
        mask = np.zeros(nb, dtype=np.int64)
        seen = np.full(1 << DENSE_SPLITS, -1, dtype=np.int64)
        # The block's contributions by feature (a row per feature): a tree adds to a few whole rows.
        At = np.zeros((n_features, nb))
        for t in range(n_trees):
            for r in range(nb):
                pattern[r] = 0
            for j in range(n_nodes[t]):
                col = Xt[feature[t, j]]
                bit = np.int64(1) << j
                thr = threshold[t, j]
                # Branch-free loops for the two common splits: the compiler vectorises them.
                if not categorical[t, j] and missing[t, j] == 0:  # NaN counts as 0
                    zero_left = np.int64(0.0 <= thr) << j
                    for r in range(nb):
                        v = col[r]
                        pattern[r] |= zero_left if np.isnan(v) else np.int64(v <= thr) << j
                elif not categorical[t, j] and missing[t, j] == 2:  # NaN goes the default way
                    nan_left = np.int64(default_left[t, j]) << j
                    for r in range(nb):
                        v = col[r]
                        pattern[r] |= nan_left if np.isnan(v) else np.int64(v <= thr) << j
                elif categorical[t, j]:  # the category's bit in the split's bitset, by table lookup
                    code = codes[code_row[feature[t, j]]]
                    start, limit = cat_start[t, j], 32 * cat_len[t, j]
                    for r in range(nb):
                        c = code[r]
                        inside = c >= 0 and c < limit
                        c = c if inside else 0
                        word = cat_words[start + (c >> 5)]
                        pattern[r] |= np.int64((word >> np.uint32(c & 31)) & np.uint32(1) & np.uint32(inside)) << j
                else:
                    for r in range(nb):
                        if _goes_left(col[r], categorical[t, j], thr, default_left[t, j], missing[t, j],
                                      cat_start[t, j], cat_len[t, j], cat_words):
                            pattern[r] |= bit
            if n_nodes[t] == 0:
                continue
            n_distinct = 0
            if n_nodes[t] <= DENSE_SPLITS:  # direct addressing: one slot per possible pattern
                for r in range(nb):
                    k = seen[pattern[r]]
                    if k < 0:
                        k = n_distinct
                        seen[pattern[r]] = k
                        distinct[k] = pattern[r]
                        n_distinct += 1
                    slot[r] = k
                for k in range(n_distinct):
                    seen[distinct[k]] = -1
            else:
                order = np.argsort(pattern)
                for i in range(nb):
                    if i == 0 or pattern[order[i]] != pattern[order[i - 1]]:
                        distinct[n_distinct] = pattern[order[i]]
                        n_distinct += 1
                    slot[order[i]] = n_distinct - 1
            n_used = used_start[t + 1] - used_start[t]
            store = np.zeros((n_used, n_distinct))
            # Leaf by leaf (one leaf's table stays in cache), each step a loop over the distinct patterns that
            # the compiler vectorises: first every pattern's satisfied players, then one table column at a time.
            for leaf in range(leaf_start[t], leaf_start[t + 1]):
                p0 = player_start[leaf]
                players = player_start[leaf + 1] - p0
                t0 = table_start[leaf]
                left = leaf_left[leaf]
                for k in range(n_distinct):
                    mask[k] = 0
                for u in range(players):  # a player is satisfied when none of its splits goes away from the leaf
                    nodes = player_nodes[p0 + u]
                    for k in range(n_distinct):
                        mask[k] |= np.int64(((distinct[k] ^ left) & nodes) == 0) << u
                for u in range(players):
                    column = store[player_local[p0 + u]]
                    for k in range(n_distinct):
                        column[k] += table[t0 + mask[k] * players + u]
            u0 = used_start[t]
            for q in range(n_used):
                row = At[used_feature[u0 + q]]
                column = store[q]
                for r in range(nb):
                    row[r] += column[slot[r]]
        for r in range(nb):
            for f in range(n_features):
                out[lo + r, f] = At[f, r]
            out[lo + r, n_features] = base_value
    return out


class ExactContributions:
    """Drop-in for ``booster.predict(X, pred_contrib=True)`` on a float matrix (categoricals as codes)."""

    def __init__(self, booster):
        self.booster = booster
        self.compiled = compile_booster(booster)
        self.last_fallbacks = 0

    def __call__(self, X: np.ndarray, margin: np.ndarray | None = None) -> np.ndarray:
        """Contributions of the rows of ``X``; ``margin``: their raw prediction, if the caller has it."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        c = self.compiled
        if c.fallback or len(X) == 0:
            self.last_fallbacks = len(X)
            return self.booster.predict(X, pred_contrib=True).reshape(len(X), X.shape[1] + 1)
        out = _contributions(
            X, c.feature, c.threshold, c.categorical, c.default_left, c.missing, c.cat_start, c.cat_len, c.cat_words,
            c.n_nodes, c.leaf_start, c.leaf_left, c.player_start, c.player_nodes, c.player_local, c.used_start,
            c.used_feature, c.table_start, c.table, c.bias, block_size(len(X)))
        # A lead whose values do not add up to LightGBM's prediction reached another leaf somewhere: a
        # split rule we do not mirror. Off-path decisions use the same rules, so no lead of the batch
        # is trusted then: all go to LightGBM.
        if margin is None:
            margin = self.booster.predict(X, raw_score=True)
        if not np.all(np.abs(out.sum(axis=1) - np.asarray(margin, dtype=float)) <= GUARD_TOLERANCE):
            self.last_fallbacks = len(X)
            return self.booster.predict(X, pred_contrib=True)
        self.last_fallbacks = 0
        return out
