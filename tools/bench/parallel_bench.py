"""make bench-parallel: three measurements of Weft's parallel runtime on this machine, each
variant run side by side in one invocation (interleaved repeats; the machine is shared and
noisy), read from metrics.jsonl (rank 0 writes what all ranks measured):

1. Data parallel, dp=2: exposed gradient communication (`dp_wait_ms`: time from the end of
   backward until every gradient is averaged) and step time, with gradient buckets reduced while
   backward runs vs one all-reduce of all gradients after backward.
2. Pipeline, pp=4 with 8 micro-batches: measured bubble (`pipeline_bubble`: 1 - compute summed
   over ranks / (ranks x the longest rank's schedule time)) for 1F1B and interleaved 1F1B
   (vpp=2) against the ideal (p-1)/(v m + p-1). Also pp=2, which fits this machine's 2 cores.
3. Memory: peak resident set size per rank (`peak_rss_mb`, max over ranks) of tp=2 x pp=2 x dp=2
   with ZeRO-1 vs one process, same model and global batch.

Steady-state figures are medians over the steps after --warmup, over all repeats."""
import argparse
import os
import tempfile

from benchutil import REPO, median, prepare_corpus, run_train, step_rows

# A Llama big enough that gradients (~60 MB) take real time to reduce over Gloo.
DP_MODEL = dict(vocab_size=264, hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=2,
                ffn_hidden_size=1408, max_seq_len=128)
PP_MODEL = dict(vocab_size=264, hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=2,
                ffn_hidden_size=1408, max_seq_len=128)
# Memory: a large vocabulary and hidden size so model state dominates the process baseline.
MEM_MODEL = dict(vocab_size=32000, hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=2,
                 ffn_hidden_size=1408, max_seq_len=128)
TINY_MODEL = dict(vocab_size=264, hidden_size=64, num_layers=1, num_heads=8, num_kv_heads=2,
                  ffn_hidden_size=128, max_seq_len=128)


def run(build, work, prefix, tag, model, nproc, sets, steps):
    run_dir = os.path.join(work, tag)
    all_sets = [f"model.{k}={v}" for k, v in model.items()] + [
        "data.prefix=" + prefix, "run.peak_tflops=1", "run.tensorboard=false",
        "checkpoint.interval=0", "checkpoint.dir=" + os.path.join(run_dir, "ck"), "train.log_interval=1000",
        "train.eval_interval=0", "train.threads=1", f"train.steps={steps}", "train.seq_len=128",
        "optim.warmup_steps=0", *sets]
    return step_rows(run_train(build, run_dir, all_sets, tag, nproc=nproc))


def steady(rows, key, warmup):
    return [r[key] for r in rows[warmup:] if key in r]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["dp", "pp", "mem"], action="append")
    a = ap.parse_args()
    which = a.only or ["dp", "pp", "mem"]
    work = tempfile.mkdtemp(prefix="weft_pbench_")
    prefix = prepare_corpus(a.build, work)

    if "dp" in which:
        variants = {
            "overlapped buckets (25 MB)": ["parallel.overlap_grad_reduce=true", "parallel.grad_bucket_mb=25"],
            "one all-reduce after backward": ["parallel.overlap_grad_reduce=false", "parallel.grad_bucket_mb=100000"],
        }
        got = {k: {"wait": [], "step": []} for k in variants}
        for r in range(a.repeats):
            for i, (name, sets) in enumerate(variants.items()):
                rows = run(a.build, work, prefix, f"dp_{r}_{i}", DP_MODEL, 2,
                           ["train.global_batch_size=16", "train.micro_batch_size=4", *sets], a.steps)
                got[name]["wait"] += steady(rows, "dp_wait_ms", a.warmup)
                got[name]["step"] += steady(rows, "step_ms", a.warmup)
        print("\n[1] data parallel dp=2 (Llama 8 x 512, fp32, gbs 16, mbs 4: 2 micro-batches per rank)")
        for name, v in got.items():
            print(f"  {name:32s} exposed comm {median(v['wait']):8.1f} ms   step {median(v['step']):8.1f} ms")
        o, b = (got[k] for k in variants)
        print(f"  exposed comm overlapped / after-backward = {median(o['wait']) / median(b['wait']):.2f}, "
              f"step time ratio = {median(o['step']) / median(b['step']):.2f}")

    if "pp" in which:
        print("\n[2] pipeline bubble, 8 micro-batches per step (Llama 8 x 512, fp32, mbs 2)")
        for pp in (4, 2):
            for vpp in (1, 2):
                ideal = (pp - 1) / (vpp * 8 + pp - 1)
                bubbles, steps = [], []
                for r in range(a.repeats):
                    rows = run(a.build, work, prefix, f"pp{pp}_v{vpp}_{r}", PP_MODEL, pp,
                               [f"parallel.pp={pp}", f"parallel.vpp={vpp}", "train.global_batch_size=16",
                                "train.micro_batch_size=2"], a.steps)
                    bubbles += steady(rows, "pipeline_bubble", a.warmup)
                    steps += steady(rows, "step_ms", a.warmup)
                name = "interleaved 1F1B (vpp=2)" if vpp > 1 else "1F1B"
                print(f"  pp={pp} {name:26s} measured bubble {100 * median(bubbles):5.1f} %   ideal "
                      f"{100 * ideal:5.1f} %   step {median(steps):7.1f} ms")

    if "mem" in which:
        print("\n[3] peak memory per rank (Llama 8 x 512, vocab 32000, fp32, gbs 8, mbs 2)")
        res = {}
        for r in range(a.repeats):
            for i, (name, nproc, sets) in enumerate((("one process", 1, []),
                                      ("tp=2 pp=2 dp=2 ZeRO-1", 8, ["parallel.tp=2", "parallel.pp=2", "parallel.zero=1"]),
                                      ("  + sequence parallel", 8, ["parallel.tp=2", "parallel.pp=2", "parallel.zero=1",
                                                                    "parallel.sequence_parallel=true"]))):
                rows = run(a.build, work, prefix, f"mem_{i}_{r}", MEM_MODEL, nproc,
                           ["train.global_batch_size=8", "train.micro_batch_size=2", *sets], 3)
                res.setdefault(name, []).append(max(r_["peak_rss_mb"] for r_ in rows))
        # What a process takes before any model: LibTorch, its CUDA libraries, Gloo, the data.
        base = median([max(r_["peak_rss_mb"] for r_ in run(a.build, work, prefix, f"mem_base_{r}", TINY_MODEL, 1,
                                                          ["train.global_batch_size=8", "train.micro_batch_size=2"], 3))
                       for r in range(a.repeats)])
        for name, v in res.items():
            print(f"  {name:24s} peak RSS per rank (max over ranks) {median(v):8.1f} MB")
        print(f"  {'process baseline':24s} (1 layer x 64, vocab 264)        {base:8.1f} MB")
        one = median(res["one process"])
        for name in list(res)[1:]:
            grid = median(res[name])
            print(f"  {name.strip()}: ratio to one process {grid / one:.2f}; above the baseline "
                  f"{(grid - base) / (one - base):.2f}")


if __name__ == "__main__":
    main()
