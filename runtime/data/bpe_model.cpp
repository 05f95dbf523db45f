// BPE merging with a min-heap over a linked list of symbols (see BpeModel::merge).
#include "runtime/data/bpe_model.h"

#include <cstdio>
#include <functional>
#include <queue>

#include "weft/error.h"
#include "runtime/data/unicode_classes.h"

namespace weft {

BpeModel::BpeModel(const std::unordered_map<std::string, int64_t>& vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges,
                   const BpeOptions& options, std::string source)
    : source_(std::move(source)), options_(options), vocab_(vocab) {
  int64_t max_id = -1;
  for (const auto& [token, id] : vocab_) max_id = std::max(max_id, id);
  id_to_token_.assign(static_cast<size_t>(max_id + 1), std::string());
  id_present_.assign(static_cast<size_t>(max_id + 1), false);
  for (const auto& [token, id] : vocab_) {
    id_to_token_[id] = token;
    id_present_[id] = true;
    size_t len = 0;
    if (!token.empty()) {
      const uint32_t cp = decode_utf8(token, 0, len);
      if (cp != kInvalidUtf8 && len == token.size()) char_ids_[cp] = id;
    }
  }
  byte_fallback_ids_.assign(256, -1);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    byte_fallback_ids_[b] = token_to_id(name);
  }
  if (!options_.unk_token.empty()) {
    unk_id_ = token_to_id(options_.unk_token);
    WEFT_CHECK(unk_id_ >= 0, source_, ": the unk_token \"", options_.unk_token,
               "\" is not in the vocabulary");
  }
  int64_t rank = 0;
  for (const auto& [left, right] : merges) {
    auto id_of = [&](const std::string& token) {
      const int64_t id = token_to_id(token);
      WEFT_CHECK(id >= 0, source_, ": merge \"", left, " ", right, "\" (rank ", rank,
                 ") needs token \"", token, "\", which is not in the vocabulary");
      return id;
    };
    const int64_t a = id_of(left), b = id_of(right), merged = id_of(left + right);
    // Like the references (a map built in file order), a repeated pair keeps its last rank.
    merges_[pair_key(a, b)] = Merge{rank++, merged};
  }
}

int64_t BpeModel::token_to_id(const std::string& token) const {
  auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

const std::string* BpeModel::id_to_token(int64_t id) const {
  if (id < 0 || id >= size() || !id_present_[id]) return nullptr;
  return &id_to_token_[id];
}

int64_t BpeModel::char_id(std::string_view ch) const {
  size_t len = 0;
  const uint32_t cp = decode_utf8(ch, 0, len);
  if (cp == kInvalidUtf8) return -1;
  auto it = char_ids_.find(cp);
  return it == char_ids_.end() ? -1 : it->second;
}

// One symbol per character, as the reference does: the character's token, else its byte tokens
// (byte_fallback), else unk (fused or not), else an error.
void BpeModel::initial_symbols(std::string_view word, std::vector<BpeToken>& out) const {
  BpeToken unk{-1, 0};
  for (size_t at = 0; at < word.size();) {
    size_t len = 1;
    decode_utf8(word, at, len);
    const std::string_view ch = word.substr(at, len);
    at += len;
    const int64_t id = char_id(ch);
    if (id >= 0) {
      if (unk.id >= 0) out.push_back(unk), unk.id = -1;
      out.push_back({id, static_cast<uint32_t>(len)});
      continue;
    }
    if (options_.byte_fallback) {
      bool all = true;
      for (char c : ch) all = all && byte_fallback_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        if (unk.id >= 0) out.push_back(unk), unk.id = -1;
        for (char c : ch) out.push_back({byte_fallback_ids_[static_cast<unsigned char>(c)], 1});
        continue;
      }
    }
    if (unk_id_ < 0) {
      std::string shown;
      for (char c : ch) {
        char hex[8];
        std::snprintf(hex, sizeof(hex), "%s0x%02X", shown.empty() ? "" : " ",
                      static_cast<unsigned char>(c));
        shown += hex;
      }
      fail(str(source_, " has no token for the character with bytes ", shown,
               " and no unk_token", options_.byte_fallback ? " or byte tokens" : "",
               " to stand for it; use the tokenizer this text's model was trained with"));
    }
    if (unk.id >= 0 && options_.fuse_unk) {
      unk.len += static_cast<uint32_t>(len);
    } else {
      if (unk.id >= 0) out.push_back(unk);
      unk = {unk_id_, static_cast<uint32_t>(len)};
    }
  }
  if (unk.id >= 0) out.push_back(unk);
}

