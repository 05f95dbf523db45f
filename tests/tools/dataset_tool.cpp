// Test-only CLI over runtime/data, so Python parity tests can drive Weft's dataset and tokenizer
// code and compare it with Megatron-core and Hugging Face. Not installed; not a user interface.
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "weft/config.h"
#include "weft/error.h"
#include "runtime/data/gpt_dataset.h"
#include "runtime/job.h"
#include "runtime/data/indexed_dataset.h"
#include "runtime/data/preprocess.h"
#include "runtime/data/tokenizer.h"

namespace {

const char* kUsage =
    "usage: weft_dataset_tool COMMAND ...\n"
    "  dump PREFIX               one line of tokens per sequence, then 'documents: ...'\n"
    "  write PREFIX DTYPE_CODE   stdin: one document per line (space-separated ids)\n"
    "  preprocess INPUT SPEC PREFIX [--json-key K] [--no-eos]\n"
    "  encode SPEC               stdin text -> space-separated ids\n"
    "  decode SPEC               stdin ids -> text on stdout\n"
    "  encode-batch SPEC         stdin JSON list of strings -> JSON list of id lists\n"
    "  decode-batch SPEC         stdin JSON list of id lists -> JSON list of strings\n"
    "  encode-offsets-batch SPEC stdin JSON list of strings -> JSON list of\n"
    "                            {\"ids\": [...], \"offsets\": [[begin, end], ...]} (bytes)\n"
    "  tokenizer-info SPEC [TOKEN...]  JSON {vocab_size, bos, eos (-1 if none),\n"
    "                            template: add_special_tokens([]), ids: token_to_id of each}\n"
    "  pre-tokenize-batch        stdin JSON list of strings -> JSON list of GPT-2 piece lists\n"
    "  samples CONFIG FIRST COUNT [KEY=VALUE]...\n"
    "                            JSON list of the training samples FIRST.. of the job's train\n"
    "                            split, in the order the trainer takes them (seq_len + 1 ids)\n";

std::string read_stdin() {
  std::ios::sync_with_stdio(false);
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

void print_ids(const std::vector<int64_t>& ids) {
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line.push_back(' ');
    line += std::to_string(ids[i]);
  }
  std::cout << line << '\n';
}

int dump(const std::string& prefix) {
  weft::IndexedDataset data(prefix);
  std::vector<int64_t> tokens;
  for (int64_t s = 0; s < data.num_sequences(); ++s) {
    tokens.resize(static_cast<size_t>(data.sequence_length(s)));
    data.read(s, 0, static_cast<int64_t>(tokens.size()), tokens.data());
    print_ids(tokens);
  }
  std::cout << "documents:";
  for (int64_t d : data.document_indices()) std::cout << ' ' << d;
  std::cout << "\ndtype: " << data.dtype_code() << '\n';
  return 0;
}

int write(const std::string& prefix, int code) {
  weft::IndexedDatasetWriter writer(prefix, code);
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::vector<int64_t> doc;
    int64_t v;
    while (in >> v) doc.push_back(v);
    writer.add_document(doc);
  }
  writer.finalize();
  return 0;
}

