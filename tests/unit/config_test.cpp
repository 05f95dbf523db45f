#include <gtest/gtest.h>
#include "core/config.h"
TEST(Config, Keys) { EXPECT_GT(weft::config_keys().size(), 10u); }
