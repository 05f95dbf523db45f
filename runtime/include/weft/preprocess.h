// weft::run_preprocess, what `weft preprocess` runs: text or JSON Lines in, Megatron indexed
// dataset out. One document per JSON line (or per blank-line-separated paragraph of plain text),
// one sequence per document.
#pragma once

#include <cstdint>
#include <string>

namespace weft {

struct PreprocessOptions {
  std::string input;                    // .jsonl / .json (JSON Lines) or anything else (plain text)
  std::string tokenizer_spec = "byte";  // byte | gpt2:DIR | hf:DIR | sp:FILE
  std::string output_prefix;            // writes OUTPUT_PREFIX.bin / .idx (parent dirs created)
  std::string json_key = "text";        // string field holding the document in JSON input
  bool append_eos = true;               // end every document with the tokenizer's eos id
  // Wrap each document as the tokenizer's post-processor does (Llama 3, Llama 2: BOS first), as
  // Hugging Face's tokenizer(text) and Megatron's preprocess_data.py do; byte, gpt2: nothing.
  bool add_special_tokens = true;
  bool progress = true;                 // progress lines on stderr, at most one per second
};

struct PreprocessStats {
  int64_t documents = 0;      // documents written
  int64_t tokens = 0;         // tokens written, eos included
  int64_t skipped_empty = 0;  // JSON documents with empty text (not written)
  int64_t input_bytes = 0;
  int dtype_code = 0;  // token dtype of the output (dtype_for_vocab)
};

// Tokenizes options.input into options.output_prefix. The output appears atomically (both files
// or neither; an old pair is replaced only when the new one is complete).
// Throws weft::Error naming the input file and line for unreadable input or a bad JSON line, and
// the tokenizer/output errors of make_tokenizer and IndexedDatasetWriter. Not thread-safe.
PreprocessStats run_preprocess(const PreprocessOptions& options);

// Fine-tuning records (JSONL, `format` chat | prompt-completion | text) -> PREFIX.{bin,idx} and
// PREFIX.loss_mask.{bin,idx}, one example per document (see runtime/data/sft.h). Chat reads the
// template and bos/eos strings from `model_dir`. Bad records ("FILE:LINE: what") fail the call,
// or with skip_bad are skipped and counted. `console`: print each bad record ("weft COMMAND:
// error: ..." / "weft COMMAND: skipped ...") on stderr and the summary on stdout, as the CLI
// does; otherwise they go to the log. Returns the examples written; throws weft::Error.
int64_t write_sft_data(const std::string& command, const std::string& input, const std::string& prefix,
                       const std::string& format, const std::string& tokenizer_spec, const std::string& model_dir,
                       int64_t max_tokens, bool skip_bad, bool console = true);

}  // namespace weft