void BpeModel::tokenize(std::string_view word, std::vector<BpeToken>& out) const {
  if (word.empty()) return;
  std::string key(word);
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto hit = cache_.find(key);
    if (hit != cache_.end()) {
      out.insert(out.end(), hit->second.begin(), hit->second.end());
      return;
    }
  }
  std::vector<BpeToken> tokens;
  const int64_t whole = options_.ignore_merges ? token_to_id(key) : -1;
  if (whole >= 0) {
    tokens.push_back({whole, static_cast<uint32_t>(word.size())});
  } else {
    initial_symbols(word, tokens);
    merge(tokens);
  }
  out.insert(out.end(), tokens.begin(), tokens.end());
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() >= kCacheEntries) cache_.clear();
  cache_.emplace(std::move(key), std::move(tokens));
}

// Symbols form a linked list; a min-heap of (rank, position) finds the next pair to merge, the
// leftmost among equal ranks. With merge_rounds, pairs created while a rank is being merged wait
// until that rank's occurrences are all merged (encoder.py); without, they join the heap at once.
void BpeModel::merge(std::vector<BpeToken>& symbols) const {
  const int64_t n = static_cast<int64_t>(symbols.size());
  if (n < 2) return;
  struct Node {
    int64_t id;
    uint32_t len;
    int64_t prev, next;
  };
  std::vector<Node> nodes(symbols.size());
  for (int64_t i = 0; i < n; ++i)
    nodes[i] = Node{symbols[i].id, symbols[i].len, i - 1, i + 1 < n ? i + 1 : -1};
  struct Entry {
    int64_t rank, pos, left, right, result;
    bool operator>(const Entry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  std::vector<Entry> deferred;
  auto consider = [&](int64_t pos, bool defer) {
    const int64_t next = nodes[pos].next;
    if (next < 0) return;
    auto m = merges_.find(pair_key(nodes[pos].id, nodes[next].id));
    if (m == merges_.end()) return;
    Entry e{m->second.rank, pos, nodes[pos].id, nodes[next].id, m->second.result};
    if (defer) {
      deferred.push_back(e);
    } else {
      heap.push(e);
    }
  };
  // An entry is stale once either side has merged into something else.
  auto valid = [&](const Entry& e) {
    const Node& l = nodes[e.pos];
    return l.id == e.left && l.next >= 0 && nodes[l.next].id == e.right;
  };
  for (int64_t i = 0; i + 1 < n; ++i) consider(i, false);
  const bool defer = options_.merge_rounds;
  while (!heap.empty()) {
    const int64_t round = heap.top().rank;
    while (!heap.empty() && heap.top().rank == round) {
      Entry e = heap.top();
      heap.pop();
      if (!valid(e)) continue;
      Node& l = nodes[e.pos];
      const int64_t r = l.next;
      l.id = e.result;
      l.len += nodes[r].len;
      l.next = nodes[r].next;
      if (l.next >= 0) nodes[l.next].prev = e.pos;
      nodes[r].id = -1;  // dead: no entry can match it again
      if (l.prev >= 0) consider(l.prev, defer);
      consider(e.pos, defer);
    }
    for (const Entry& e : deferred) heap.push(e);
    deferred.clear();
  }
  symbols.clear();
  for (int64_t i = 0; i >= 0; i = nodes[i].next) symbols.push_back({nodes[i].id, nodes[i].len});
}

}  // namespace weft
