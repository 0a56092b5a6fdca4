"""embedserve's benchmarks: `python -m bench kernels|engine|http --help`."""
