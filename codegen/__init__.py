"""Code generation: the only package that imports TVM. IR -> Relax -> per-target build."""
