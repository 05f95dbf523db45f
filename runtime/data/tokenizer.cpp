// Byte tokenizer, GPT-2's vocab.json + merges.txt, the spec parser and GPT-2's pre-tokenizer.
// GPT-2's files become the same pipeline as a tokenizer.json with a ByteLevel pre-tokenizer and
// decoder (tokenizer_pipeline.h), with OpenAI encoder.py's merge rounds. The pre-tokenizer regex
// is not run by a regex engine: gpt2_pre_tokenize scans for the same pieces with character
// classes taken from the reference (unicode_classes.h), so no system Unicode tables are involved.
#include "runtime/data/tokenizer.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "weft/error.h"
#include "runtime/data/tokenizer_pipeline.h"
#include "runtime/data/unicode_classes.h"

namespace weft {
namespace {

namespace fs = std::filesystem;

class ByteTokenizer : public Tokenizer {
 public:
  std::vector<int64_t> encode(const std::string& text) const override {
    std::vector<int64_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  Encoding encode_with_offsets(const std::string& text) const override {
    Encoding enc;
    enc.ids = encode(text);
    for (size_t i = 0; i < text.size(); ++i) enc.offsets.emplace_back(i, i + 1);
    return enc;
  }
  std::vector<int64_t> add_special_tokens(const std::vector<int64_t>& ids) const override { return ids; }
  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string out;
    out.reserve(ids.size());
    for (int64_t id : ids) {
      WEFT_CHECK(id >= 0 && id <= 256, "byte tokenizer: id ", id, " is outside [0, 256]");
      if (id < 256) out.push_back(static_cast<char>(id));
    }
    return out;
  }
  int64_t token_to_id(const std::string& token) const override {
    return token.size() == 1 ? static_cast<unsigned char>(token[0]) : -1;
  }
  int64_t vocab_size() const override { return 257; }
  int64_t bos_id() const override { return -1; }
  int64_t eos_id() const override { return 256; }
  std::string spec() const override { return "byte"; }
};

const char* kGpt2Hint = "; a gpt2:DIR tokenizer needs DIR/vocab.json and DIR/merges.txt from a Hugging Face "
                        "GPT-2-style tokenizer";

std::unordered_map<std::string, int64_t> read_gpt2_vocab(const std::string& path) {
  nlohmann::json vocab;
  try {
    vocab = nlohmann::json::parse(read_tokenizer_file(path, kGpt2Hint));
  } catch (const nlohmann::json::exception& e) {
    fail(str(path, " is not valid JSON: ", e.what()));
  }
  WEFT_CHECK(vocab.is_object() && !vocab.empty(), path,
             " must be a non-empty JSON object mapping token strings to ids");
  std::unordered_map<std::string, int64_t> ids;
  std::unordered_map<int64_t, std::string> seen;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    WEFT_CHECK(it.value().is_number_integer() && it.value().get<int64_t>() >= 0 &&
                   it.value().get<int64_t>() < (int64_t{1} << 31),
               path, ": the id of token \"", it.key(), "\" must be an integer in [0, 2^31)");
    const int64_t id = it.value().get<int64_t>();
    auto [prev, fresh] = seen.emplace(id, it.key());
    WEFT_CHECK(fresh, path, ": id ", id, " is used by both \"", prev->second, "\" and \"", it.key(), "\"");
    ids[it.key()] = id;
  }
  return ids;
}

// merges.txt: an optional "#version" first line, then "left right" per line (CRLF accepted).
std::vector<std::pair<std::string, std::string>> read_gpt2_merges(
    const std::string& path, const std::unordered_map<std::string, int64_t>& vocab) {
  std::istringstream in(read_tokenizer_file(path, kGpt2Hint));
  std::vector<std::pair<std::string, std::string>> merges;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line_no == 1 && line.rfind("#version", 0) == 0) continue;
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    WEFT_CHECK(space != std::string::npos && space > 0 && space + 1 < line.size() &&
                   line.find(' ', space + 1) == std::string::npos,
               path, ":", line_no, ": expected two tokens separated by one space, got \"", line, "\"");
    std::string left = line.substr(0, space), right = line.substr(space + 1);
    for (const std::string& token : {left, right, left + right})
      WEFT_CHECK(vocab.count(token), path, ":", line_no, ": merge \"", line, "\" needs token \"", token,
                 "\", which is not in vocab.json");
    merges.emplace_back(std::move(left), std::move(right));
  }
  return merges;
}

// One character of the text to the pre-tokenizer: its class and length in bytes. A byte that is
// not valid UTF-8 is one character of class kOther, as when Python decodes with
// errors="surrogateescape" and the regex meets the lone surrogate standing for that byte.
struct TextChar {
  Gpt2CharClass cls;
  size_t len;
};

TextChar char_at(std::string_view s, size_t at) {
  size_t len = 1;
  const uint32_t cp = decode_utf8(s, at, len);
  return {cp == kInvalidUtf8 ? Gpt2CharClass::kOther : gpt2_char_class(cp), len};
}

// Byte length of the contraction at s[at] ('s 't 're 've 'm 'll 'd; lowercase only, as in
// GPT-2), or 0.
size_t contraction_at(std::string_view s, size_t at) {
  if (s[at] != '\'') return 0;
  for (std::string_view suffix : {"s", "t", "re", "ve", "m", "ll", "d"}) {
    if (s.substr(at + 1, suffix.size()) == suffix) return 1 + suffix.size();
  }
  return 0;
}

// End of the run of characters of class `cls` starting at s[at].
size_t run_end(std::string_view s, size_t at, Gpt2CharClass cls) {
  while (at < s.size()) {
    const TextChar c = char_at(s, at);
    if (c.cls != cls) break;
    at += c.len;
  }
  return at;
}

