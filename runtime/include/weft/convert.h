// weft::convert: model format conversion, what `weft convert` runs. Hugging Face directories
// (config.json + safetensors, Llama and GPT-2 families) <-> Weft checkpoints, a checkpoint to a
// peft LoRA adapter, and a checkpoint written again for another parallel layout.
//
//   weft::convert("hf:/models/llama", "ckpt:runs/base");       // import
//   weft::ConvertOptions o;
//   o.lora_export = "adapter";
//   weft::convert("ckpt:runs/ft", "hf:/out/adapter", o);         // peft adapter of a LoRA run
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace weft {

struct ConvertOptions {
  // key=value overrides (as `--set`): on the source checkpoint's config for ckpt -> *, on the
  // config written with the checkpoint for hf -> ckpt. For ckpt -> ckpt the parallel.* keys
  // choose the target layout.
  std::vector<std::string> overrides;
  // ckpt -> hf of a LoRA run: "merged" (LoRA folded into the weights; "" means the same) or
  // "adapter" (peft adapter_config.json + adapter_model.safetensors; Llama only).
  std::string lora_export;
  // ckpt -> ckpt: the ranks that write the new layout; 0 = the source checkpoint's world size.
  int64_t nproc = 0;
  // ckpt -> ckpt as one rank of a multi-process job: line-buffered stdout and a spare rank's
  // notice there (WorkerOptions::console). Off by default: nothing is printed to stdout.
  bool console = false;
};

struct ConvertResult {
  // The line `weft convert` prints, "converted FROM -> TO (...)"; "" when this process wrote its
  // part of a multi-rank ckpt -> ckpt conversion but is not its primary rank, or when nothing was
  // written (processes > 1).
  std::string summary;
  // ckpt -> ckpt on more than one rank, called outside a multi-rank job: the number of processes
  // the conversion needs. Nothing was written; the caller starts that many processes with the
  // torchrun environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT...), each calling convert()
  // with the same arguments. 0 otherwise.
  int64_t processes = 0;
};

// Converts `from` into `to`, each "hf:DIR" or "ckpt:DIR" (a ckpt source may be a step directory,
// a checkpoint root or a run directory):
//   hf -> ckpt   a step-0 checkpoint (model weights, config, the tokenizer's files) under DIR
//   hf -> hf     the model written again (tensors validated against Weft's model)
//   ckpt -> hf   the whole model (LoRA merged), or a peft adapter (lora_export "adapter")
//   ckpt -> ckpt the checkpoint (weights, optimizer state, data position, RNG) for the layout the
//                parallel.* overrides give; `to` must be a new or empty directory. Collective
//                when this process is one rank of a torchrun-style job (WORLD_SIZE > 1): every
//                rank calls it.
// Reads the whole model into this process's memory (CPU); ckpt -> ckpt holds this rank's share.
// Throws weft::Error (one line naming the spec, path, tensor or key) for a malformed spec, a
// missing or unreadable source, a tensor that does not fit the model config, an impossible
// layout or a failed write. Not thread-safe with other writers of `to`.
ConvertResult convert(const std::string& from, const std::string& to, const ConvertOptions& opts = {});

}  // namespace weft
