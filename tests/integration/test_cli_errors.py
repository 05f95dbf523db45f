"""Bad input gets one line naming the file/key and what to do, and a non-zero exit; never a
crash, a hang, or a checkpoint taken as complete when it is not."""
import math
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
from weft_test import config, check, make_dataset, tmpdir, weft, expect_error  # noqa: E402


def host_available_bytes():
    """What the kernel says this process may still use: MemAvailable, or a lower cgroup allowance."""
    with open("/proc/meminfo") as f:
        avail = next(int(l.split()[1]) * 1024 for l in f if l.startswith("MemAvailable:"))
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit) as a, open(usage) as b:
                text = a.read().strip()
                if text != "max":
                    avail = min(avail, max(0, int(text) - int(b.read().strip())))
                break
        except OSError:
            continue
    return avail


def memory_checks(work, prefix):
    """An empty job file, or a model whose fp32 weights + grads + AdamW moments exceed this machine's
    memory, is refused before anything is allocated."""
    for name, text in (("empty.yaml", ""), ("comment.yaml", "# nothing here\n"), ("null.yaml", "~\n")):
        path = os.path.join(work, name)
        with open(path, "w") as f:
            f.write(text)
        expect_error(f"config file {name!r}", ["train", "--config", path], name, "empty")
    # The built-in defaults (a Llama-2-7B shape) through a file with one harmless key; more layers
    # when this machine could hold it, so the refusal does not depend on the machine.
    C, F, V = 4096, 11008, 32000
    per_layer = 4 * C * C + 3 * C * F + 2 * C  # q, k, v, o; gate, up, down; two RMSNorms
    avail = host_available_bytes()
    layers = max(32, math.ceil(4 * avail / (16 * per_layer)))
    params = 2 * V * C + C + layers * per_layer  # untied embedding and head, final norm
    one_key = os.path.join(work, "one_key.yaml")
    with open(one_key, "w") as f:
        f.write("train:\n  steps: 1\n")
    args = ["train", "--config", one_key, "--set", f"model.num_layers={layers}", "--set", "data.prefix=" + prefix,
            "--set", "run.dir=" + os.path.join(work, "big")]
    p = weft(*args, check=False, timeout=300)
    m = re.search(r"need ([0-9.]+) GiB but cpu has ([0-9.]+) GiB available", p.stderr)
    check(p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1 and m and str(params) in p.stderr
          and "parallel.tp" in p.stderr and "parallel.zero" in p.stderr,
          f"{params}-parameter model refused with needed vs available: {p.stderr.strip()!r}")
    need, have = float(m.group(1)), float(m.group(2))
    # fp32 weights, grads, two AdamW moments (16 bytes), and the host copy an asynchronous
    # checkpoint keeps of weights and moments (12 bytes) unless checkpoint.async=false.
    check(abs(need - 28 * params / 2**30) < 0.01 and "checkpoint.async=false" in p.stderr,
          f"needed {need} GiB = (16 + 12 for the checkpoint copy) bytes x {params} parameters")
    p = weft(*args, "--set", "checkpoint.async=false", check=False, timeout=300)
    m = re.search(r"need ([0-9.]+) GiB", p.stderr)
    check(p.returncode == 1 and m and abs(float(m.group(1)) - 16 * params / 2**30) < 0.01,
          f"with checkpoint.async=false: needed = 16 bytes x {params} parameters: {p.stderr.strip()!r}")
    check(abs(have - avail / 2**30) < 0.25 * avail / 2**30 + 0.5,
          f"available {have} GiB is what /proc/meminfo and the cgroup say ({avail / 2**30:.2f} GiB)")
    tiny = ["train", "--config", config("llama-tiny.yaml"), "--set", "data.prefix=" + prefix, "--set", "train.steps=2"]
    expect_error("run.memory_limit_gb below the model's state",
                 tiny + ["--set", "run.memory_limit_gb=0.0001", "--set", "run.dir=" + os.path.join(work, "small")],
                 "run.memory_limit_gb", "GiB", "need")
    expect_error("local CPU workers that cannot fit together, before any starts",
                 tiny + ["--nproc", "2", "--set", "run.memory_limit_gb=0.0001", "--set", "run.dir=" + os.path.join(work, "two")],
                 "2 ranks", "run.memory_limit_gb")
    p = weft(*tiny, "--set", "run.dir=" + os.path.join(work, "tiny"), check=False, timeout=300)
    check(p.returncode == 0 and "train: finished at step 2" in p.stdout, f"a tiny model still trains: {p.stderr[-300:]!r}")


