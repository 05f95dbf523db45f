// Training rows made of whole examples (supervised fine-tuning): each document of an indexed
// dataset is one example, and a row holds one example (padded) or as many whole examples as fit
// (packed). Unlike GPTDataset's stream, an example is never split and never sees another: the
// row carries each token's position within its example, from which the model builds an
// attention mask that keeps examples apart (see TransformerImpl::forward_stage).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/data/gpt_dataset.h"
#include "runtime/data/indexed_dataset.h"

namespace weft {

// Rows of seq_len + 1 tokens over the examples of one split (documents [begin, end) of the
// dataset, as GPTDataset's split). Packing: the examples, in a seeded shuffled order (file order
// without options.shuffle), go into rows greedily; an example that does not fit in the current
// row's remaining room starts the next row (next-fit, so the rows depend only on the data and
// seed). Padded: one example per row. A row's unused tail is padding: token 0, position counting
// from 0 as an example of its own, never a target. Epoch e visits the rows in the permutation
// shuffled_indices(rows, seed, e).
// Loss mask: the stored mask (all 1 without one), with each example's first token never a
// target (in a packed row it would be predicted from the previous example).
// Owns: the dataset references and the row table (8 bytes per example). get*() are thread-safe.
// Throws weft::Error naming the dataset and example for an example longer than seq_len + 1 tokens,
//   and for a split with no example.
class PackedExamples : public SampleSource {
 public:
  PackedExamples(std::shared_ptr<const IndexedDataset> data, std::shared_ptr<const IndexedDataset> loss_mask,
                 const GPTDatasetOptions& options, bool pack);

  int64_t num_samples() const override { return int64_t(row_start_.size()) - 1; }
  int64_t seq_len() const override { return options_.seq_len; }
  void get(int64_t index, int64_t* out) const override;
  bool has_loss_mask() const override { return true; }
  void get_loss_mask(int64_t index, int64_t* out) const override;
  bool has_positions() const override { return true; }
  void get_positions(int64_t index, int64_t* out) const override;

  // Examples in the split, and the rows they fill (num_samples()).
  int64_t num_examples() const { return int64_t(order_.size()); }

 private:
  // The examples (sequence numbers) of the row global index `index` maps to.
  std::pair<const int64_t*, const int64_t*> row(int64_t index) const;
  std::shared_ptr<const IndexedDataset> data_, loss_mask_;
  GPTDatasetOptions options_;
  std::vector<int64_t> order_;      // sequences in packing order
  std::vector<int64_t> row_start_;  // row r holds order_[row_start_[r], row_start_[r + 1])
  mutable std::mutex mutex_;        // guards the cached epoch permutation
  mutable int64_t perm_epoch_ = -1;
  mutable std::vector<int64_t> perm_;
};

}  // namespace weft
