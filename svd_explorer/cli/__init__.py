"""The command line: `python -m svd_explorer compress | evaluate | sweep | info`."""
