// GPT samples: document split, token-stream windows, per-epoch shuffle, weighted blends.
// Everything here is a pure function of (files, options, index) so that any number of ranks
// and any restart agree on which tokens sample i holds.
#include "runtime/data/gpt_dataset.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "weft/error.h"
#include "core/fileio.h"
#include "models/transformer.h"  // kIgnoreIndex
#include "runtime/data/packed_dataset.h"

namespace weft {
namespace {

const char* part_name(SplitPart which) {
  switch (which) {
    case SplitPart::kTrain: return "train";
    case SplitPart::kValid: return "validation";
    case SplitPart::kAll: return "whole";
  }
  return "?";
}

// "98,2", "949,50,1", "98/2": up to three non-negative shares (train, valid, test).
std::vector<double> parse_split(const std::string& split) {
  std::vector<double> shares;
  size_t at = 0;
  while (at <= split.size()) {
    size_t end = split.find_first_of(",/", at);
    if (end == std::string::npos) end = split.size();
    std::string part = split.substr(at, end - at);
    char* stop = nullptr;
    double v = std::strtod(part.c_str(), &stop);
    bool ok = !part.empty() && stop && *stop == '\0' && std::isfinite(v) && v >= 0;
    WEFT_CHECK(ok, "data.split \"", split, "\": \"", part,
               "\" is not a non-negative number (expected e.g. \"98,2\" or \"949,50,1\")");
    shares.push_back(v);
    at = end + 1;
  }
  double sum = 0;
  for (double v : shares) sum += v;
  WEFT_CHECK(shares.size() <= 3 && sum > 0, "data.split \"", split,
             "\" must be 1 to 3 shares (train, validation, test) with a positive sum");
  for (double& v : shares) v /= sum;
  shares.resize(3, 0.0);
  return shares;
}

// Keeps the two most recent entries: a batch rarely spans more than one epoch boundary.
constexpr size_t kCachedEpochs = 2;

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in [0, bound) by rejection: std::uniform_int_distribution's algorithm is
// implementation-defined, this is not.
uint64_t bounded(std::mt19937_64& rng, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
  for (;;) {
    uint64_t r = rng();
    if (r >= threshold) return r % bound;
  }
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

}  // namespace

std::pair<int64_t, int64_t> split_documents(const std::string& split, SplitPart which,
                                            int64_t num_documents) {
  if (which == SplitPart::kAll) return {0, num_documents};
  std::vector<double> shares = parse_split(split);
  // Same arithmetic as Megatron: bookends are cumulative sums of the normalised shares, each
  // scaled and rounded half-to-even (Python's round), so both pick the same documents.
  double begin = 0;
  int part = which == SplitPart::kTrain ? 0 : 1;
  for (int i = 0; i < part; ++i) begin += shares[i];
  double end = begin + shares[part];
  auto bound = [&](double f) {
    return static_cast<int64_t>(std::nearbyint(f * static_cast<double>(num_documents)));
  };
  return {std::min(bound(begin), num_documents), std::min(bound(end), num_documents)};
}

std::vector<int64_t> shuffled_indices(int64_t n, int64_t seed, int64_t epoch) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  std::mt19937_64 rng(
      splitmix64(splitmix64(static_cast<uint64_t>(seed)) ^ static_cast<uint64_t>(epoch)));
  for (int64_t i = n - 1; i > 0; --i) {
    int64_t j = static_cast<int64_t>(bounded(rng, static_cast<uint64_t>(i) + 1));
    std::swap(p[i], p[j]);
  }
  return p;
}

// ---- GPTDataset --------------------------------------------------------------------------

void SampleSource::get_loss_mask(int64_t, int64_t* out) const { std::fill(out, out + seq_len() + 1, 1); }

void SampleSource::get_positions(int64_t, int64_t* out) const {
  for (int64_t i = 0; i <= seq_len(); ++i) out[i] = i;
}

GPTDataset::GPTDataset(std::shared_ptr<const IndexedDataset> data, const GPTDatasetOptions& options,
                       std::shared_ptr<const IndexedDataset> loss_mask, std::shared_ptr<DataCache> cache)
    : data_(std::move(data)), loss_mask_(std::move(loss_mask)),
      cache_(cache ? std::move(cache) : DataCache::in_memory()), options_(options) {
  WEFT_CHECK(data_ != nullptr, "GPTDataset needs a dataset");
  if (loss_mask_) check_loss_mask();
  WEFT_CHECK(options_.seq_len >= 1, "train.seq_len must be >= 1, got ", options_.seq_len);
  const int64_t docs = data_->num_documents();
  std::tie(doc_begin_, doc_end_) = split_documents(options_.split, options_.which, docs);
  seq_begin_ = data_->document_index(doc_begin_);
  const int64_t seq_end = data_->document_index(doc_end_);

  // The key names everything the offsets depend on: the files (their lengths) and the range.
  const std::string range = str(doc_begin_, "-", doc_end_);
  cumulative_ = cache_->get(
      "offsets-" + range, str("token offsets v1 of documents ", range, " of ", data_->stamp()), seq_end - seq_begin_ + 1,
      [&] {
        std::vector<int64_t> c(static_cast<size_t>(seq_end - seq_begin_ + 1), 0);
        for (int64_t s = seq_begin_; s < seq_end; ++s)
          c[s - seq_begin_ + 1] = c[s - seq_begin_] + data_->sequence_length(s);
        return c;
      },
      str("token offsets of ", seq_end - seq_begin_, " sequences"));
  const int64_t tokens = cumulative_.back();
  WEFT_CHECK(tokens >= options_.seq_len + 1, "dataset ", data_->prefix(), ": the ",
             part_name(options_.which), " part of data.split \"", options_.split, "\" (documents [",
             doc_begin_, ", ", doc_end_, ") of ", docs, ") has ", tokens,
             " tokens, but one sample needs seq_len + 1 = ", options_.seq_len + 1,
             "; use more data, a smaller train.seq_len, or a different data.split");
  num_samples_ = (tokens - 1) / options_.seq_len;
}

void GPTDataset::check_loss_mask() const {
  const int64_t n = data_->num_sequences();
  cache_->get(
      "loss_mask_lengths", str("sequence lengths of ", data_->stamp(), " and of its loss mask ", loss_mask_->stamp()), 1,
      [&] {
        bool same = loss_mask_->num_sequences() == n;
        for (int64_t s = 0; same && s < n; ++s) same = loss_mask_->sequence_length(s) == data_->sequence_length(s);
        WEFT_CHECK(same, "loss mask ", loss_mask_->prefix(), " does not have the sequence lengths of dataset ",
                   data_->prefix(), "; write both from the same documents");
        return std::vector<int64_t>{1};
      },
      str("loss-mask lengths of ", n, " sequences"));
}

Int64Array GPTDataset::permutation(int64_t epoch) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& entry : perms_) {
    if (entry.first == epoch) return entry.second;
  }
  // A pure function of (n, seed, epoch); the key carries the algorithm's version, to be bumped
  // if shuffled_indices ever changes.
  const std::string name = str("shuffle-n", num_samples_, "-seed", options_.seed, "-epoch", epoch);
  Int64Array perm = cache_->get(
      name, "shuffled_indices v1 " + name, num_samples_,
      [&] { return shuffled_indices(num_samples_, options_.seed, epoch); },
      str("shuffle of ", num_samples_, " samples for epoch ", epoch));
  if (perms_.size() == kCachedEpochs) perms_.erase(perms_.begin());
  perms_.emplace_back(epoch, perm);
  return perm;
}

