"""Shared helpers for Weft's Python tests: where the binaries are, running them, small corpora."""
import atexit
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("WEFT_BUILD_DIR", os.path.join(REPO, "build"))
WEFT = os.path.join(BUILD, "weft")
MODEL_TOOL = os.path.join(BUILD, "tests", "weft_model_tool")


def run(args, check=True, env=None, timeout=600, cwd=None):
    """Runs a command, returns CompletedProcess; on unexpected failure prints its output."""
    full_env = dict(os.environ, **(env or {}))
    p = subprocess.run(args, capture_output=True, text=True, errors="replace", env=full_env, timeout=timeout,
                       cwd=cwd)
    if check and p.returncode != 0:
        sys.stderr.write(f"command failed ({p.returncode}): {' '.join(args)}\n{p.stdout}\n{p.stderr}\n")
        raise SystemExit(1)
    return p


def weft(*args, check=True, timeout=600):
    return run([WEFT, *args], check=check, timeout=timeout)


_TMPDIRS = []
_FAILED = False


def _note_failure():
    global _FAILED
    _FAILED = True


def _remove_tmpdirs():
    """At exit: a passing script's directories go (checkpoints are gigabytes); a failing one's
    stay for inspection, and WEFT_KEEP_TMP=1 keeps them always."""
    if _FAILED or os.environ.get("WEFT_KEEP_TMP"):
        return
    for d in _TMPDIRS:
        shutil.rmtree(d, ignore_errors=True)


def _excepthook(kind, value, tb, original=sys.excepthook):
    _note_failure()
    original(kind, value, tb)


sys.excepthook = _excepthook
atexit.register(_remove_tmpdirs)


def tmpdir(prefix):
    d = tempfile.mkdtemp(prefix=f"weft_{prefix}_")
    _TMPDIRS.append(d)
    return d


WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly judge "
         "boxing matches in old towns and rivers run to the sea under bright stars").split()


def make_text(path, documents=60, seed=0):
    """A small deterministic English-like corpus, documents separated by blank lines."""
    rng = random.Random(seed)
    docs = []
    for _ in range(documents):
        sentences = []
        for _ in range(rng.randint(2, 6)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 12))]
            sentences.append(" ".join(words).capitalize() + ".")
        docs.append(" ".join(sentences))
    with open(path, "w") as f:
        f.write("\n\n".join(docs) + "\n")
    return path


def make_dataset(directory, documents=60, seed=0):
    """Text -> byte-level indexed dataset via `weft preprocess`; returns the prefix."""
    text = make_text(os.path.join(directory, "corpus.txt"), documents, seed)
    prefix = os.path.join(directory, "corpus")
    weft("preprocess", "--input", text, "--tokenizer", "byte", "--output", prefix)
    return prefix


def write_zero_corpus(prefix, documents, doc_tokens):
    """A Megatron indexed dataset of `documents` documents of `doc_tokens` zero tokens (a valid id
    in every vocabulary), written cheaply at any size: the .idx (version 1, uint16 tokens) with
    numpy, the .bin as a sparse file (truncate). Returns the token count."""
    import numpy as np
    n = documents
    with open(prefix + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 8, n, n + 1))
        f.write(np.full(n, doc_tokens, dtype="<i4").tobytes())
        f.write((np.arange(n, dtype="<i8") * (2 * doc_tokens)).tobytes())
        f.write(np.arange(n + 1, dtype="<i8").tobytes())
    with open(prefix + ".bin", "wb") as f:
        f.truncate(2 * n * doc_tokens)
    return n * doc_tokens


def drop_page_cache(prefix):
    """Evicts the clean pages of dataset PREFIX and of its index cache PREFIX.weft_cache/ from the
    page cache (posix_fadvise DONTNEED), as after a reboot or on another machine."""
    cache = prefix + ".weft_cache"
    files = [os.path.join(cache, f) for f in os.listdir(cache)] if os.path.isdir(cache) else []
    for path in [prefix + ".bin", prefix + ".idx"] + files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def step_losses(run_dir):
    return {r["step"]: r["loss"] for r in read_metrics(run_dir) if "event" not in r}


