"""Frozen parameters (train.freeze) under data parallelism: with dp=2 and ZeRO-1 (whose optimizer
state follows the gradient buckets element for element, so a frozen parameter given bucket space
would get state) and with tp=2 x dp=2 replicated AdamW, five steps leave every frozen tensor
bit-identical to the initial model, every other tensor changed, and no optimizer state for a
frozen parameter in any rank's file."""
import glob
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from weft_test import check, config, make_dataset, tmpdir, weft  # noqa: E402

FROZEN = ("embed.weight", "layers.0.mlp.gate_proj.weight", "layers.0.mlp.up_proj.weight",
          "layers.0.mlp.down_proj.weight", "layers.1.attn.q_proj.weight")


def tensors(step_dir, kind):
    """Every tensor of one kind, as saved pieces keyed by name (pieces of one name concatenated)."""
    out = {}
    for f in sorted(glob.glob(os.path.join(step_dir, f"{kind}.rank*.safetensors"))):
        for name, t in load_file(f).items():
            out.setdefault(name, []).append(t)
    return out


def train(run, prefix, steps, nproc, sets):
    args = ["train", "--config", config("llama-tiny.yaml"), "--set", "run.dir=" + run, "--set", "data.prefix=" + prefix,
            "--set", f"train.steps={steps}", "--set", "train.global_batch_size=8", "--set", "train.micro_batch_size=2",
            "--set", "run.peak_tflops=1", "--set", "optim.lr=1e-3", "--set", "model.vocab_size=264"]
    for s in sets:
        args += ["--set", s]
    if nproc > 1:
        args += ["--nproc", str(nproc)]
    weft(*args)
    return os.path.join(run, "checkpoints", f"step_{steps:08d}")


def main():
    work = tmpdir("frozen")
    prefix = make_dataset(work, documents=80)
    # The initial model: one step with every parameter frozen (the seed alone decides it).
    init = {n: torch.cat([p.flatten() for p in ps]) for n, ps in
            tensors(train(os.path.join(work, "init"), prefix, 1, 1, ["train.freeze=['*']"]), "model").items()}
    freeze = "train.freeze=[" + ",".join(FROZEN) + "]"
    for name, nproc, sets in (("dp2_zero1", 2, ["parallel.zero=1"]), ("tp2_dp2", 4, ["parallel.tp=2"])):
        step = train(os.path.join(work, name), prefix, 5, nproc, sets + [freeze])
        model = tensors(step, "model")
        # With tp=2 a piece is half of the tensor: compare the saved pieces, in any order, as a multiset.
        for n, pieces in model.items():
            got = torch.cat([p.flatten() for p in pieces])
            same = torch.equal(got.sort().values, init[n].sort().values) if got.numel() == init[n].numel() else False
            if n in FROZEN:
                check(same, f"{name}: frozen {n} is bit-identical after 5 steps")
            elif not n.endswith("norm.weight"):
                check(not same, f"{name}: trained {n} changed")
        state = tensors(step, "optim")
        leaked = [s for s in state if s.split(".", 1)[1] in FROZEN]
        check(not leaked and len(state) > 0, f"{name}: no optimizer state for frozen parameters ({len(state)} tensors, leaked {leaked})")


if __name__ == "__main__":
    main()
