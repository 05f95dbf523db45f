// The subcommands of `weft`, each a thin layer over the library. Each returns the exit code and
// throws weft::Error for bad input (main prints it as one line).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace weft {

struct CliArgs {
  std::vector<std::string> argv;  // the command line after the program name, as given
  std::string config;
  std::vector<std::string> overrides;  // --set KEY=VALUE, in order
  int nproc = 0;
  std::string checkpoint, data, from, to, input, output, tokenizer, json_key, prompt;
  std::string lora_export;  // convert ckpt -> hf: merged | adapter ("" = merged)
  std::string logits_out;   // eval: where to write the first micro-batch's input ids and logits
  int64_t max_batches = 0;
  int max_new_tokens = 64;
  double temperature = 0;
  int top_k = 0;
  int64_t seed = 0;
  // finetune
  std::string model, format;
  int64_t lora_rank = 0;
  bool skip_bad = false;
  bool add_special_tokens = true;  // preprocess
  int64_t max_tokens = 0;          // preprocess --format: longer examples are bad records
};

int cmd_train(const CliArgs& args);
int cmd_eval(const CliArgs& args);
int cmd_plan(const CliArgs& args);
int cmd_convert(const CliArgs& args);
int cmd_preprocess(const CliArgs& args);
int cmd_generate(const CliArgs& args);
int cmd_finetune(const CliArgs& args);

}  // namespace weft
