"""Tokenizer files travel with every checkpoint derived from one that had them. A GPT-2 model with
a byte-level BPE tokenizer trained here by `tokenizers` is converted from Hugging Face; a run
fine-tunes it with checkpoint.init_from; that run's checkpoints hold vocab.json and merges.txt
byte-identical to the originals, `weft generate` on them needs no --tokenizer and decodes with
that tokenizer, the run resumes from its own checkpoint, and `weft convert --to hf:` exports the
tokenizer. A run whose data.tokenizer names the checkpoint's own files but has no checkpoint to
take them from is refused in one line. The same holds for a tokenizer.json tokenizer
(hf:DIR): tokenizer.json and tokenizer_config.json travel, the checkpoint's config says hf:.,
and generate, a fine-tuning run and an export use them."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import torch  # noqa: E402
from tokenizers import ByteLevelBPETokenizer  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from weft_test import check, make_text, read_metrics, tmpdir, weft  # noqa: E402


def same_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def main():
    work = tmpdir("tok_travel")
    text = make_text(os.path.join(work, "corpus.txt"), documents=80)
    hf = os.path.join(work, "hf")
    os.makedirs(hf)
    bpe = ByteLevelBPETokenizer()
    bpe.train([text], vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"])
    bpe.save_model(hf)
    vocab = bpe.get_vocab_size()
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=64)).save_pretrained(hf)
    base = os.path.join(work, "base")
    weft("convert", "--from", "hf:" + hf, "--to", "ckpt:" + base)
    prefix = os.path.join(work, "data")
    weft("preprocess", "--input", text, "--tokenizer", "gpt2:" + hf, "--output", prefix)

    run = os.path.join(work, "run")
    common = ["--config", os.path.join(base, "step_00000000", "config.yaml"), "--set", "data.prefix=" + prefix,
              "--set", "train.seq_len=32", "--set", "train.global_batch_size=4", "--set", "train.micro_batch_size=2",
              "--set", "run.dir=" + run, "--set", "checkpoint.dir=" + os.path.join(run, "ckpt"),
              "--set", "run.peak_tflops=1", "--set", "train.eval_interval=0"]
    weft("train", *common, "--set", "train.steps=2", "--set", "checkpoint.init_from=" + base)
    step2 = os.path.join(run, "ckpt", "step_00000002")
    for f in ("vocab.json", "merges.txt"):
        check(os.path.exists(os.path.join(step2, f)) and same_bytes(os.path.join(step2, f), os.path.join(hf, f)),
              f"fine-tuned checkpoint holds {f}, byte-identical to the original")

    # Resume from the run's own checkpoint: its files travel on.
    weft("train", *common, "--set", "train.steps=3", "--set", "checkpoint.init_from=" + base)
    resumes = [r for r in read_metrics(run) if r.get("event") == "resume" and "checkpoint" in r]
    check(len(resumes) == 1 and resumes[0]["step"] == 2, f"second run resumed at step 2 ({resumes})")
    step3 = os.path.join(run, "ckpt", "step_00000003")
    check(all(os.path.exists(os.path.join(step3, f)) for f in ("vocab.json", "merges.txt")),
          "resumed run's checkpoint holds the tokenizer files too")

    g = weft("generate", "--checkpoint", step3, "--prompt", "the quick", "--max-new-tokens", "4")
    check(g.returncode == 0 and g.stdout.startswith("the quick"), "weft generate uses the checkpoint's own tokenizer")

    out = os.path.join(work, "export")
    weft("convert", "--from", "ckpt:" + step3, "--to", "hf:" + out)
    check(all(same_bytes(os.path.join(out, f), os.path.join(hf, f)) for f in ("vocab.json", "merges.txt")),
          "convert --to hf: exports the tokenizer files")

    orphan = os.path.join(work, "orphan")
    p = weft("train", "--config", os.path.join(base, "step_00000000", "config.yaml"), "--set", "data.prefix=" + prefix,
             "--set", "train.seq_len=32", "--set", "run.dir=" + orphan, "--set", "checkpoint.dir=" + orphan + "/ckpt",
             "--set", "train.steps=1", "--set", "run.peak_tflops=1", check=False)
    err = p.stderr.strip().splitlines()
    check(p.returncode != 0 and len(err) == 1 and "data.tokenizer" in err[0],
          f"gpt2:. without a checkpoint is refused in one line: {err}")
    tokenizer_json_travels(work, hf, bpe, text, prefix)


def tokenizer_json_travels(work, gpt2_dir, bpe, text, prefix):
    """hf:DIR with tokenizer.json + tokenizer_config.json: convert, generate, train, export."""
    hf = os.path.join(work, "hf_json")
    os.makedirs(hf)
    bpe.save(os.path.join(hf, "tokenizer.json"))
    with open(os.path.join(hf, "tokenizer_config.json"), "w") as f:
        f.write('{"eos_token": "<|endoftext|>"}')
    for f in ("config.json", "model.safetensors"):
        os.link(os.path.join(gpt2_dir, f), os.path.join(hf, f))
    names = ("tokenizer.json", "tokenizer_config.json")
    base = os.path.join(work, "base_json")
    weft("convert", "--from", "hf:" + hf, "--to", "ckpt:" + base)
    step0 = os.path.join(base, "step_00000000")
    check(all(same_bytes(os.path.join(step0, f), os.path.join(hf, f)) for f in names),
          "convert --from hf: (tokenizer.json) stores tokenizer.json and tokenizer_config.json")
    with open(os.path.join(step0, "config.yaml")) as f:
        check("tokenizer: hf:." in f.read(), "the converted checkpoint's data.tokenizer is hf:.")
    g = weft("generate", "--checkpoint", step0, "--prompt", "the quick", "--max-new-tokens", "4")
    check(g.stdout.startswith("the quick"), "weft generate reads the checkpoint's tokenizer.json")

    run = os.path.join(work, "run_json")
    weft("train", "--config", os.path.join(step0, "config.yaml"), "--set", "data.prefix=" + prefix,
         "--set", "train.seq_len=32", "--set", "train.global_batch_size=4", "--set", "train.micro_batch_size=2",
         "--set", "run.dir=" + run, "--set", "checkpoint.dir=" + os.path.join(run, "ckpt"),
         "--set", "run.peak_tflops=1", "--set", "train.eval_interval=0", "--set", "train.steps=1",
         "--set", "checkpoint.init_from=" + base)
    step1 = os.path.join(run, "ckpt", "step_00000001")
    check(all(same_bytes(os.path.join(step1, f), os.path.join(hf, f)) for f in names),
          "a run started from it carries tokenizer.json and tokenizer_config.json on")
    out = os.path.join(work, "export_json")
    weft("convert", "--from", "ckpt:" + step1, "--to", "hf:" + out)
    check(all(same_bytes(os.path.join(out, f), os.path.join(hf, f)) for f in names),
          "convert --to hf: exports tokenizer.json and tokenizer_config.json")


if __name__ == "__main__":
    main()
