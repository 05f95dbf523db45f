// The `weft` binary: parses the command line (gflags plus repeatable --set), dispatches to a
// subcommand, and turns any error into one line on stderr and a non-zero exit.
#include <gflags/gflags.h>
#include <glog/logging.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "weft/error.h"
#include "tools/cli/commands.h"

DEFINE_string(config, "", "job config YAML file");
DEFINE_int32(nproc, 0, "start this many local worker processes");
DEFINE_string(checkpoint, "", "checkpoint directory (a step dir, a checkpoints dir or a run dir)");
DEFINE_string(data, "", "indexed dataset prefix (PREFIX.bin/PREFIX.idx); finetune: the JSONL file");
DEFINE_int64(max_batches, 0, "eval: stop after this many micro-batches (0 = all windows)");
DEFINE_string(from, "", "convert: source, hf:DIR or ckpt:DIR");
DEFINE_string(to, "", "convert: destination, hf:DIR or ckpt:DIR");
DEFINE_string(lora_export, "", "convert ckpt -> hf, finetune: merged (LoRA merged into the weights, default) | adapter (peft)");
DEFINE_string(logits_out, "", "eval: write the first micro-batch's input_ids and logits to this .safetensors file");
DEFINE_string(input, "", "preprocess: input text or JSONL file");
DEFINE_string(output, "", "preprocess: output dataset prefix");
DEFINE_string(tokenizer, "", "byte | gpt2:DIR (vocab.json + merges.txt) | hf:DIR (tokenizer.json or tokenizer.model) | sp:FILE (SentencePiece .model)");
DEFINE_string(json_key, "text", "preprocess: JSONL field holding the text");
DEFINE_string(prompt, "", "generate: prompt text");
DEFINE_int32(max_new_tokens, 64, "generate: tokens to generate");
DEFINE_double(temperature, 0.0, "generate: sampling temperature; 0 = greedy");
DEFINE_int32(top_k, 0, "generate: sample from the k most likely tokens; 0 = all");
DEFINE_int64(seed, 0, "generate: sampling seed");
DEFINE_string(model, "", "finetune: the pretrained model, hf:DIR");
DEFINE_string(format, "", "finetune (default chat), preprocess: fine-tuning record format: chat | prompt-completion | text");
DEFINE_int64(max_tokens, 0, "preprocess --format: a longer example is a bad record; 0 = no limit");
DEFINE_int64(lora_rank, 0, "finetune: LoRA rank; 0 = full fine-tuning");
DEFINE_bool(add_special_tokens, true, "preprocess: wrap each document as the tokenizer's post-processor does (e.g. Llama 3's BOS)");
DEFINE_bool(skip_bad, false, "finetune: skip bad records (counted) instead of failing");
DEFINE_bool(verbose, false, "log more, and show where errors were raised");

