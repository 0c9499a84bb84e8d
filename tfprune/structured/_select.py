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
    return select(analysis, scores, ratio, scope, min_channels)[0]


def select(analysis, scores, ratio, scope="layer", min_channels=1):
    """``(removed, why)``: the channel unions to remove, and why each producer that loses none keeps them all."""
    _check_scope(scope, min_channels)
    score = _root_scores(analysis, scores)
    groups = analysis.coupled_groups()
    candidates = [_candidates(group, score) for group in groups]
    plan = _plan(analysis, groups, candidates, ratio, scope, scores)
    budget = _Budget(analysis, min_channels)
    if scope == "layer":
        for i, value in plan.items():
            budget.remove_lowest(candidates[i], int(round(value * len(groups[i].unions))))
    else:
        pool = np.concatenate([candidates[i] for i in plan]) if plan else np.zeros(0, np.int64)
        target = int(round(ratio * sum(len(groups[i].unions) for i in plan)))
        budget.remove_lowest(pool[np.argsort(score[pool], kind="stable")], target)
    return budget.removed, _why_kept(analysis, groups, candidates, plan, budget, scope)


def _check_scope(scope, min_channels):
    if scope not in ("layer", "global"):
        raise ValueError(f"`scope` must be 'layer' (each group loses `ratio` of its channels) or 'global' "
                         f"(one threshold across all layers); got {scope!r}.")
    if isinstance(min_channels, bool) or not isinstance(min_channels, numbers.Integral) or min_channels < 1:
        raise ValueError(f"`min_channels` must be an integer >= 1 (channels every layer keeps); got {min_channels!r}.")


def _candidates(group, score):
    """A group's removable, scored unions, lowest score first."""
    roots = group.unions[~group.blocked]
    roots = roots[np.isfinite(score[roots])]
    return roots[np.argsort(score[roots], kind="stable")]


def _plan(analysis, groups, candidates, ratio, scope, scores):
    """``{group index: ratio}`` for the groups to cut."""
    if not isinstance(ratio, dict):
        ratio = _check_ratio(ratio, "ratio")
        return {i: ratio for i in range(len(groups)) if len(candidates[i])}
    if scope == "global":
        raise ValueError("A per-layer `ratio` dict cannot be used with scope='global'; give one number.")
    group_of = {name: i for i, group in enumerate(groups) for name in group.layers}
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
    return {i: value for i, (_, value) in per_group.items()}


class _Budget:
    """Removes unions while every producer they touch keeps ``min_channels``; notes who reached the floor."""

    def __init__(self, analysis, min_channels):
        self.min_channels = min_channels
        self.kept = {name: len(np.unique(analysis.roots_of(name))) for name in analysis.producers}
        self.members = {}
        for name in analysis.producers:
            for r in np.unique(analysis.roots_of(name)).tolist():
                self.members.setdefault(r, []).append(name)
        self.removed = set()
        self.at_floor = set()

    def try_remove(self, r):
        floor = [m for m in self.members[r] if self.kept[m] - 1 < self.min_channels]
        if floor:
            self.at_floor.update(floor)
            return False
        for m in self.members[r]:
            self.kept[m] -= 1
        self.removed.add(r)
        return True

    def remove_lowest(self, roots, target):
        done = 0
        for r in roots.tolist():
            if done >= target:
                break
            done += self.try_remove(r)


def _why_kept(analysis, groups, candidates, plan, budget, scope):
    """``{producer: reason}`` for the producers of the groups that lose no channel."""
    why = {}
    for i, group in enumerate(groups):
        if any(r in budget.removed for r in group.unions.tolist()):
            continue
        blocked = group.unions[group.blocked]
        if len(blocked) == len(group.unions):
            reason = f"no channel can be removed: {analysis.block_reason[blocked[0]]}"
        elif not len(candidates[i]):
            reason = "the method gives no score for its channels"
        elif i not in plan:
            reason = "not named in `ratio`"
        elif any(name in budget.at_floor for name in group.layers):
            reason = f"min_channels={budget.min_channels} reached"
        elif scope == "layer":
            reason = f"ratio {plan[i]} of {len(group.unions)} channels rounds to 0"
        else:
            reason = "its channels score above the global threshold"
        for name in group.layers:
            why[name] = reason
    return why


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
