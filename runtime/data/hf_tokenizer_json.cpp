// tokenizer.json -> Pipeline. Every part is checked against what Weft implements; anything else
// is a one-line error naming the file, the JSON path and the value, never a guess.
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "weft/error.h"
#include "runtime/data/tokenizer_pipeline.h"

namespace weft {

using nlohmann::json;

namespace {

class JsonReader {
 public:
  explicit JsonReader(std::string file) : file_(std::move(file)) {}
  const std::string& file() const { return file_; }

  [[noreturn]] void bad(const std::string& path, const std::string& what) const {
    fail(str(file_, ": ", path, " ", what));
  }
  [[noreturn]] void unsupported(const std::string& path, const json& value,
                                const std::string& supported) const {
    bad(path, str(value.dump(), " is not supported (Weft supports ", supported, ")"));
  }
  const json& field(const json& obj, const std::string& key, const std::string& path) const {
    if (!obj.is_object() || !obj.contains(key)) bad(path + "." + key, "is missing");
    return obj.at(key);
  }
  std::string string(const json& obj, const std::string& key, const std::string& path) const {
    const json& v = field(obj, key, path);
    if (!v.is_string()) bad(path + "." + key, str("must be a string, got ", v.dump()));
    return v.get<std::string>();
  }
  bool boolean(const json& obj, const std::string& key, const std::string& path, bool def) const {
    if (!obj.contains(key) || obj.at(key).is_null()) return def;
    const json& v = obj.at(key);
    if (!v.is_boolean()) bad(path + "." + key, str("must be true or false, got ", v.dump()));
    return v.get<bool>();
  }
  int64_t integer(const json& obj, const std::string& key, const std::string& path) const {
    const json& v = field(obj, key, path);
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= (int64_t{1} << 31))
      bad(path + "." + key, str("must be an integer in [0, 2^31), got ", v.dump()));
    return v.get<int64_t>();
  }
  const json& array(const json& obj, const std::string& key, const std::string& path) const {
    const json& v = field(obj, key, path);
    if (!v.is_array()) bad(path + "." + key, "must be a list");
    return v;
  }
  std::string type(const json& obj, const std::string& path) const {
    if (!obj.is_object()) bad(path, "must be an object or null");
    return string(obj, "type", path);
  }
  // {"String": s} or {"Regex": r}: the text and whether it is a regex.
  std::pair<std::string, bool> pattern(const json& obj, const std::string& path) const {
    const json& p = field(obj, "pattern", path);
    if (p.is_object() && p.size() == 1 && p.contains("String") && p["String"].is_string())
      return {p["String"].get<std::string>(), false};
    if (p.is_object() && p.size() == 1 && p.contains("Regex") && p["Regex"].is_string())
      return {p["Regex"].get<std::string>(), true};
    unsupported(path + ".pattern", p, "{\"String\": ...} and {\"Regex\": ...}");
  }

 private:
  std::string file_;
};

std::string item(const std::string& path, size_t i) { return str(path, "[", i, "]"); }

std::unique_ptr<TextNormalizer> normalizer(const JsonReader& r, const json& j, const std::string& path) {
  if (j.is_null()) return nullptr;
  const std::string type = r.type(j, path);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<TextNormalizer>> parts;
    const json& list = r.array(j, "normalizers", path);
    for (size_t i = 0; i < list.size(); ++i)
      if (auto n = normalizer(r, list[i], item(path + ".normalizers", i))) parts.push_back(std::move(n));
    return normalizer_sequence(std::move(parts));
  }
  if (type == "NFC") return nfc_normalizer();
  if (type == "Prepend") return prepend_normalizer(r.string(j, "prepend", path));
  if (type == "Replace") {
    const auto [pattern, regex] = r.pattern(j, path);
    return replace_normalizer(pattern, regex, r.string(j, "content", path), r.file() + ": " + path);
  }
  r.unsupported(path + ".type", type, "Sequence, NFC, Prepend, Replace");
}

PrependScheme prepend_scheme(const JsonReader& r, const json& j, const std::string& path) {
  if (j.contains("prepend_scheme")) {
    const std::string s = r.string(j, "prepend_scheme", path);
    if (s == "always") return PrependScheme::kAlways;
    if (s == "never") return PrependScheme::kNever;
    if (s == "first") return PrependScheme::kFirst;
    r.unsupported(path + ".prepend_scheme", s, "always, never, first");
  }
  return r.boolean(j, "add_prefix_space", path, true) ? PrependScheme::kAlways : PrependScheme::kNever;
}

