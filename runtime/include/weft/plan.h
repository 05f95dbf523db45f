// weft::plan_job: what `weft plan` computes, sized on the meta device (nothing allocated):
// parameter counts, memory of the training state, FLOPs per token, and for a layout on N ranks
// what each pipeline rank holds and how the pipeline schedule behaves.
//
//   weft::JobPlan p = weft::plan_job(cfg, /*world_size=*/8);
//   std::cout << weft::render_plan(p);   // exactly what `weft plan --nproc 8` prints
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "weft/config.h"

namespace weft {

// The model alone, whatever the layout.
struct ModelPlan {
  ModelConfig model;              // cfg.model as sized
  int64_t parameters = 0;         // the published count (vocabulary not padded)
  int64_t parameters_padded = 0;  // what memory holds, vocabulary padded (sizes below use it)
  double weights_bytes = 0;         // fp32 weights: 4 B per padded parameter
  double training_state_bytes = 0;  // fp32 weights + grads + two Adam moments: 16 B per parameter
  double flops_per_token = 0;       // training (forward + backward) FLOPs per token at train.seq_len
};

// What the ranks of one pipeline stage hold (its tp ranks hold equal shares; dp replicas the same).
struct StagePlan {
  int64_t pp = 0;              // the pipeline rank
  std::string layers;          // its layer ranges, e.g. "0-3,8-11"
  int64_t parameters = 0;      // per rank (its TP slice of every chunk it holds)
  double training_state_bytes = 0;  // per rank: fp32 weights, grads, AdamW moments (ZeRO-1 split)
};

struct PipelinePlan {
  std::string schedule;             // parallel.schedule, or the default for vpp
  int64_t micro_batches = 0;        // per step and data-parallel rank
  double ideal_bubble = 0;          // idle share of an ideal step, 0..1
  int64_t max_in_flight = 0;        // forward activations (micro-batch × chunk) held per rank, at most
};

// The layout's part: tp and pp from parallel.*, dp from the world size.
struct LayoutPlan {
  int64_t tp = 1, pp = 1, dp = 1, vpp = 1;
  std::string layout;               // "tp(2) × pp(2) × dp(2)"
  std::vector<StagePlan> stages;    // one per pipeline rank, in order
  int64_t max_rank_parameters = 0;  // the most any rank holds
  bool pipelined = false;           // pp > 1: `pipeline` is filled in
  PipelinePlan pipeline;
};

struct JobPlan {
  ModelPlan model;
  LayoutPlan layout;
};

// Sizes `cfg`'s model. Throws weft::Error (Config::validate's message) for an invalid config.
ModelPlan plan_model(const Config& cfg);
// Sizes `cfg` on `world_size` ranks (0: parallel.tp × parallel.pp). Throws weft::Error for an
// invalid config or a layout that cannot split the job (naming the degree and what to change).
LayoutPlan plan_layout(const Config& cfg, int64_t world_size = 0);
// Both; throws as they do.
JobPlan plan_job(const Config& cfg, int64_t world_size = 0);

// The text `weft plan` prints for each part, "\n"-terminated lines: key=value lines that scripts
// read (parameters=, parameters_padded=, weights_gib=, training_state_gib=, flops_per_token=,
// max_rank_parameters=) and descriptive lines (model:, layout:, rank_parameters, pipeline:).
std::string render_model_plan(const ModelPlan& plan);
std::string render_layout_plan(const LayoutPlan& plan);
std::string render_plan(const JobPlan& plan);

}  // namespace weft