def checkpoint_checks(work, prefix):
    """What a new user did with checkpoints that used to be accepted silently."""
    run = os.path.join(work, "tiny")  # argument_checks trained it one step
    tiny = ["train", "--config", config("llama-tiny.yaml"), "--set", "data.prefix=" + prefix]
    # A model that has no parameter for a checkpoint tensor would drop it: refused, naming it.
    expect_error("resume into a model with fewer layers", tiny + ["--set", "run.dir=" + run, "--set", "train.steps=3",
                 "--set", "model.num_layers=1"], "layers.1.", "config.yaml")
    a_file = os.path.join(work, "a_file")
    with open(a_file, "w") as f:
        f.write("not a directory\n")
    expect_error("checkpoint.dir is a file", tiny + ["--set", "run.dir=" + os.path.join(work, "cfile"), "--set",
                 "checkpoint.dir=" + a_file], "checkpoint.dir", a_file)
    expect_error("--nproc 0", tiny + ["--set", "run.dir=" + os.path.join(work, "n0"), "--nproc", "0"], "--nproc")
    expect_error("convert into a directory that holds something", ["convert", "--from", "ckpt:" + run, "--to",
                 "ckpt:" + run], "must be a new or empty directory")
    expect_error("checkpoint.init_from that does not exist", tiny + ["--set", "run.dir=" + os.path.join(work, "init"),
                 "--set", "checkpoint.init_from=" + os.path.join(work, "nowhere")], "checkpoint.init_from", "nowhere")
    expect_error("a file given as a checkpoint", ["eval", "--checkpoint", a_file, "--data", prefix], a_file, "is a file")


def argument_checks(work, prefix):
    """Out-of-range command-line values and loss masks that would silently train on the wrong
    tokens are refused in one line naming the flag, key or file."""
    run = os.path.join(work, "tiny")
    weft("train", "--config", config("llama-tiny.yaml"), "--set", "data.prefix=" + prefix, "--set", "run.dir=" + run,
         "--set", "train.steps=1", "--set", "run.peak_tflops=1")
    gen = ["generate", "--checkpoint", run, "--prompt", "the"]
    expect_error("generate --temperature nan", gen + ["--temperature", "nan"], "--temperature")
    expect_error("generate --temperature -1", gen + ["--temperature", "-1"], "--temperature")
    expect_error("generate --top-k -5", gen + ["--temperature", "1", "--top-k", "-5"], "--top-k")
    expect_error("generate --max-new-tokens -3", gen + ["--max-new-tokens", "-3"], "--max-new-tokens")
    expect_error("eval --max-batches -1", ["eval", "--checkpoint", run, "--data", prefix, "--max-batches", "-1"],
                 "--max-batches")
    base = ["train", "--config", config("llama-tiny.yaml"), "--set", "data.prefix=" + prefix,
            "--set", "run.dir=" + os.path.join(work, "evalneg")]
    expect_error("train.eval_batches -1", base + ["--set", "train.eval_batches=-1"], "train.eval_batches")
    expect_error("train.eval_interval -1", base + ["--set", "train.eval_interval=-1"], "train.eval_interval")

    import numpy as np
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
    tokens = np.fromfile(prefix + ".bin", dtype=np.uint16).astype(np.int64)

    def dataset(name, mask_dtype, mask_value, files=(".bin", ".idx")):
        p = os.path.join(work, name)
        for suffix, values, dtype in (("", tokens, np.uint16), (".loss_mask", np.full(len(tokens), mask_value), mask_dtype)):
            b = IndexedDatasetBuilder(p + suffix + ".bin", dtype=dtype)
            b.add_document(torch.tensor(values), [len(values)])
            b.finalize(p + suffix + ".idx")
        for suffix in (".bin", ".idx"):
            if suffix not in files:
                os.remove(p + ".loss_mask" + suffix)
        return p

    mask_run = ["train", "--config", config("llama-tiny.yaml"), "--set", "run.dir=" + os.path.join(work, "masked"),
                "--set", "train.steps=1", "--set", "run.peak_tflops=1", "--set", "data.prefix="]
    float_mask = dataset("float_mask", np.float32, 0.5)
    expect_error("float loss mask", mask_run[:-1] + ["data.prefix=" + float_mask], "float_mask.loss_mask", "integer")
    bin_only = dataset("bin_only", np.uint8, 1, files=(".bin",))
    expect_error("loss mask .bin without .idx", mask_run[:-1] + ["data.prefix=" + bin_only], "bin_only.loss_mask", ".idx")
    nothing = dataset("nothing_counted", np.uint8, 0)
    expect_error("eval of data whose every target is masked", ["eval", "--checkpoint", run, "--data", nothing],
                 "loss mask", "no token")


