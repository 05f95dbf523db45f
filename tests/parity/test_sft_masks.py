"""The examples `weft finetune` trains on, against transformers' apply_chat_template. For the
Llama 3, Qwen 2.5 (ChatML) and Llama 2 chat templates as published, and for the same templates
with {% generation %} blocks, a chat JSONL of multi-turn conversations (system prompts,
unicode, whitespace to trim) goes through `weft finetune` (one training step; the prepared
dataset is the point). Each prepared example, read back from run.dir/data/sft with megatron-core's
IndexedDataset, must hold exactly the ids of
  tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                return_assistant_tokens_mask=True)
and its loss mask must equal that call's assistant_masks for the generation-tagged template
(transformers gives no mask for untagged templates; Weft's rule for them must give the same).
The tokenizer (a byte-level BPE with every family's special tokens) and the model are made here."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
from megatron.core.datasets.indexed_dataset import IndexedDataset  # noqa: E402

from test_chat_template import TEMPLATES, with_generation  # noqa: E402
from weft_test import check, tmpdir, weft  # noqa: E402

SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|im_start|>",
            "<|im_end|>", "<s>", "</s>", "<|endoftext|>"]
FAMILIES = {"llama3": ("<|begin_of_text|>", "<|eot_id|>"), "qwen25": (None, "<|im_end|>"), "llama2": ("<s>", "</s>")}

CONVERSATIONS = [
    [{"role": "user", "content": "Hello there!"}, {"role": "assistant", "content": "Hi. How can I help?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "  and 3+3?  "},
     {"role": "assistant", "content": " 6 \n"}],
    [{"role": "user", "content": "Übersetze: 猫"}, {"role": "assistant", "content": "Katze 🐈"},
     {"role": "user", "content": "Danke"}, {"role": "assistant", "content": "Gern geschehen!"}],
]


def make_hf_dir(work):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = Tokenizer(models.BPE())
    split = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    corpus = [json.dumps(c, ensure_ascii=False) for c in CONVERSATIONS] * 3 + ["system user assistant INST SYS"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIALS,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
                                         max_position_embeddings=256))
    return tok, model


def main():
    from transformers import AutoTokenizer

    work = tmpdir("sft_masks")
    tok, model = make_hf_dir(work)
    data = os.path.join(work, "chat.jsonl")
    with open(data, "w") as f:
        for c in CONVERSATIONS:
            f.write(json.dumps({"messages": c}, ensure_ascii=False) + "\n")
    for family, (bos, eos) in FAMILIES.items():
        tagged = with_generation(family, TEMPLATES[family])
        want = None
        for variant, template in (("generation", tagged), ("published", TEMPLATES[family])):
            hf = os.path.join(work, f"{family}_{variant}")
            model.save_pretrained(hf, safe_serialization=True)
            tok.save(os.path.join(hf, "tokenizer.json"))
            config = {"eos_token": eos, "chat_template": template, "tokenizer_class": "PreTrainedTokenizerFast"}
            if bos:
                config["bos_token"] = bos
            with open(os.path.join(hf, "tokenizer_config.json"), "w") as f:
                json.dump(config, f)
            if want is None:  # transformers, on the tagged template
                ref = AutoTokenizer.from_pretrained(hf)
                want = []
                for c in CONVERSATIONS:
                    out = ref.apply_chat_template(c, tokenize=True, return_dict=True,
                                                  return_assistant_tokens_mask=True)
                    want.append((list(out["input_ids"]), list(out["assistant_masks"])))
                check(all(sum(m) > 0 for _, m in want), f"{family}: transformers marks assistant tokens")
            run = os.path.join(work, f"run_{family}_{variant}")
            weft("finetune", "--model", "hf:" + hf, "--data", data, "--set", "run.dir=" + run,
                 "--set", "train.steps=1", "--set", "train.seq_len=200", "--set", "train.global_batch_size=1",
                 "--set", "run.tensorboard=false", "--set", "run.peak_tflops=1")
            prefixes = [os.path.join(run, "data", "sft")]
            if variant == "published":  # `weft preprocess --format chat` writes the same examples
                prefixes.append(os.path.join(work, f"pre_{family}"))
                weft("preprocess", "--format", "chat", "--tokenizer", "hf:" + hf, "--input", data,
                     "--output", prefixes[-1])
            for prefix in prefixes:
                compare(family, variant + (" template, preprocess" if "pre_" in prefix else " template"), prefix, want)


def compare(family, variant, prefix, want):
    ids, masks = IndexedDataset(prefix), IndexedDataset(prefix + ".loss_mask")
    for k, (want_ids, want_mask) in enumerate(want):
        got_ids, got_mask = ids[k].tolist(), masks[k].tolist()
        check(got_ids == want_ids, f"{family} ({variant}), conversation {k}: ids equal "
              f"transformers' ({len(got_ids)} tokens)" + ("" if got_ids == want_ids else
                                                           f"\n  weft {got_ids}\n  hf   {want_ids}"))
        check(got_mask == want_mask, f"{family} ({variant}), conversation {k}: loss mask equals "
              f"transformers' assistant mask ({sum(want_mask)} targets)" +
              ("" if got_mask == want_mask else f"\n  weft {got_mask}\n  hf   {want_mask}"))


if __name__ == "__main__":
    main()
