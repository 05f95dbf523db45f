"""Shared helpers for Weft's Python tests: where the binaries are, running them, small corpora."""
import json
import os
import random
import subprocess
import sys
import tempfile

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


def tmpdir(prefix):
    return tempfile.mkdtemp(prefix=f"weft_{prefix}_")


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
        raise SystemExit(1)
    print("ok:", message)
