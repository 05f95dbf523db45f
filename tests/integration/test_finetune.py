"""`weft finetune` end to end, on files the test makes itself (nothing is downloaded):
a random-weight transformers LlamaForCausalLM (GQA), a byte-level BPE tokenizer trained here with
`tokenizers` (Llama 3's pre-tokenizer regex and special tokens, BOS added by its post-processor),
Llama 3 Instruct's chat template, and a chat JSONL whose answers are learnable.

Checked:
- LoRA fine-tuning: the loss falls; the merged export loads in transformers and its logits equal
  `weft eval --logits-out`'s within 1e-4; the adapter export, loaded by peft's
  PeftModel.from_pretrained onto the base model, gives the same logits; the base checkpoint is
  not rewritten by training;
- the same LoRA run under (tp, pp, dp) = (2, 2, 1) gives the same losses within 1e-4, and so does
  full fine-tuning;
- bad records (missing field, invalid UTF-8, longer than train.seq_len, not JSON, no assistant
  turn) give one error line each naming FILE:LINE and a non-zero exit; --skip-bad finishes and
  reports the count."""
import json
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from weft_test import check, read_metrics, tmpdir, weft  # noqa: E402

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
COLORS = {"apple": "red", "sky": "blue", "grass": "green", "snow": "white", "coal": "black",
          "banana": "yellow", "orange": "orange", "plum": "purple", "rose": "pink", "sand": "beige"}


def conversations(n, seed):
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        msgs = []
        if rnd.random() < 0.5:
            msgs.append({"role": "system", "content": "You answer with one short sentence."})
        for _ in range(rnd.choice([1, 2])):
            thing = rnd.choice(list(COLORS))
            msgs.append({"role": "user", "content": f"What color is the {thing}?"})
            msgs.append({"role": "assistant", "content": f"The {thing} is {COLORS[thing]}."})
        out.append({"messages": msgs})
    return out


