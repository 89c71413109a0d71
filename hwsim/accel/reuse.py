"""The least DRAM traffic a dense GEMM can have in a given fold order, whatever the buffer's replacement policy:
the floor under both hwsim's window staging and SCALE-Sim (bench/accel_peers.py prints it beside them).

Fold order (SCALE-Sim's): column folds of C outer; inside one, the row folds (weight-stationary: R rows of K,
all M rows of A streamed; output-stationary: R rows of A against the C columns over all of K). An operand
read again on every outer pass is a cyclic scan of its L bytes; a buffer of S bytes under the best possible
replacement (Belady's) keeps at most S of them between passes, so each pass after the first misses at least
L - S. Outputs are written once. Hence, per operand:
- weight-stationary: W once; A once plus (column folds - 1) x max(0, |A| - S_activation).
- output-stationary: A as above; each column fold's W slab [K, C] is read by every row fold in turn:
  |W| plus column folds x (row folds - 1) x max(0, K C - S_weight).
"""

import math


def reuse_bound(m: int, k: int, n: int, rows: int, cols: int, dataflow: str, act_bytes: int, wgt_bytes: int,
                a_item: int = 1, w_item: int = 1, c_item: int = 1) -> dict[str, int]:
    """Lower bounds on DRAM bytes (A, W, C and their total) for the GEMM x[m, k] @ W[k, n] in the fold order
    above on a `rows` x `cols` array with buffers of `act_bytes` and `wgt_bytes`."""
    a, w, c = m * k * a_item, k * n * w_item, m * n * c_item
    col_folds = math.ceil(n / cols)
    a_lb = a + (col_folds - 1) * max(0, a - act_bytes)
    if dataflow == "weight_stationary":
        w_lb = w
    elif dataflow == "output_stationary":
        slab = k * cols * w_item
        w_lb = w + col_folds * (math.ceil(m / rows) - 1) * max(0, slab - wgt_bytes)
    else:
        raise ValueError(f"no fold-order bound for a {dataflow} array")
    return {"a": a_lb, "w": w_lb, "c": c, "total": a_lb + w_lb + c, "compulsory": a + w + c}
