"""Every parallel layout trains the same model as one process. With `weft train --nproc 8` (Gloo,
8 processes), the same seed and the same global batch, each tensor x pipeline x data layout below
(tp, pp, dp), with ZeRO-1, sequence parallelism and interleaved virtual pipeline stages where
listed (and GPipe over an explicit uneven layer split), reproduces the single-process loss and
gradient norm at every step within 1e-4 relative in fp32 (the norm within 1e-5 at step 1, where
the weights are still the same; 5e-3 later): for a
Llama with grouped-query attention (2 KV heads, so tp=8 replicates them) and an untied head, and
for a GPT-2 whose embeddings are tied across the first and last pipeline stages. In bf16, the
(2,2,2) layout stays within 2e-2 relative of one bf16 process. A (2,2,2) ZeRO-1 run stopped at
step 3 and resumed under 8 ranks is bitwise equal to a straight run, and only rank 0 reports
progress; the same step-3 checkpoint resumed as tp=2 pp=1 dp=4 without ZeRO follows one process. Validation losses (through the pipeline where pp > 1) match too; `weft eval` of a
sharded ZeRO-1 checkpoint equals that of the single-process one; fine-tuning from a
single-process checkpoint under tp=4 x pp=2 matches fine-tuning in one process.

Every run is tried and every failure reported (exit 1 at the end), so the script doubles as a
progress meter for the parallel layouts."""
import os
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
# expect (as check) records a failure and goes on, so every layout is tried; report() exits 1 at the end.
from weft_test import (eval_losses, grad_norms, layout_sets, make_dataset, read_metrics, report, step_losses,  # noqa: E402
                       tmpdir, train, weft)
from weft_test import expect as check  # noqa: E402

STEPS = 6
NPROC = 8
# (tp, pp, extra settings); dp = 8 / (tp * pp). 16 sequences per step in micro-batches of 2.
LLAMA_LAYOUTS = [
    (1, 1, ["parallel.zero=1"]),
    (8, 1, ["parallel.sequence_parallel=true"]),
    (1, 8, []),
    (2, 2, ["parallel.zero=1", "parallel.sequence_parallel=true"]),
    (4, 2, []),
    (2, 1, ["parallel.zero=1"]),
    (1, 4, ["parallel.vpp=2", "parallel.zero=1"]),
    (1, 2, ["parallel.schedule=gpipe", "parallel.pipeline_layers=5,3"]),  # explicit uneven split
]
GPT2_LAYOUTS = [
    (2, 2, []),
    (1, 4, ["parallel.vpp=2"]),
]
RESUME_LAYOUT = (2, 2, ["parallel.zero=1", "parallel.sequence_parallel=true"])  # also in LLAMA_LAYOUTS
BF16_LAYOUT = (2, 2, [])

SUMMARY = []


def layout_name(family, tp, pp, sets):
    extra = "".join(" " + kv.removeprefix("parallel.") for kv in sets)
    return f"{family} tp={tp} pp={pp} dp={NPROC // (tp * pp)}{extra}"


def compare(name, run_dir, ref, tol):
    """The run's loss at every step against the reference's, within tol relative."""
    if ref is None:
        check(False, f"{name}: no single-process reference to compare with")
        SUMMARY.append((name, "no reference"))
        return
    got = step_losses(run_dir)
    common = [s for s in ref if s in got]
    if not common:
        check(False, f"{name}: metrics.jsonl has no step losses (steps {sorted(got)})")
        SUMMARY.append((name, "no losses"))
        return
    rel = {s: abs(got[s] - ref[s]) / abs(ref[s]) for s in common}
    # Validation loss (train.eval_interval in the config), computed through the same layout.
    ref_eval = eval_losses(REF_DIRS[id(ref)])
    got_eval = eval_losses(run_dir)
    eval_rel = max((abs(got_eval[s] - ref_eval[s]) / ref_eval[s] for s in ref_eval if s in got_eval), default=1.0)
    check(ref_eval and sorted(got_eval) == sorted(ref_eval) and eval_rel < tol,
          f"{name}: validation loss at steps {sorted(ref_eval)} matches one process (max rel diff {eval_rel:.1e})")
    worst = max(rel, key=rel.get)
    missing = sorted(set(ref) - set(got))
    check(sorted(got) == sorted(ref) and rel[worst] < tol,
          f"{name}: loss at all {len(ref)} steps matches one process within {tol:.0e} "
          f"(max rel diff {rel[worst]:.1e} at step {worst}: {got[worst]:.6f} vs {ref[worst]:.6f}"
          + (f"; steps missing: {missing}" if missing else "") + ")")
    # The gradient norm before clipping: Adam and clipping make the loss nearly blind to a
    # gradient-scale bug (e.g. a missing DP average); the norm is not. At step 1 every layout
    # has the same weights and batch, so only summation order differs.
    ref_norms, got_norms = grad_norms(REF_DIRS[id(ref)]), grad_norms(run_dir)
    norm_rel = {s: abs(got_norms[s] - ref_norms[s]) / ref_norms[s] for s in ref_norms if s in got_norms}
    # fp32: 1e-5 at step 1, 5e-3 later (the norm at a late step is sensitive to last-bit weight
    # differences that the loss barely shows); bf16 rounds each layout's sums differently.
    first_tol, later_tol = (1e-4, 0.25) if tol >= 1e-2 else (1e-5, 5e-3)
    check(1 in norm_rel and norm_rel[1] < first_tol,
          f"{name}: grad_norm at step 1 matches one process within {first_tol:.0e} "
          f"({got_norms.get(1)} vs {ref_norms.get(1)}, rel diff {norm_rel.get(1, float('nan')):.1e})")
    worst_norm = max(norm_rel, key=norm_rel.get, default=None)
    check(worst_norm is not None and len(norm_rel) == len(ref_norms) and norm_rel[worst_norm] < later_tol,
          f"{name}: grad_norm at all {len(ref_norms)} steps matches one process within {later_tol:.0e} "
          f"(max rel diff {norm_rel.get(worst_norm, float('nan')):.1e} at step {worst_norm})")
    bad = rel[worst] >= tol or missing or norm_rel.get(1, 1) >= first_tol or norm_rel.get(worst_norm, 1) >= later_tol
    SUMMARY.append((name, f"max rel diff loss {rel[worst]:.1e}, grad_norm {norm_rel.get(worst_norm, float('nan')):.1e}"
                    + (" FAIL" if bad else " ok")))