std::string one_char(const JsonReader& r, const json& j, const std::string& key, const std::string& path) {
  std::string s = r.string(j, key, path);
  if (s.empty()) r.bad(path + "." + key, "must not be empty");
  return s;
}

std::unique_ptr<PreTokenizer> pre_tokenizer(const JsonReader& r, const json& j, const std::string& path) {
  if (j.is_null()) return nullptr;
  const std::string type = r.type(j, path);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    const json& list = r.array(j, "pretokenizers", path);
    for (size_t i = 0; i < list.size(); ++i)
      if (auto p = pre_tokenizer(r, list[i], item(path + ".pretokenizers", i))) parts.push_back(std::move(p));
    return pre_tokenizer_sequence(std::move(parts));
  }
  if (type == "Split") {
    const auto [pattern, regex] = r.pattern(j, path);
    const std::string b = r.string(j, "behavior", path);
    SplitBehavior behavior;
    if (b == "Removed") {
      behavior = SplitBehavior::kRemoved;
    } else if (b == "Isolated") {
      behavior = SplitBehavior::kIsolated;
    } else if (b == "MergedWithPrevious") {
      behavior = SplitBehavior::kMergedWithPrevious;
    } else if (b == "MergedWithNext") {
      behavior = SplitBehavior::kMergedWithNext;
    } else if (b == "Contiguous") {
      behavior = SplitBehavior::kContiguous;
    } else {
      r.unsupported(path + ".behavior", b, "Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
    }
    return split_pre_tokenizer(pattern, regex, behavior, r.boolean(j, "invert", path, false),
                               r.file() + ": " + path);
  }
  if (type == "ByteLevel")
    return byte_level_pre_tokenizer(r.boolean(j, "add_prefix_space", path, true),
                                    r.boolean(j, "use_regex", path, true));
  if (type == "Metaspace")
    return metaspace_pre_tokenizer(one_char(r, j, "replacement", path), prepend_scheme(r, j, path),
                                   r.boolean(j, "split", path, true));
  if (type == "Digits") return digits_pre_tokenizer(r.boolean(j, "individual_digits", path, false));
  r.unsupported(path + ".type", type, "Sequence, Split, ByteLevel, Metaspace, Digits");
}

std::unique_ptr<TokenDecoder> decoder(const JsonReader& r, const json& j, const std::string& path) {
  if (j.is_null()) return nullptr;
  const std::string type = r.type(j, path);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<TokenDecoder>> parts;
    const json& list = r.array(j, "decoders", path);
    for (size_t i = 0; i < list.size(); ++i)
      if (auto d = decoder(r, list[i], item(path + ".decoders", i))) parts.push_back(std::move(d));
    return decoder_sequence(std::move(parts));
  }
  if (type == "ByteLevel") return byte_level_decoder();
  if (type == "ByteFallback") return byte_fallback_decoder();
  if (type == "Fuse") return fuse_decoder();
  if (type == "Replace") {
    const auto [pattern, regex] = r.pattern(j, path);
    if (regex) r.unsupported(path + ".pattern", j["pattern"], "{\"String\": ...} in a Replace decoder");
    return replace_decoder(pattern, r.string(j, "content", path));
  }
  if (type == "Strip")
    return strip_decoder(one_char(r, j, "content", path), static_cast<int>(r.integer(j, "start", path)),
                         static_cast<int>(r.integer(j, "stop", path)));
  if (type == "Metaspace")
    return metaspace_decoder(one_char(r, j, "replacement", path), prepend_scheme(r, j, path));
  r.unsupported(path + ".type", type, "Sequence, ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace");
}

