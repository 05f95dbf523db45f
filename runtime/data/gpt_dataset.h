// GPT training samples from indexed datasets: fixed-length windows over a document split,
// shuffled per epoch, optionally blended from several datasets. A sample depends only on
// (data, seed, index), never on the parallel layout, so every (TP, PP, DP) sees the same data.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/data/data_cache.h"
#include "runtime/data/indexed_dataset.h"

namespace weft {

// A deterministic, indexable source of training samples of seq_len + 1 tokens (inputs are
// tokens[0, seq_len), labels tokens[1, seq_len + 1)).
// Thread safety: implementations make get() safe to call concurrently.
class SampleSource {
 public:
  virtual ~SampleSource() = default;
  // Samples in one epoch (> 0).
  virtual int64_t num_samples() const = 0;
  virtual int64_t seq_len() const = 0;
  // Writes sample `index` (any index >= 0; index / num_samples() is the epoch) as
  // seq_len() + 1 tokens into out.
  virtual void get(int64_t index, int64_t* out) const = 0;
  // Whether samples carry a loss mask (tokens that are not prediction targets, e.g. prompts).
  virtual bool has_loss_mask() const { return false; }
  // Writes sample `index`'s loss mask, aligned with get()'s tokens: seq_len() + 1 values, 0 where
  // the token is not a target. Without a mask every token is one (all 1).
  virtual void get_loss_mask(int64_t index, int64_t* out) const;
  // Whether samples pack several examples (see PackedExamples): then get_positions writes each
  // token's position within its example, seq_len() + 1 values aligned with get()'s tokens
  // (0 starts an example). Without, positions are 0..seq_len().
  virtual bool has_positions() const { return false; }
  virtual void get_positions(int64_t index, int64_t* out) const;
};

enum class SplitPart { kTrain, kValid, kAll };

struct GPTDatasetOptions {
  int64_t seq_len = 1024;
  int64_t seed = 1234;
  // Shares of documents for train, validation (and an optional third part Weft does not use),
  // as in Megatron's --split: contiguous document ranges in file order.
  std::string split = "98,2";
  SplitPart which = SplitPart::kTrain;
  // false: samples in stream order in every epoch (evaluation windows).
  bool shuffle = true;
  // Where open_training_data keeps each dataset's index cache (data.cache_dir); empty: beside
  // the dataset, in PREFIX.weft_cache/.
  std::string cache_dir;
  // data.packing: "stream" (GPTDataset), "packed" or "padded" (PackedExamples: whole examples).
  std::string packing = "stream";
};

// Document range [begin, end) that `which` selects out of num_documents under `split`, computed
// like Megatron: cumulative shares, each bound rounded half-to-even. Throws on a bad split.
std::pair<int64_t, int64_t> split_documents(const std::string& split, SplitPart which,
                                            int64_t num_documents);

// Samples over one split of one indexed dataset, optionally with a loss mask: a second indexed
// dataset with the same sequence lengths (PREFIX.loss_mask.{bin,idx}; 0 = not a target). The chosen documents' tokens form one stream
// in document order; sample k (before shuffling) is stream[k*T, k*T + T + 1) for T = seq_len,
// so samples cross document boundaries and overlap by one token; num_samples = (N - 1) / T.
// Epoch e visits the samples in a Fisher-Yates permutation drawn from mt19937_64 seeded by
// (seed, e).
// Owns: a shared reference to the dataset and its cache, a prefix sum over the chosen sequences
//   (8 bytes per sequence) and the permutations of the two most recently used epochs (8 bytes
//   per sample). With a cache directory both are files built once and mapped, so opening costs
//   O(1) and memory grows only with the pages read; without one they are built in memory.
// Throws: weft::Error naming the prefix, split and token count when the chosen part has fewer
//   than seq_len + 1 tokens. get() is thread-safe.
class GPTDataset : public SampleSource {
 public:
  // Throws weft::Error when `loss_mask` (may be null) does not have `data`'s sequence lengths.
  // `cache` (null: in memory) holds the prefix sum, the permutations and the loss-mask check.
  GPTDataset(std::shared_ptr<const IndexedDataset> data, const GPTDatasetOptions& options,
             std::shared_ptr<const IndexedDataset> loss_mask = nullptr,
             std::shared_ptr<DataCache> cache = nullptr);

  int64_t num_samples() const override { return num_samples_; }
  int64_t seq_len() const override { return options_.seq_len; }
  void get(int64_t index, int64_t* out) const override;
  bool has_loss_mask() const override { return loss_mask_ != nullptr; }
  void get_loss_mask(int64_t index, int64_t* out) const override;

  // Tokens in the chosen part's stream, and its document range.
  int64_t num_tokens() const { return cumulative_.back(); }
  int64_t first_document() const { return doc_begin_; }
  int64_t end_document() const { return doc_end_; }
  // Sample (in stream order) that global index `index` maps to.
  int64_t sample_for(int64_t index) const;

 private:
  Int64Array permutation(int64_t epoch) const;
  void check_loss_mask() const;
  void read_stream(const IndexedDataset& from, int64_t start, int64_t count, int64_t* out) const;

