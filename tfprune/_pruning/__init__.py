"""Magnitude pruning and dynamic network surgery inside ``fit`` (private package).

The user-facing names are exported by ``tfprune``. Other tfprune packages (surgery, export,
plots) import what they need from this face, never from the modules behind it.
"""

from tfprune._pruning.api import (
    PruningPolicy,
    check_model,
    dynamic_surgery,
    dynamic_surgery_c,
    dynamic_surgery_c_for_sparsity,
    prune_low_magnitude,
    prune_scope,
    pruning_wrappers,
    strip_pruning,
)
from tfprune._pruning.callbacks import PruningSummaries, UpdatePruningStep
from tfprune._pruning.fixed_masks import KeepMasks, masks_of, prunable_weights, prune_with_masks
from tfprune._pruning.lottery import LotteryHistory, LotteryTicket
from tfprune._pruning.at_init import grasp_masks, snip_masks, synflow_masks
from tfprune._pruning.sparse_training import DynamicSparseTraining, RigL, SET, random_masks
from tfprune._pruning.allocation import ERK, GlobalMagnitude, LAMP, LayerUniform, SparsityAllocation
from tfprune._pruning.history import SparsityHistory
from tfprune._pruning.gsm import GlobalSparseMomentum, gsm_compression, gsm_cut
from tfprune._pruning.registry import PrunableLayer
from tfprune._pruning.report import SparsityReport, sparsity_report
from tfprune._pruning.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from tfprune._pruning.base import PruningWrapper, masked_value
from tfprune._pruning.dynamic_surgery import DynamicSurgery
from tfprune._pruning.wrapper import PruneLowMagnitude
from tfprune._pruning.xnnpack_policy import PruneForLatencyOnXNNPack

__all__ = [
    "ConstantSparsity",
    "DynamicSurgery",
    "KeepMasks",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneForLatencyOnXNNPack",
    "PruneLowMagnitude",
    "PruningWrapper",
    "masked_value",
    "PruningPolicy",
    "PruningSchedule",
    "PruningSummaries",
    "SparsityHistory",
    "SparsityReport",
    "UpdatePruningStep",
    "check_model",
    "dynamic_surgery",
    "dynamic_surgery_c",
    "dynamic_surgery_c_for_sparsity",
    "masks_of",
    "prunable_weights",
    "prune_low_magnitude",
    "prune_scope",
    "prune_with_masks",
    "pruning_wrappers",
    "sparsity_report",
    "strip_pruning",
    "LotteryHistory",
    "LotteryTicket",
    "grasp_masks",
    "snip_masks",
    "synflow_masks",
    "DynamicSparseTraining",
    "RigL",
    "SET",
    "random_masks",
    "ERK",
    "GlobalMagnitude",
    "LAMP",
    "LayerUniform",
    "SparsityAllocation",
    "GlobalSparseMomentum",
    "gsm_compression",
    "gsm_cut",
]