def make_model(work):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    corpus = [json.dumps(c) for c in conversations(200, 1)] + ["The quick brown fox jumps over the lazy dog."] * 5
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       special_tokens=[("<|begin_of_text|>", bos)])
    hf = os.path.join(work, "base_hf")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256,
                      rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=bos,
                      eos_token_id=tok.token_to_id("<|eot_id|>"))
    model = LlamaForCausalLM(cfg).float()
    model.save_pretrained(hf, safe_serialization=True)
    tok.save(os.path.join(hf, "tokenizer.json"))
    with open(os.path.join(hf, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": LLAMA3_TEMPLATE,
                   "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 256}, f)
    return hf


def write_jsonl(path, records):
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def finetune(hf, data, run_dir, sets=(), nproc=1, extra=(), check_rc=True):
    args = ["finetune", "--model", "hf:" + hf, "--data", data, "--set", "run.dir=" + run_dir,
            "--set", "train.seq_len=96", "--set", "train.global_batch_size=4", "--set", "train.micro_batch_size=2",
            "--set", "run.peak_tflops=1", "--set", "run.tensorboard=false", *extra]
    for s in sets:
        args += ["--set", s]
    if nproc > 1:
        args += ["--nproc", str(nproc)]
    return weft(*args, check=check_rc, timeout=900)


def losses(run_dir):
    return [r["loss"] for r in read_metrics(run_dir) if "event" not in r]


def same_losses(name, a, b, tol=1e-4):
    worst = max(abs(x - y) for x, y in zip(a, b)) if len(a) == len(b) else float("inf")
    check(len(a) == len(b) and worst < tol, f"{name}: {len(a)} vs {len(b)} steps, largest loss difference {worst:.2e}")


def eval_logits(run_dir, work, name):
    out = os.path.join(work, name + "_logits.safetensors")
    weft("eval", "--checkpoint", run_dir, "--data", os.path.join(run_dir, "data", "sft"), "--max-batches", "1",
         "--set", "data.packing=stream", "--logits-out", out)
    t = load_file(out)
    return t["input_ids"], t["logits"]


def refused(p, needle, what):
    errors = [ln for ln in p.stderr.splitlines() if "error:" in ln]
    check(p.returncode != 0 and len(errors) == 1 and needle in errors[0], f"{what}: {errors or p.stderr[-300:]}")


def guards(work, hf, data, one, lora):
    """What must not silently go wrong around a run: its model, its output, its run.dir."""
    import fcntl
    import shutil
    import signal
    import subprocess

    from weft_test import WEFT

    # Switching exports in one run leaves nothing of the earlier one.
    check(not os.path.exists(os.path.join(one, "hf", "adapter_config.json")) and
          os.path.exists(os.path.join(one, "hf", "model.safetensors")), "a merged export holds no adapter files")
    finetune(hf, data, one, lora, extra=["--lora-rank", "8", "--lora-export", "adapter"])
    check(sorted(f for f in os.listdir(os.path.join(one, "hf")) if f.endswith(".safetensors")) ==
          ["adapter_model.safetensors"], "an adapter export replaces the merged one whole")

    # Bad options are refused before any work (no base converted).
    fresh = os.path.join(work, "refused")
    for extra, needle in [(["--lora-export", "adpter"], "--lora-export must be"),
                          (["--lora-export", "adapter"], "needs LoRA"),
                          (["--output", hf], "is the --model directory"),
                          (["--output", os.path.join(work, "base_hf", "..")], "not an earlier export")]:
        refused(finetune(hf, data, fresh, lora, extra=extra, check_rc=False), needle, f"finetune {' '.join(extra)}")
    check(not os.path.exists(os.path.join(fresh, "base")), "refused options convert nothing")

    # Another model in a run.dir that has trained one is refused, naming the run.
    other = os.path.join(work, "other_hf")
    shutil.copytree(hf, other)
    refused(finetune(other, data, one, lora, extra=["--lora-rank", "8"], check_rc=False), "holds a fine-tuning run of",
            "a different --model in a trained run.dir")

    # A second finetune on a run.dir in use is refused.
    lock_dir = os.path.join(work, "locked")
    os.makedirs(lock_dir)
    with open(os.path.join(lock_dir, ".finetune.run.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        refused(finetune(hf, data, lock_dir, lora, check_rc=False), "is in use by another weft finetune",
                "a run.dir in use")

    # Stopped before the end (SIGINT): no export, a non-zero exit, and the same command resumes.
    stop = os.path.join(work, "stopped")
    args = [WEFT, "finetune", "--model", "hf:" + hf, "--data", data, "--set", "run.dir=" + stop,
            "--set", "train.seq_len=96", "--set", "train.global_batch_size=4", "--set", "run.tensorboard=false",
            "--set", "run.peak_tflops=1", "--set", "train.steps=30", "--set", "fault.slow_rank=0",
            "--set", "fault.slow_ms=300", "--set", "checkpoint.interval=100"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("step 2/"):
            proc.send_signal(signal.SIGINT)
            break
    out, _ = proc.communicate(timeout=300)
    check(proc.returncode == 130 and "no export written" in out and not os.path.exists(os.path.join(stop, "hf")),
          f"finetune stopped early: exit {proc.returncode}, no export ({out.strip().splitlines()[-1:]})")


def main():
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    work = tmpdir("finetune")
    hf = make_model(work)
    data = os.path.join(work, "chat.jsonl")
    write_jsonl(data, conversations(48, 2))
    lora = ["lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]", "lora.alpha=16",
            "optim.lr=5e-3", "train.steps=24"]

    one = os.path.join(work, "lora_one")
    out = finetune(hf, data, one, lora, extra=["--lora-rank", "8"]).stdout
    check("ETA" in out, "finetune prints progress lines with an ETA")
    l1 = losses(one)
    first, last = sum(l1[:4]) / 4, sum(l1[-4:]) / 4
    check(last < first - 0.3, f"LoRA fine-tuning: loss falls from {first:.3f} (first 4 steps) to {last:.3f} (last 4)")

    ids, logits = eval_logits(one, work, "lora_one")
    merged = LlamaForCausalLM.from_pretrained(os.path.join(one, "hf")).float().eval()
    with torch.no_grad():
        ref = merged(input_ids=ids).logits
    diff = (ref - logits).abs().max().item()
    check(diff < 1e-4, f"merged export in transformers: logits within {diff:.1e} of weft eval's (need 1e-4)")
    from transformers import AutoTokenizer
    conv = conversations(1, 9)[0]["messages"]
    base_tok, out_tok = AutoTokenizer.from_pretrained(hf), AutoTokenizer.from_pretrained(os.path.join(one, "hf"))
    check(out_tok.apply_chat_template(conv, tokenize=False) == base_tok.apply_chat_template(conv, tokenize=False),
          "the export carries the tokenizer and its chat template (transformers renders as with the base)")
    exported = json.load(open(os.path.join(one, "hf", "config.json")))
    special = (out_tok.convert_tokens_to_ids("<|begin_of_text|>"), out_tok.convert_tokens_to_ids("<|eot_id|>"))
    check((exported.get("bos_token_id"), exported.get("eos_token_id")) == special and
          os.path.exists(os.path.join(one, "hf", "generation_config.json")),
          f"the export's config.json names bos/eos {special} (generate() stops at <|eot_id|>) and keeps generation_config.json")

    adapter = os.path.join(work, "adapter")
    finetune(hf, data, one, lora, extra=["--lora-rank", "8", "--lora-export", "adapter", "--output", adapter])
    check(os.path.exists(os.path.join(adapter, "adapter_config.json")) and
          os.path.exists(os.path.join(adapter, "adapter_model.safetensors")), "adapter export writes peft's two files")
    base = LlamaForCausalLM.from_pretrained(hf).float().eval()
    peft_model = PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        ref = peft_model(input_ids=ids).logits
    diff = (ref - logits).abs().max().item()
    check(diff < 1e-4, f"adapter export via peft onto the base: logits within {diff:.1e} of weft eval's")
    check(len(losses(one)) == len(l1), "re-running the finished command resumes at train.steps (no extra steps)")

    grid = os.path.join(work, "lora_221")
    finetune(hf, data, grid, lora + ["parallel.tp=2", "parallel.pp=2"], nproc=4, extra=["--lora-rank", "8"])
    same_losses("LoRA, (tp, pp, dp) = (2, 2, 1) vs one process", losses(grid), l1)

    full = ["optim.lr=1e-3", "train.steps=8"]
    full_one, full_grid = os.path.join(work, "full_one"), os.path.join(work, "full_221")
    finetune(hf, data, full_one, full)
    finetune(hf, data, full_grid, full + ["parallel.tp=2", "parallel.pp=2"], nproc=4)
    same_losses("full fine-tuning, (2, 2, 1) vs one process", losses(full_grid), losses(full_one))

    guards(work, hf, data, one, lora)

    # Bad records: each reported once with its line; --skip-bad skips and counts them.
    bad = os.path.join(work, "bad.jsonl")
    good = [json.dumps(c) for c in conversations(6, 3)]
    long_turn = {"messages": [{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": "ok"}]}
    lines = [good[0], good[1], json.dumps({"conversation": []}), good[2],
             '{"messages": [{"role": "user", "content": "caf\xe9"}]}', good[3], json.dumps(long_turn),
             "{not json", json.dumps({"messages": [{"role": "user", "content": "hi"}]}), good[4],
             json.dumps({"messages": [{"role": "user"}]})]
    with open(bad, "wb") as f:
        for i, line in enumerate(lines):
            raw = line.encode("utf-8") if i != 4 else line.encode("latin-1")  # line 5: a lone 0xE9 byte
            f.write(raw + b"\n")
    p = finetune(hf, bad, os.path.join(work, "bad_run"), ["train.steps=2"], check_rc=False)
    errors = [ln for ln in p.stderr.splitlines() if "error:" in ln]
    expect_lines = [3, 5, 7, 8, 9, 11]
    for n in expect_lines:
        hits = [ln for ln in errors if f"bad.jsonl:{n}:" in ln]
        check(len(hits) == 1, f"bad record on line {n}: one error line naming it ({hits or errors})")
    check(p.returncode != 0 and len(errors) == len(expect_lines) + 1,
          f"bad records: exit {p.returncode}, {len(errors)} error lines (one per record and a summary)")
    p = finetune(hf, bad, os.path.join(work, "skip_run"), ["train.steps=2"], extra=["--skip-bad"])
    check(f"skipped {len(expect_lines)} bad records" in p.stdout, "--skip-bad finishes and reports the count: " +
          [ln for ln in p.stdout.splitlines() if "examples" in ln][0])


if __name__ == "__main__":
    main()
