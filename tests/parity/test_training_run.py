"""End-to-end single-process training on a tiny Llama and GPT-2, against an independent trainer:
- parity: Weft's first steps (loss and grad norm at every step) equal a plain PyTorch loop over
  transformers' model built from Weft's exported step-0 weights, trained with torch.optim.AdamW,
  the documented LR schedule and clip_grad_norm_ on the very batches Weft read (once more with
  AdamW's eps = 1, where its step is nearly lr * gradient and a clipping error shows at once);
- the run directory holds config.yaml, metrics.jsonl (every documented field, with values that
  follow from the config) and tb/ event files TensorBoard's own reader reads back;
- exact resume, proven by the `resume` record at step K and the next step being K + 1 (a silent
  restart from step 0 would log the same losses), for a plain stop and for SIGTERM/SIGINT: the
  first signal finishes the step, checkpoints and exits 0; a second one kills at once;
- checkpoint.interval / checkpoint.keep leave exactly the newest `keep` step directories;
- fine-tuning (init_from) starts from the checkpoint's weights: its first loss is transformers'
  loss of the exported weights on the first batch;
- bf16 mixed precision trains with fp32 master weights and stays near the fp32 curve."""
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
import torch  # noqa: E402
import yaml  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from transformers import GPT2LMHeadModel, LlamaForCausalLM  # noqa: E402

from weft_test import (BUILD, WEFT, check, config, make_dataset, read_metrics, run, step_losses,  # noqa: E402
                       tmpdir, weft)

DATASET_TOOL = os.path.join(BUILD, "tests", "weft_dataset_tool")
STEPS = 12
PARITY_STEPS = 4


def train_args(cfg, run_dir, *sets):
    # decay_steps pinned so that a run stopped at N follows the same schedule as the 2N run.
    args = ["train", "--config", config(cfg), "--set", "run.dir=" + run_dir, "--set", "data.prefix=" + PREFIX,
            "--set", f"optim.decay_steps={STEPS}"]
    for s in sets:
        args += ["--set", s]
    return args


def train(cfg, run_dir, *sets):
    return weft(*train_args(cfg, run_dir, *sets))


def step_records(run_dir):
    return [r for r in read_metrics(run_dir) if "event" not in r]


# ---------------------------------------------------------------------------------------------
# The independent reference: transformers + torch.optim.AdamW on the batches Weft read.

def corpus_stream(text_path, first_doc, end_doc):
    """Token stream of documents [first_doc, end_doc) rebuilt from the text (byte tokenizer)."""
    with open(text_path, encoding="utf-8") as f:
        docs = [d.strip() for d in f.read().split("\n\n") if d.strip()]
    stream = []
    for d in docs[first_doc:end_doc]:
        stream += list(d.encode()) + [256]
    return stream


def corpus_windows(text_path, seq_len, train_docs):
    """The train split's seq_len + 1 windows at multiples of seq_len, from the text."""
    stream = corpus_stream(text_path, 0, train_docs)
    n = (len(stream) - 1) // seq_len
    return {tuple(stream[k * seq_len:k * seq_len + seq_len + 1]) for k in range(n)}


def weft_batches(cfg, sets, count):
    """The first `count` training samples in the order the trainer takes them (one DP rank)."""
    args = [DATASET_TOOL, "samples", config(cfg), "0", str(count), "data.prefix=" + PREFIX,
            f"optim.decay_steps={STEPS}", *sets]
    return torch.tensor(json.loads(run(args).stdout))


def optim_config(c):
    """optim.* of a resolved config.yaml with numbers as numbers (PyYAML reads 1e-8 as text)."""
    return {k: (v if k == "decay" else float(v)) for k, v in c["optim"].items() if not isinstance(v, bool)}


def learning_rate(o, step, steps):
    """The schedule as README documents it: linear warmup lr*(step+1)/W, then cosine or linear to
    min_lr at decay_steps (0 = train.steps), constant after."""
    w = int(o["warmup_steps"])
    if step < w:
        return o["lr"] * (step + 1) / w
    span = int(o["decay_steps"]) or steps
    p = min(max((step - w) / max(1, span - w), 0.0), 1.0)
    if o["decay"] == "cosine":
        return o["min_lr"] + (o["lr"] - o["min_lr"]) * 0.5 * (1 + math.cos(math.pi * p))
    if o["decay"] == "linear":
        return o["lr"] - (o["lr"] - o["min_lr"]) * p
    return o["lr"]


