"""Tensor-parallel mappings (copy/reduce, sequence gather/reduce-scatter, vocab-parallel embedding
and cross-entropy, also over a padded vocabulary whose padding is excluded) over real Gloo groups
of 2 and 4 ranks reproduce the dense single-rank math, outputs and gradients."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
import test_comm  # noqa: E402  (its run_world starts the ranks with the torchrun environment)
from weft_test import BUILD, check  # noqa: E402

test_comm.TOOL = os.path.join(BUILD, "tests", "weft_tp_tool")


def main():
    for n in (2, 4):
        results, _ = test_comm.run_world(n)
        for rank, (code, out) in enumerate(results):
            oks = out.count(" ok: ")
            check(code == 0 and " FAIL" not in out and oks == 14,
                  f"tp={n} rank {rank}: {oks}/14 checks match the dense computation" + ("" if code == 0 else "\n" + out))


if __name__ == "__main__":
    main()
