"""Models: hub access, loading, the low-rank layer, blocks and projections, devices, offload, saving."""
