"""The allocations (where the rank goes, an axis of its own beside the method): one file each, one line each here."""
from __future__ import annotations

from .base import Allocated, Allocation, AllocationContext, NeedsData, fill, kept_params, max_rank, target_params
from .depth import Depth
from .loss import Loss
from .registry import ALLOCATIONS, allocation_class, allocation_for, get_allocation, list_allocations, register
from .sensitivity import Sensitivity
from .uniform import Uniform
from .zero_sum import ZeroSum

register(Uniform)
register(Depth)
register(Loss)
register(Sensitivity)
register(ZeroSum)

__all__ = ["ALLOCATIONS", "Allocated", "Allocation", "AllocationContext", "NeedsData", "allocation_class",
           "allocation_for", "fill", "get_allocation", "kept_params", "list_allocations", "max_rank", "register",
           "target_params"]
