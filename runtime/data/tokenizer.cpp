// Byte tokenizer and GPT-2 byte-level BPE. The BPE follows OpenAI's encoder.py exactly: regex
// pre-tokenization, bytes mapped to printable code points, and in each round the lowest-ranked
// adjacent pair merged at every non-overlapping occurrence, left to right. The regex is not run
// by a regex engine: gpt2_pre_tokenize scans for the same pieces with character classes taken
// from the reference (unicode_classes.h), so no system Unicode tables are involved.
#include "runtime/data/tokenizer.h"

#include <array>
#include <fstream>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <unordered_map>

#include "core/error.h"
#include "runtime/data/unicode_classes.h"

namespace weft {
namespace {

class ByteTokenizer : public Tokenizer {
 public:
  std::vector<int64_t> encode(const std::string& text) const override {
    std::vector<int64_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string out;
    out.reserve(ids.size());
    for (int64_t id : ids) {
      WEFT_CHECK(id >= 0 && id <= 256, "byte tokenizer: id ", id, " is outside [0, 256]");
      if (id < 256) out.push_back(static_cast<char>(id));
    }
    return out;
  }
  int64_t vocab_size() const override { return 257; }
  int64_t eos_id() const override { return 256; }
  std::string spec() const override { return "byte"; }
};

void append_utf8(std::string& s, uint32_t cp) {
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    s.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Decodes one code point at s[i] (advancing i); vocab strings come from a JSON parser, so they
// are valid UTF-8, but a malformed byte is passed through as itself rather than trusted.
uint32_t next_code_point(const std::string& s, size_t& i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  int extra = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
  bool ok = extra >= 0 && i + extra < s.size();
  for (int k = 1; ok && k <= extra; ++k) ok = (b(i + k) & 0xC0) == 0x80;
  if (!ok) {
    ++i;
    return c;
  }
  uint32_t cp = extra == 0 ? c : (c & (0x3F >> extra));
  for (int k = 1; k <= extra; ++k) cp = (cp << 6) | (b(i + k) & 0x3F);
  i += extra + 1;
  return cp;
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes are
// shifted to code points 256.. in byte order, so every byte is a visible, non-space character.
struct ByteMap {
  std::array<std::string, 256> symbol;  // byte -> UTF-8 of its code point
  std::array<int, 512> byte_of;         // code point -> byte, or -1
  ByteMap() {
    byte_of.fill(-1);
    int shifted = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      uint32_t cp = printable ? b : 256 + shifted++;
      append_utf8(symbol[b], cp);
      byte_of[cp] = b;
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

std::string read_text_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  WEFT_CHECK(in.good(), "cannot read ", path, " (", what, "); a gpt2:DIR tokenizer needs ",
             "DIR/vocab.json and DIR/merges.txt from a Hugging Face GPT-2-style tokenizer");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class Gpt2Tokenizer : public Tokenizer {
 public:
  explicit Gpt2Tokenizer(const std::string& dir) : dir_(dir) {
    load_vocab(dir + "/vocab.json");
    load_merges(dir + "/merges.txt");
  }

  std::vector<int64_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(id_to_token_.size()); }
  int64_t eos_id() const override {
    WEFT_CHECK(eos_ >= 0, dir_,
               "/vocab.json has no \"<|endoftext|>\" token, so there is no "
               "end-of-document id; preprocess without appending eos or use a vocabulary "
               "that has one");
    return eos_;
  }
  std::string spec() const override { return "gpt2:" + dir_; }

 private:
  void load_vocab(const std::string& path);
  void load_merges(const std::string& path);
  void bpe(const char* piece, size_t len, std::vector<int64_t>& out) const;
  void bpe_uncached(const char* piece, size_t len, std::vector<int64_t>& out) const;

  static uint64_t pair_key(int64_t a, int64_t b) {
    return (static_cast<uint64_t>(a) << 32) | static_cast<uint64_t>(b);
  }

  std::string dir_;
  std::vector<std::string> id_to_token_;  // "" where an id is unused
  std::vector<bool> id_present_;
  std::unordered_map<std::string, int64_t> token_to_id_;
  std::array<int64_t, 256> byte_id_;  // id of each byte's one-symbol token, or -1
  struct Merge {
    int64_t rank;
    int64_t result;
  };
  std::unordered_map<uint64_t, Merge> merges_;  // (left id, right id) -> merge
  int64_t eos_ = -1;

  // Pre-token -> ids. Text repeats words heavily, so this skips most BPE work; it is cleared
  // when it grows past kCacheEntries to bound memory on large corpora.
  static constexpr size_t kCacheEntries = 1 << 18;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int64_t>> cache_;
};

void Gpt2Tokenizer::load_vocab(const std::string& path) {
  nlohmann::json vocab;
  try {
    vocab = nlohmann::json::parse(read_text_file(path, "the BPE vocabulary"));
  } catch (const nlohmann::json::exception& e) {
    fail(str(path, " is not valid JSON: ", e.what()));
  }
  WEFT_CHECK(vocab.is_object() && !vocab.empty(), path,
             " must be a non-empty JSON object mapping token strings to ids");
  int64_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    WEFT_CHECK(it.value().is_number_integer() && it.value().get<int64_t>() >= 0 &&
                   it.value().get<int64_t>() < (int64_t{1} << 31),
               path, ": the id of token \"", it.key(), "\" must be an integer in [0, 2^31)");
    max_id = std::max(max_id, it.value().get<int64_t>());
  }
  id_to_token_.assign(static_cast<size_t>(max_id + 1), std::string());
  id_present_.assign(static_cast<size_t>(max_id + 1), false);
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    int64_t id = it.value().get<int64_t>();
    WEFT_CHECK(!id_present_[id], path, ": id ", id, " is used by both \"", id_to_token_[id],
               "\" and \"", it.key(), "\"");
    id_to_token_[id] = it.key();
    id_present_[id] = true;
    token_to_id_[it.key()] = id;
  }
  for (int b = 0; b < 256; ++b) {
    auto found = token_to_id_.find(byte_map().symbol[b]);
    byte_id_[b] = found == token_to_id_.end() ? -1 : found->second;
  }
  auto eos = token_to_id_.find("<|endoftext|>");
  if (eos != token_to_id_.end()) eos_ = eos->second;
}

void Gpt2Tokenizer::load_merges(const std::string& path) {
  std::istringstream in(read_text_file(path, "the BPE merge rules"));
  std::string line;
  int64_t line_no = 0, rank = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line_no == 1 && line.rfind("#version", 0) == 0) continue;
    if (line.empty()) continue;
    size_t space = line.find(' ');
    WEFT_CHECK(space != std::string::npos && space > 0 && space + 1 < line.size() &&
                   line.find(' ', space + 1) == std::string::npos,
               path, ":", line_no, ": expected two tokens separated by one space, got \"", line,
               "\"");
    std::string left = line.substr(0, space), right = line.substr(space + 1);
    auto id_of = [&](const std::string& token) {
      auto found = token_to_id_.find(token);
      WEFT_CHECK(found != token_to_id_.end(), path, ":", line_no, ": merge \"", line,
                 "\" needs token \"", token, "\", which is not in vocab.json");
      return found->second;
    };
    int64_t a = id_of(left), b = id_of(right), merged = id_of(left + right);
    // Like the reference implementations (a Python dict / Rust map built in file order), a
    // repeated pair keeps its last rank.
    merges_[pair_key(a, b)] = Merge{rank++, merged};
  }
}

std::vector<int64_t> Gpt2Tokenizer::encode(const std::string& text) const {
  std::vector<int64_t> ids;
  for (std::string_view piece : gpt2_pre_tokenize(text)) bpe(piece.data(), piece.size(), ids);
  return ids;
}

void Gpt2Tokenizer::bpe(const char* piece, size_t len, std::vector<int64_t>& out) const {
  std::string key(piece, len);
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto hit = cache_.find(key);
    if (hit != cache_.end()) {
      out.insert(out.end(), hit->second.begin(), hit->second.end());
      return;
    }
  }
  std::vector<int64_t> ids;
  bpe_uncached(piece, len, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() >= kCacheEntries) cache_.clear();
  cache_.emplace(std::move(key), std::move(ids));
}

