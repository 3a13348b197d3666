"""The two-stream layer-wise pipeline, its methods and allocations, and the linear algebra they share."""