def config(name):
    return os.path.join(REPO, "configs", name)


def check(cond, message):
    if not cond:
        sys.stderr.write("FAIL: " + message + "\n")
        _note_failure()
        raise SystemExit(1)
    print("ok:", message)


# Scripts that try every case and report all failures at the end (e.g. one per parallel layout)
# record them here through expect() and call report() last.
FAILURES = []


def expect(cond, message):
    """Like check, but records a failure and goes on; report() exits 1 if any was recorded."""
    if cond:
        print("ok:", message, flush=True)
    else:
        print("FAIL:", message, flush=True)
        FAILURES.append(message)
        _note_failure()
    return cond


def report(summary=(), seconds=None):
    """Prints (name, result) lines, then every recorded failure; exits 1 if there was one."""
    if summary:
        print("\nsummary" + (f" ({seconds:.0f} s in all)" if seconds is not None else "") + ":")
        for name, result in summary:
            print(f"  {name}: {result}")
    if FAILURES:
        sys.stderr.write(f"\n{len(FAILURES)} failure(s):\n" + "".join(f"FAIL: {m}\n" for m in FAILURES))
        raise SystemExit(1)


def error_line(p):
    """The first line of a failed run's output that says why, else its last line."""
    lines = [ln for ln in (p.stderr + p.stdout).splitlines() if ln.strip()]
    for ln in lines:
        if "error" in ln.lower():
            return ln.strip()
    return lines[-1].strip() if lines else "(no output)"


def expect_error(what, args, *needles, timeout=300):
    """`weft ARGS` must fail (no crash) with exactly one stderr line holding every needle."""
    p = weft(*args, check=False, timeout=timeout)
    lines = p.stderr.strip().splitlines()
    ok = p.returncode not in (0, -11, -6) and len(lines) == 1 and all(n in p.stderr for n in needles)
    check(ok, f"{what}: exit {p.returncode}, one line naming {needles}: {p.stderr.strip()!r}")


def layout_sets(tp, pp, sets=()):
    """--set values for a tp x pp layout (dp = processes / (tp * pp)) plus `sets`."""
    # A hung peer (e.g. a schedule deadlock) fails in 2 minutes rather than the default 5.
    return [f"parallel.tp={tp}", f"parallel.pp={pp}", "parallel.timeout_sec=120", *sets]


def train(name, run_dir, prefix, cfg, nproc, steps, sets=()):
    """One `weft train` of config `cfg` (a configs/ name) on dataset `prefix`, with `nproc` local
    processes (1: no launcher); returns its stdout, or None after recording (expect) why it
    failed. With several processes, also expects that only rank 0 reported progress."""
    args = ["train", "--config", config(cfg), "--set", "run.dir=" + run_dir, "--set", "data.prefix=" + prefix,
            "--set", f"train.steps={steps}"]
    for kv in sets:
        args += ["--set", kv]
    if nproc > 1:
        args += ["--nproc", str(nproc)]
    start = time.monotonic()
    try:
        p = weft(*args, check=False, timeout=900)
    except subprocess.TimeoutExpired:
        expect(False, f"{name}: finishes within 900 s")
        return None
    print(f"time: {name} ({steps} steps, {nproc} process{'es' if nproc > 1 else ''}): "
          f"{time.monotonic() - start:.1f} s", flush=True)
    if not expect(p.returncode == 0, f"{name}: trains {steps} steps" +
                  (f" (exit {p.returncode}: {error_line(p)})" if p.returncode else "")):
        return None
    if nproc > 1:
        others = sorted(set(re.findall(r"\[rank ([1-9][0-9]*)\] step", p.stdout)), key=int)
        expect(f"[rank 0] step {steps}/{steps}" in p.stdout and not others,
               f"{name}: only rank 0 reports progress" + (f" (also ranks {', '.join(others)})" if others else ""))
    return p.stdout


def grad_norms(run_dir):
    return {r["step"]: r["grad_norm"] for r in read_metrics(run_dir) if "event" not in r}


def eval_losses(run_dir):
    """Validation losses (train.eval_interval) by step."""
    return {r["step"]: r["loss"] for r in read_metrics(run_dir) if r.get("event") == "eval"}
