"""A checkpoint loads into any parallel layout. With the fp32 Llama of configs/parallel-tiny.yaml,
the same seed and the same global batch (16 sequences in micro-batches of 2 under every layout, so
every layout trains on the same data in the same order), a checkpoint saved at step 3 under one
(tp, pp, dp) layout A, resumed under another layout B (`weft train --nproc tp*pp*dp`, Gloo) and
trained on to step 6 continues the uninterrupted one-process run: the resumed run records one
`resume` event at step 3, and its losses at steps 4-6 are within 1e-4 relative of the one-process
run's (the bound test_parallel_layouts holds layouts that never stopped to).

The gradient norm before clipping is checked too, since Adam and clipping make the loss nearly
blind to a wrongly scaled restore: within 5e-3 relative at steps 4-6 (the bound
test_parallel_layouts uses after step 1; the norm is sensitive to last-bit weight differences that
the loss barely shows, and A's step-3 weights differ from one process's in the last bits), and
within 1e-5 at step 4 where A is the one-process run itself (then B starts from exactly the
reference's weights and only summation order differs, as at step 1 of test_parallel_layouts).

Pairs A -> B (issue 8), with ZeRO-1 where listed; the gradient bucket size, which decides how
ZeRO-1 cuts the optimizer state into flat ranges, differs between A and B in pairs 2, 3 and 5 and
in the conversion below:
  (2,2,2)+ZeRO -> (1,1,1); (1,1,1) -> (2,2,2)+ZeRO; (2,1,4)+ZeRO -> (1,4,2) vpp 2;
  (1,2,4) -> (4,1,2); (2,2,1) -> (1,1,4)+ZeRO; (4,2,1) -> (2,1,4); and for the GPT-2 of
  configs/parallel-tiny-gpt2.yaml, whose embedding is tied across the first and last pipeline
  stage, (2,2,2)+ZeRO -> (1,4,2) vpp 2 + ZeRO; and across vocabulary paddings
  (model.make_vocab_size_divisible_by 1 <-> 128: the embedding and head gain or lose zero rows),
  (1,1,1) -> (2,2,2)+ZeRO padded and (2,2,2)+ZeRO padded -> (1,2,4).
The step-3 checkpoints of (1,1,1) and (2,2,2)+ZeRO come from 6-step runs (so they were written
while training went on), the others from runs that stop at step 3.

Also: the step-3 checkpoint of a straight 6-step (2,2,2)+ZeRO run, resumed under the same layout,
gives bitwise the straight run's losses and gradient norms at steps 4-6; `weft convert --from
ckpt:A --to ckpt:B --set parallel.tp=2 --set parallel.pp=2 --set parallel.zero=1` of the
(2,1,4)+ZeRO checkpoint writes a checkpoint whose manifest layout says tp=2, pp=2, with the rank
files a native run of that layout writes, and resuming from it follows one process as above;
`weft eval` of the (2,2,2)+ZeRO step-3 checkpoint equals that of the one-process step-3
checkpoint within 1e-5 relative.

Every case is tried and every failure reported (exit 1 at the end)."""
import json
import os
import re
import shutil
import sys
import time
from typing import NamedTuple

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
from weft_test import (error_line, expect, grad_norms, layout_sets, make_dataset, read_metrics, report,  # noqa: E402
                       step_losses, tmpdir, train, weft)

CFG = "parallel-tiny.yaml"  # optim.decay_steps=6: a run stopped at step 3 keeps the 6-step LR schedule
GPT2 = "parallel-tiny-gpt2.yaml"  # the same sizes, tied embeddings held by the first and last stage
STEPS = 6
SAVED = 3  # the step whose checkpoint is resumed
STEP_DIR = f"step_{SAVED:08d}"
LOSS_TOL = 1e-4
NORM_TOL, FIRST_NORM_TOL = 5e-3, 1e-5
EVAL_TOL = 1e-5
ZERO = "parallel.zero=1"
# 0.05 MiB = 13k floats: several buckets per rank (a rank holds at most 313k parameters); the
# default 25 MiB is one bucket.
SMALL_BUCKETS = "parallel.grad_bucket_mb=0.05"
PAD128 = "model.make_vocab_size_divisible_by=128"


class Layout(NamedTuple):
    tp: int
    pp: int
    dp: int
    extra: tuple = ()
    cfg: str = CFG

    @property
    def nproc(self):
        return self.tp * self.pp * self.dp

    def __str__(self):
        return (("gpt2 " if self.cfg == GPT2 else "") + f"({self.tp},{self.pp},{self.dp})" +
                "".join(" " + kv.removeprefix("parallel.") for kv in self.extra))

    def sets(self):
        return [*layout_sets(self.tp, self.pp, self.extra), f"checkpoint.interval={SAVED}"]


