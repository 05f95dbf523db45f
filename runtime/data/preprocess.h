// The preprocessing API is public: weft/preprocess.h.
#pragma once

#include "weft/preprocess.h"