namespace {

struct Command {
  const char* name;
  const char* usage;
  int (*run)(const weft::CliArgs&);
};

const Command kCommands[] = {
    {"train",
     "weft train --config FILE [--set KEY=VALUE]... [--nproc N]\n"
     "  Trains the job in FILE; resumes if checkpoint.dir holds a complete checkpoint.\n"
     "  --set overrides any config key (repeatable), e.g. --set optim.lr=3e-4.\n"
     "  --nproc N starts N local workers (output prefixed [rank K]); without it, a worker reads\n"
     "  the torchrun environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT...) or runs alone.\n"
     "  SIGINT/SIGTERM finish the current step, checkpoint and exit.",
     weft::cmd_train},
    {"eval",
     "weft eval --checkpoint DIR --data PREFIX [--set KEY=VALUE]... [--max-batches N]\n"
     "          [--logits-out FILE.safetensors]\n"
     "  Mean next-token loss over the dataset's windows of train.seq_len tokens, in order.\n"
     "  Prints eval_loss=<float>. --logits-out writes the first micro-batch's input_ids (B, T)\n"
     "  and logits (B, T, vocab_size) fp32 (one process).",
     weft::cmd_eval},
    {"plan",
     "weft plan --config FILE [--set KEY=VALUE]... [--nproc N]\n"
     "  Sizes the job on the meta device (nothing allocated): parameters=<int>, memory estimates,\n"
     "  and for the parallel.* layout on N ranks (default tp x pp) the parameters each rank holds.",
     weft::cmd_plan},
    {"convert",
     "weft convert --from hf:DIR|ckpt:DIR --to hf:DIR|ckpt:DIR [--set KEY=VALUE]... [--nproc N]\n"
     "             [--lora-export merged|adapter]\n"
     "  Hugging Face safetensors + config.json <-> Weft checkpoint (Llama and GPT-2 families).\n"
     "  ckpt -> hf of a LoRA run: merged (default; LoRA folded into the weights) or adapter (a peft\n"
     "  adapter_config.json + adapter_model.safetensors for PeftModel.from_pretrained; Llama).\n"
     "  ckpt -> ckpt writes the checkpoint again for the layout --set parallel.* gives, with its\n"
     "  optimizer state and data position, on N local ranks (default: the source's world size).",
     weft::cmd_convert},
    {"preprocess",
     "weft preprocess --input FILE --tokenizer byte|gpt2:DIR|hf:DIR|sp:FILE --output PREFIX [--json-key text]\n"
     "  Text (documents separated by blank lines) or JSONL -> Megatron indexed dataset\n"
     "  PREFIX.bin/PREFIX.idx: each document wrapped as the tokenizer's post-processor does (Llama 3:\n"
     "  BOS first; --add_special_tokens=false: not), then one end-of-document token.\n"
     "  --format chat|prompt-completion|text [--model hf:DIR] [--max-tokens N] [--skip-bad]: fine-tuning\n"
     "  records -> one example per document plus PREFIX.loss_mask (see `weft finetune`).",
     weft::cmd_preprocess},
    {"generate",
     "weft generate --checkpoint DIR --prompt TEXT [--max-new-tokens N] [--temperature T]\n"
     "              [--top-k K] [--seed S] [--tokenizer SPEC]\n"
     "  Continues the prompt; greedy unless --temperature > 0.",
     weft::cmd_generate},
    {"finetune",
     "weft finetune --model hf:DIR --data FILE.jsonl [--format chat|prompt-completion|text]\n"
     "              [--lora-rank R] [--lora-export merged|adapter] [--output DIR] [--skip-bad]\n"
     "              [--config FILE] [--set KEY=VALUE]... [--nproc N]\n"
     "  Supervised fine-tuning: loss on the answers only (chat: the assistant turns of the model's\n"
     "  chat template), examples packed without attending to each other, LoRA with --lora-rank.\n"
     "  Ends with a Hugging Face directory (--output, default <run.dir>/hf): LoRA merged, or a\n"
     "  peft adapter with --lora-export adapter. Re-running the same command resumes.",
     weft::cmd_finetune},
};

void print_overview() {
  std::printf("weft: train transformers from a config file.\n\nusage: weft <command> [flags]\n\ncommands:\n");
  // Each command's first description line: the first usage line indented by exactly two spaces.
  for (const auto& c : kCommands) {
    const char* line = c.usage;
    while ((line = std::strchr(line, '\n')) && !(line[1] == ' ' && line[2] == ' ' && line[3] != ' ')) ++line;
    const char* text = line ? line + 3 : "";
    std::printf("  %-11s %.*s\n", c.name, int(std::strcspn(text, "\n")), text);
  }
  std::printf("\n'weft <command> --help' documents each command.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "help") || !std::strcmp(argv[1], "--help") ||
      !std::strcmp(argv[1], "-h")) {
    if (argc >= 3)
      for (const auto& c : kCommands)
        if (!std::strcmp(argv[2], c.name)) return std::printf("%s\n", c.usage), 0;
    print_overview();
    return argc < 2 ? 1 : 0;
  }
  const Command* cmd = nullptr;
  for (const auto& c : kCommands)
    if (!std::strcmp(argv[1], c.name)) cmd = &c;
  if (!cmd) {
    std::fprintf(stderr, "weft: unknown command '%s'; run 'weft help' for the list\n", argv[1]);
    return 2;
  }

  // --set may repeat, which gflags cannot express: collect it here and hide it from gflags.
  weft::CliArgs args;
  args.argv.assign(argv + 1, argv + argc);
  std::vector<char*> rest = {argv[0]};
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h" || a == "-help") return std::printf("%s\n", cmd->usage), 0;
    if (a == "--set" || a == "-set") {
      if (i + 1 >= argc) return std::fprintf(stderr, "weft: --set needs KEY=VALUE\n"), 2;
      args.overrides.push_back(argv[++i]);
    } else if (a.rfind("--set=", 0) == 0) {
      args.overrides.push_back(a.substr(6));
    } else {
      rest.push_back(argv[i]);
    }
  }
  int rest_argc = static_cast<int>(rest.size());
  char** rest_argv = rest.data();
  gflags::SetUsageMessage(cmd->usage);
  gflags::ParseCommandLineNonHelpFlags(&rest_argc, &rest_argv, /*remove_flags=*/true);
  if (rest_argc > 1) {
    std::fprintf(stderr, "weft %s: unexpected argument '%s'; see 'weft %s --help'\n", cmd->name,
                 rest_argv[1], cmd->name);
    return 2;
  }
  FLAGS_logtostderr = true;
  FLAGS_minloglevel = FLAGS_verbose ? 0 : 1;
  google::InitGoogleLogging(argv[0]);

  args.config = FLAGS_config;
  args.nproc = FLAGS_nproc;
  if (!gflags::GetCommandLineFlagInfoOrDie("nproc").is_default && FLAGS_nproc < 1) {
    std::fprintf(stderr, "weft %s: error: --nproc must be >= 1, got %d\n", cmd->name, FLAGS_nproc);
    return 1;
  }
  args.checkpoint = FLAGS_checkpoint;
  args.data = FLAGS_data;
  args.max_batches = FLAGS_max_batches;
  args.from = FLAGS_from;
  args.to = FLAGS_to;
  args.lora_export = FLAGS_lora_export;
  args.logits_out = FLAGS_logits_out;
  args.input = FLAGS_input;
  args.output = FLAGS_output;
  args.tokenizer = FLAGS_tokenizer;
  args.json_key = FLAGS_json_key;
  args.prompt = FLAGS_prompt;
  args.max_new_tokens = FLAGS_max_new_tokens;
  args.temperature = FLAGS_temperature;
  args.top_k = FLAGS_top_k;
  args.seed = FLAGS_seed;
  args.model = FLAGS_model;
  args.format = FLAGS_format;
  args.lora_rank = FLAGS_lora_rank;
  args.skip_bad = FLAGS_skip_bad;
  args.max_tokens = FLAGS_max_tokens;
  args.add_special_tokens = FLAGS_add_special_tokens;
  try {
    return cmd->run(args);
  } catch (const weft::Error& e) {
    std::fprintf(stderr, "weft %s: error: %s\n", cmd->name, e.what());
    if (FLAGS_verbose && !e.where().empty()) std::fprintf(stderr, "  (raised at %s)\n", e.where().c_str());
  } catch (const c10::Error& e) {  // LibTorch's own checks: keep the first line
    const std::string msg = e.what_without_backtrace();
    std::fprintf(stderr, "weft %s: error: %s\n", cmd->name, msg.substr(0, msg.find('\n')).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "weft %s: error: %s\n", cmd->name, e.what());
  }
  return 1;
}