ONE = Layout(1, 1, 1)
STRAIGHT = Layout(2, 2, 2, (ZERO,))
PAIRS = [
    (STRAIGHT, ONE),
    (ONE, Layout(2, 2, 2, (ZERO, SMALL_BUCKETS))),
    (Layout(2, 1, 4, (ZERO, SMALL_BUCKETS)), Layout(1, 4, 2, ("parallel.vpp=2",))),
    (Layout(1, 2, 4), Layout(4, 1, 2)),
    (Layout(2, 2, 1), Layout(1, 1, 4, (ZERO, SMALL_BUCKETS))),
    (Layout(4, 2, 1), Layout(2, 1, 4)),
    # Another vocabulary padding (264 rows -> 384 and back): padding rows read as zero or dropped.
    (ONE, Layout(2, 2, 2, (ZERO, PAD128))),
    (Layout(2, 2, 2, (ZERO, PAD128)), Layout(1, 2, 4)),
    # Tied embeddings: the last stage's copy and its ZeRO-1 state are rebuilt from the first's.
    (Layout(2, 2, 2, (ZERO, SMALL_BUCKETS), GPT2), Layout(1, 4, 2, ("parallel.vpp=2", ZERO), GPT2)),
]
ONE_GPT2 = Layout(1, 1, 1, (), GPT2)
CONVERT_FROM = PAIRS[2][0]  # ZeRO-1 with small buckets -> ZeRO-1 with the default: new flat ranges
CONVERT_SETS = ["parallel.tp=2", "parallel.pp=2", "parallel.zero=1"]

SUMMARY = []


def dir_name(text):
    return re.sub(r"[^A-Za-z0-9=.-]+", "_", text).strip("_")


def train_layout(work, name, layout, steps, prefix):
    """Trains `layout` from scratch (or from what its run directory holds); returns the run dir or None."""
    run_dir = os.path.join(work, dir_name(name))
    return run_dir if train(name, run_dir, prefix, layout.cfg, layout.nproc, steps, layout.sets()) is not None else None


def saved_step(run_dir, name):
    """The run's step-3 checkpoint directory, or None after recording that it is missing."""
    step_dir = os.path.join(run_dir, "checkpoints", STEP_DIR)
    ok = expect(os.path.isfile(os.path.join(step_dir, "manifest.json")),
                f"{name}: wrote a complete step-{SAVED} checkpoint ({step_dir})")
    return step_dir if ok else None


def resume(work, name, step_dir, layout, prefix):
    """A fresh run whose checkpoint directory holds only a copy of `step_dir`, trained under
    `layout` to step 6; returns the run dir when it trained and resumed at step 3, else None."""
    run_dir = os.path.join(work, dir_name(name))
    ckpts = os.path.join(run_dir, "checkpoints")
    shutil.copytree(step_dir, os.path.join(ckpts, os.path.basename(step_dir)))
    with open(os.path.join(ckpts, "latest"), "w") as f:
        f.write(os.path.basename(step_dir) + "\n")
    if train(name, run_dir, prefix, layout.cfg, layout.nproc, STEPS, layout.sets()) is None:
        return None
    events = [r for r in read_metrics(run_dir) if r.get("event") == "resume" and "checkpoint" in r]
    steps = sorted(step_losses(run_dir))
    ok = expect(len(events) == 1 and events[0].get("step") == SAVED and steps == list(range(SAVED + 1, STEPS + 1)),
                f"{name}: resumed from the step-{SAVED} checkpoint and trained steps {SAVED + 1}-{STEPS} "
                f"(resume events: {events}; steps trained: {steps})")
    return run_dir if ok else None


def max_rel(got, want, steps):
    """(worst relative difference, its step) over `steps`; inf where a step is missing."""
    rel = {s: abs(got[s] - want[s]) / abs(want[s]) if s in got and s in want else float("inf") for s in steps}
    worst = max(rel, key=rel.get)
    return rel[worst], worst


