"""make bench-data: what opening a training dataset costs, 1B tokens against 1M, side by side.

Two corpora of zero tokens in Megatron's indexed format (sparse .bin, numpy-written .idx; see
write_zero_corpus): 1B = 1,000,000 documents of 1,000 tokens, 1M = 1,000 of them. For each, in
one invocation, interleaved:
- build: `weft train` (llama-tiny, 2 steps) on a dataset without PREFIX.weft_cache/: time from
  launch to the first metrics row (time to the first step), peak RSS (metrics.jsonl peak_rss_mb)
  and the one-time cache build (the sum of the "built the data index cache ... in X s" lines);
- cached: the same run again, the corpus' and cache's pages first dropped from the page cache
  (a restart on another node or after a reboot), --repeats times; medians.
The 2 GB sparse file takes no disk blocks and is removed at the end; the cache of the 1B corpus
holds a 62 MB shuffle (tokens / seq_len samples)."""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from benchutil import REPO, config_path, median, read_metrics, train_command

sys.path.insert(0, os.path.join(REPO, "tests", "pyutil"))
from weft_test import drop_page_cache, write_zero_corpus  # noqa: E402

POLL_S = 0.005
BUILT = re.compile(r"built the data index cache for .* in ([0-9.]+) s")


def timed_train(build, prefix, run_dir, seq_len):
    """Runs `weft train`; returns (seconds to the first metrics row, peak RSS MB, build seconds)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    sets = ["data.prefix=" + prefix, "run.dir=" + run_dir, "train.steps=2", f"model.max_seq_len={seq_len}",
            f"train.seq_len={seq_len}", "run.tensorboard=false"]
    cmd = train_command(build, config_path("llama-tiny.yaml"), sets)
    cmd.insert(2, "--verbose")  # the cache's build lines are INFO
    metrics = os.path.join(run_dir, "metrics.jsonl")
    t0 = time.monotonic()
    with tempfile.TemporaryFile("w+") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
        first = None
        while p.poll() is None:
            if first is None and os.path.exists(metrics) and os.path.getsize(metrics) > 0:
                first = time.monotonic() - t0
            time.sleep(POLL_S)
        out.seek(0)
        log = out.read()
    if p.returncode != 0:
        sys.exit(f"weft train on {prefix} failed ({p.returncode}):\n{log[-2000:]}")
    if first is None:
        first = time.monotonic() - t0
    peak = max(r["peak_rss_mb"] for r in read_metrics(run_dir) if "peak_rss_mb" in r)
    return first, peak, sum(float(m) for m in BUILT.findall(log))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--work", default=None, help="directory for the corpora (default: a temporary one)")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="weft_bench_data_", dir=a.work)
    corpora = {"1M": 1000, "1B": 1000 * 1000}
    try:
        prefixes = {}
        for name, docs in corpora.items():
            prefixes[name] = os.path.join(work, "corpus_" + name)
            write_zero_corpus(prefixes[name], docs, 1000)
        built, cached = {}, {n: [] for n in corpora}
        for name in corpora:
            built[name] = timed_train(a.build, prefixes[name], os.path.join(work, "run"), a.seq_len)
        for _ in range(a.repeats):
            for name in corpora:
                drop_page_cache(prefixes[name])
                cached[name].append(timed_train(a.build, prefixes[name], os.path.join(work, "run"), a.seq_len))
        print(f"weft train, llama-tiny, 2 steps, seq_len {a.seq_len}; cached = median of {a.repeats}, cold page cache")
        print(f"{'corpus':>8} {'build: first step s':>20} {'peak RSS MB':>12} {'cache build s':>14} "
              f"{'cached: first step s':>21} {'peak RSS MB':>12}")
        for name in corpora:
            first, peak, build_s = built[name]
            c_first = median([c[0] for c in cached[name]])
            c_peak = median([c[1] for c in cached[name]])
            print(f"{name:>8} {first:20.2f} {peak:12.0f} {build_s:14.2f} {c_first:21.2f} {c_peak:12.0f}")
        ratio = median([c[1] for c in cached["1B"]]) / median([c[1] for c in cached["1M"]])
        print(f"cached peak RSS, 1B / 1M: {ratio:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
