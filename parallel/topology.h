// The rank grid: which (tp, dp, pp) coordinate each rank has and which ranks form each group.
// Pure arithmetic on ParallelDims — no processes, no store — so it is unit-tested directly and
// the launcher can refuse an impossible layout before any worker starts.
//
// Order is Megatron's: TP fastest, then DP, then PP.
//   rank = pp_rank * (dp * tp) + dp_rank * tp + tp_rank
// so TP peers are neighbours (same node, fastest links) and PP stages are the farthest apart.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "weft/config.h"

namespace weft {

// Parallel degrees of one job. dp is derived: world_size / (tp * pp). vpp is the number of
// virtual pipeline stages (model chunks) per pipeline rank, for interleaved 1F1B.
struct ParallelDims {
  int64_t tp = 1;
  int64_t pp = 1;
  int64_t dp = 1;
  int64_t vpp = 1;

  int64_t world_size() const { return tp * pp * dp; }
  int64_t num_virtual_stages() const { return pp * vpp; }
  // "tp(2) × pp(2) × dp(2)" (with "× vpp(n)" when vpp > 1), for messages.
  std::string describe() const;
};

// Derives dp from world_size and checks the degrees alone. Throws weft::Error naming every
// degree, e.g. "tp(3) × pp(2) = 6 does not divide world_size(8)".
ParallelDims make_parallel_dims(int64_t world_size, const ParallelConfig& parallel);

// Checks that a model can be split this way: heads, KV heads, FFN width and the padded vocabulary
// (ModelConfig::padded_vocab_size) divide by tp; at least one layer per virtual stage. Every problem found goes into one one-line
// weft::Error that names the degrees and what to change.
void check_model_fits(const ParallelDims& dims, const ModelConfig& model);

// The whole job: make_parallel_dims + check_model_fits + batch/sequence splits
// (train.global_batch_size divisible by micro_batch_size × dp; train.seq_len divisible by tp
// with sequence parallelism). This is what the launcher and each worker call before anything
// else. Throws weft::Error listing every problem.
ParallelDims validate_layout(int64_t world_size, const Config& cfg);

// The layout an elastic job trains with on `world_size` processes: tp and pp from the config and
// the largest dp <= world_size / (tp × pp) for which validate_layout passes (the global batch is
// kept: gradient accumulation = global_batch_size / (micro_batch_size × dp)). Ranks from
// dims.world_size() on are spares. Throws weft::Error (validate_layout's, for the largest dp)
// when no dp fits, or when world_size < tp × pp.
ParallelDims elastic_layout(int64_t world_size, const Config& cfg);

// Global layers [first, last) of each virtual stage s = chunk * pp + pp_rank, in stage order:
// `split` (layer counts, from parallel.pipeline_layers) or, when empty, balanced with the first
// num_layers % stages stages one layer longer.
std::vector<std::pair<int64_t, int64_t>> stage_layers(const ParallelDims& dims, int64_t num_layers,
                                                       const std::vector<int64_t>& split);

// Position of one rank on the grid.
struct RankCoord {
  int64_t tp = 0;
  int64_t dp = 0;
  int64_t pp = 0;
  bool operator==(const RankCoord& o) const { return tp == o.tp && dp == o.dp && pp == o.pp; }
};

// Throws weft::Error if rank is outside [0, world_size) or a coordinate is out of range.
RankCoord coord_of(const ParallelDims& dims, int64_t rank);
int64_t rank_of(const ParallelDims& dims, const RankCoord& c);

// The process groups of the grid. Every group is a list of global ranks in group-rank order.
enum class GroupKind {
  kWorld,      // all ranks
  kTensor,     // same dp and pp: the ranks that split each layer (TP)
  kData,       // same tp and pp: replicas whose gradients are averaged (DP)
  kPipeline,   // same tp and dp: the stages one micro-batch flows through (PP)
  kEmbedding,  // first and last stage of a pipeline group (tied embeddings); [first] when pp=1
  kModel,      // same dp: the tp × pp ranks that together hold one model replica
};
const char* group_kind_name(GroupKind kind);  // "world", "tp", "dp", "pp", "embedding", "model"

// Global ranks of `rank`'s group of that kind, ascending. For kEmbedding a rank on a middle
// pipeline stage belongs to no group: the result is empty.
std::vector<int64_t> group_ranks(const ParallelDims& dims, int64_t rank, GroupKind kind);

// Every group of that kind, each as group_ranks() returns it, in a fixed order (by lowest
// rank). A group's index in this list names it identically on every rank.
std::vector<std::vector<int64_t>> all_groups(const ParallelDims& dims, GroupKind kind);

}  // namespace weft