int64_t GPTDataset::sample_for(int64_t index) const {
  WEFT_CHECK(index >= 0, data_->prefix(), ": negative sample index ", index);
  const int64_t epoch = index / num_samples_, pos = index % num_samples_;
  if (!options_.shuffle) return pos;
  return permutation(epoch)[pos];
}

void GPTDataset::read_stream(const IndexedDataset& from, int64_t start, int64_t count, int64_t* out) const {
  // The chosen sequence holding token `start`: the last j with cumulative_[j] <= start.
  auto it = std::upper_bound(cumulative_.begin(), cumulative_.end(), start);
  int64_t j = (it - cumulative_.begin()) - 1;
  int64_t offset = start - cumulative_[j];
  while (count > 0) {
    const int64_t len = cumulative_[j + 1] - cumulative_[j];
    const int64_t take = std::min(count, len - offset);
    if (take > 0) from.read(seq_begin_ + j, offset, take, out);
    out += take;
    count -= take;
    offset = 0;
    ++j;
  }
}

void GPTDataset::get(int64_t index, int64_t* out) const {
  const int64_t sample = sample_for(index);
  read_stream(*data_, sample * options_.seq_len, options_.seq_len + 1, out);
}

void GPTDataset::get_loss_mask(int64_t index, int64_t* out) const {
  if (!loss_mask_) return SampleSource::get_loss_mask(index, out);
  read_stream(*loss_mask_, sample_for(index) * options_.seq_len, options_.seq_len + 1, out);
}

