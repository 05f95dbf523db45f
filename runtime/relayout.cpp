#include "runtime/relayout.h"

#include <ATen/CPUGeneratorImpl.h>

#include "weft/error.h"
#include "parallel/comm.h"
#include "parallel/device.h"
#include "runtime/parallel_model.h"

namespace weft {

SaveOutcome relayout_checkpoint(const Config& cfg, const ParallelContext* ctx, const std::string& from_dir,
                                const std::string& to_root) {
  const at::Device device = select_device(cfg.device, ctx ? int(ctx->env().local_rank) : 0);
  ParallelModel model(cfg, ctx, device);
  // The generator's state is the checkpoint's (load sets it, save writes it back).
  Checkpointer checkpointer(cfg, ctx, model.params(), model.optimizer(), at::make_generator<at::CPUGeneratorImpl>());
  const RestoredState from = checkpointer.load(from_dir);
  checkpointer.save(from.step, from.consumed_samples, to_root);
  const auto outcomes = checkpointer.finish();
  WEFT_CHECK(outcomes.size() == 1, "convert: expected one save, got ", outcomes.size());
  WEFT_CHECK(outcomes[0].ok, "convert: writing ", to_root, " failed: ", outcomes[0].error);
  return outcomes[0];
}

}  // namespace weft
