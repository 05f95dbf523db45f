// Private helpers shared by the schedule builder (schedule.cpp) and the simulator
// (simulate.cpp): where an action's tensors come from and go to, transfer keys, and labels.
#pragma once

#include <cstdint>
#include <string>

#include "parallel/pipeline/schedule.h"

namespace weft::detail {

// Where an action's input comes from and where its output goes. A neighbour stage on the same
// rank (only when pp == 1) is a hand-over in memory, not a transfer: src/dst are -1 then.
struct ActionIo {
  int64_t stage = 0;
  bool has_input = false;   // forward of s > 0, backward of s < S-1
  int64_t src_stage = -1;   // the stage producing that input
  int64_t src_rank = -1;    // its rank when it is another rank, else -1
  bool has_output = false;  // forward of s < S-1, backward of s > 0
  int64_t dst_stage = -1;
  int64_t dst_rank = -1;
  Transfer::Payload payload = Transfer::kActivation;  // of both input and output
};

ActionIo action_io(int64_t pp, int64_t vpp, int64_t rank, const PipelineAction& a);

// A transfer is named by (payload, micro-batch, producing stage); both sides compute the same key.
int64_t transfer_key(int64_t pp, int64_t vpp, int64_t microbatches, Transfer::Payload payload,
                     int64_t microbatch, int64_t producer_stage);
// The key of an op posted by `rank` (a send names its producer, a recv its consumer).
int64_t op_key(const Schedule& s, int64_t rank, const Transfer& op);

// "F3", or "F3.1" when vpp > 1.
std::string action_label(const PipelineAction& a, int64_t vpp);
// ">1:a3" / "<2:g0", with ".c" for the local chunk when vpp > 1.
std::string op_label(const Transfer& op, int64_t vpp);
// "recv gradient of micro-batch 0 (chunk 1) from rank 2", for error messages.
std::string op_text(const Transfer& op);
// "'1f1b' (pp=4, vpp=1, microbatches=8)".
std::string schedule_id(const Schedule& s);
// Throws weft::Error unless pp, vpp, microbatches >= 1.
void check_dims(const std::string& name, int64_t pp, int64_t vpp, int64_t microbatches);

}  // namespace weft::detail