// ---- BlendedDataset ----------------------------------------------------------------------

BlendedDataset::BlendedDataset(std::vector<std::shared_ptr<const SampleSource>> sources,
                               std::vector<double> weights, std::shared_ptr<DataCache> cache)
    : sources_(std::move(sources)), weights_(std::move(weights)),
      cache_(cache ? std::move(cache) : DataCache::in_memory()) {
  WEFT_CHECK(!sources_.empty(), "a data blend needs at least one dataset");
  WEFT_CHECK(sources_.size() == weights_.size(), "data blend: ", sources_.size(), " datasets but ",
             weights_.size(), " weights");
  WEFT_CHECK(sources_.size() < 65536, "data blend: too many datasets (", sources_.size(), ")");
  double sum = 0;
  for (size_t k = 0; k < weights_.size(); ++k) {
    WEFT_CHECK(sources_[k] != nullptr, "data blend: dataset ", k, " is null");
    WEFT_CHECK(std::isfinite(weights_[k]) && weights_[k] >= 0, "data blend: weight ", k, " is ",
               weights_[k], "; weights must be finite and >= 0");
    sum += weights_[k];
  }
  WEFT_CHECK(sum > 0, "data blend: the weights sum to 0");
  for (double& w : weights_) w /= sum;
  seq_len_ = sources_[0]->seq_len();
  for (size_t k = 0; k < sources_.size(); ++k) {
    WEFT_CHECK(sources_[k]->seq_len() == seq_len_, "data blend: dataset ", k, " has seq_len ",
               sources_[k]->seq_len(), " but dataset 0 has ", seq_len_);
    num_samples_ += sources_[k]->num_samples();
  }
  // Hex floats: the key must change with any bit of any weight.
  key_ = str("blend counts v1, chunk ", kChunk, " x ", kBlockChunks, ", weights");
  for (double w : weights_) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), " %a", w);
    key_ += buf;
  }
  chunk_source_.resize(kChunk);
  chunk_sample_.resize(kChunk);
}

namespace {
// The greedy choice for global sample i given the counts so far: the source whose count is
// furthest below its target weight * (i + 1). Ties go to the lowest index.
int pick_source(const std::vector<double>& weights, const std::vector<int64_t>& counts, int64_t i) {
  const double target = static_cast<double>(i + 1);
  int best = 0;
  double best_error = weights[0] * target - static_cast<double>(counts[0]);
  for (size_t k = 1; k < weights.size(); ++k) {
    double error = weights[k] * target - static_cast<double>(counts[k]);
    if (error > best_error) {
      best_error = error;
      best = static_cast<int>(k);
    }
  }
  return best;
}
}  // namespace

std::string BlendedDataset::block_name(int64_t b) const {
  char hash[16];
  std::snprintf(hash, sizeof(hash), "%08x", crc32c(key_.data(), key_.size()));
  return str("blend-", hash, "-block", b);
}

std::vector<int64_t> BlendedDataset::build_block(int64_t b, std::vector<int64_t> counts) const {
  const size_t K = sources_.size();
  std::vector<int64_t> rows(kBlockChunks * K);
  for (int64_t r = 0; r < kBlockChunks; ++r) {
    std::copy(counts.begin(), counts.end(), rows.begin() + r * K);
    const int64_t c = b * kBlockChunks + r;
    for (int64_t i = c * kChunk; i < (c + 1) * kChunk; ++i) ++counts[pick_source(weights_, counts, i)];
  }
  return rows;
}

Int64Array BlendedDataset::counts_block(int64_t b) const {
  if (auto it = blocks_.find(b); it != blocks_.end()) return it->second;
  const int64_t K = static_cast<int64_t>(sources_.size()), n = kBlockChunks * K;
  // The nearest block at or below b that is known (in memory or stored); the rest are built
  // forward from it, each from the previous one's last row (O(kBlockChunks * kChunk) each).
  int64_t have = b;
  for (; have >= 0; --have) {
    if (blocks_.count(have)) break;
    if (auto found = cache_->find(block_name(have), str(key_, ", block ", have), n)) {
      blocks_[have] = *found;
      break;
    }
  }
  for (int64_t k = have + 1; k <= b; ++k) {
    std::vector<int64_t> start(static_cast<size_t>(K), 0);
    if (k > 0) {  // counts before block k = the last row of block k - 1, one chunk further
      const Int64Array& prev = blocks_.at(k - 1);
      std::copy(prev.begin() + (kBlockChunks - 1) * K, prev.end(), start.begin());
      const int64_t c = k * kBlockChunks - 1;
      for (int64_t i = c * kChunk; i < (c + 1) * kChunk; ++i) ++start[pick_source(weights_, start, i)];
    }
    blocks_[k] = cache_->get(block_name(k), str(key_, ", block ", k), n, [&] { return build_block(k, start); },
                             str("blend counts for samples [", k * kBlockChunks * kChunk, ", ",
                                 (k + 1) * kBlockChunks * kChunk, ")"));
  }
  return blocks_.at(b);
}

