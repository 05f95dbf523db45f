// Precompiled header: the LibTorch pieces most translation units use. Not included directly;
// CMake forces it in. Keep <torch/torch.h> out of here: it drags in the whole frontend.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/serialize/tensor.h>