// Symbols form a linked list; a min-heap of (rank, position) finds the next pair. To keep
// encoder.py's semantics (merge every occurrence of the best pair, then look again), pairs
// created during a round wait until that round's occurrences are all merged.
void Gpt2Tokenizer::bpe_uncached(const char* piece, size_t len, std::vector<int64_t>& out) const {
  struct Node {
    int64_t id;
    int64_t prev, next;
  };
  std::vector<Node> nodes(len);
  for (size_t i = 0; i < len; ++i) {
    unsigned char b = static_cast<unsigned char>(piece[i]);
    WEFT_CHECK(byte_id_[b] >= 0, dir_, "/vocab.json has no token for byte ", static_cast<int>(b),
               " (\"", byte_map().symbol[b],
               "\"); a byte-level vocabulary must contain all 256 byte symbols");
    nodes[i] = Node{byte_id_[b], static_cast<int64_t>(i) - 1,
                    i + 1 < len ? static_cast<int64_t>(i) + 1 : -1};
  }
  struct Entry {
    int64_t rank, pos, left, right, result;
    bool operator>(const Entry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  std::vector<Entry> deferred;
  auto consider = [&](int64_t pos, std::vector<Entry>* sink) {
    int64_t next = nodes[pos].next;
    if (next < 0) return;
    auto m = merges_.find(pair_key(nodes[pos].id, nodes[next].id));
    if (m == merges_.end()) return;
    Entry e{m->second.rank, pos, nodes[pos].id, nodes[next].id, m->second.result};
    if (sink) {
      sink->push_back(e);
    } else {
      heap.push(e);
    }
  };
  // An entry is stale once either side has merged into something else.
  auto valid = [&](const Entry& e) {
    const Node& l = nodes[e.pos];
    return l.id == e.left && l.next >= 0 && nodes[l.next].id == e.right;
  };
  for (size_t i = 0; i + 1 < len; ++i) consider(static_cast<int64_t>(i), nullptr);

  while (!heap.empty()) {
    const int64_t round = heap.top().rank;
    while (!heap.empty() && heap.top().rank == round) {
      Entry e = heap.top();
      heap.pop();
      if (!valid(e)) continue;
      Node& l = nodes[e.pos];
      const int64_t r = l.next;
      l.id = e.result;
      l.next = nodes[r].next;
      if (l.next >= 0) nodes[l.next].prev = e.pos;
      nodes[r].id = -1;  // dead: no entry can match it again
      if (l.prev >= 0) consider(l.prev, &deferred);
      consider(e.pos, &deferred);
    }
    for (const Entry& e : deferred) heap.push(e);
    deferred.clear();
  }
  for (int64_t i = 0; i >= 0; i = nodes[i].next) out.push_back(nodes[i].id);
}

std::string Gpt2Tokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  const ByteMap& map = byte_map();
  for (int64_t id : ids) {
    WEFT_CHECK(id >= 0 && id < vocab_size() && id_present_[id], "cannot decode id ", id,
               ": it is not in ", dir_, "/vocab.json");
    const std::string& token = id_to_token_[id];
    for (size_t i = 0; i < token.size();) {
      size_t start = i;
      uint32_t cp = next_code_point(token, i);
      int byte = cp < map.byte_of.size() ? map.byte_of[cp] : -1;
      // Characters outside the byte alphabet (possible in hand-edited vocabularies) pass through.
      if (byte >= 0) {
        out.push_back(static_cast<char>(byte));
      } else {
        out.append(token, start, i - start);
      }
    }
  }
  return out;
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

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec) {
  if (spec == "byte") return std::make_unique<ByteTokenizer>();
  if (spec.rfind("gpt2:", 0) == 0) {
    std::string dir = spec.substr(5);
    WEFT_CHECK(!dir.empty(), "tokenizer spec \"gpt2:\" needs a directory: gpt2:DIR");
    return std::make_unique<Gpt2Tokenizer>(dir);
  }
  fail(str("unknown tokenizer \"", spec, "\" (expected \"byte\" or \"gpt2:DIR\" with ",
           "DIR/vocab.json and DIR/merges.txt)"));
}

}  // namespace weft