REF_DIRS = {}  # id(reference losses) -> its run directory


def reference(name, run_dir, prefix, cfg, sets=()):
    if train(name, run_dir, prefix, cfg, 1, STEPS, sets) is None:
        return None
    ref = step_losses(run_dir)
    REF_DIRS[id(ref)] = run_dir
    if not check(sorted(ref) == list(range(1, STEPS + 1)), f"{name}: metrics.jsonl has steps 1..{STEPS}"):
        return None
    return ref


def run_layouts(work, prefix, cfg, family, ref, layouts, tol, sets=()):
    dirs = {}
    for tp, pp, extra in layouts:
        name = layout_name(family, tp, pp, [*extra, *sets])
        run_dir = os.path.join(work, re.sub(r"[^A-Za-z0-9=.-]+", "_", name))
        if train(name, run_dir, prefix, cfg, NPROC, STEPS, [*layout_sets(tp, pp, extra), *sets]) is None:
            SUMMARY.append((name, "run failed"))
            continue
        compare(name, run_dir, ref, tol)
        dirs[(tp, pp, tuple(extra))] = run_dir
    return dirs


def main():
    work = tmpdir("layouts")
    prefix = make_dataset(work, documents=200)
    started = time.monotonic()

    # fp32 Llama: every layout against one process.
    llama_ref = reference("llama single process", os.path.join(work, "llama_single"), prefix, "parallel-tiny.yaml")
    llama_dirs = run_layouts(work, prefix, "parallel-tiny.yaml", "llama", llama_ref, LLAMA_LAYOUTS, 1e-4)

    # fp32 GPT-2: tied embeddings live on the first and last pipeline stages.
    gpt2_ref = reference("gpt2 single process", os.path.join(work, "gpt2_single"), prefix, "parallel-tiny-gpt2.yaml")
    run_layouts(work, prefix, "parallel-tiny-gpt2.yaml", "gpt2", gpt2_ref, GPT2_LAYOUTS, 1e-4)

    # bf16: looser, since reduction order differs between layouts and bf16 rounds coarsely.
    bf16_ref = reference("llama bf16 single process", os.path.join(work, "llama_bf16_single"), prefix,
                         "parallel-tiny.yaml", ["precision=bf16"])
    run_layouts(work, prefix, "parallel-tiny.yaml", "llama", bf16_ref, [BF16_LAYOUT], 2e-2, ["precision=bf16"])

    # Stop at step 3 and resume to 6 under the same 8-rank layout: bitwise equal to a straight run.
    # optim.decay_steps=6 in the config keeps the LR schedule of the 6-step run.
    tp, pp, extra = RESUME_LAYOUT
    name = layout_name("llama", tp, pp, extra) + " resume"
    resumed = os.path.join(work, "llama_resume")
    ok = (train(name + " (to step 3)", resumed, prefix, "parallel-tiny.yaml", NPROC, 3, layout_sets(tp, pp, extra))
          is not None and
          train(name + " (3 to 6)", resumed, prefix, "parallel-tiny.yaml", NPROC, STEPS, layout_sets(tp, pp, extra))
          is not None)
    straight = llama_dirs.get((tp, pp, tuple(extra)))
    result = "run failed"
    if ok:
        recs = read_metrics(resumed)
        at = [i for i, r in enumerate(recs) if r.get("event") == "resume" and "checkpoint" in r]
        after = [r["step"] for r in recs[at[0] + 1:] if "event" not in r] if at else []
        check(len(at) == 1 and recs[at[0]].get("step") == 3 and after == [4, 5, 6],
              f"{name}: second run resumed from the step-3 checkpoint and went on at step 4 "
              f"(resume events: {[recs[i] for i in at]}, steps after: {after})")
        if straight is None:
            check(False, f"{name}: no straight {STEPS}-step run of this layout to compare with")
            result = "no straight run"
        else:
            a, b = step_losses(resumed), step_losses(straight)
            differ = [s for s in range(1, STEPS + 1) if a.get(s) != b.get(s)]
            check(not differ, f"{name}: 3 steps + resume to {STEPS} is bitwise equal to {STEPS} straight"
                  + (f" (differs at steps {differ}: {[(a.get(s), b.get(s)) for s in differ]})" if differ else ""))
            result = "bitwise equal" if not differ else f"differs at steps {differ} FAIL"
    SUMMARY.append((name, result))

    # The step-3 ZeRO-1 checkpoint of dp=2 resumes under dp=4 without ZeRO (same TP pieces): the
    # optimizer state is put back together from the DP ranks' flat slices; the run then follows
    # the single-process losses.
    step3 = os.path.join(resumed, "checkpoints", "step_00000003")
    if ok and not os.path.isdir(step3):
        check(False, f"{name}: the resumed run kept its step-3 checkpoint {step3} (needed for the reshard resume)")
        SUMMARY.append(("reshard resume", "no step-3 checkpoint FAIL"))
    elif not ok or llama_ref is None:
        check(False, "reshard resume: not tried, its inputs failed above")
        SUMMARY.append(("reshard resume", "not run FAIL"))
    else:
        moved = os.path.join(work, "resume_dp4")
        shutil.copytree(step3, os.path.join(moved, "checkpoints", "step_00000003"))
        with open(os.path.join(moved, "checkpoints", "latest"), "w") as f:
            f.write("step_00000003\n")
        if train("llama tp=2 pp=1 dp=4 resumed from tp=2 pp=2 dp=2 ZeRO-1", moved, prefix, "parallel-tiny.yaml",
                 NPROC, STEPS, layout_sets(2, 1, [])) is not None:
            got = step_losses(moved)
            worst = max(abs(got[s] - llama_ref[s]) / llama_ref[s] for s in range(4, STEPS + 1))
            check(sorted(got) == [4, 5, 6] and worst < 1e-4,
                  f"resume from tp=2 pp=2 dp=2 ZeRO-1 into tp=2 pp=1 dp=4 (pipeline stages merged, optimizer "
                  f"state regathered): steps 4-6 match one process (max rel diff {worst:.1e})")
            events = [r for r in read_metrics(moved) if r.get("event") == "resume" and "checkpoint" in r]
            check(len(events) == 1 and events[0]["step"] == 3 and sorted(got) == [4, 5, 6],
                  f"reshard resume: resumed from the step-3 checkpoint (resume events: {events})")

    # A sharded checkpoint (tp=2, pp=2, dp=2, ZeRO-1) is one model to `weft eval`, which puts the
    # pieces back together: the same loss as the single-process checkpoint of the same step.
    sharded = llama_dirs.get((tp, pp, tuple(extra)))
    if sharded and llama_ref is not None:
        def eval_loss(run_dir):
            out = weft("eval", "--checkpoint", os.path.join(run_dir, "checkpoints"), "--data", prefix,
                       "--max-batches", "4").stdout
            return float(re.search(r"eval_loss=([0-9.eE+-]+)", out).group(1))
        a, b = eval_loss(sharded), eval_loss(os.path.join(work, "llama_single"))
        check(abs(a - b) / b < 1e-4, f"weft eval of the {tp}x{pp}x{NPROC // (tp * pp)} ZeRO-1 checkpoint "
              f"equals the single-process one ({a:.6f} vs {b:.6f})")

    # Fine-tuning starts from a single-process checkpoint in any layout: each rank loads its
    # slice of the whole tensors (tp=4, pp=2 here).
    if llama_ref is not None:
        init = ["checkpoint.init_from=" + os.path.join(work, "llama_single", "checkpoints"), "optim.warmup_steps=0"]
        one = os.path.join(work, "finetune_single")
        eight = os.path.join(work, "finetune_tp4_pp2")
        if (train("fine-tune single process", one, prefix, "parallel-tiny.yaml", 1, 2, init) is not None and
                train("fine-tune tp=4 pp=2", eight, prefix, "parallel-tiny.yaml", NPROC, 2,
                      [*layout_sets(4, 2, []), *init]) is not None):
            a, b = step_losses(eight), step_losses(one)
            worst = max(abs(a[s] - b[s]) / b[s] for s in b)
            check(sorted(a) == sorted(b) and worst < 1e-4,
                  f"fine-tune from a single-process checkpoint: tp=4 pp=2 matches one process (max rel diff {worst:.1e})")

    report(SUMMARY, time.monotonic() - started)


if __name__ == "__main__":
    main()
