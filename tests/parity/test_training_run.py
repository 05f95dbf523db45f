"""End-to-end single-process training on a tiny Llama and GPT-2:
- the run directory holds config.yaml, metrics.jsonl (required fields) and tb/ event files that
  TensorBoard's own reader reads back with the same values;
- the loss falls;
- exact resume: N steps, stop, resume to 2N gives losses bitwise equal to 2N straight, also when
  the run is interrupted by SIGTERM mid-way;
- bf16 mixed precision trains with fp32 master weights and stays near the fp32 curve."""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from weft_test import WEFT, check, config, make_dataset, read_metrics, step_losses, tmpdir, weft  # noqa: E402


def train(cfg, run_dir, *sets, ckpt=None):
    # decay_steps pinned so that a run stopped at N follows the same schedule as the 2N run.
    args = ["train", "--config", config(cfg), "--set", "run.dir=" + run_dir, "--set", "data.prefix=" + PREFIX,
            "--set", "optim.decay_steps=12"]
    if ckpt:
        args += ["--set", "checkpoint.dir=" + ckpt]
    for s in sets:
        args += ["--set", s]
    return weft(*args)


def run_dir_contract(name, run_dir):
    for f in ("config.yaml", "metrics.jsonl", "tb", "checkpoints/latest"):
        check(os.path.exists(os.path.join(run_dir, f)), f"{name}: run dir has {f}")
    steps = [r for r in read_metrics(run_dir) if "event" not in r]
    need = {"step", "loss", "lr", "grad_norm", "tokens_per_sec", "consumed_samples"}
    check(all(need <= r.keys() for r in steps), f"{name}: every metrics.jsonl step record has {sorted(need)}")
    ckpts = [r for r in read_metrics(run_dir) if r.get("event") == "checkpoint"]
    check(ckpts and {"step", "blocking_ms", "total_ms", "bytes"} <= ckpts[-1].keys(), f"{name}: checkpoint events recorded")
    acc = EventAccumulator(os.path.join(run_dir, "tb"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    check("train/loss" in tags and "train/lr" in tags, f"{name}: TensorBoard reader sees scalars {sorted(tags)[:4]}...")
    tb = {e.step: e.value for e in acc.Scalars("train/loss")}
    worst = max(abs(tb[r["step"]] - r["loss"]) / abs(r["loss"]) for r in steps)
    check(len(tb) == len(steps) and worst < 1e-6, f"{name}: TensorBoard train/loss equals metrics.jsonl at {len(tb)} steps")
    return steps


def main():
    global PREFIX
    work = tmpdir("train")
    PREFIX = make_dataset(work, documents=120)

    for cfg in ("llama-tiny.yaml", "gpt2-tiny.yaml"):
        name = cfg.split(".")[0]
        straight = os.path.join(work, name + "_straight")
        train(cfg, straight, "train.steps=12", "train.eval_interval=6")
        steps = run_dir_contract(name, straight)
        losses = step_losses(straight)
        check(losses[12] < losses[1] - 0.3, f"{name}: loss falls {losses[1]:.3f} -> {losses[12]:.3f}")
        evals = [r for r in read_metrics(straight) if r.get("event") == "eval"]
        check(len(evals) == 2, f"{name}: validation loss at steps 6 and 12")

        resumed = os.path.join(work, name + "_resumed")
        train(cfg, resumed, "train.steps=6")
        train(cfg, resumed, "train.steps=12")
        again = step_losses(resumed)
        same = all(again[s] == losses[s] for s in range(1, 13))
        check(same, f"{name}: 6 + resume to 12 is bitwise equal to 12 straight "
                    f"({[(s, again[s], losses[s]) for s in range(7, 13) if again[s] != losses[s]][:2]})")

    # Fine-tuning: weights from the finished run, step/optimizer/data fresh.
    tuned = os.path.join(work, "finetune")
    scratch = step_losses(os.path.join(work, "llama-tiny_straight"))
    train("llama-tiny.yaml", tuned, "train.steps=2", "checkpoint.init_from=" + os.path.join(work, "llama-tiny_straight"))
    t = step_losses(tuned)
    check(sorted(t) == [1, 2] and t[1] < scratch[1] - 1.0,
          f"fine-tune from a checkpoint starts at step 1 with its loss ({t[1]:.3f} vs {scratch[1]:.3f} from scratch)")

    # Interrupted by SIGTERM: the trainer finishes its step, checkpoints, exits 0; resume continues
    # the same curve.
    name, straight = "llama-tiny", os.path.join(work, "llama-tiny_straight")
    losses = step_losses(straight)
    killed = os.path.join(work, "sigterm")
    args = [WEFT, "train", "--config", config("llama-tiny.yaml"), "--set", "run.dir=" + killed,
            "--set", "data.prefix=" + PREFIX, "--set", "train.steps=12", "--set", "train.eval_interval=6",
            "--set", "optim.decay_steps=12"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if os.path.exists(os.path.join(killed, "metrics.jsonl")) and len(step_losses(killed)) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    stopped_at = max(step_losses(killed))
    check(proc.returncode == 0 and "stopped" in out, f"SIGTERM: stopped cleanly at step {stopped_at} with a checkpoint")
    train("llama-tiny.yaml", killed, "train.steps=12", "train.eval_interval=6")
    again = step_losses(killed)
    check(all(again[s] == losses[s] for s in range(1, 13)), "SIGTERM + resume is bitwise equal to the straight run")

    bf16 = os.path.join(work, "bf16")
    train("llama-tiny.yaml", bf16, "train.steps=12", "precision=bf16")
    b = step_losses(bf16)
    worst = max(abs(b[s] - losses[s]) / losses[s] for s in range(1, 13))
    check(0 < worst < 5e-2, f"bf16 computes in bf16 (not bitwise fp32) and tracks fp32 within 5% (max rel diff {worst:.2e})")


if __name__ == "__main__":
    main()