void BlendedDataset::decode_chunk(int64_t chunk) const {
  const int64_t K = static_cast<int64_t>(sources_.size());
  const Int64Array block = counts_block(chunk / kBlockChunks);
  const int64_t* row = block.begin() + (chunk % kBlockChunks) * K;
  std::vector<int64_t> counts(row, row + K);
  for (int64_t r = 0; r < kChunk; ++r) {
    int k = pick_source(weights_, counts, chunk * kChunk + r);
    chunk_source_[r] = k;
    chunk_sample_[r] = counts[k]++;
  }
  decoded_chunk_ = chunk;
}

std::pair<int, int64_t> BlendedDataset::locate(int64_t index) const {
  WEFT_CHECK(index >= 0, "data blend: negative sample index ", index);
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t chunk = index / kChunk;
  if (decoded_chunk_ != chunk) decode_chunk(chunk);
  const int64_t r = index % kChunk;
  return {chunk_source_[r], chunk_sample_[r]};
}

void BlendedDataset::get(int64_t index, int64_t* out) const {
  auto [k, sample] = locate(index);
  sources_[k]->get(sample, out);
}

bool BlendedDataset::has_loss_mask() const {
  return std::any_of(sources_.begin(), sources_.end(), [](const auto& s) { return s->has_loss_mask(); });
}

void BlendedDataset::get_loss_mask(int64_t index, int64_t* out) const {
  auto [k, sample] = locate(index);
  sources_[k]->get_loss_mask(sample, out);
}

bool BlendedDataset::has_positions() const {
  return std::any_of(sources_.begin(), sources_.end(), [](const auto& s) { return s->has_positions(); });
}

void BlendedDataset::get_positions(int64_t index, int64_t* out) const {
  auto [k, sample] = locate(index);
  sources_[k]->get_positions(sample, out);
}

// ---- helpers -----------------------------------------------------------------------------

at::Tensor make_batch(const SampleSource& source, int64_t first, int64_t count, int64_t seq_len) {
  WEFT_CHECK(seq_len == source.seq_len(), "make_batch: seq_len ", seq_len,
             " differs from the dataset's ", source.seq_len());
  WEFT_CHECK(first >= 0 && count >= 0, "make_batch: bad range first=", first, " count=", count);
  at::Tensor batch = at::empty({count, seq_len + 1}, at::kLong);  // (B, T + 1)
  int64_t* p = batch.data_ptr<int64_t>();
  for (int64_t r = 0; r < count; ++r) source.get(first + r, p + r * (seq_len + 1));
  return batch;
}

MicroBatch make_micro_batch(const SampleSource& source, int64_t first, int64_t count, int64_t seq_len) {
  auto tokens = make_batch(source, first, count, seq_len);  // (B, T + 1)
  MicroBatch mb;
  mb.input_ids = tokens.narrow(1, 0, seq_len);
  mb.labels = tokens.narrow(1, 1, seq_len);
  if (source.has_positions()) {
    mb.positions = at::empty({count, seq_len + 1}, at::kLong);
    for (int64_t r = 0; r < count; ++r)
      source.get_positions(first + r, mb.positions.data_ptr<int64_t>() + r * (seq_len + 1));
    mb.positions = mb.positions.narrow(1, 0, seq_len);
  }
  if (!source.has_loss_mask()) {
    mb.num_counted = count * seq_len;
    return mb;
  }
  auto mask = at::empty({count, seq_len + 1}, at::kLong);
  for (int64_t r = 0; r < count; ++r) source.get_loss_mask(first + r, mask.data_ptr<int64_t>() + r * (seq_len + 1));
  auto counted = mask.narrow(1, 1, seq_len).ne(0);  // the target token's mask
  mb.labels = mb.labels.masked_fill(counted.logical_not(), kIgnoreIndex);
  mb.num_counted = counted.sum().item<int64_t>();
  return mb;
}

