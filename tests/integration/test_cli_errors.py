"""Bad input gets one line naming the file/key and what to do, and a non-zero exit; never a
crash, a hang, or a checkpoint taken as complete when it is not."""
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
from weft_test import config, check, make_dataset, tmpdir, weft  # noqa: E402


def expect_error(what, args, *needles):
    p = weft(*args, check=False, timeout=120)
    lines = p.stderr.strip().splitlines()
    ok = p.returncode not in (0, -11, -6) and len(lines) == 1 and all(n in p.stderr for n in needles)
    check(ok, f"{what}: exit {p.returncode}, one line naming {needles}: {p.stderr.strip()!r}")


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
    p = weft("train", "--help")
    check(p.returncode == 0 and "--config" in p.stdout and "--set" in p.stdout, "weft train --help documents it")
    for cmd in ("eval", "plan", "convert", "preprocess", "generate"):
        p = weft(cmd, "--help")
        check(p.returncode == 0 and f"weft {cmd}" in p.stdout, f"weft {cmd} --help documents it")


if __name__ == "__main__":
    main()
