"""Opening a dataset costs O(1) in its size once its index cache is built (issue 9, item 4).

Two corpora of zero tokens (valid ids) in Megatron's indexed format, written cheaply: a sparse
.bin (truncate) and an .idx written with numpy. 1B: 1,000,000 documents of 1,000 tokens (a 2 GB
.bin). 1M: 1,000 documents of 1,000 tokens. `weft train` (llama-tiny, 2 steps) runs twice on
each (--verbose, to see the cache's log lines); the first run builds PREFIX.weft_cache/, the second
reads it.

- Each first run logs "built the data index cache for PREFIX"; no second run builds anything.
- The second run's peak RSS (metrics.jsonl peak_rss_mb) on the 1B corpus is within 10 % of the
  1M corpus's: before the cache, opening scanned every token through the mapping and held a
  prefix sum and a shuffle the size of the corpus, about 2 GB more for this one. Before each
  second run the corpus' and cache's pages are dropped from the page cache, as after a reboot
  or on another node: pages the first run left cached can sit in large folios that a newer
  kernel maps whole (2 MB each) on the first touch, which measures the page cache, not the open.
- Both second runs give the same losses as their first runs (samples do not depend on the cache).
- Two ranks (--nproc 2) opening a fresh copy of the 1M corpus at once build each cache entry
  once between them (the others wait on the cache's lock and read the entry).
Times are printed, never asserted."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
from weft_test import (check, config, drop_page_cache, read_metrics, run, step_losses, tmpdir, WEFT,  # noqa: E402
                       write_zero_corpus)

SEQ_LEN = 128  # the shuffle holds tokens / SEQ_LEN samples: 62 MB for the 1B corpus' first run


def train(prefix, run_dir, nproc=1):
    """One `weft train`; returns (seconds, peak RSS MB, losses, output)."""
    t0 = time.monotonic()
    p = run([WEFT, "train", "--verbose", "--nproc", str(nproc), "--config", config("llama-tiny.yaml"), "--set", "data.prefix=" + prefix,
             "--set", "run.dir=" + run_dir, "--set", "train.steps=2", "--set", f"model.max_seq_len={SEQ_LEN}",
             "--set", f"train.seq_len={SEQ_LEN}", "--set", "run.tensorboard=false"])
    seconds = time.monotonic() - t0
    peak = max(r["peak_rss_mb"] for r in read_metrics(run_dir) if "peak_rss_mb" in r)
    return seconds, peak, step_losses(run_dir), p.stdout + p.stderr


def main():
    work = tmpdir("startup")
    results = {}
    try:
        for name, documents in (("1M", 1000), ("1B", 1000 * 1000)):
            prefix = os.path.join(work, "corpus_" + name)
            tokens = write_zero_corpus(prefix, documents, 1000)
            first = train(prefix, os.path.join(work, "run_" + name + "_first"))
            drop_page_cache(prefix)
            second = train(prefix, os.path.join(work, "run_" + name + "_second"))
            results[name] = (first, second)
            print(f"{name} corpus ({tokens:,} tokens): first run {first[0]:.1f} s, peak RSS {first[1]:.0f} MB; "
                  f"second run {second[0]:.1f} s, peak RSS {second[1]:.0f} MB", flush=True)
            check("built the data index cache for " + prefix in first[3], f"{name}: the first run builds the cache")
            check("built the data index cache" not in second[3], f"{name}: the second run builds nothing")
            check(first[2] == second[2], f"{name}: the second run's losses equal the first's {first[2]}")
            # The 2 GB file goes as soon as it has been measured.
            os.remove(prefix + ".bin")
    finally:
        for name in ("1M", "1B"):
            path = os.path.join(work, f"corpus_{name}.bin")
            if os.path.exists(path):
                os.remove(path)
    prefix = os.path.join(work, "corpus_ranks")
    write_zero_corpus(prefix, 1000, 1000)
    out = train(prefix, os.path.join(work, "run_ranks"), nproc=2)[3]
    built = re.findall(r"built the data index cache for .*: (\S+)", out)
    check(len(built) == 3 and len(set(built)) == 3,
          f"two ranks opening one dataset build each of its 3 cache entries once between them: {built}")
    os.remove(prefix + ".bin")
    small, large = results["1M"][1][1], results["1B"][1][1]
    check(abs(large - small) <= 0.10 * small,
          f"second-run peak RSS of the 1B corpus ({large:.0f} MB) is within 10 % of the 1M corpus's ({small:.0f} MB)")


if __name__ == "__main__":
    main()