// End of the piece starting at s[at]: what the first alternative of
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// that matches at `at` matches, as a backtracking regex engine (the reference's) takes it.
size_t piece_end(std::string_view s, size_t at) {
  if (const size_t n = contraction_at(s, at)) return at + n;
  TextChar first = char_at(s, at);
  size_t start = at;
  // ` ?`: one ASCII space may lead a run of letters, numbers or other characters.
  if (s[at] == ' ' && at + 1 < s.size()) {
    const TextChar next = char_at(s, at + 1);
    if (next.cls != Gpt2CharClass::kSpace) first = next, start = at + 1;
  }
  if (first.cls != Gpt2CharClass::kSpace) return run_end(s, start, first.cls);
  // Whitespace: `\s+(?!\S)` backs off one character when the run is followed by a non-space
  // (which then takes a leading space, if that was it); a run of one then falls to `\s+`.
  size_t last = at, end = at;
  while (end < s.size()) {
    const TextChar c = char_at(s, end);
    if (c.cls != Gpt2CharClass::kSpace) break;
    last = end;
    end += c.len;
  }
  return end == s.size() || last == at ? end : last;
}

}  // namespace

std::vector<std::string_view> gpt2_pre_tokenize(std::string_view text) {
  std::vector<std::string_view> pieces;
  for (size_t at = 0; at < text.size();) {
    const size_t end = piece_end(text, at);  // > at: every character is in some alternative
    pieces.push_back(text.substr(at, end - at));
    at = end;
  }
  return pieces;
}


std::unique_ptr<Tokenizer> load_gpt2_files(const std::string& dir, const std::string& spec) {
  const std::string vocab_path = dir + "/vocab.json";
  const auto vocab = read_gpt2_vocab(vocab_path);
  const auto merges = read_gpt2_merges(dir + "/merges.txt", vocab);
  Pipeline p;
  p.spec = spec;
  p.source = vocab_path;
  BpeOptions o;
  o.merge_rounds = true;  // OpenAI's encoder.py
  p.model = std::make_unique<BpeModel>(vocab, merges, o, vocab_path);
  p.pre_tokenizer = byte_level_pre_tokenizer(/*add_prefix_space=*/false, /*use_regex=*/true);
  p.decoder = byte_level_decoder();
  p.eos = p.model->token_to_id("<|endoftext|>");
  p.eos_missing = str(vocab_path, " has no \"<|endoftext|>\" token, so there is no end-of-document id; ",
                      "preprocess without appending eos or use a vocabulary that has one");
  return make_pipeline_tokenizer(std::move(p));
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec) {
  if (spec == "byte") return std::make_unique<ByteTokenizer>();
  const size_t colon = spec.find(':');
  const std::string kind = spec.substr(0, colon), path = colon == std::string::npos ? "" : spec.substr(colon + 1);
  if (kind == "gpt2" || kind == "hf" || kind == "sp")
    WEFT_CHECK(!path.empty(), "tokenizer spec \"", spec, "\" needs a path: ", kind,
               kind == "sp" ? ":FILE" : ":DIR");
  if (kind == "gpt2") return load_gpt2_files(path, spec);
  if (kind == "sp") return load_sentencepiece(path, spec);
  if (kind == "hf") {
    if (!fs::exists(fs::path(path) / "tokenizer.json") && fs::exists(fs::path(path) / "tokenizer.model"))
      return load_sentencepiece(path + "/tokenizer.model", spec);
    return load_tokenizer_json(path, spec);
  }
  fail(str("unknown tokenizer \"", spec, "\" (expected \"byte\", \"gpt2:DIR\" with DIR/vocab.json and ",
           "DIR/merges.txt, \"hf:DIR\" with DIR/tokenizer.json or DIR/tokenizer.model, or \"sp:FILE\" with ",
           "a SentencePiece model)"));
}

TokenizerFiles tokenizer_files(const std::string& spec) {
  TokenizerFiles out;
  const size_t colon = spec.find(':');
  const std::string kind = spec.substr(0, colon), path = colon == std::string::npos ? "" : spec.substr(colon + 1);
  auto need = [&](const std::string& name, const fs::path& file, const std::string& what) {
    WEFT_CHECK(fs::exists(file), "data.tokenizer '", spec, "': ", file.string(), " does not exist; ", what);
    out.paths[name] = file.string();
  };
  if (kind == "gpt2") {
    for (const char* f : {"vocab.json", "merges.txt"})
      need(f, fs::path(path) / f, "point data.tokenizer at a directory with vocab.json and merges.txt");
    out.own_spec = "gpt2:.";
  } else if (kind == "hf") {
    // The chat template and special-token files travel too: an exported model chats as the base did.
    for (const char* f : {"tokenizer.json", "tokenizer_config.json", "tokenizer.model", "chat_template.jinja",
                          "special_tokens_map.json", "generation_config.json"})
      if (fs::exists(fs::path(path) / f)) out.paths[f] = (fs::path(path) / f).string();
    WEFT_CHECK(out.paths.count("tokenizer.json") || out.paths.count("tokenizer.model"), "data.tokenizer '", spec,
               "': ", path, " has neither tokenizer.json nor tokenizer.model");
    out.own_spec = "hf:.";
  } else if (kind == "sp") {
    need("tokenizer.model", path, "point data.tokenizer at a SentencePiece .model file");
    out.own_spec = "hf:.";  // a directory holding only tokenizer.model reads as SentencePiece
  }
  return out;
}

bool is_checkpoint_tokenizer(const std::string& spec) { return spec == "gpt2:." || spec == "hf:."; }

std::string resolve_checkpoint_tokenizer(const std::string& spec, const std::string& dir) {
  return is_checkpoint_tokenizer(spec) ? spec.substr(0, spec.size() - 1) + dir : spec;
}

}  // namespace weft