// The single-sequence template as ids before and after the sequence; a Sequence of processors
// wraps in order (each wraps what the previous produced).
void post_processor(const JsonReader& r, const json& j, const std::string& path, Pipeline& p) {
  if (j.is_null()) return;
  const std::string type = r.type(j, path);
  if (type == "ByteLevel") return;  // offsets only; ids unchanged
  if (type == "Sequence") {
    const json& list = r.array(j, "processors", path);
    for (size_t i = 0; i < list.size(); ++i) post_processor(r, list[i], item(path + ".processors", i), p);
    return;
  }
  if (type != "TemplateProcessing")
    r.unsupported(path + ".type", type, "TemplateProcessing, ByteLevel, Sequence");
  const json& specials = r.field(j, "special_tokens", path);
  const json& single = r.array(j, "single", path);
  std::vector<int64_t> prefix, suffix;
  bool seen_sequence = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const std::string at = item(path + ".single", i);
    const json& piece = single[i];
    if (piece.is_object() && piece.contains("Sequence")) {
      const std::string id = r.string(piece["Sequence"], "id", at + ".Sequence");
      if (id != "A" || seen_sequence) r.unsupported(at + ".Sequence.id", id, "one sequence \"A\"");
      seen_sequence = true;
      continue;
    }
    if (!piece.is_object() || !piece.contains("SpecialToken"))
      r.unsupported(at, piece, "{\"SpecialToken\": ...} and {\"Sequence\": ...}");
    const std::string name = r.string(piece["SpecialToken"], "id", at + ".SpecialToken");
    const std::string sp = path + ".special_tokens." + name;
    const json& ids = r.array(r.field(specials, name, path + ".special_tokens"), "ids", sp);
    for (size_t k = 0; k < ids.size(); ++k) {
      if (!ids[k].is_number_integer() || ids[k].get<int64_t>() < 0)
        r.bad(item(sp + ".ids", k), str("must be a token id, got ", ids[k].dump()));
      (seen_sequence ? suffix : prefix).push_back(ids[k].get<int64_t>());
    }
  }
  if (!seen_sequence) r.bad(path + ".single", "has no {\"Sequence\": {\"id\": \"A\"}}");
  p.template_prefix.insert(p.template_prefix.begin(), prefix.begin(), prefix.end());
  p.template_suffix.insert(p.template_suffix.end(), suffix.begin(), suffix.end());
}

std::unique_ptr<BpeModel> bpe_model(const JsonReader& r, const json& j, const std::string& path) {
  if (!j.is_object()) r.bad(path, "must be an object");
  const std::string type = j.contains("type") ? r.string(j, "type", path) : "BPE";
  if (type != "BPE") r.unsupported(path + ".type", type, "BPE");
  if (j.contains("dropout") && !j["dropout"].is_null())
    r.unsupported(path + ".dropout", j["dropout"], "null (no dropout)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (j.contains(key) && !j[key].is_null() && j[key] != "")
      r.unsupported(path + "." + key, j[key], "null");
  BpeOptions o;
  o.byte_fallback = r.boolean(j, "byte_fallback", path, false);
  o.fuse_unk = r.boolean(j, "fuse_unk", path, false);
  o.ignore_merges = r.boolean(j, "ignore_merges", path, false);
  if (j.contains("unk_token") && !j["unk_token"].is_null()) o.unk_token = r.string(j, "unk_token", path);
  const json& vocab = r.field(j, "vocab", path);
  if (!vocab.is_object()) r.bad(path + ".vocab", "must be an object mapping tokens to ids");
  std::unordered_map<std::string, int64_t> ids;
  std::unordered_map<int64_t, std::string> seen;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const int64_t id = r.integer(vocab, it.key(), path + ".vocab");
    auto [prev, fresh] = seen.emplace(id, it.key());
    if (!fresh) r.bad(path + ".vocab", str("gives id ", id, " to both \"", prev->second, "\" and \"", it.key(), "\""));
    ids[it.key()] = id;
  }
  std::vector<std::pair<std::string, std::string>> merges;
  const json& list = r.array(j, "merges", path);
  for (size_t i = 0; i < list.size(); ++i) {
    const json& m = list[i];
    if (m.is_string()) {  // "a b"
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        r.bad(item(path + ".merges", i), str("must be two tokens separated by one space, got ", m.dump()));
      merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {  // ["a", "b"]
      merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      r.bad(item(path + ".merges", i), str("must be \"a b\" or [\"a\", \"b\"], got ", m.dump()));
    }
  }
  return std::make_unique<BpeModel>(ids, merges, o, r.file());
}

std::vector<AddedToken> added_tokens(const JsonReader& r, const json& root) {
  std::vector<AddedToken> out;
  if (!root.contains("added_tokens") || root["added_tokens"].is_null()) return out;
  const json& list = r.array(root, "added_tokens", "");
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string at = item("added_tokens", i);
    const json& t = list[i];
    AddedToken a;
    a.id = r.integer(t, "id", at);
    a.content = r.string(t, "content", at);
    a.special = r.boolean(t, "special", at, false);
    a.lstrip = r.boolean(t, "lstrip", at, false);
    a.rstrip = r.boolean(t, "rstrip", at, false);
    a.single_word = r.boolean(t, "single_word", at, false);
    a.normalized = r.boolean(t, "normalized", at, !a.special);
    out.push_back(std::move(a));
  }
  return out;
}

