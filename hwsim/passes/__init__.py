"""Graph passes, one per file. Pipelines are flat, named lists; `run_pipeline` verifies between passes."""

from hwsim.passes.base import Pass, run_pipeline
from hwsim.passes.dead_code import eliminate_dead_code
from hwsim.passes.fuse_accumulate_add import fuse_accumulate_add
from hwsim.passes.grouped_query_matmul import grouped_query_matmul
from hwsim.passes.lower_format_layers import lower_format_layers
from hwsim.passes.merge_sibling_accumulates import merge_sibling_accumulates
from hwsim.passes.scale_to_queries import scale_to_queries

# What every compile runs between import and code generation, in order.
DEFAULT_PIPELINE: list[Pass] = [
    Pass("lower_format_layers", lower_format_layers),
    Pass("grouped_query_matmul", grouped_query_matmul),
    Pass("scale_to_queries", scale_to_queries),
    Pass("eliminate_dead_code", eliminate_dead_code),
    Pass("fuse_accumulate_add", fuse_accumulate_add),
]

# What CPU builds (host, ARM) run after DEFAULT_PIPELINE: rewrites that pay on a CPU's kernels and launches.
CPU_PIPELINE: list[Pass] = [
    Pass("merge_sibling_accumulates", merge_sibling_accumulates),
]

__all__ = ["CPU_PIPELINE", "DEFAULT_PIPELINE", "Pass", "eliminate_dead_code", "fuse_accumulate_add",
           "grouped_query_matmul", "lower_format_layers", "merge_sibling_accumulates", "run_pipeline",
           "scale_to_queries"]
