"""Packed examples against PyTorch/transformers run on each example alone. Fine-tuning packs
whole examples into rows (data.packing=packed): every token attends only to its own example and
RoPE (Llama) or the learned position embedding (GPT-2) restarts at 0 for each, so the packed
loss must be the loss of the examples computed one at a time. The reference runs each example
through transformers' LlamaForCausalLM / GPT2LMHeadModel by itself (no packing, no mask) and
takes cross_entropy over its counted labels; the expected loss is the sum over all examples
divided by the number of counted labels (a token mean, as Weft normalises every step).

Checked, in fp32, within 1e-5:
- `weft eval` on examples of varied lengths with random loss masks, packed and padded
  (one example per row), micro-batches of 1 and 3 rows;
- the first training step's loss and gradient norm with packed rows in one process, with
  (tp, pp) = (2, 2) and with pp = 4 (middle stages need the positions too), for Llama (GQA) and
  GPT-2.
The datasets are written by megatron-core's IndexedDatasetBuilder, one document per example,
with a PREFIX.loss_mask companion."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM  # noqa: E402

from weft_test import check, read_metrics, tmpdir, weft  # noqa: E402

V = 96


def write(prefix, docs, dtype):
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
    for d in docs:
        builder.add_document(torch.tensor(d, dtype=torch.int64), [len(d)])
    builder.finalize(prefix + ".idx")


def reference(model, examples, masks, grad=False):
    """(token-mean loss, grad norm) over every example's counted labels, each example alone."""
    model.zero_grad()
    total, count = 0.0, 0
    for ids, mask in zip(examples, masks):
        x = torch.tensor([ids])
        labels = x[:, 1:].clone()
        labels[0, torch.tensor(mask[1:]) == 0] = -100
        logits = model(input_ids=x).logits[:, :-1]
        total = total + torch.nn.functional.cross_entropy(logits.reshape(-1, V), labels.reshape(-1),
                                                          ignore_index=-100, reduction="sum")
        count += int((labels != -100).sum())
    loss = total / count
    if not grad:
        return loss.item(), None
    loss.backward()
    norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters() if p.grad is not None))
    return loss.item(), norm.item()


def random_examples(g, n, lengths):
    examples, masks = [], []
    for k in range(n):
        length = int(lengths[k])
        examples.append(torch.randint(0, V, (length,), generator=g).tolist())
        prompt = int(torch.randint(1, length - 1, (1,), generator=g))
        masks.append([0] * prompt + [1] * (length - prompt))  # loss on the "answer" only
    return examples, masks


def converted(work, name, family, layers):
    torch.manual_seed(0)
    if family == "llama":
        cfg = LlamaConfig(vocab_size=V, hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=128, max_position_embeddings=64,
                          rms_norm_eps=1e-5, tie_word_embeddings=False)
        model = LlamaForCausalLM(cfg).float()
    else:
        cfg = GPT2Config(vocab_size=V, n_embd=64, n_layer=layers, n_head=4, n_positions=64)
        model = GPT2LMHeadModel(cfg).float()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.eval()  # no dropout (GPT-2's config has some)
    hf, ckpt = os.path.join(work, name + "_hf"), os.path.join(work, name + "_ckpt")
    model.save_pretrained(hf, safe_serialization=True)
    weft("convert", "--from", "hf:" + hf, "--to", "ckpt:" + ckpt)
    return model, ckpt


def eval_loss(ckpt, prefix, seq_len, sets):
    args = ["eval", "--checkpoint", ckpt, "--data", prefix, "--set", f"train.seq_len={seq_len}"]
    for s in sets:
        args += ["--set", s]
    out = weft(*args).stdout
    return float(out.split("eval_loss=")[1].split()[0])


def first_step(work, name, ckpt, prefix, seq_len, rows, sets, nproc):
    run_dir = os.path.join(work, name)
    args = ["train", "--config", os.path.join(ckpt, "step_00000000", "config.yaml"),
            "--set", "checkpoint.init_from=" + ckpt, "--set", "data.prefix=" + prefix,
            "--set", "data.split=100,0", "--set", "data.packing=packed", "--set", f"train.seq_len={seq_len}",
            "--set", f"train.global_batch_size={rows}", "--set", "train.micro_batch_size=1",
            "--set", "train.steps=1", "--set", "train.eval_interval=0", "--set", "run.dir=" + run_dir,
            "--set", "run.peak_tflops=1", "--set", "run.tensorboard=false", "--set", "optim.warmup_steps=0"]
    for s in sets:
        args += ["--set", s]
    if nproc > 1:
        args += ["--nproc", str(nproc)]
    weft(*args)
    row = [r for r in read_metrics(run_dir) if "event" not in r][0]
    return row["loss"], row["grad_norm"]