// bos_token / eos_token of tokenizer_config.json: "" when absent or null.
std::string config_token(const JsonReader& r, const json& cfg, const std::string& key) {
  if (!cfg.contains(key) || cfg[key].is_null()) return "";
  const json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  r.bad(key, str("must be a token string or {\"content\": ...}, got ", v.dump()));
}

// Id of a token among the added tokens, then the model's vocabulary; -1 if neither has it.
int64_t pipeline_token_id(const Pipeline& p, const std::string& token) {
  for (const AddedToken& a : p.added)
    if (a.content == token) return a.id;
  return p.model->token_to_id(token);
}

void special_ids(const std::string& dir, Pipeline& p) {
  const std::string cfg_path = dir + "/tokenizer_config.json";
  std::string bos, eos;
  if (std::ifstream(cfg_path).good()) {
    const JsonReader r(cfg_path);
    json cfg;
    try {
      cfg = json::parse(read_tokenizer_file(cfg_path, ""));
    } catch (const json::exception& e) {
      fail(str(cfg_path, " is not valid JSON: ", e.what()));
    }
    if (!cfg.is_object()) r.bad("(top level)", "must be a JSON object");
    bos = config_token(r, cfg, "bos_token");
    eos = config_token(r, cfg, "eos_token");
    for (const auto& [key, token] : {std::pair{"bos_token", bos}, std::pair{"eos_token", eos}})
      if (!token.empty() && pipeline_token_id(p, token) < 0)
        r.bad(key, str("\"", token, "\" is not a token of ", p.source));
  }
  p.bos = !bos.empty() ? pipeline_token_id(p, bos) : p.template_prefix.empty() ? -1 : p.template_prefix.front();
  if (!eos.empty()) {
    p.eos = pipeline_token_id(p, eos);
    return;
  }
  for (const char* name : {"<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"}) {
    if ((p.eos = pipeline_token_id(p, name)) >= 0) return;
  }
  p.eos_missing = str(p.source, " has no end-of-sequence token (tokenizer_config.json names no eos_token, ",
                      "and none of <|endoftext|>, <|end_of_text|>, </s>, <eos> is a token); preprocess ",
                      "without appending eos or add eos_token to ", cfg_path);
}

}  // namespace

std::string read_tokenizer_file(const std::string& path, const std::string& hint) {
  std::ifstream in(path, std::ios::binary);
  WEFT_CHECK(in.good(), "cannot read ", path, hint);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::unique_ptr<Tokenizer> load_tokenizer_json(const std::string& dir, const std::string& spec) {
  Pipeline p;
  p.spec = spec;
  p.source = dir + "/tokenizer.json";
  const JsonReader r(p.source);
  json root;
  try {
    root = json::parse(read_tokenizer_file(p.source, "; an hf:DIR tokenizer needs DIR/tokenizer.json "
                                                     "or DIR/tokenizer.model"));
  } catch (const json::exception& e) {
    fail(str(p.source, " is not valid JSON: ", e.what()));
  }
  if (!root.is_object()) r.bad("(top level)", "must be a JSON object");
  for (const char* key : {"truncation", "padding"})
    if (root.contains(key) && !root[key].is_null()) r.unsupported(key, root[key], "null");
  p.added = added_tokens(r, root);
  p.normalizer = normalizer(r, root.value("normalizer", json()), "normalizer");
  p.pre_tokenizer = pre_tokenizer(r, root.value("pre_tokenizer", json()), "pre_tokenizer");
  p.model = bpe_model(r, r.field(root, "model", ""), "model");
  post_processor(r, root.value("post_processor", json()), "post_processor", p);
  p.decoder = decoder(r, root.value("decoder", json()), "decoder");
  special_ids(dir, p);
  return make_pipeline_tokenizer(std::move(p));
}

}  // namespace weft
