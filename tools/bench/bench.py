"""make bench: Weft vs a plain PyTorch eager training loop (transformers' LlamaForCausalLM +
torch.optim.AdamW) on the same model, data, precision and thread count, measured side by side
in one run (interleaved repeats; this machine is shared and noisy). Prints tokens/s of each,
their ratio, and Weft's MFU against this machine's matmul peak measured through LibTorch."""
import argparse
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from benchutil import REPO, config_path, prepare_corpus, run_train, step_rows

MODEL = dict(family="llama", vocab_size=264, hidden_size=384, num_layers=8, num_heads=6, num_kv_heads=2,
             ffn_hidden_size=1024, max_seq_len=256, rope_theta=10000.0, norm_eps=1e-5, tie_embeddings=True)
TRAIN = dict(global_batch_size=16, micro_batch_size=8, seq_len=256)
OPTIM = dict(lr=1e-3, min_lr=1e-3, weight_decay=0.1, beta1=0.9, beta2=0.95, eps=1e-8, clip_grad=1.0, decay="constant")


def weft_run(build, work, prefix, precision, steps, threads, tag):
    run_dir = os.path.join(work, f"weft_{precision}_{tag}")
    sets = [f"model.{k}={v}" for k, v in MODEL.items()] + [f"train.{k}={v}" for k, v in TRAIN.items()]
    sets += [f"optim.{k}={v}" for k, v in OPTIM.items()]
    sets += [f"train.steps={steps}", f"train.threads={threads}", f"precision={precision}", "data.prefix=" + prefix,
             "run.peak_tflops=1", "run.tensorboard=false", "checkpoint.interval=0",
             "checkpoint.dir=" + os.path.join(run_dir, "ck"), "train.log_interval=1000"]
    return [r["tokens_per_sec"] for r in step_rows(run_train(build, run_dir, sets, f"weft {precision} {tag}"))]


def torch_run(prefix, precision, steps, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=MODEL["vocab_size"], hidden_size=MODEL["hidden_size"],
                      num_hidden_layers=MODEL["num_layers"], num_attention_heads=MODEL["num_heads"],
                      num_key_value_heads=MODEL["num_kv_heads"], intermediate_size=MODEL["ffn_hidden_size"],
                      max_position_embeddings=MODEL["max_seq_len"], rope_theta=MODEL["rope_theta"],
                      rms_norm_eps=MODEL["norm_eps"], tie_word_embeddings=MODEL["tie_embeddings"])
    model = LlamaForCausalLM(cfg).train()
    decay = [p for n, p in model.named_parameters() if not n.endswith("norm.weight")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("norm.weight")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": OPTIM["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=OPTIM["lr"], betas=(OPTIM["beta1"], OPTIM["beta2"]), eps=OPTIM["eps"])
    tokens = np.memmap(prefix + ".bin", dtype=np.uint16, mode="r")
    T, mbs, gbs = TRAIN["seq_len"], TRAIN["micro_batch_size"], TRAIN["global_batch_size"]
    n_samples = (len(tokens) - 1) // T
    rates, sample = [], 0
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        for _ in range(gbs // mbs):
            idx = [(sample + i) % n_samples for i in range(mbs)]
            sample += mbs
            batch = torch.from_numpy(np.stack([tokens[i * T:i * T + T + 1].astype(np.int64) for i in idx]))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = model(input_ids=batch[:, :-1]).logits
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)),
                                                     batch[:, 1:].reshape(-1))
            (loss / (gbs // mbs)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIM["clip_grad"])
        opt.step()
        rates.append(gbs * T / (time.perf_counter() - t0))
    return rates


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--baseline-build", help="another build of weft (e.g. an older commit) timed in the same run")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="weft_bench_")
    prefix = prepare_corpus(args.build, work, documents=3000, seed=1)
    peak_out = subprocess.run([os.path.join(args.build, "weft_matmul_peak"), str(args.threads), "3"],
                              check=True, capture_output=True, text=True).stdout
    peaks = {l.split("=")[0]: float(l.split("=")[1]) for l in peak_out.splitlines() if "_flops=" in l}
    plan = subprocess.run([os.path.join(args.build, "weft"), "plan", "--config", config_path("demo.yaml")]
                          + sum((["--set", f"model.{k}={v}"] for k, v in MODEL.items()), [])
                          + ["--set", f"train.seq_len={TRAIN['seq_len']}"], check=True, capture_output=True, text=True).stdout
    flops_per_token = float([l for l in plan.splitlines() if l.startswith("flops_per_token=")][0].split("=")[1])
    params = int([l for l in plan.splitlines() if l.startswith("parameters=")][0].split("=")[1])
    print(f"bench: Llama {params/1e6:.1f}M params, seq {TRAIN['seq_len']}, global batch {TRAIN['global_batch_size']}"
          f" (micro {TRAIN['micro_batch_size']}), {args.threads} threads, {args.steps} steps x {args.repeats} repeats"
          f" (first {args.warmup} steps of each run discarded)")
    results = {}
    for precision in args.precisions.split(","):
        w, t, b = [], [], []
        for r in range(args.repeats):  # interleaved so drift hits every side alike
            w += weft_run(args.build, work, prefix, precision, args.steps, args.threads, r)[args.warmup:]
            t += torch_run(prefix, precision, args.steps, args.threads)[args.warmup:]
            if args.baseline_build:
                b += weft_run(args.baseline_build, work, prefix, precision, args.steps, args.threads, f"base{r}")[args.warmup:]
        wm, tm = statistics.median(w), statistics.median(t)
        if b:
            bm = statistics.median(b)
            print(f"{precision}: weft {wm:,.0f} tok/s | baseline build {bm:,.0f} tok/s | ratio {wm / bm:.2f}x")
        peak = peaks[f"matmul_peak_{precision}_flops"]
        results[precision] = (wm, tm)
        print(f"{precision}: weft {wm:,.0f} tok/s | pytorch eager {tm:,.0f} tok/s | ratio {wm / tm:.2f}x"
              f" | weft MFU {100 * wm * flops_per_token / peak:.1f}% of measured {peak / 1e9:.1f} GFLOP/s matmul peak")
    print("bench: " + ", ".join(f"{p} ratio={w / t:.2f}" for p, (w, t) in results.items()))


if __name__ == "__main__":
    main()
