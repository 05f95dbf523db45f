"""LoRA's bad input gets one line naming the key or path and what to do, and a non-zero exit:
invalid lora.* values (rank, alpha, dropout, an unknown target module, gate_proj on GPT-2, a
misspelt key), an adapter export of a GPT-2 LoRA run or of a run without LoRA, a bad
--lora-export, a LoRA checkpoint used as another LoRA job's base, and a base that moved (eval,
convert and resume each name checkpoint.init_from; --set checkpoint.init_from=NEW recovers)."""
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
from weft_test import check, config, make_dataset, tmpdir, weft, expect_error  # noqa: E402


def train_args(cfg, run, prefix, *sets):
    args = ["train", "--config", config(cfg), "--set", "run.dir=" + run, "--set", "data.prefix=" + prefix,
            "--set", "train.steps=2", "--set", "run.peak_tflops=1", "--set", "run.tensorboard=false"]
    for s in sets:
        args += ["--set", s]
    return args


def main():
    work = tmpdir("lora_errors")
    prefix = make_dataset(work, documents=40)
    bad = os.path.join(work, "bad")
    for what, sets, needles in (
            ("negative rank", ["lora.rank=-1"], ["lora.rank", ">= 0"]),
            ("negative alpha", ["lora.rank=4", "lora.alpha=-2"], ["lora.alpha"]),
            ("dropout 1.5", ["lora.rank=4", "lora.dropout=1.5"], ["lora.dropout", "[0, 1)"]),
            ("unknown target", ["lora.rank=4", "lora.target_modules=[q_proj,qkv]"], ["lora.target_modules", "'qkv'", "q_proj"]),
            ("empty targets", ["lora.rank=4", "lora.target_modules=[]"], ["lora.target_modules"]),
            ("misspelt key", ["lora.rnk=4"], ["lora.rnk", "lora.rank"])):
        expect_error(what, train_args("llama-tiny.yaml", bad, prefix, *sets), *needles)
    expect_error("gate_proj on GPT-2", train_args("gpt2-tiny.yaml", bad, prefix, "lora.rank=4",
                                                  "lora.target_modules=[q_proj,gate_proj]"),
                 "lora.target_modules", "gate_proj", "gpt2")

    # A GPT-2 LoRA run exports merged, not as a peft adapter.
    gpt2_run = os.path.join(work, "gpt2_lora")
    weft(*train_args("gpt2-tiny.yaml", gpt2_run, prefix, "lora.rank=2", "lora.target_modules=[q_proj,down_proj]"))
    expect_error("adapter export of GPT-2", ["convert", "--from", "ckpt:" + gpt2_run, "--to", "hf:" + os.path.join(work, "x"),
                                             "--lora-export", "adapter"], "gpt2", "--lora-export merged")
    weft("convert", "--from", "ckpt:" + gpt2_run, "--to", "hf:" + os.path.join(work, "gpt2_merged"))
    check(os.path.exists(os.path.join(work, "gpt2_merged", "model.safetensors")), "a GPT-2 LoRA run exports merged")

    # The base, a LoRA run on it, and what breaks when the base moves.
    base_run, lora_run = os.path.join(work, "base"), os.path.join(work, "lora")
    weft(*train_args("llama-tiny.yaml", base_run, prefix))
    expect_error("adapter export without LoRA", ["convert", "--from", "ckpt:" + base_run, "--to",
                                                 "hf:" + os.path.join(work, "y"), "--lora-export", "adapter"],
                 "lora.rank=0", "merged")
    expect_error("bad --lora-export", ["convert", "--from", "ckpt:" + base_run, "--to", "hf:" + os.path.join(work, "y"),
                                       "--lora-export", "both"], "--lora-export", "merged or adapter")
    base = os.path.join(base_run, "checkpoints")
    weft(*train_args("llama-tiny.yaml", lora_run, prefix, "lora.rank=4", "checkpoint.init_from=" + base))
    expect_error("a LoRA checkpoint as a LoRA base", train_args("llama-tiny.yaml", os.path.join(work, "chain"), prefix,
                                                                "lora.rank=4", "checkpoint.init_from=" + lora_run),
                 "checkpoint.init_from", "LoRA checkpoint")
    good = weft("eval", "--checkpoint", lora_run, "--data", prefix, "--max-batches", "2").stdout
    moved = os.path.join(work, "base_moved")
    shutil.move(base_run, moved)
    expect_error("eval with the base moved", ["eval", "--checkpoint", lora_run, "--data", prefix],
                 "checkpoint.init_from", base)
    expect_error("merged export with the base moved", ["convert", "--from", "ckpt:" + lora_run, "--to",
                                                       "hf:" + os.path.join(work, "z")], "checkpoint.init_from", base)
    expect_error("resume with the base moved", train_args("llama-tiny.yaml", lora_run, prefix, "lora.rank=4",
                                                          "checkpoint.init_from=" + base, "train.steps=3"),
                 "checkpoint.init_from", base)
    again = weft("eval", "--checkpoint", lora_run, "--data", prefix, "--max-batches", "2", "--set",
                 "checkpoint.init_from=" + os.path.join(moved, "checkpoints")).stdout
    loss = lambda s: re.search(r"eval_loss=(\S+)", s).group(1)  # noqa: E731
    check(loss(good) == loss(again), f"--set checkpoint.init_from=NEW finds the moved base ({loss(again)} == {loss(good)})")


if __name__ == "__main__":
    main()
