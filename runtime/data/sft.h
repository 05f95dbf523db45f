// Supervised fine-tuning data: JSON Lines records -> examples (token ids + loss mask), written as
// an indexed dataset (one document per example) with its PREFIX.loss_mask companion, ready for
// data.packing=packed|padded.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace weft {

class Tokenizer;
class ChatTemplate;

// Record formats (one JSON object per line):
//   chat:              {"messages": [{"role": "...", "content": "..."}, ...], "tools": [...]?}
//                      rendered by the model's chat template; targets are the assistant replies
//                      (ChatTemplate::assistant_spans), every other token is masked.
//   prompt-completion: {"prompt": "...", "completion": "..."}: the prompt with the tokenizer's
//                      own special tokens (its post-processor, e.g. Llama 3's BOS), then the
//                      completion and eos; targets are the completion and eos.
//   text:              {"text": "..."}: as prompt-completion with everything a target.
enum class SftFormat { kChat, kPromptCompletion, kText };
// "chat" | "prompt-completion" | "text"; throws weft::Error naming --format otherwise.
SftFormat parse_sft_format(const std::string& name);

struct SftOptions {
  std::string input;          // the JSONL file
  std::string output_prefix;  // writes PREFIX.{bin,idx} and PREFIX.loss_mask.{bin,idx}
  SftFormat format = SftFormat::kChat;
  int64_t max_tokens = 0;  // a longer example is a bad record; 0 = no limit
  std::string max_tokens_key = "train.seq_len";  // what sets max_tokens, for the message
  bool skip_bad = false;   // skip bad records (counted) instead of failing
  // Chat: the template and the strings it sees as bos_token / eos_token.
  const ChatTemplate* chat_template = nullptr;
  std::string bos_token, eos_token;
};

struct SftStats {
  int64_t records = 0;   // non-blank lines
  int64_t examples = 0;  // written
  int64_t tokens = 0, targets = 0;
  // "FILE:LINE: what" for each bad record: not JSON, invalid UTF-8, a missing or mistyped field,
  // longer than max_tokens, or nothing to train on.
  std::vector<std::string> bad;
};

// One record's example: ids (N) and mask (N, 1 = a target). Throws weft::Error saying what is
// wrong with the record (no file or line: the caller adds them).
struct SftExample {
  std::vector<int64_t> ids, mask;
};
SftExample make_sft_example(const nlohmann::ordered_json& record, const SftOptions& options, const Tokenizer& tokenizer);

// Reads options.input and, when no record is bad or options.skip_bad, writes the dataset
// atomically (both pairs or neither). With bad records and !skip_bad nothing is written and
// stats.bad lists them all (the caller reports them). Throws weft::Error for an unreadable input
// or unwritable output. Not thread-safe.
SftStats build_sft_dataset(const SftOptions& options, const Tokenizer& tokenizer);

}  // namespace weft
