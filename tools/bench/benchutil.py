"""What the benchmarks in tools/bench share: where the repository is, a synthetic byte-level corpus
made by `weft preprocess`, and running `weft train` with --set overrides and reading back
metrics.jsonl."""
import json
import os
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "pyutil"))
from weft_test import make_text  # noqa: E402,F401  (re-exported for the benchmarks)


def config_path(name):
    return os.path.join(REPO, "configs", name)


def prepare_corpus(build, work, documents=3000, seed=0):
    """Writes a deterministic English-like text into `work` and tokenizes it byte-level (token ids
    < 264, so it fits any model vocabulary); returns the data.prefix."""
    text = make_text(os.path.join(work, "corpus.txt"), documents=documents, seed=seed)
    prefix = os.path.join(work, "corpus")
    subprocess.run([os.path.join(build, "weft"), "preprocess", "--input", text, "--tokenizer", "byte",
                    "--output", prefix], check=True, capture_output=True)
    return prefix


def train_command(build, config, sets, nproc=1):
    """The `weft train` command line for a config file (path) and a list of "key=value" overrides."""
    cmd = [os.path.join(build, "weft"), "train", "--config", config]
    for s in sets:
        cmd += ["--set", s]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    return cmd


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def step_rows(rows):
    """The per-step rows of metrics.jsonl (event rows have an "event" key)."""
    return [r for r in rows if "event" not in r]


def run_train(build, run_dir, sets, tag, config=None, nproc=1):
    """Runs `weft train` into run_dir (run.dir is set here); exits the benchmark with the run's
    output tail when it fails. Returns every metrics.jsonl row."""
    cmd = train_command(build, config or config_path("demo.yaml"), ["run.dir=" + run_dir, *sets], nproc)
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if p.returncode != 0:
        sys.exit(f"{tag}: weft train failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return read_metrics(run_dir)


def median(xs):
    return statistics.median(xs) if xs else float("nan")
