// Helpers shared by the unit tests.
#pragma once

#include <functional>
#include <string>

#include "weft/error.h"

namespace weft::testing {

// The message of the weft::Error that f throws, or "" if it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace weft::testing
