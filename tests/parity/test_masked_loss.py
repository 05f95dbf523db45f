"""Masked-loss parity with PyTorch. A random-weight transformers Llama is converted to a Weft
checkpoint; a global batch of 8 sequences whose labels are -100 (not counted) on a random ~half
of the positions, different in every sequence, is written as an indexed dataset plus its
loss-mask companion (PREFIX.loss_mask) by megatron-core's own IndexedDatasetBuilder. Weft's
first-step loss and gradient norm (before clipping), with micro-batch 1, 2 and 8, with dp 2 (ZeRO
on and off), with (tp, pp) = (2, 2), with tp 2 under sequence parallelism and with tp 4 (each of
the 2 KV heads replicated on two ranks), must equal
torch.nn.functional.cross_entropy(ignore_index=-100)'s mean over all counted tokens of the full
batch and the L2 norm of its gradient, within 1e-5 relative. Without a mask, Weft's loss is the
plain mean over every token. A second model ties its input and output embeddings: split over
pp 2 (and tp 2 x pp 2), the first and last stage each hold a copy whose gradients must add up
to PyTorch's gradient of the one shared matrix.

The dataset holds exactly one global batch (8 samples of seq_len + 1 tokens, overlapping by one
as GPT samples do), so the first step sees all 8 sequences whatever order the sampler shuffles
them into, and the reference needs no knowledge of the shuffle."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from weft_test import check, read_metrics, tmpdir, weft  # noqa: E402

B, T, V = 8, 32, 96


def write(prefix, values, dtype):
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
    builder.add_document(torch.tensor(values, dtype=torch.int64), [len(values)])
    builder.finalize(prefix + ".idx")


def reference(model, stream, mask):
    """(loss, grad norm) of PyTorch's cross_entropy(ignore_index=-100) mean over the batch."""
    inputs = torch.stack([stream[k * T:k * T + T] for k in range(B)])
    labels = torch.stack([stream[k * T + 1:k * T + T + 1] for k in range(B)]).clone()
    if mask is not None:
        counted = torch.stack([mask[k * T + 1:k * T + T + 1] for k in range(B)]).bool()
        labels[~counted] = -100
    model.zero_grad()
    logits = model(input_ids=inputs).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100)
    loss.backward()
    norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters()))
    return loss.item(), norm.item()


def first_step(work, name, ckpt, prefix, sets, nproc=1):
    run_dir = os.path.join(work, name)
    args = ["train", "--config", os.path.join(ckpt, "step_00000000", "config.yaml"),
            "--set", "checkpoint.init_from=" + ckpt, "--set", "data.prefix=" + prefix,
            "--set", "data.split=100,0", "--set", f"train.seq_len={T}", "--set", f"train.global_batch_size={B}",
            "--set", "train.steps=1", "--set", "train.eval_interval=0", "--set", "run.dir=" + run_dir,
            "--set", "checkpoint.dir=" + os.path.join(run_dir, "ckpt"), "--set", "run.peak_tflops=1",
            "--set", "run.tensorboard=false", "--set", "optim.warmup_steps=0", "--set", "optim.clip_grad=1.0"]
    for s in sets:
        args += ["--set", s]
    if nproc > 1:
        args += ["--nproc", str(nproc)]
    weft(*args)
    rows = [r for r in read_metrics(run_dir) if "event" not in r]
    return rows[0]["loss"], rows[0]["grad_norm"]


def converted(work, name, tied):
    """A random-weight Llama (norm weights perturbed too) and its Weft checkpoint."""
    cfg = LlamaConfig(vocab_size=V, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=64,
                      rms_norm_eps=1e-5, tie_word_embeddings=tied)
    model = LlamaForCausalLM(cfg).float()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    hf, ckpt = os.path.join(work, name + "_hf"), os.path.join(work, name + "_ckpt")
    model.save_pretrained(hf, safe_serialization=True)
    weft("convert", "--from", "hf:" + hf, "--to", "ckpt:" + ckpt)
    return model, ckpt


def compare(name, got, ref):
    (loss, norm), (ref_loss, ref_norm) = got, ref
    lrel, nrel = abs(loss - ref_loss) / ref_loss, abs(norm - ref_norm) / ref_norm
    check(lrel < 1e-5 and nrel < 1e-5,
          f"{name}: loss {loss:.7f} vs PyTorch {ref_loss:.7f} (rel {lrel:.1e}), "
          f"grad_norm {norm:.7f} vs {ref_norm:.7f} (rel {nrel:.1e})")


def main():
    work = tmpdir("masked")
    torch.manual_seed(0)
    model, ckpt = converted(work, "untied", tied=False)

    g = torch.Generator().manual_seed(1)
    stream = torch.randint(0, V, (B * T + 1,), generator=g)
    mask = (torch.rand(B * T + 1, generator=g) < 0.5).to(torch.int64)
    plain, masked = os.path.join(work, "plain"), os.path.join(work, "masked")
    write(plain, stream.tolist(), np.int32)
    write(masked, stream.tolist(), np.int32)
    write(masked + ".loss_mask", mask.tolist(), np.uint8)
    counted = int(mask[1:].sum())
    print(f"{counted} of {B * T} labels counted")

    cases = [("mbs1", ["train.micro_batch_size=1"], 1), ("mbs2", ["train.micro_batch_size=2"], 1),
             ("mbs8", ["train.micro_batch_size=8"], 1),
             ("dp2", ["train.micro_batch_size=2"], 2),
             ("dp2_zero", ["train.micro_batch_size=2", "parallel.zero=1"], 2),
             ("tp2_pp2", ["train.micro_batch_size=2", "parallel.tp=2", "parallel.pp=2"], 4),
             # Norm weights are replicated over TP but see only their rank's sequence slice.
             ("tp2_sp", ["train.micro_batch_size=2", "parallel.tp=2", "parallel.sequence_parallel=true"], 2),
             # 2 KV heads over 4 ranks: each KV head is held by two ranks whose gradients add up.
             ("tp4", ["train.micro_batch_size=2", "parallel.tp=4"], 4)]
    ref = reference(model, stream, mask)
    for name, sets, nproc in cases:
        compare("masked " + name, first_step(work, name, ckpt, masked, sets, nproc), ref)

    tied_model, tied_ckpt = converted(work, "tied", tied=True)
    ref = reference(tied_model, stream, mask)
    tied_cases = [("pp2", ["train.micro_batch_size=2", "parallel.pp=2"], 2),
                  ("tp2_pp2", ["train.micro_batch_size=2", "parallel.tp=2", "parallel.pp=2"], 4)]
    for name, sets, nproc in tied_cases:
        got = first_step(work, "tied_" + name, tied_ckpt, masked, sets, nproc)
        compare("tied embeddings, masked " + name, got, ref)

    ref_loss, ref_norm = reference(model, stream, None)
    loss, norm = first_step(work, "plain", ckpt, plain, ["train.micro_batch_size=2"])
    lrel, nrel = abs(loss - ref_loss) / ref_loss, abs(norm - ref_norm) / ref_norm
    check(lrel < 1e-5 and nrel < 1e-5, f"unmasked: loss {loss:.7f} vs PyTorch {ref_loss:.7f} (rel {lrel:.1e}), "
          f"grad_norm rel {nrel:.1e}")


if __name__ == "__main__":
    main()