// The samples the trainer reads for global indices [first, first + count): with one DP rank,
// step s takes [s * global_batch_size, (s + 1) * global_batch_size) in micro-batch order.
int samples(const std::vector<std::string>& args) {
  weft::Config cfg = weft::load_config(args[1]);
  for (size_t i = 4; i < args.size(); ++i) weft::apply_override(cfg, args[i]);
  cfg.validate();
  auto data = weft::open_dataset(cfg, weft::DataSplit::kTrain);
  const int64_t first = std::stoll(args[2]), count = std::stoll(args[3]);
  nlohmann::json out = nlohmann::json::array();
  std::vector<int64_t> tokens(static_cast<size_t>(data->seq_len() + 1));
  for (int64_t i = first; i < first + count; ++i) {
    data->get(i, tokens.data());
    out.push_back(tokens);
  }
  std::cout << out.dump() << '\n';
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.size() == 2 && args[0] == "dump") return dump(args[1]);
    if (args.size() == 3 && args[0] == "write") return write(args[1], std::stoi(args[2]));
    if (args.size() >= 4 && args[0] == "samples") return samples(args);
    if (args.size() == 2 && args[0] == "encode") {
      print_ids(weft::make_tokenizer(args[1])->encode(read_stdin()));
      return 0;
    }
    if (args.size() == 2 && args[0] == "decode") {
      std::istringstream in(read_stdin());
      std::vector<int64_t> ids;
      int64_t v;
      while (in >> v) ids.push_back(v);
      std::cout << weft::make_tokenizer(args[1])->decode(ids);
      return 0;
    }
    // Batch forms: one process (and one LibTorch load) for many texts.
    if (args.size() == 2 && args[0] == "encode-batch") {
      auto tok = weft::make_tokenizer(args[1]);
      nlohmann::json out = nlohmann::json::array();
      for (const auto& s : nlohmann::json::parse(read_stdin())) {
        out.push_back(tok->encode(s.get<std::string>()));
      }
      std::cout << out.dump() << '\n';
      return 0;
    }
    if (args.size() == 2 && args[0] == "decode-batch") {
      auto tok = weft::make_tokenizer(args[1]);
      nlohmann::json out = nlohmann::json::array();
      for (const auto& ids : nlohmann::json::parse(read_stdin())) {
        out.push_back(tok->decode(ids.get<std::vector<int64_t>>()));
      }
      std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
      return 0;
    }
    if (args.size() == 2 && args[0] == "encode-offsets-batch") {
      auto tok = weft::make_tokenizer(args[1]);
      nlohmann::json out = nlohmann::json::array();
      for (const auto& s : nlohmann::json::parse(read_stdin())) {
        const weft::Encoding enc = tok->encode_with_offsets(s.get<std::string>());
        out.push_back({{"ids", enc.ids}, {"offsets", enc.offsets}});
      }
      std::cout << out.dump() << '\n';
      return 0;
    }
    if (args.size() >= 2 && args[0] == "tokenizer-info") {
      auto tok = weft::make_tokenizer(args[1]);
      int64_t eos = -1;
      try {
        eos = tok->eos_id();
      } catch (const weft::Error&) {
      }
      nlohmann::json ids = nlohmann::json::array();
      for (size_t i = 2; i < args.size(); ++i) ids.push_back(tok->token_to_id(args[i]));
      nlohmann::json out = {{"vocab_size", tok->vocab_size()}, {"bos", tok->bos_id()}, {"eos", eos},
                            {"template", tok->add_special_tokens({})}, {"ids", ids},
                            {"wrapped", tok->add_special_tokens({7, 8})}, {"spec", tok->spec()}};
      std::cout << out.dump() << '\n';
      return 0;
    }
    if (args.size() == 1 && args[0] == "pre-tokenize-batch") {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& s : nlohmann::json::parse(read_stdin())) {
        const std::string text = s.get<std::string>();
        nlohmann::json pieces = nlohmann::json::array();
        for (std::string_view p : weft::gpt2_pre_tokenize(text)) pieces.push_back(std::string(p));
        out.push_back(std::move(pieces));
      }
      std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
      return 0;
    }
    if (args.size() >= 4 && args[0] == "preprocess") {
      weft::PreprocessOptions o;
      o.input = args[1];
      o.tokenizer_spec = args[2];
      o.output_prefix = args[3];
      for (size_t i = 4; i < args.size(); ++i) {
        if (args[i] == "--no-eos") {
          o.append_eos = false;
        } else if (args[i] == "--json-key" && i + 1 < args.size()) {
          o.json_key = args[++i];
        } else {
          throw weft::Error("unknown preprocess option " + args[i]);
        }
      }
      weft::PreprocessStats s = weft::run_preprocess(o);
      std::cout << "documents=" << s.documents << " tokens=" << s.tokens
                << " dtype=" << s.dtype_code << '\n';
      return 0;
    }
    std::cerr << kUsage;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << '\n';
    return 1;
  }
}
