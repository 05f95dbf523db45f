#include "runtime/data/packed_dataset.h"

#include <algorithm>

#include "weft/error.h"

namespace weft {

PackedExamples::PackedExamples(std::shared_ptr<const IndexedDataset> data,
                               std::shared_ptr<const IndexedDataset> loss_mask, const GPTDatasetOptions& options,
                               bool pack)
    : data_(std::move(data)), loss_mask_(std::move(loss_mask)), options_(options) {
  WEFT_CHECK(options_.seq_len >= 1, "train.seq_len must be >= 1, got ", options_.seq_len);
  const auto [doc_begin, doc_end] = split_documents(options_.split, options_.which, data_->num_documents());
  const int64_t first = data_->document_index(doc_begin), end = data_->document_index(doc_end);
  WEFT_CHECK(end > first, "dataset ", data_->prefix(), ": the ", options_.which == SplitPart::kValid ? "validation" : "training",
             " part of data.split \"", options_.split, "\" holds no example; use more data or a different data.split");
  const int64_t room = options_.seq_len + 1;
  for (int64_t s = first; s < end; ++s) {
    const int64_t n = data_->sequence_length(s);
    WEFT_CHECK(n <= room, "dataset ", data_->prefix(), ": example ", s, " has ", n, " tokens, more than train.seq_len + 1 = ",
               room, " (data.packing keeps examples whole); raise train.seq_len or drop the example");
  }
  if (options_.shuffle) {
    for (int64_t i : shuffled_indices(end - first, options_.seed, /*epoch=*/-1)) order_.push_back(first + i);
  } else {
    for (int64_t s = first; s < end; ++s) order_.push_back(s);
  }
  row_start_.push_back(0);
  int64_t used = 0;
  for (size_t k = 0; k < order_.size(); ++k) {
    const int64_t n = data_->sequence_length(order_[k]);
    if (k > 0 && (!pack || used + n > room)) row_start_.push_back(int64_t(k)), used = 0;
    used += n;
  }
  row_start_.push_back(int64_t(order_.size()));
}

std::pair<const int64_t*, const int64_t*> PackedExamples::row(int64_t index) const {
  WEFT_CHECK(index >= 0, data_->prefix(), ": negative sample index ", index);
  const int64_t rows = num_samples();
  int64_t r = index % rows;
  if (options_.shuffle) {
    std::lock_guard<std::mutex> lock(mutex_);
    const int64_t epoch = index / rows;
    if (perm_epoch_ != epoch) perm_ = shuffled_indices(rows, options_.seed, epoch), perm_epoch_ = epoch;
    r = perm_[r];
  }
  return {order_.data() + row_start_[r], order_.data() + row_start_[r + 1]};
}

namespace {
// Calls fill(sequence, at, n) for each example of the row, `at` being where it starts in the row,
// and returns where the padding starts.
template <class Fill>
int64_t for_each_example(const IndexedDataset& data, std::pair<const int64_t*, const int64_t*> row, Fill fill) {
  int64_t at = 0;
  for (auto s = row.first; s != row.second; ++s) {
    const int64_t n = data.sequence_length(*s);
    fill(*s, at, n);
    at += n;
  }
  return at;
}
}  // namespace

void PackedExamples::get(int64_t index, int64_t* out) const {
  const int64_t pad = for_each_example(*data_, row(index),
                                       [&](int64_t s, int64_t at, int64_t n) { data_->read(s, 0, n, out + at); });
  std::fill(out + pad, out + options_.seq_len + 1, 0);
}

void PackedExamples::get_loss_mask(int64_t index, int64_t* out) const {
  const int64_t pad = for_each_example(*data_, row(index), [&](int64_t s, int64_t at, int64_t n) {
    if (loss_mask_) {
      loss_mask_->read(s, 0, n, out + at);
    } else {
      std::fill(out + at, out + at + n, 1);
    }
    out[at] = 0;  // an example's first token is no target
  });
  std::fill(out + pad, out + options_.seq_len + 1, 0);
}

void PackedExamples::get_positions(int64_t index, int64_t* out) const {
  const int64_t pad = for_each_example(*data_, row(index), [&](int64_t, int64_t at, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[at + i] = i;
  });
  for (int64_t i = 0; pad + i < options_.seq_len + 1; ++i) out[pad + i] = i;  // padding: an example of its own
}

}  // namespace weft
