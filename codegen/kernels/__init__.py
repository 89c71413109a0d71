"""TIR kernels for the low-bit accumulate ops, scheduled per shape."""