def follows_reference(name, run_dir, ref_dir, same_weights):
    """Steps 4-6 of a resumed run against the one-process run's: loss within 1e-4, grad_norm
    within 5e-3 (1e-5 at step 4 when the resumed weights are the reference's own)."""
    resumed = range(SAVED + 1, STEPS + 1)
    got, want = step_losses(run_dir), step_losses(ref_dir)
    loss_rel, at = max_rel(got, want, resumed)
    ok = expect(loss_rel < LOSS_TOL, f"{name}: loss at steps {SAVED + 1}-{STEPS} within {LOSS_TOL:.0e} of one "
                f"process (max rel diff {loss_rel:.1e} at step {at}: {got.get(at)} vs {want.get(at)})")
    gn, gn_ref = grad_norms(run_dir), grad_norms(ref_dir)
    norm_rel, norm_at = max_rel(gn, gn_ref, resumed)
    ok &= expect(norm_rel < NORM_TOL, f"{name}: grad_norm at steps {SAVED + 1}-{STEPS} within {NORM_TOL:.0e} of "
                 f"one process (max rel diff {norm_rel:.1e} at step {norm_at})")
    if same_weights:
        first, _ = max_rel(gn, gn_ref, [SAVED + 1])
        ok &= expect(first < FIRST_NORM_TOL, f"{name}: grad_norm at step {SAVED + 1} (the reference's own step-"
                     f"{SAVED} weights) within {FIRST_NORM_TOL:.0e} of one process (rel diff {first:.1e})")
    SUMMARY.append((name, f"max rel diff loss {loss_rel:.1e}, grad_norm {norm_rel:.1e}" + ("" if ok else " FAIL")))


def reshard_pairs(work, prefix, refs, a_dirs):
    """Each pair: A's step-3 checkpoint resumed under B, against the one-process run of A's model."""
    for a, b in PAIRS:
        ref_dir = refs[a.cfg]
        name = f"{a} -> {b}"
        if a not in a_dirs:
            a_dirs[a] = train_layout(work, f"{a} to step {SAVED}", a, SAVED, prefix)
        step_dir = a_dirs[a] and saved_step(a_dirs[a], str(a))
        if not step_dir or not ref_dir:
            expect(False, f"{name}: not tried, {'the one-process run' if step_dir else 'layout ' + str(a)} failed")
            SUMMARY.append((name, "not run FAIL"))
            continue
        run_dir = resume(work, name, step_dir, b, prefix)
        if run_dir is None:
            SUMMARY.append((name, "resume failed FAIL"))
            continue
        follows_reference(name, run_dir, ref_dir, same_weights=a in (ONE, ONE_GPT2))


def loss_and_norm(run_dir):
    return {r["step"]: (r["loss"], r["grad_norm"]) for r in read_metrics(run_dir) if "event" not in r}


def same_layout_bitwise(work, prefix, straight_dir):
    """The straight run's own step-3 checkpoint resumed under its layout: bitwise its steps 4-6."""
    name = f"{STRAIGHT} -> same layout"
    step_dir = straight_dir and saved_step(straight_dir, str(STRAIGHT))
    run_dir = step_dir and resume(work, name, step_dir, STRAIGHT, prefix)
    if not run_dir:
        SUMMARY.append((name, "not run or resume failed FAIL"))
        return
    a, b = loss_and_norm(run_dir), loss_and_norm(straight_dir)
    differ = [s for s in range(SAVED + 1, STEPS + 1) if a.get(s) != b.get(s)]
    expect(not differ, f"{name}: (loss, grad_norm) at steps {SAVED + 1}-{STEPS} bitwise equal to the straight run"
           + (f" (differ at {[(s, a.get(s), b.get(s)) for s in differ]})" if differ else ""))
    SUMMARY.append((name, "bitwise equal" if not differ else f"differs at steps {differ} FAIL"))


def converted_step_dir(out):
    """The step directory `weft convert --to ckpt:OUT` wrote: OUT itself or the one OUT/latest names."""
    if os.path.isfile(os.path.join(out, "manifest.json")):
        return out
    latest = os.path.join(out, "latest")
    if os.path.isfile(latest):
        with open(latest) as f:
            step_dir = os.path.join(out, f.read().strip())
        if os.path.isfile(os.path.join(step_dir, "manifest.json")):
            return step_dir
    return None


def rank_files(step_dir):
    return sorted(f for f in os.listdir(step_dir) if re.fullmatch(r"(model|optim)\.rank\d{5}\.safetensors", f))