namespace {
// PREFIX with its O(sequences) checks and token scan done once and then read from `cache`.
// `whose` completes the build's log line ("" for the dataset the cache belongs to).
std::shared_ptr<const IndexedDataset> open_indexed(const std::string& prefix, DataCache& cache,
                                                   const std::string& name, const std::string& whose) {
  auto data = std::make_shared<IndexedDataset>(prefix, IndexedDataset::Checks::kDeferred);
  Int64Array s = cache.get(
      name, "checks and token range v1 of " + data->stamp(), 3,
      [&] {
        const auto sum = data->check_all();
        return std::vector<int64_t>{sum.num_tokens, sum.min_token, sum.max_token};
      },
      str("checks and token range of ", data->num_sequences(), " sequences", whose));
  data->trust({s[0], s[1], s[2]});
  return data;
}

std::shared_ptr<const IndexedDataset> open_checked(const std::string& prefix, DataCache& cache, int64_t vocab) {
  auto data = open_indexed(prefix, cache, "tokens", "");
  WEFT_CHECK(data->num_tokens() == 0 || (data->min_token() >= 0 && data->max_token() < vocab),
             "dataset ", prefix, " has token ids in [", data->min_token(), ", ", data->max_token(),
             "] but model.vocab_size is ", vocab,
             "; fix model.vocab_size (it must exceed the largest id) or re-run `weft preprocess` "
             "with the model's tokenizer");
  return data;
}

// PREFIX, with its loss mask PREFIX.loss_mask when that exists.
std::shared_ptr<SampleSource> open_gpt_dataset(const std::string& prefix, const GPTDatasetOptions& options,
                                             int64_t vocab_size) {
  auto cache = DataCache::for_dataset(prefix, options.cache_dir);
  std::shared_ptr<const IndexedDataset> mask;
  const std::string mask_prefix = prefix + ".loss_mask";
  const bool idx = std::filesystem::exists(mask_prefix + ".idx"), bin = std::filesystem::exists(mask_prefix + ".bin");
  WEFT_CHECK(idx == bin, "loss mask ", mask_prefix, ": ", idx ? ".idx" : ".bin", " exists without its ",
             idx ? ".bin" : ".idx", "; write both (an indexed dataset with the sequence lengths of ", prefix, ")");
  if (idx) {
    mask = open_indexed(mask_prefix, *cache, "loss_mask_tokens", " of its loss mask");
    // Float values would be truncated toward zero: 0.5 would silently mask a token out.
    const int code = mask->dtype_code();
    WEFT_CHECK(code != 6 && code != 7, "loss mask ", mask_prefix, " holds floating-point values (dtype code ",
               code, "); write it with an integer dtype (uint8: 1 = a target, 0 = not)");
  }
  if (options.packing != "stream")
    return std::make_shared<PackedExamples>(open_checked(prefix, *cache, vocab_size), std::move(mask), options,
                                            options.packing == "packed");
  return std::make_shared<GPTDataset>(open_checked(prefix, *cache, vocab_size), options, std::move(mask), cache);
}
}  // namespace

std::shared_ptr<SampleSource> open_training_data(const std::string& prefix,
                                                 const std::vector<std::string>& blend,
                                                 const GPTDatasetOptions& options,
                                                 int64_t vocab_size) {
  WEFT_CHECK(prefix.empty() != blend.empty(), "set exactly one of data.prefix and data.blend (got ",
             prefix.empty() ? "neither" : "both", ")");
  if (!prefix.empty()) return open_gpt_dataset(prefix, options, vocab_size);
  WEFT_CHECK(blend.size() % 2 == 0,
             "data.blend must alternate weight and prefix "
             "(\"0.7, a, 0.3, b\"); got ",
             blend.size(), " entries");
  std::vector<std::shared_ptr<const SampleSource>> sources;
  std::vector<double> weights;
  for (size_t i = 0; i < blend.size(); i += 2) {
    std::string w = trim(blend[i]), p = trim(blend[i + 1]);
    char* stop = nullptr;
    double weight = std::strtod(w.c_str(), &stop);
    WEFT_CHECK(!w.empty() && stop && *stop == '\0', "data.blend entry ", i, " (\"", w,
               "\") must be a weight, followed by a prefix");
    sources.push_back(open_gpt_dataset(p, options, vocab_size));
    weights.push_back(weight);
  }
  // The blend's counts depend on the weights alone; they are kept with the first dataset's cache.
  auto cache = DataCache::for_dataset(trim(blend[1]), options.cache_dir);
  return std::make_shared<BlendedDataset>(std::move(sources), std::move(weights), std::move(cache));
}

}  // namespace weft
