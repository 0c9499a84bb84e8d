"""Which channels to remove, given scores, a ratio and a scope.

Scores are per layer; coupled layers (a residual stream) share channels, so the score of a
shared channel is the **mean** of its members' scores (members without a score for it are
skipped). Ratios count the group's channels.
"""

import numbers

import numpy as np

from tfprune._common.text import list_names


def _check_ratio(value, argument):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) < 1.0:
        raise ValueError(
            f"`{argument}` must be a number in [0, 1): the fraction of channels to remove (1 would empty "
            f"the layer); got {value!r}."
        )
    return float(value)


def _root_scores(analysis, scores):
    total = np.zeros(len(analysis.root))
    count = np.zeros(len(analysis.root))
    for name, values in scores.items():
        if name not in analysis.producers:
            raise ValueError(
                f"Scores given for '{name}', which is not a layer whose output channels can be removed. "
                f"Such layers: {list_names(analysis.producers)}."
            )
        values = np.asarray(values, dtype=np.float64).ravel()
        roots = analysis.roots_of(name)
        if values.shape != roots.shape:
            raise ValueError(f"Scores for '{name}' have {values.size} entries; '{name}' has {roots.size} channels.")
        ok = np.isfinite(values)
        np.add.at(total, roots[ok], values[ok])
        np.add.at(count, roots[ok], 1)
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def select_unions(analysis, scores, ratio, scope="layer", min_channels=1):
    """The channel unions to remove (a set of root ids)."""
    if scope not in ("layer", "global"):
        raise ValueError(f"`scope` must be 'layer' (each group loses `ratio` of its channels) or 'global' "
                         f"(one threshold across all layers); got {scope!r}.")
    if isinstance(min_channels, bool) or not isinstance(min_channels, numbers.Integral) or min_channels < 1:
        raise ValueError(f"`min_channels` must be an integer >= 1 (channels every layer keeps); got {min_channels!r}.")
    score = _root_scores(analysis, scores)
    groups = analysis.coupled_groups()
    group_of = {name: i for i, group in enumerate(groups) for name in group.layers}
    candidates = {}  # group index -> candidate roots in removal order
    for i, group in enumerate(groups):
        roots = group.unions[~group.blocked]
        roots = roots[np.isfinite(score[roots])]
        candidates[i] = roots[np.argsort(score[roots], kind="stable")]

    if isinstance(ratio, dict):
        if scope == "global":
            raise ValueError("A per-layer `ratio` dict cannot be used with scope='global'; give one number.")
        per_group = {}
        for name, value in ratio.items():
            value = _check_ratio(value, f"ratio['{name}']")
            if name not in group_of:
                raise ValueError(
                    f"`ratio` names '{name}', which is not a layer whose output channels can be removed. "
                    f"Such layers: {list_names(analysis.producers)}."
                )
            i = group_of[name]
            if not len(candidates[i]) and value > 0:
                raise ValueError(_no_candidates(analysis, groups[i], name, scores))
            if i in per_group and per_group[i][1] != value:
                raise ValueError(
                    f"`ratio` gives {per_group[i][1]} to '{per_group[i][0]}' and {value} to '{name}', but they are "
                    "coupled (they must lose the same channels): give them the same ratio, or name one."
                )
            per_group[i] = (name, value)
        plan = {i: value for i, (_, value) in per_group.items()}
    else:
        ratio = _check_ratio(ratio, "ratio")
        plan = {i: ratio for i in candidates if len(candidates[i])}

    kept = {name: len(np.unique(analysis.roots_of(name))) for name in analysis.producers}
    members = {}
    for name in analysis.producers:
        for r in np.unique(analysis.roots_of(name)).tolist():
            members.setdefault(r, []).append(name)

    removed = set()

    def try_remove(r):
        if any(kept[m] - 1 < min_channels for m in members[r]):
            return False
        for m in members[r]:
            kept[m] -= 1
        removed.add(r)
        return True

    if scope == "layer":
        for i, value in plan.items():
            target = int(round(value * len(groups[i].unions)))
            done = 0
            for r in candidates[i].tolist():
                if done >= target:
                    break
                done += try_remove(r)
    else:
        pool = np.concatenate([candidates[i] for i in plan]) if plan else np.zeros(0, np.int64)
        total = sum(len(groups[i].unions) for i in plan)
        target = int(round(ratio * total))
        done = 0
        for r in pool[np.argsort(score[pool], kind="stable")].tolist():
            if done >= target:
                break
            done += try_remove(r)
    return removed


def _no_candidates(analysis, group, name, scores):
    blocked = [r for r in group.unions.tolist() if analysis.blocked[r]]
    if blocked and len(blocked) == len(group.unions):
        return f"No channel of '{name}' can be removed: {analysis.block_reason[blocked[0]]}."
    return f"No channel of '{name}' has a score (the method gives none for it), so it cannot be ranked."


def unions_to_channels(analysis, removed):
    """``{layer_name: [indices]}`` for every producer that loses channels."""
    removed = np.asarray(sorted(removed), dtype=np.int64)
    channels = {}
    for name in analysis.producers:
        idx = np.flatnonzero(np.isin(analysis.roots_of(name), removed))
        if idx.size:
            channels[name] = idx.tolist()
    return channels