def convert_and_resume(work, prefix, ref_dir, a_dirs):
    """Offline conversion of A's step-3 checkpoint to tp=2 pp=2 ZeRO-1, then a resume from it."""
    name = f"convert {CONVERT_FROM} -> " + " ".join(kv.removeprefix("parallel.") for kv in CONVERT_SETS)
    source = a_dirs.get(CONVERT_FROM) and saved_step(a_dirs[CONVERT_FROM], str(CONVERT_FROM))
    if not source or not ref_dir:
        expect(False, f"{name}: not tried, its inputs failed above")
        SUMMARY.append((name, "not run FAIL"))
        return
    out = os.path.join(work, "converted")
    args = ["convert", "--from", "ckpt:" + source, "--to", "ckpt:" + out]
    for kv in CONVERT_SETS:
        args += ["--set", kv]
    p = weft(*args, check=False)
    step_dir = converted_step_dir(out) if p.returncode == 0 else None
    why = (f"exit {p.returncode}: {error_line(p)}" if p.returncode else
           f"no manifest.json in {out} or in the step directory its 'latest' names")
    if not expect(step_dir is not None, f"{name}: writes a checkpoint" + ("" if step_dir else f" ({why})")):
        SUMMARY.append((name, "convert failed FAIL"))
        return
    with open(os.path.join(step_dir, "manifest.json")) as f:
        layout = json.load(f).get("layout", {})
    dp = layout.get("dp")
    expect(layout.get("tp") == 2 and layout.get("pp") == 2 and isinstance(dp, int) and dp >= 1 and
           layout.get("zero", 1) == 1, f"{name}: manifest.json layout records tp=2 pp=2 (zero=1 if recorded): {layout}")
    dp = dp if isinstance(dp, int) and dp >= 1 else 1
    target = Layout(2, 2, dp, (ZERO,))
    files = rank_files(step_dir)
    if target.dp == STRAIGHT.dp and a_dirs.get(STRAIGHT):
        native = rank_files(os.path.join(a_dirs[STRAIGHT], "checkpoints", STEP_DIR))
        expect(files == native, f"{name}: has the rank files a native {target} run writes"
               + (f" (converted: {files}; native: {native})" if files != native else f" ({len(files)})"))
    else:  # a world size without a native run here: one model piece per (tp, pp), ZeRO state on every rank
        model_ranks = [int(f[10:15]) for f in files if f.startswith("model.")]
        optim_ranks = [int(f[10:15]) for f in files if f.startswith("optim.")]
        expect(len(model_ranks) == 4 and max(model_ranks, default=0) < target.nproc and
               optim_ranks == list(range(target.nproc)),
               f"{name}: model files for the 4 (tp, pp) pieces and optim files for all {target.nproc} ranks ({files})")
    run_dir = resume(work, f"{target} resumed from {name}", step_dir, target, prefix)
    if run_dir is None:
        SUMMARY.append((name, "resume failed FAIL"))
        return
    follows_reference(f"{target} resumed from {name}", run_dir, ref_dir, same_weights=False)


def eval_matches(prefix, ref_dir, straight_dir):
    """`weft eval` of the sharded ZeRO-1 step-3 checkpoint equals that of the one-process one."""
    losses = []
    for run_dir in (straight_dir, ref_dir):
        if not run_dir:
            break
        p = weft("eval", "--checkpoint", os.path.join(run_dir, "checkpoints", STEP_DIR), "--data", prefix,
                 "--max-batches", "4", check=False)
        m = re.search(r"eval_loss=([0-9.eE+-]+)", p.stdout)
        if not expect(p.returncode == 0 and m, f"weft eval of {run_dir}'s step-{SAVED} checkpoint prints eval_loss"
                      + (f" (exit {p.returncode}: {error_line(p)})" if p.returncode else "")):
            break
        losses.append(float(m.group(1)))
    if len(losses) < 2:
        SUMMARY.append(("weft eval", "not run FAIL"))
        return
    a, b = losses
    ok = expect(abs(a - b) / b < EVAL_TOL, f"weft eval of the {STRAIGHT} step-{SAVED} checkpoint equals the "
                f"one-process one within {EVAL_TOL:.0e} ({a:.7f} vs {b:.7f})")
    SUMMARY.append(("weft eval", f"rel diff {abs(a - b) / b:.1e}" + ("" if ok else " FAIL")))


def main():
    work = tmpdir("reshard")
    prefix = make_dataset(work, documents=200)
    started = time.monotonic()
    ref_dir = train_layout(work, f"{ONE} straight", ONE, STEPS, prefix)
    straight_dir = train_layout(work, f"{STRAIGHT} straight", STRAIGHT, STEPS, prefix)
    if ref_dir:
        expect(sorted(step_losses(ref_dir)) == list(range(1, STEPS + 1)), f"one process: steps 1-{STEPS} recorded")
    a_dirs = {ONE: ref_dir, STRAIGHT: straight_dir}  # layout -> run dir holding its step-3 checkpoint
    gpt2_ref = train_layout(work, f"{ONE_GPT2} straight", ONE_GPT2, STEPS, prefix)
    reshard_pairs(work, prefix, {CFG: ref_dir, GPT2: gpt2_ref}, a_dirs)
    same_layout_bitwise(work, prefix, straight_dir)
    convert_and_resume(work, prefix, ref_dir, a_dirs)
    eval_matches(prefix, ref_dir, straight_dir)
    report(SUMMARY, time.monotonic() - started)


if __name__ == "__main__":
    main()