def main():
    work = tmpdir("packing")
    g = torch.Generator().manual_seed(3)

    # Varied lengths: eval, packed and padded, one example per document.
    seq_len = 47
    examples, masks = random_examples(g, 23, torch.randint(3, 40, (23,), generator=g))
    varied = os.path.join(work, "varied")
    write(varied, examples, np.int32)
    write(varied + ".loss_mask", masks, np.uint8)
    for family in ("llama", "gpt2"):
        model, ckpt = converted(work, family, family, layers=2)
        ref, _ = reference(model, examples, masks)
        for packing in ("packed", "padded"):
            for mbs in (1, 3):
                got = eval_loss(ckpt, varied, seq_len, [f"data.packing={packing}", f"train.micro_batch_size={mbs}"])
                check(abs(got - ref) < 1e-5, f"{family} eval, {packing}, micro-batch {mbs}: loss {got:.7f} vs "
                      f"transformers one example at a time {ref:.7f} (diff {abs(got - ref):.1e})")
        # --logits-out on packed rows: each example's logits are transformers' on that example alone.
        out = os.path.join(work, family + "_logits.safetensors")
        weft("eval", "--checkpoint", ckpt, "--data", varied, "--set", f"train.seq_len={seq_len}", "--max-batches", "1",
             "--set", "data.packing=packed", "--set", "train.micro_batch_size=2", "--logits-out", out)
        t = load_file(out)
        worst, segments = 0.0, 0
        for row, pos, lg in zip(t["input_ids"], t["positions"], t["logits"]):
            starts = (pos == 0).nonzero().flatten().tolist() + [len(pos)]
            for a, b in zip(starts[:-1], starts[1:]):
                with torch.no_grad():
                    ref_logits = model(input_ids=row[a:b].unsqueeze(0)).logits[0]
                worst, segments = max(worst, (ref_logits - lg[a:b]).abs().max().item()), segments + 1
        check(segments > 2 and worst < 1e-4, f"{family} eval --logits-out, packed: {segments} segments, logits within "
              f"{worst:.1e} of transformers on each alone")
        # Without packing the same documents are one stream: the loss differs (examples see each other).
        stream = eval_loss(ckpt, varied, seq_len, ["train.micro_batch_size=1"])
        check(abs(stream - ref) > 1e-3, f"{family}: the stream loss {stream:.5f} should differ from the per-example "
              f"{ref:.5f}; the comparison above would not catch packing that leaks across examples")

    # An example longer than a row is refused, naming the dataset and the example.
    p = weft("eval", "--checkpoint", os.path.join(work, "llama_ckpt"), "--data", varied, "--set", "train.seq_len=20",
             "--set", "data.packing=packed", check=False)
    check(p.returncode != 0 and "varied: example" in p.stderr and "train.seq_len + 1 = 21" in p.stderr,
          f"an example longer than train.seq_len + 1 is refused: {p.stderr.strip()}")

    # Equal lengths: 4 examples fill each row of seq_len + 1 = 32 tokens whatever the shuffle, so
    # the first step of a global batch of 4 rows sees all 16 examples.
    examples, masks = random_examples(g, 16, [8] * 16)
    even = os.path.join(work, "even")
    write(even, examples, np.int32)
    write(even + ".loss_mask", masks, np.uint8)
    for family in ("llama", "gpt2"):
        model, ckpt = converted(work, family + "4", family, layers=4)
        ref = reference(model, examples, masks, grad=True)
        for name, sets, nproc in [("one", [], 1), ("tp2_pp2", ["parallel.tp=2", "parallel.pp=2"], 4),
                                  ("pp4", ["parallel.pp=4"], 4)]:
            loss, norm = first_step(work, f"{family}_{name}", ckpt, even, 31, 4, sets, nproc)
            check(abs(loss - ref[0]) < 1e-5 and abs(norm - ref[1]) / ref[1] < 1e-5,
                  f"{family} first step, {name}: loss {loss:.7f} vs {ref[0]:.7f}, grad_norm {norm:.7f} vs "
                  f"{ref[1]:.7f}")


if __name__ == "__main__":
    main()