def main():
    work = tmpdir("errors")
    prefix = make_dataset(work, documents=30)
    bad_yaml = os.path.join(work, "bad.yaml")
    with open(bad_yaml, "w") as f:
        f.write("model:\n  family: llama\n  hidden_sise: 64\n")
    typed = os.path.join(work, "typed.yaml")
    with open(typed, "w") as f:
        f.write("train:\n  steps: ten\n")
    base = ["train", "--config", config("llama-tiny.yaml"), "--set", "run.dir=" + os.path.join(work, "run")]

    expect_error("missing config", ["train", "--config", os.path.join(work, "nope.yaml")], "nope.yaml")
    expect_error("unknown key", ["train", "--config", bad_yaml], "bad.yaml:3", "model.hidden_sise", "model.hidden_size")
    expect_error("wrong type", ["train", "--config", typed], "typed.yaml:2", "train.steps", "integer")
    expect_error("unknown --set key", base + ["--set", "optim.wieght_decay=1"], "optim.wieght_decay", "optim.weight_decay")
    expect_error("no data configured", base, "data.prefix")
    expect_error("missing dataset", base + ["--set", "data.prefix=" + os.path.join(work, "absent")], "absent")

    trunc = os.path.join(work, "trunc")
    shutil.copy(prefix + ".bin", trunc + ".bin")
    with open(prefix + ".idx", "rb") as f:
        idx = f.read()
    with open(trunc + ".idx", "wb") as f:
        f.write(idx[: len(idx) - 5])
    expect_error("truncated .idx", base + ["--set", "data.prefix=" + trunc], "trunc.idx")
    shutil.copy(prefix + ".idx", trunc + ".idx")
    with open(prefix + ".bin", "rb") as f:
        data = f.read()
    with open(trunc + ".bin", "wb") as f:
        f.write(data[: len(data) // 2])
    expect_error("truncated .bin", base + ["--set", "data.prefix=" + trunc], "trunc.bin")
    expect_error("tokens beyond vocabulary", base + ["--set", "data.prefix=" + prefix, "--set", "model.vocab_size=100"],
                 "corpus", "vocab")

    expect_error("missing checkpoint", ["eval", "--checkpoint", os.path.join(work, "none"), "--data", prefix], "none")
    incomplete = os.path.join(work, "ckpts", "step_00000004")
    os.makedirs(incomplete)
    expect_error("incomplete checkpoint", ["eval", "--checkpoint", incomplete, "--data", prefix], "step_00000004", "incomplete")
    with open(os.path.join(work, "ckpts", "latest"), "w") as f:
        f.write("step_00000004\n")
    expect_error("latest names an incomplete checkpoint", base + ["--set", "data.prefix=" + prefix, "--set",
                 "checkpoint.dir=" + os.path.join(work, "ckpts")], "step_00000004")
    expect_error("unknown command", ["fly"], "fly")
    expect_error("bad --from", ["convert", "--from", "foo", "--to", "ckpt:x"], "--from")
    expect_error("gbs not a multiple of mbs", base + ["--set", "data.prefix=" + prefix, "--set",
                 "train.global_batch_size=3"], "train.global_batch_size", "train.micro_batch_size")
    memory_checks(work, prefix)
    argument_checks(work, prefix)
    checkpoint_checks(work, prefix)
    p = weft("train", "--help")
    check(p.returncode == 0 and "--config" in p.stdout and "--set" in p.stdout, "weft train --help documents it")
    for cmd in ("eval", "plan", "convert", "preprocess", "generate"):
        p = weft(cmd, "--help")
        check(p.returncode == 0 and f"weft {cmd}" in p.stdout, f"weft {cmd} --help documents it")


if __name__ == "__main__":
    main()
