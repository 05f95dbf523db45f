// The (schedule, pp, vpp, m) grid the pipeline schedule tests sweep: pp 1..8, vpp 1..4,
// m in {pp, 2pp, 4pp, 8, 16} (distinct values), wherever the schedule accepts it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "weft/error.h"

namespace weft::pipeline_test {

struct GridPoint {
  std::string name;
  int64_t pp, vpp, m;
};

// 1f1b needs vpp == 1, interleaved_1f1b needs m % pp == 0; gpipe takes everything.
inline std::vector<GridPoint> schedule_grid() {
  std::vector<GridPoint> out;
  for (const std::string name : {"1f1b", "interleaved_1f1b", "gpipe"})
    for (int64_t pp = 1; pp <= 8; ++pp)
      for (int64_t vpp = 1; vpp <= 4; ++vpp) {
        std::vector<int64_t> ms;
        for (int64_t m : {pp, 2 * pp, 4 * pp, int64_t{8}, int64_t{16}})
          if (std::find(ms.begin(), ms.end(), m) == ms.end()) ms.push_back(m);
        for (int64_t m : ms) {
          if (name == "1f1b" && vpp != 1) continue;
          if (name == "interleaved_1f1b" && m % pp != 0) continue;
          out.push_back({name, pp, vpp, m});
        }
      }
  return out;
}

inline std::string grid_id(const GridPoint& c) {
  return str(c.name, " pp=", c.pp, " vpp=", c.vpp, " m=", c.m);
}

}  // namespace weft::pipeline_test
