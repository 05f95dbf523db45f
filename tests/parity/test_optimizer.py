"""Parity with PyTorch's own optimizer and scheduler: Weft's AdamW (per-group weight decay,
global-norm clipping) and warmup + cosine/linear schedule match torch.optim.AdamW +
torch.optim.lr_scheduler.LambdaLR + torch.nn.utils.clip_grad_norm_ over 50 steps within 1e-6."""
import json
import math
import os
import sys
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from weft_test import MODEL_TOOL, check, run, tmpdir  # noqa: E402

STEPS = 50


def schedule(optim, train_steps):
    """The documented schedule (README) written independently as a LambdaLR multiplier."""
    lr, min_lr, W = optim["lr"], optim["min_lr"], optim["warmup_steps"]
    S = optim.get("decay_steps", 0) or train_steps

    def factor(step):
        if step < W:
            return (step + 1) / W
        p = min(max((step - W) / max(1, S - W), 0.0), 1.0)
        if optim["decay"] == "cosine":
            return (min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * p))) / lr
        if optim["decay"] == "linear":
            return (lr - (lr - min_lr) * p) / lr
        return 1.0
    return factor


def case(work, name, optim, train_steps):
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    shapes = {"w1": (16, 8), "w2": (8,), "norm.weight": (8,), "b.bias": (4,)}
    params = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    grads = {f"grad.{i}.{k}": torch.randn(s, generator=g) * (3.0 if i % 7 == 0 else 0.3)
             for i in range(STEPS) for k, s in shapes.items()}
    no_decay = ["norm.weight", "b.bias"]
    tensors = {f"param.{k}": v for k, v in params.items()} | grads
    src, out, spec = (os.path.join(work, name + s) for s in (".in.safetensors", ".out.safetensors", ".json"))
    save_file(tensors, src)
    with open(spec, "w") as f:
        json.dump({"optim": optim, "steps": STEPS, "train_steps": train_steps, "no_decay": no_decay}, f)
    run([MODEL_TOOL, "adamw", spec, src, out])
    got = load_file(out)

    ref = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.AdamW(
        [{"params": [ref[k] for k in shapes if k not in no_decay], "weight_decay": optim["weight_decay"]},
         {"params": [ref[k] for k in no_decay], "weight_decay": 0.0}],
        lr=optim["lr"], betas=(optim["beta1"], optim["beta2"]), eps=optim["eps"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule(optim, train_steps))
    lrs, norms = [], []
    for i in range(STEPS):
        for k in shapes:
            ref[k].grad = grads[f"grad.{i}.{k}"].clone()
        norms.append(torch.nn.utils.clip_grad_norm_(list(ref.values()), optim["clip_grad"] or math.inf).item())
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    lr_err = max(abs(a - b) for a, b in zip(got["lr"].tolist(), lrs))
    check(lr_err < 1e-12, f"{name}: learning rates match LambdaLR (max diff {lr_err:.1e})")
    norm_err = max(abs(a - b) / b for a, b in zip(got["grad_norm"].tolist(), norms))
    check(norm_err < 1e-6, f"{name}: grad norms match clip_grad_norm_ (max rel diff {norm_err:.1e})")
    worst = max((got[f"param.{k}"] - ref[k].detach()).abs().max().item() for k in shapes)
    check(worst < 1e-6, f"{name}: parameters after {STEPS} steps match torch.optim.AdamW (max diff {worst:.1e})")


def main():
    work = tmpdir("optim")
    base = {"lr": 1e-2, "min_lr": 1e-3, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8,
            "warmup_steps": 5, "decay": "cosine", "clip_grad": 1.0}
    case(work, "cosine", base, 50)
    case(work, "linear", base | {"decay": "linear", "warmup_steps": 0, "clip_grad": 0.0}, 40)
    case(work, "constant_decay_steps", base | {"decay": "cosine", "decay_steps": 30, "beta2": 0.999}, 50)


if __name__ == "__main__":
    main()
