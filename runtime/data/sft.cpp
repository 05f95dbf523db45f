// JSONL fine-tuning records -> examples. Every record is checked whole and every bad one is
// reported with its line, so a user fixes a file in one pass.
#include "runtime/data/sft.h"

#include <filesystem>
#include <fstream>

#include "weft/error.h"
#include "runtime/data/chat_template.h"
#include "runtime/data/indexed_dataset.h"
#include "runtime/data/tokenizer.h"
#include "runtime/data/unicode_classes.h"

namespace weft {
namespace {

using json = nlohmann::ordered_json;  // key order as in the file (tools render in it)

const std::string& string_field(const json& record, const char* key, const std::string& where = "") {
  auto it = record.find(key);
  WEFT_CHECK(it != record.end(), "missing field \"", where, key, "\"");
  WEFT_CHECK(it->is_string(), "field \"", where, key, "\" must be a string, got ", it->type_name());
  return it->get_ref<const std::string&>();
}

// Byte offset of the first invalid UTF-8 sequence in `s`, or npos.
size_t invalid_utf8_at(const std::string& s) {
  for (size_t at = 0; at < s.size();) {
    size_t len = 1;
    if (decode_utf8(s, at, len) == kInvalidUtf8) return at;
    at += len;
  }
  return std::string::npos;
}

SftExample chat_example(const json& record, const SftOptions& o, const Tokenizer& tok) {
  auto it = record.find("messages");
  WEFT_CHECK(it != record.end(), "missing field \"messages\"");
  WEFT_CHECK(it->is_array() && !it->empty(), "field \"messages\" must be a non-empty array");
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    const std::string where = str("messages[", i, "].");
    WEFT_CHECK(m.is_object(), "messages[", i, "] must be an object with \"role\" and \"content\"");
    string_field(m, "role", where);
    // An assistant message that calls tools may have no content (transformers drops null keys).
    const auto content = m.find("content");
    if (!(m.contains("tool_calls") && (content == m.end() || content->is_null()))) string_field(m, "content", where);
  }
  ChatContext ctx;
  ctx.bos_token = o.bos_token;
  ctx.eos_token = o.eos_token;
  if (auto tools = record.find("tools"); tools != record.end()) ctx.extra["tools"] = *tools;
  const Rendered r = o.chat_template->render(*it, ctx);
  const auto spans = o.chat_template->assistant_spans(*it, ctx);
  WEFT_CHECK(!spans.empty(), "no assistant message to train on");
  const auto enc = tok.encode_with_offsets(r.text);
  SftExample e;
  e.ids = enc.ids;
  e.mask.assign(e.ids.size(), 0);
  // A token is a target when the text it came from overlaps an assistant span (transformers'
  // assistant mask: the tokens from the span's first character to its last).
  for (size_t i = 0; i < e.ids.size(); ++i)
    for (const auto& [b, end] : spans)
      if (enc.offsets[i].first < int64_t(end) && enc.offsets[i].second > int64_t(b)) e.mask[i] = 1;
  return e;
}

}  // namespace

SftFormat parse_sft_format(const std::string& name) {
  if (name == "chat") return SftFormat::kChat;
  if (name == "prompt-completion") return SftFormat::kPromptCompletion;
  if (name == "text") return SftFormat::kText;
  fail(str("--format must be chat, prompt-completion or text, got '", name, "'"));
}

SftExample make_sft_example(const json& record, const SftOptions& o, const Tokenizer& tok) {
  WEFT_CHECK(record.is_object(), "a record must be a JSON object, got ", record.type_name());
  SftExample e;
  if (o.format == SftFormat::kChat) {
    e = chat_example(record, o, tok);
  } else {
    const bool text = o.format == SftFormat::kText;
    const std::string& first = string_field(record, text ? "text" : "prompt");
    e.ids = tok.add_special_tokens(tok.encode(first));
    e.mask.assign(e.ids.size(), text ? 1 : 0);
    std::vector<int64_t> target = text ? std::vector<int64_t>{} : tok.encode(string_field(record, "completion"));
    target.push_back(tok.eos_id());
    e.ids.insert(e.ids.end(), target.begin(), target.end());
    e.mask.resize(e.ids.size(), 1);
  }
  const int64_t n = int64_t(e.ids.size());
  WEFT_CHECK(o.max_tokens <= 0 || n <= o.max_tokens, n, " tokens, longer than ", o.max_tokens_key, "=",
             o.max_tokens, "; shorten it or raise ", o.max_tokens_key);
  // The first token is never a target (nothing precedes it).
  int64_t targets = 0;
  for (int64_t i = 1; i < n; ++i) targets += e.mask[i] != 0;
  WEFT_CHECK(targets > 0, "no token to train on");
  return e;
}

SftStats build_sft_dataset(const SftOptions& o, const Tokenizer& tok) {
  WEFT_CHECK(o.format != SftFormat::kChat || o.chat_template, "--format chat needs the model's chat template");
  std::ifstream in(o.input, std::ios::binary);
  WEFT_CHECK(in.good(), "cannot read ", o.input, " (the fine-tuning data, JSON Lines)");
  namespace fs = std::filesystem;
  const fs::path parent = fs::path(o.output_prefix).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
  IndexedDatasetWriter tokens(o.output_prefix, dtype_for_vocab(tok.vocab_size()));
  IndexedDatasetWriter mask(o.output_prefix + ".loss_mask", /*uint8*/ 1);
  SftStats st;
  std::string line;
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r\n\f\v") == std::string::npos) continue;
    ++st.records;
    try {
      const size_t bad = invalid_utf8_at(line);
      WEFT_CHECK(bad == std::string::npos, "invalid UTF-8 at byte ", bad + 1, " of the line");
      json record;
      try {
        record = json::parse(line);
      } catch (const json::exception& e) {
        const std::string what = e.what();  // "[json.exception.parse_error.101] parse error at ..."
        fail(str("not valid JSON: ", what.substr(what.find(']') == std::string::npos ? 0 : what.find(']') + 2)));
      }
      const SftExample e = make_sft_example(record, o, tok);
      if (!st.bad.empty() && !o.skip_bad) continue;  // only reporting from here on
      tokens.add_document(e.ids);
      mask.add_document(e.mask);
      ++st.examples;
      st.tokens += int64_t(e.ids.size());
      for (size_t i = 1; i < e.mask.size(); ++i) st.targets += e.mask[i] != 0;
    } catch (const Error& err) {
      st.bad.push_back(str(o.input, ":", line_no, ": ", err.what()));
    }
  }
  WEFT_CHECK(!in.bad(), "error reading ", o.input);
  if (!st.bad.empty() && !o.skip_bad) return st;  // the writers' temporaries are removed
  WEFT_CHECK(st.examples > 0, o.input, " holds no usable record (", st.records, " records, ", st.bad.size(),
             " bad); nothing to fine-tune on");
  mask.finalize();
  tokens.finalize();
  return st;
}

}  // namespace weft