  std::shared_ptr<const IndexedDataset> data_, loss_mask_;
  std::shared_ptr<DataCache> cache_;
  GPTDatasetOptions options_;
  int64_t doc_begin_ = 0, doc_end_ = 0;
  int64_t seq_begin_ = 0;            // first sequence of the chosen documents
  Int64Array cumulative_;            // tokens before chosen sequence j; back() = total
  int64_t num_samples_ = 0;

  mutable std::mutex mutex_;  // guards the permutation cache
  mutable std::vector<std::pair<int64_t, Int64Array>> perms_;
};

// The permutation of [0, n) GPTDataset uses for (seed, epoch): Fisher-Yates driven by
// std::mt19937_64 with a hand-written bounded draw, so it is identical on every platform.
std::vector<int64_t> shuffled_indices(int64_t n, int64_t seed, int64_t epoch);

// A weighted blend of sources. Global sample i goes to the source whose count so far falls
// furthest below weight * (i + 1) (ties: lowest source index), and is that source's next sample;
// this greedy rule (Megatron's) keeps every source's count within a sample or two of
// weight * n for every prefix of n samples.
// The assignment is computed lazily in chunks of kChunk samples from the per-source counts at
// each chunk start, kept in blocks of kBlockChunks chunks (num_sources * 8 bytes per chunk);
// sequential access is O(num_sources) per sample. With a cache directory each block is a file
// built once, so a jump to index i (a restart) costs O(1) once the blocks up to i exist and
// O(i) once otherwise.
// num_samples() is the sum of the sources' num_samples(); indices beyond it keep blending (the
// sources move on to later epochs).
// Owns: shared references to the sources. Throws: weft::Error for no sources, a negative or
//   non-finite weight, all-zero weights, or sources with different seq_len. get() is thread-safe.
class BlendedDataset : public SampleSource {
 public:
  static constexpr int64_t kChunk = 4096;
  static constexpr int64_t kBlockChunks = 256;

  // `cache` (null: in memory) keeps the counts at chunk starts; they depend only on the weights.
  BlendedDataset(std::vector<std::shared_ptr<const SampleSource>> sources,
                 std::vector<double> weights, std::shared_ptr<DataCache> cache = nullptr);

  int64_t num_samples() const override { return num_samples_; }
  int64_t seq_len() const override { return seq_len_; }
  void get(int64_t index, int64_t* out) const override;
  bool has_loss_mask() const override;
  void get_loss_mask(int64_t index, int64_t* out) const override;
  bool has_positions() const override;
  void get_positions(int64_t index, int64_t* out) const override;

  // (source, that source's sample index) for global sample `index`.
  std::pair<int, int64_t> locate(int64_t index) const;
  const std::vector<double>& weights() const { return weights_; }

 private:
  void decode_chunk(int64_t chunk) const;  // requires mutex_ held
  // Counts before each chunk of block b, (kBlockChunks, num_sources) row-major. Requires mutex_.
  Int64Array counts_block(int64_t b) const;
  std::vector<int64_t> build_block(int64_t b, std::vector<int64_t> counts) const;
  std::string block_name(int64_t b) const;

  std::vector<std::shared_ptr<const SampleSource>> sources_;
  std::vector<double> weights_;  // normalised
  int64_t num_samples_ = 0;
  int64_t seq_len_ = 0;

  std::shared_ptr<DataCache> cache_;
  std::string key_;  // the weights, exactly: all the counts depend on

  mutable std::mutex mutex_;
  // Blocks of counts used so far (see counts_block): 8 * kBlockChunks * num_sources bytes each.
  mutable std::map<int64_t, Int64Array> blocks_;
  mutable int64_t decoded_chunk_ = -1;
  mutable std::vector<int> chunk_source_;      // (kChunk,)
  mutable std::vector<int64_t> chunk_sample_;  // (kChunk,)
};

// Samples [first, first + count) of `source` as an int64 tensor of shape (count, seq_len + 1).
at::Tensor make_batch(const SampleSource& source, int64_t first, int64_t count, int64_t seq_len);

// One micro-batch, on the host: input_ids and labels (B, T) int64, labels[b, t] being the token
// after input t, or -100 (PyTorch's ignore_index) where the loss mask says that token is not a
// target; positions (B, T) int64 for packed examples (see SampleSource::has_positions), else
// undefined. num_counted: labels that count.
struct MicroBatch {
  at::Tensor input_ids, labels, positions;
  int64_t num_counted = 0;
};
// Samples [first, first + count) of `source` as a micro-batch. Throws weft::Error for a bad range.
MicroBatch make_micro_batch(const SampleSource& source, int64_t first, int64_t count, int64_t seq_len);

// Opens training data from either one prefix or a blend ("weight, prefix, weight, prefix, ...",
// as in data.blend), builds GPTDatasets with `options` (a BlendedDataset for a blend), and checks
// every token is in [0, vocab_size). A dataset PREFIX with a PREFIX.loss_mask companion gets its
// loss mask. Each dataset's index cache (see DataCache) lives under options.cache_dir, else
// beside it; a cached dataset opens in O(1). Throws weft::Error naming the dataset otherwise.
std::shared_ptr<SampleSource> open_training_data(const std::string& prefix,
                                                 const std::vector<std::string>& blend,
                                                 const GPTDatasetOptions& options,
                                                 int64_t vocab_size);

}  // namespace weft
