// Streaming text/JSONL -> indexed dataset conversion: reads line by line, tokenizes one document
// at a time and appends it to an IndexedDatasetWriter, so memory stays flat for any input size.
#include "runtime/data/preprocess.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "weft/error.h"
#include "runtime/data/indexed_dataset.h"
#include "runtime/data/tokenizer.h"

namespace weft {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_blank(const std::string& line) {
  return line.find_first_not_of(" \t\r\n\f\v") == std::string::npos;
}

// Prints "preprocess: 12.3 MB / 45.6 MB (27%), 1234 docs, 2.1 MB/s" at most once a second.
class Progress {
 public:
  Progress(bool enabled, int64_t total) : enabled_(enabled), total_(total) {}

  void update(int64_t done, int64_t docs, bool final_line = false) {
    if (!enabled_) return;
    auto now = Clock::now();
    if (!final_line && now - last_ < std::chrono::seconds(1)) return;
    // Small inputs finish silently; the last line is only worth printing after earlier ones.
    if (final_line && !printed_) return;
    last_ = now;
    printed_ = true;
    double secs = std::chrono::duration<double>(now - start_).count();
    double pct = total_ > 0 ? 100.0 * static_cast<double>(done) / static_cast<double>(total_) : 100;
    std::fprintf(stderr, "preprocess: %.1f MB / %.1f MB (%.0f%%), %lld docs, %.1f MB/s\n",
                 done / 1e6, total_ / 1e6, pct, static_cast<long long>(docs),
                 secs > 0 ? done / 1e6 / secs : 0.0);
  }

 private:
  using Clock = std::chrono::steady_clock;
  bool enabled_;
  int64_t total_;
  Clock::time_point start_ = Clock::now(), last_ = Clock::now();
  bool printed_ = false;
};

// JSON Lines: calls emit(text) with the json_key field of each non-blank line.
void read_jsonl(std::istream& in, const PreprocessOptions& o, int64_t& consumed,
                const std::function<void(const std::string&)>& emit) {
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    consumed += static_cast<int64_t>(line.size()) + 1;
    if (is_blank(line)) continue;
    nlohmann::json doc;
    try {
      doc = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(str(o.input, ":", line_no, ": invalid JSON (", e.what(),
               "); expected one JSON object per line"));
    }
    WEFT_CHECK(doc.is_object(), o.input, ":", line_no, ": expected a JSON object per line, got ",
               doc.type_name());
    auto field = doc.find(o.json_key);
    WEFT_CHECK(field != doc.end(), o.input, ":", line_no, ": no \"", o.json_key,
               "\" field (choose the field with --json-key)");
    WEFT_CHECK(field->is_string(), o.input, ":", line_no, ": field \"", o.json_key, "\" is a ",
               field->type_name(), ", expected a string");
    emit(field->get_ref<const std::string&>());
  }
}

// Plain text: paragraphs separated by one or more blank lines are documents; the lines of a
// paragraph keep their newlines between them.
void read_text(std::istream& in, int64_t& consumed,
               const std::function<void(const std::string&)>& emit) {
  std::string line, doc;
  bool open = false;
  while (std::getline(in, line)) {
    consumed += static_cast<int64_t>(line.size()) + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (is_blank(line)) {
      if (open) emit(doc);
      doc.clear();
      open = false;
      continue;
    }
    if (open) doc.push_back('\n');
    doc += line;
    open = true;
  }
  if (open) emit(doc);
}

}  // namespace

PreprocessStats run_preprocess(const PreprocessOptions& o) {
  WEFT_CHECK(!o.input.empty(), "preprocess: --input is required");
  WEFT_CHECK(!o.output_prefix.empty(), "preprocess: --output is required");
  std::ifstream in(o.input, std::ios::binary);
  WEFT_CHECK(in.good(), "cannot read ", o.input, " (preprocess --input)");
  std::error_code ec;
  const int64_t total = static_cast<int64_t>(std::filesystem::file_size(o.input, ec));

  std::unique_ptr<Tokenizer> tokenizer = make_tokenizer(o.tokenizer_spec);
  const int64_t eos = o.append_eos ? tokenizer->eos_id() : -1;
  PreprocessStats stats;
  stats.dtype_code = dtype_for_vocab(tokenizer->vocab_size());

  std::filesystem::path parent = std::filesystem::path(o.output_prefix).parent_path();
  if (!parent.empty()) {
    std::filesystem::create_directories(parent, ec);
    WEFT_CHECK(!ec, "cannot create directory ", parent.string(), " for ", o.output_prefix, ": ",
               ec.message());
  }
  IndexedDatasetWriter writer(o.output_prefix, stats.dtype_code);
  Progress progress(o.progress, total);
  int64_t consumed = 0;

  auto emit = [&](const std::string& text) {
    if (text.empty()) {
      ++stats.skipped_empty;
      return;
    }
    std::vector<int64_t> ids = tokenizer->encode(text);
    if (o.add_special_tokens) ids = tokenizer->add_special_tokens(ids);
    if (eos >= 0) ids.push_back(eos);
    writer.add_document(ids);
    ++stats.documents;
    stats.tokens += static_cast<int64_t>(ids.size());
    progress.update(std::min(consumed, total), stats.documents);
  };
  const bool json = ends_with(o.input, ".jsonl") || ends_with(o.input, ".json");
  if (json) {
    read_jsonl(in, o, consumed, emit);
  } else {
    read_text(in, consumed, emit);
  }
  WEFT_CHECK(!in.bad(), "error reading ", o.input);

  writer.finalize();
  stats.input_bytes = total;
  progress.update(total, stats.documents, /*final_line=*/true);
  return stats;
}

}  // namespace weft
