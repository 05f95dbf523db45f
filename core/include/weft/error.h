// Weft's one error type and the check macro every layer uses. A weft::Error carries a message a
// person can act on (file, key, rank, what to do); the CLI prints it as one line and exits 1.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace weft {

// Thrown for any bad input or broken invariant. what() is the whole one-line message for a
// person; where() is the source location that raised it, for developers (`--verbose`).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg, std::string where = "")
      : std::runtime_error(msg), where_(std::move(where)) {}
  const std::string& where() const { return where_; }

 private:
  std::string where_;
};

namespace detail {
inline void str_into(std::ostringstream&) {}
template <typename T, typename... Rest>
void str_into(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  str_into(os, rest...);
}
}  // namespace detail

// Concatenates its arguments with operator<<.
template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  detail::str_into(os, args...);
  return os.str();
}

[[noreturn]] inline void fail(const std::string& msg, const char* file = "", int line = 0) {
  throw Error(msg, line ? str(file, ":", line) : "");
}

}  // namespace weft

// WEFT_CHECK(cond, "message ", value, ...): throws weft::Error with the message when cond is
// false. The message is meant for users, so it names the file/key/rank and the fix; the source
// location travels beside it in Error::where().
#define WEFT_CHECK(cond, ...)                                             \
  do {                                                                    \
    if (!(cond)) ::weft::fail(::weft::str(__VA_ARGS__), __FILE__, __LINE__); \
  } while (0)
