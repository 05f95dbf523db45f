"""LoRA under tensor and pipeline parallelism trains the same adapters as one process. From a
base checkpoint (a short ordinary run of configs/llama-tiny.yaml: grouped-query attention, 2 KV
heads, untied head), a LoRA run on every projection (q, k, v, o, gate, up, down; dropout 0)
gives the single-process loss at every step within 1e-4 relative (and the gradient norm within
1e-4) under `weft train --nproc 4` (Gloo) with (tp, pp, dp) = (2, 2, 1) and with (4, 1, 1) and
sequence parallelism, where tp=4 replicates each KV head on two ranks, and with (1, 2, 2) and
ZeRO-1 (optimizer state sharded over the adapters' gradient buckets only). A tp=1 LoRA checkpoint of step 3 resumed as
tp=2 x pp=2 follows the single-process run to step 6, its checkpoint holds the adapters only,
and `weft eval` of it equals that of the single-process checkpoint; so does `weft eval` of the
single-process checkpoint written again for tp=2 by `weft convert --from ckpt: --to ckpt:`.

Every case is tried and every failure reported (exit 1 at the end)."""
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
from safetensors.torch import load_file  # noqa: E402

from weft_test import (grad_norms, layout_sets, make_dataset, report, step_losses, tmpdir, train,  # noqa: E402
                       weft)
from weft_test import expect as check  # noqa: E402

STEPS = 6
COMMON = ["model.vocab_size=264", "train.global_batch_size=8", "train.micro_batch_size=2", "run.peak_tflops=1",
          "optim.decay=constant", "optim.warmup_steps=0", "run.tensorboard=false", "checkpoint.interval=3",
          "checkpoint.keep=0"]
LORA = ["lora.rank=4", "lora.alpha=8", "lora.dropout=0",
        "lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]", "optim.lr=1e-2"]


def close(a, b, tol):
    return abs(a - b) <= tol * max(abs(b), 1e-12)


def compare(name, run_dir, ref, ref_norms, steps):
    got, norms = step_losses(run_dir), grad_norms(run_dir)
    for s in steps:
        if not check(s in got and close(got[s], ref[s], 1e-4) and close(norms[s], ref_norms[s], 1e-4),
                     f"{name}: step {s} loss {got.get(s)} vs one process {ref[s]}, grad norm {norms.get(s)} vs "
                     f"{ref_norms[s]}"):
            return


def eval_loss(ckpt, prefix):
    p = weft("eval", "--checkpoint", ckpt, "--data", prefix, "--max-batches", "4", check=False)
    m = re.search(r"eval_loss=([0-9.eE+-]+)", p.stdout)
    return float(m.group(1)) if m else None


def main():
    work = tmpdir("lora_layouts")
    prefix = make_dataset(work, documents=80)
    base_run = os.path.join(work, "base")
    train("base", base_run, prefix, "llama-tiny.yaml", 1, 2, COMMON)
    base = os.path.join(base_run, "checkpoints")
    sets = COMMON + LORA + ["checkpoint.init_from=" + base]

    single = os.path.join(work, "single")
    if train("lora one process", single, prefix, "llama-tiny.yaml", 1, STEPS, sets) is None:
        report()
    ref, ref_norms = step_losses(single), grad_norms(single)
    check(len(set(round(v, 6) for v in ref.values())) == STEPS, f"the LoRA run's loss changes every step: {ref}")

    for tp, pp, extra in ((2, 2, []), (4, 1, ["parallel.sequence_parallel=true"]), (1, 2, ["parallel.zero=1"])):
        run, name = os.path.join(work, f"tp{tp}pp{pp}"), f"lora tp={tp} pp={pp}{''.join(' ' + e for e in extra)}"
        if train(name, run, prefix, "llama-tiny.yaml", 4, STEPS, sets + layout_sets(tp, pp, extra)):
            compare(name, run, ref, ref_norms, range(1, STEPS + 1))

    # Resume across layouts: the single run's step-3 checkpoint, continued as tp=2 x pp=2.
    resumed = os.path.join(work, "resumed")
    os.makedirs(os.path.join(resumed, "checkpoints"))
    shutil.copytree(os.path.join(single, "checkpoints", "step_00000003"),
                    os.path.join(resumed, "checkpoints", "step_00000003"))
    with open(os.path.join(resumed, "checkpoints", "latest"), "w") as f:
        f.write("step_00000003")
    if train("lora resumed tp=2 pp=2", resumed, prefix, "llama-tiny.yaml", 4, STEPS, sets + layout_sets(2, 2)):
        compare("lora step-3 checkpoint resumed as tp=2 pp=2", resumed, ref, ref_norms, range(4, STEPS + 1))
        step = os.path.join(resumed, "checkpoints", f"step_{STEPS:08d}")
        names = set()
        for f in os.listdir(step):
            if f.startswith("model.") and f.endswith(".safetensors"):
                names |= set(load_file(os.path.join(step, f)))
        check(names and all(".adapter.lora_" in n for n in names),
              f"the tp=2 x pp=2 checkpoint holds adapters only ({len(names)} tensors)")
        a, b = eval_loss(step, prefix), eval_loss(os.path.join(single, "checkpoints", f"step_{STEPS:08d}"), prefix)
        check(a is not None and b is not None and close(a, b, 1e-4),
              f"weft eval of the resumed tp=2 x pp=2 LoRA checkpoint ({a}) equals the single-process one ({b})")
    # Offline relayout (weft convert ckpt -> ckpt) of a LoRA checkpoint: adapters only, same eval.
    relaid = os.path.join(work, "relaid")
    single_step = os.path.join(single, "checkpoints", f"step_{STEPS:08d}")
    p = weft("convert", "--from", "ckpt:" + single_step, "--to", "ckpt:" + relaid, "--set", "parallel.tp=2",
             "--nproc", "2", check=False)
    if check(p.returncode == 0, f"weft convert relays a LoRA checkpoint out for tp=2 ({p.stderr.strip()[-200:]})"):
        a, b = eval_loss(relaid, prefix), eval_loss(single_step, prefix)
        check(a is not None and a == b, f"weft eval of the tp=2 relayout ({a}) equals the original ({b})")
    report()


if __name__ == "__main__":
    main()
