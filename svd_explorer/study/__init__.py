"""Many runs: Ray sweeps, comparison tables and Pareto fronts."""