def hf_model(hf_dir, family):
    cls = LlamaForCausalLM if family == "llama" else GPT2LMHeadModel
    return cls.from_pretrained(hf_dir, dtype=torch.float32).eval()  # eval: no dropout


def hf_loss(model, batch):
    """Mean next-token cross-entropy of (B, T+1) tokens, as transformers' logits give it."""
    logits = model(input_ids=batch[:, :-1]).logits
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))


def reference_run(hf_dir, cfg_yaml, batches, steps):
    """[(loss, grad_norm, lr)] per step of a plain PyTorch loop with Weft's hyper-parameters."""
    with open(cfg_yaml) as f:
        c = yaml.safe_load(f)
    o, t = optim_config(c), c["train"]
    model = hf_model(hf_dir, c["model"]["family"])
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "norm" in n or ".ln_" in n]
    decay = [p for n, p in model.named_parameters() if all(p is not q for q in no_decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": o["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"])
    gbs, mbs = t["global_batch_size"], t["micro_batch_size"]
    out = []
    for s in range(steps):
        lr = learning_rate(o, s, t["steps"])
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for m in range(gbs // mbs):
            loss = hf_loss(model, batches[s * gbs + m * mbs:s * gbs + (m + 1) * mbs])
            (loss / (gbs // mbs)).backward()
            total += loss.item()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), o["clip_grad"]).item()
        opt.step()
        out.append((total / (gbs // mbs), norm, lr))
    return out


def rel(a, b):
    return abs(a - b) / abs(b)


def parity(cfg, work, tag="", sets=()):
    """Weft's first PARITY_STEPS steps (with --set `sets`) against the reference loop; returns
    (hf_dir, batches)."""
    name = cfg.split(".")[0] + tag
    # lr = 0 for one step leaves the weights as initialised (AdamW moves them by lr * ...): the
    # step-1 checkpoint holds the step-0 model.
    init = os.path.join(work, name + "_init")
    train(cfg, init, "train.steps=1", "optim.lr=0", "optim.min_lr=0")
    hf_dir = os.path.join(work, name + "_init_hf")
    weft("convert", "--from", "ckpt:" + init, "--to", "hf:" + hf_dir)

    run_dir = os.path.join(work, name + "_parity")
    train(cfg, run_dir, f"train.steps={PARITY_STEPS}", *sets)
    with open(os.path.join(run_dir, "config.yaml")) as f:
        t = yaml.safe_load(f)["train"]
    batches = weft_batches(cfg, [f"train.steps={PARITY_STEPS}", *sets], PARITY_STEPS * t["global_batch_size"])
    windows = corpus_windows(PREFIX + "_text", t["seq_len"], train_docs=round(0.9 * DOCS))
    check(batches.shape == (PARITY_STEPS * t["global_batch_size"], t["seq_len"] + 1) and
          all(tuple(b.tolist()) in windows for b in batches),
          f"{name}: the {len(batches)} samples Weft trains on are seq_len+1 windows of the corpus text")

    ref = reference_run(hf_dir, os.path.join(run_dir, "config.yaml"), batches, PARITY_STEPS)
    got = step_records(run_dir)
    check([r["step"] for r in got] == list(range(1, PARITY_STEPS + 1)), f"{name}: steps 1..{PARITY_STEPS} logged")
    for (loss, norm, lr), r in zip(ref, got):
        # Step 1: same weights, same batch: only summation order differs. Later steps: AdamW's
        # division by sqrt(v) amplifies those last-bit differences a little.
        tol = 1e-5 if r["step"] == 1 else 1e-4
        check(rel(r["loss"], loss) < tol and rel(r["grad_norm"], norm) < tol and rel(r["lr"], lr) < 1e-12,
              f"{name} step {r['step']}: loss {r['loss']:.7f} vs transformers {loss:.7f} (rel {rel(r['loss'], loss):.1e}), "
              f"grad_norm {r['grad_norm']:.7f} vs {norm:.7f} (rel {rel(r['grad_norm'], norm):.1e}), lr {r['lr']:.4e}")
    return hf_dir, batches


# ---------------------------------------------------------------------------------------------
# Run directory contract.

STEP_FIELDS = {"step", "loss", "lr", "grad_norm", "tokens_per_sec", "mfu", "step_ms", "consumed_samples",
               "peak_rss_mb"}


def progress_lines(name, stdout, run_dir):
    """The console's progress line per step carries the step's metrics.jsonl values."""
    pat = re.compile(r"^step (\d+)/(\d+) \| loss ([0-9.]+) \| lr ([0-9.e+-]+) \| grad_norm ([0-9.]+) \| "
                     r"(\d+) tok/s \| MFU ([0-9.]+)% \| ETA \d+m\d\ds$")
    lines = {int(m.group(1)): m for m in map(pat.match, stdout.splitlines()) if m}
    recs = step_records(run_dir)
    ok = sorted(lines) == [r["step"] for r in recs] and all(
        lines[r["step"]].group(3) == f"{r['loss']:.4f}" and lines[r["step"]].group(4) == f"{r['lr']:.3e}" and
        lines[r["step"]].group(5) == f"{r['grad_norm']:.3f}" and lines[r["step"]].group(6) == f"{r['tokens_per_sec']:.0f}"
        and lines[r["step"]].group(7) == f"{100 * r['mfu']:.1f}" for r in recs)
    check(ok, f"{name}: one progress line per step with step, loss, lr, grad norm, tokens/s, MFU and ETA "
              f"matching metrics.jsonl ({stdout.splitlines()[:1]})")


def run_dir_contract(name, cfg, run_dir):
    for f in ("config.yaml", "metrics.jsonl", "tb", "checkpoints/latest"):
        check(os.path.exists(os.path.join(run_dir, f)), f"{name}: run dir has {f}")
    with open(os.path.join(run_dir, "config.yaml")) as f:
        c = yaml.safe_load(f)
    t = c["train"]
    steps = step_records(run_dir)
    # One process: exactly the documented fields (dp_wait_ms only with dp > 1, pipeline_bubble
    # only with pp > 1).
    check(all(set(r) == STEP_FIELDS for r in steps), f"{name}: every step record has exactly {sorted(STEP_FIELDS)}")
    check([r["step"] for r in steps] == list(range(1, t["steps"] + 1)), f"{name}: one record per step")
    check(all(r["consumed_samples"] == r["step"] * t["global_batch_size"] for r in steps),
          f"{name}: consumed_samples = step x global_batch_size")
    check(all(rel(r["lr"], learning_rate(optim_config(c), r["step"] - 1, t["steps"])) < 1e-12 for r in steps),
          f"{name}: lr follows the documented warmup + cosine schedule")
    tokens = t["global_batch_size"] * t["seq_len"]
    check(all(rel(r["tokens_per_sec"] * r["step_ms"] / 1e3, tokens) < 1e-9 for r in steps),
          f"{name}: tokens_per_sec x step_ms = {tokens} tokens per step")
    plan = weft("plan", "--config", config(cfg)).stdout
    fpt = float(next(l for l in plan.splitlines() if l.startswith("flops_per_token=")).split("=")[1])
    peak = c["run"]["peak_tflops"] * 1e12
    check(all(rel(r["mfu"], r["tokens_per_sec"] * fpt / peak) < 1e-3 for r in steps),
          f"{name}: mfu = tokens_per_sec x flops_per_token ({fpt:.4g}, weft plan) / run.peak_tflops")
    check(all(r["peak_rss_mb"] > 1 and r["step_ms"] > 0 for r in steps), f"{name}: peak_rss_mb and step_ms recorded")

    events = [r for r in read_metrics(run_dir) if "event" in r]
    ckpts = [r for r in events if r["event"] == "checkpoint"]
    check([r["step"] for r in ckpts] == [t["steps"]] and {"step", "blocking_ms", "total_ms", "bytes"} <= ckpts[0].keys(),
          f"{name}: one checkpoint event, at the last step (checkpoint.interval 0)")
    step_dir = os.path.join(run_dir, "checkpoints", f"step_{t['steps']:08d}")
    on_disk = sum(os.path.getsize(os.path.join(step_dir, f)) for f in os.listdir(step_dir))  # manifest too
    check(ckpts[0]["bytes"] == on_disk, f"{name}: checkpoint event bytes {ckpts[0]['bytes']} = the files' sizes {on_disk}")
    evals = [r for r in events if r["event"] == "eval"]
    check([r["step"] for r in evals] == list(range(t["eval_interval"], t["steps"] + 1, t["eval_interval"])) and
          all(r["loss"] > 0 for r in evals), f"{name}: validation loss at steps {[r['step'] for r in evals]}")

    acc = EventAccumulator(os.path.join(run_dir, "tb"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    check("train/loss" in tags and "train/lr" in tags, f"{name}: TensorBoard reader sees scalars {sorted(tags)[:4]}...")
    tb = {e.step: e.value for e in acc.Scalars("train/loss")}
    worst = max(rel(tb[r["step"]], r["loss"]) for r in steps)
    check(len(tb) == len(steps) and worst < 1e-6, f"{name}: TensorBoard train/loss equals metrics.jsonl at {len(tb)} steps")


def check_resumed(name, run_dir, k, straight, last=STEPS):
    """The run resumed from step k: one resume record with step k after the first run's steps
    1..k, then steps k+1..last, with the straight run's losses bit for bit."""
    recs = read_metrics(run_dir)
    at = [i for i, r in enumerate(recs) if r.get("event") == "resume" and "checkpoint" in r]
    check(len(at) == 1 and recs[at[0]]["step"] == k, f"{name}: one resume record, at step {k} ({[recs[i] for i in at]})")
    before = [r["step"] for r in recs[:at[0]] if "event" not in r] if at else []
    after = [r for r in recs[at[0] + 1:] if "event" not in r] if at else []
    check(before == list(range(1, k + 1)) and [r["step"] for r in after] == list(range(k + 1, last + 1)),
          f"{name}: steps 1..{k} before the resume record, {k + 1}..{last} after it "
          f"(after: {[r['step'] for r in after][:3]}...)")
    check(all(r["loss"] == straight[r["step"]] for r in after),
          f"{name}: resumed losses are bitwise those of the straight run")


def complete_checkpoints(run_dir):
    root = os.path.join(run_dir, "checkpoints")
    return sorted(d for d in os.listdir(root) if d.startswith("step_") and
                  os.path.exists(os.path.join(root, d, "manifest.json")))


def latest(run_dir):
    with open(os.path.join(run_dir, "checkpoints", "latest")) as f:
        return f.read().strip()


def wait_for_step(proc, run_dir, step):
    """Polls metrics.jsonl until `step` is logged, then freezes the trainer (SIGSTOP) so the
    test decides where it is interrupted; a hang guard, not a timing assertion."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.exists(os.path.join(run_dir, "metrics.jsonl")) and max(step_losses(run_dir), default=0) >= step:
            proc.send_signal(signal.SIGSTOP)
            return
        time.sleep(0.01)
    proc.kill()
    raise SystemExit(f"FAIL: the run never logged step {step} (exit {proc.poll()})")


def interrupted(sig, work, straight):
    """One signal: the step in flight finishes, a checkpoint of that step is committed, exit 0;
    re-running resumes from it."""
    name = f"{signal.Signals(sig).name}"
    run_dir = os.path.join(work, name.lower())
    proc = subprocess.Popen([WEFT, *train_args("llama-tiny.yaml", run_dir, f"train.steps={STEPS}", "train.eval_interval=6")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_step(proc, run_dir, 3)
    proc.send_signal(sig)
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=300)
    k = max(step_losses(run_dir))
    ckpt = [r["step"] for r in read_metrics(run_dir) if r.get("event") == "checkpoint"]
    check(proc.returncode == 0 and f"stopped at step {k}," in out and k < STEPS,
          f"{name}: exit {proc.returncode}, stopped at step {k} ({out.strip().splitlines()[-1:]}{err[-300:]})")
    check(latest(run_dir) == f"step_{k:08d}" and complete_checkpoints(run_dir) == [f"step_{k:08d}"] and ckpt == [k],
          f"{name}: the step-{k} checkpoint is committed and latest")
    train("llama-tiny.yaml", run_dir, f"train.steps={STEPS}", "train.eval_interval=6")
    check_resumed(name + " + resume", run_dir, k, straight)


def second_signal(work):
    """A second SIGINT while the first is being honoured kills the trainer at once (non-zero);
    the newest complete checkpoint is still one resume accepts."""
    run_dir = os.path.join(work, "second_signal")
    # Larger steps so the trainer is still mid-step when the second signal comes.
    sets = ["train.steps=40", "train.global_batch_size=32", "train.micro_batch_size=8", "train.seq_len=64",
            "checkpoint.interval=2", "checkpoint.keep=2"]
    proc = subprocess.Popen([WEFT, *train_args("llama-tiny.yaml", run_dir, *sets)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_step(proc, run_dir, 3)  # so the step-2 checkpoint is committed
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGCONT)  # the pending SIGINT is handled as the trainer resumes
    mask = 1 << (signal.SIGINT - 1)
    while proc.poll() is None:  # the handler restores SIG_DFL: SigCgt loses SIGINT
        with open(f"/proc/{proc.pid}/status") as f:
            caught = int(next(l for l in f if l.startswith("SigCgt:")).split()[1], 16)
        if not caught & mask:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    k = max(step_losses(run_dir))
    check(proc.returncode == -signal.SIGINT and "stopped at step" not in out,
          f"second SIGINT: killed at once by the signal (exit {proc.returncode}, last logged step {k})")
    done = complete_checkpoints(run_dir)
    check(done and latest(run_dir) == done[-1] and int(done[-1][5:]) <= k,
          f"second SIGINT: latest names the newest complete checkpoint {done[-1:]} (no half-written one)")
    if not done:
        return
    # Resume one step past it: the killed run's log has that step's loss when it got that far.
    d = int(done[-1][5:])
    killed = step_losses(run_dir)
    weft(*train_args("llama-tiny.yaml", run_dir, f"train.steps={d + 1}", *sets[1:]))
    recs = read_metrics(run_dir)
    at = max(i for i, r in enumerate(recs) if r.get("event") == "resume" and "checkpoint" in r) if any(
        r.get("event") == "resume" and "checkpoint" in r for r in recs) else None
    after = [r for r in recs[at + 1:] if "event" not in r] if at is not None else []
    check(at is not None and recs[at]["step"] == d and [r["step"] for r in after] == [d + 1] and
          (d + 1 not in killed or after[0]["loss"] == killed[d + 1]),
          f"second SIGINT: re-running resumes from step {d}, next step {d + 1} with the killed run's loss")


def interval_and_keep(work):
    run_dir = os.path.join(work, "interval_keep")
    train("llama-tiny.yaml", run_dir, "train.steps=7", "checkpoint.interval=2", "checkpoint.keep=2")
    ckpt = [r["step"] for r in read_metrics(run_dir) if r.get("event") == "checkpoint"]
    left = sorted(os.listdir(os.path.join(run_dir, "checkpoints")))
    check(ckpt == [2, 4, 6, 7], f"checkpoint.interval=2 over 7 steps checkpoints at steps 2, 4, 6 and the end: {ckpt}")
    check(left == ["latest", "step_00000006", "step_00000007"] and latest(run_dir) == "step_00000007",
          f"checkpoint.keep=2 leaves exactly the newest two: {left}")


def main():
    global PREFIX, DOCS
    work = tmpdir("train")
    DOCS = 120
    PREFIX = make_dataset(work, documents=DOCS)
    os.replace(os.path.join(work, "corpus.txt"), PREFIX + "_text")

    # Clipping first: AdamW divides by sqrt(v), so a gradient scaled by a clip coefficient moves
    # the weights almost as far as an unclipped one, and a wrong coefficient shows only a few
    # steps later. With eps = 1 (far above every |gradient| element) AdamW's step is nearly
    # lr * gradient, so the coefficient shows in the very next loss.
    parity("llama-tiny.yaml", work, "_sgdlike", ["optim.eps=1", "optim.lr=1", "optim.warmup_steps=0",
                                                 "optim.clip_grad=0.5"])
    hf = {}
    for cfg in ("llama-tiny.yaml", "gpt2-tiny.yaml"):
        hf[cfg] = parity(cfg, work)

    straights = {}
    for cfg in ("llama-tiny.yaml", "gpt2-tiny.yaml"):
        name = cfg.split(".")[0]
        straight = os.path.join(work, name + "_straight")
        p = train(cfg, straight, f"train.steps={STEPS}", "train.eval_interval=6")
        run_dir_contract(name, cfg, straight)
        progress_lines(name, p.stdout, straight)
        losses = straights[cfg] = step_losses(straight)

        resumed = os.path.join(work, name + "_resumed")
        train(cfg, resumed, "train.steps=6")
        train(cfg, resumed, f"train.steps={STEPS}")
        check_resumed(f"{name}: 6 steps + resume to {STEPS}", resumed, 6, losses)

    # Fine-tuning: weights from the finished run, step/optimizer/data fresh: step 1's loss is the
    # finished model's loss on the first batch, as transformers computes it.
    tuned = os.path.join(work, "finetune")
    done = os.path.join(work, "llama-tiny_straight")
    train("llama-tiny.yaml", tuned, "train.steps=2", "checkpoint.init_from=" + done)
    done_hf = os.path.join(work, "llama-tiny_straight_hf")
    weft("convert", "--from", "ckpt:" + done, "--to", "hf:" + done_hf)
    _, batches = hf["llama-tiny.yaml"]
    with torch.no_grad():
        model = hf_model(done_hf, "llama")
        first = sum(hf_loss(model, batches[m * 2:(m + 1) * 2]).item() for m in range(2)) / 2
        # The step-12 validation event used the final weights: eval_batches micro-batches of
        # the validation documents' windows, in order.
        cfg = yaml.safe_load(open(os.path.join(done, "config.yaml")))["train"]
        stream = corpus_stream(PREFIX + "_text", round(0.9 * DOCS), DOCS)
        T, n = cfg["seq_len"], cfg["eval_batches"] * cfg["micro_batch_size"]
        windows = torch.tensor([stream[k * T:k * T + T + 1] for k in range(n)])
        val = hf_loss(model, windows).item()
    got = [r["loss"] for r in read_metrics(done) if r.get("event") == "eval" and r["step"] == STEPS]
    check(len(windows) == n and got and rel(got[0], val) < 1e-5,
          f"validation loss at step {STEPS} {got} equals transformers' {val:.6f} on the validation windows")
    t = step_losses(tuned)
    events = [r for r in read_metrics(tuned) if r.get("event") == "init_from"]
    check(sorted(t) == [1, 2] and rel(t[1], first) < 1e-5 and len(events) == 1,
          f"fine-tune from a checkpoint starts at step 1 with the checkpoint's loss on the first batch "
          f"({t[1]:.6f} vs transformers {first:.6f})")

    # Re-running the fine-tuning command once its checkpoint.dir holds a checkpoint resumes it
    # (init_from only applies to a fresh checkpoint.dir).
    train("llama-tiny.yaml", tuned, "train.steps=3", "checkpoint.init_from=" + done)
    recs = read_metrics(tuned)
    at = [i for i, r in enumerate(recs) if r.get("event") == "resume" and "checkpoint" in r]
    after = [r["step"] for r in recs[at[0] + 1:] if "event" not in r] if at else []
    check(len(at) == 1 and recs[at[0]]["step"] == 2 and after == [3] and
          len([r for r in recs if r.get("event") == "init_from"]) == 1,
          f"re-running the fine-tuning command resumes it at step 2 instead of re-initialising ({after})")

    for sig in (signal.SIGTERM, signal.SIGINT):
        interrupted(sig, work, straights["llama-tiny.yaml"])
    second_signal(work)
    interval_and_keep(work)

    losses = straights["llama-tiny.yaml"]
    bf16 = os.path.join(work, "bf16")
    train("llama-tiny.yaml", bf16, f"train.steps={STEPS}", "precision=bf16")
    b = step_losses(bf16)
    worst = max(abs(b[s] - losses[s]) / losses[s] for s in range(1, STEPS + 1))
    check(0 < worst < 5e-2, f"bf16 computes in bf16 (not bitwise fp32) and tracks fp32 within 5% (max rel diff {worst:.2e})")


if __name__ == "__main__":
    main()
