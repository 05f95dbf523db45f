// Jinja2 source -> tokens, applying Jinja's whitespace rules as transformers configures them
// (trim_blocks, lstrip_blocks, '-' and '+' markers, newline normalisation, one trailing newline
// dropped). Text between tags becomes kText tokens; comments vanish.
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "weft/error.h"
#include "runtime/data/jinja.h"

namespace weft::jinja {
namespace {

class Lexer {
 public:
  Lexer(const std::string& src, const std::string& origin) : origin_(origin) {
    // Jinja normalises every newline sequence to "\n" and (keep_trailing_newline=False) drops one
    // trailing newline of the source.
    for (size_t k = 0; k < src.size(); ++k) {
      if (src[k] == '\r') {
        s_ += '\n';
        if (k + 1 < src.size() && src[k + 1] == '\n') ++k;
      } else {
        s_ += src[k];
      }
    }
    if (!s_.empty() && s_.back() == '\n') s_.pop_back();
  }

  std::vector<Token> run() {
    bool line_starting = true;
    while (p_ < s_.size()) {
      size_t tag = s_.find('{', p_);
      while (tag != std::string::npos && tag + 1 < s_.size() && !is_tag_char(s_[tag + 1])) tag = s_.find('{', tag + 1);
      if (tag == std::string::npos || tag + 1 >= s_.size()) {
        emit_text(s_.substr(p_), line_);
        break;
      }
      const char kind = s_[tag + 1];
      const char sign = tag + 2 < s_.size() ? s_[tag + 2] : 0;
      std::string text = s_.substr(p_, tag - p_);
      if (sign == '-') {
        text = py_strip(text, nullptr, false, true);
      } else if (kind != '{' && sign != '+') {
        lstrip(text, line_starting);
      }
      const int text_line = line_;
      advance_to(tag);
      emit_text(text, text_line);
      if (kind == '#') {
        line_starting = comment();
      } else if (kind == '%' && raw_block()) {
        line_starting = false;
      } else {
        line_starting = tag_body(kind);
      }
    }
    out_.push_back({Token::kEof, "", line_, {}});
    return std::move(out_);
  }

 private:
  [[noreturn]] void fail(const std::string& what, int line) { weft::fail(str(origin_, ":", line, ": ", what)); }
  static bool is_tag_char(char c) { return c == '{' || c == '%' || c == '#'; }

  void advance_to(size_t pos) {
    line_ += int(std::count(s_.begin() + p_, s_.begin() + pos, '\n'));
    p_ = pos;
  }

  void emit_text(const std::string& text, int line) {
    if (!text.empty()) out_.push_back({Token::kText, text, line, {}});
  }

  // lstrip_blocks: drop the spaces between the start of the line and a block or comment tag.
  static void lstrip(std::string& text, bool line_starting) {
    const size_t nl = text.rfind('\n');
    const size_t from = nl == std::string::npos ? 0 : nl + 1;
    if (nl == std::string::npos && !line_starting) return;
    const auto tail = utf8_decode(text.substr(from));
    if (!tail.empty() && std::all_of(tail.begin(), tail.end(), py_isspace)) text.resize(from);
  }

  // After a tag's end marker at p_: '-' strips all whitespace, a plain block end (trim_blocks)
  // one newline. Returns whether the next text starts a line (Jinja's line_starting).
  bool after_end(char sign, bool block) {
    size_t q = p_;
    if (sign == '-') {
      const auto cps = utf8_decode(s_.substr(p_));
      size_t n = 0, bytes = 0;
      while (n < cps.size() && py_isspace(cps[n])) bytes += utf8_encode({cps[n++]}).size();
      q = p_ + bytes;
    } else if (block && sign != '+' && q < s_.size() && s_[q] == '\n') {
      ++q;
    }
    const bool ends_line = q > p_ && s_[q - 1] == '\n';
    advance_to(q);
    return ends_line;
  }

  bool comment() {
    const int line = line_;
    const size_t end = s_.find("#}", p_ + 2);
    if (end == std::string::npos) fail("unterminated comment ({# without #})", line);
    const char sign = end > p_ + 2 ? s_[end - 1] : 0;
    advance_to(end + 2);
    return after_end(sign == '-' || sign == '+' ? sign : 0, true);
  }

  // {% raw %}...{% endraw %}: the body is text, untouched.
  bool raw_block() {
    size_t q = p_ + 2;
    if (q < s_.size() && (s_[q] == '-' || s_[q] == '+')) ++q;
    while (q < s_.size() && isspace(static_cast<unsigned char>(s_[q]))) ++q;
    if (s_.compare(q, 3, "raw") != 0) return false;
    q += 3;
    while (q < s_.size() && isspace(static_cast<unsigned char>(s_[q]))) ++q;
    const char sign = q < s_.size() && s_[q] == '-' ? '-' : 0;
    if (sign) ++q;
    if (s_.compare(q, 2, "%}") != 0) return false;
    const int line = line_;
    advance_to(q + 2);
    after_end(sign, true);
    for (size_t k = s_.find("{%", p_); k != std::string::npos; k = s_.find("{%", k + 2)) {
      size_t r = k + 2;
      const bool strip = r < s_.size() && s_[r] == '-';
      if (strip) ++r;
      while (r < s_.size() && isspace(static_cast<unsigned char>(s_[r]))) ++r;
      if (s_.compare(r, 6, "endraw") != 0) continue;
      r += 6;
      while (r < s_.size() && isspace(static_cast<unsigned char>(s_[r]))) ++r;
      const char esign = r < s_.size() && s_[r] == '-' ? '-' : 0;
      if (esign) ++r;
      if (s_.compare(r, 2, "%}") != 0) continue;
      std::string body = s_.substr(p_, k - p_);
      if (strip) body = py_strip(body, nullptr, false, true);
      emit_text(body, line_);
      advance_to(r + 2);
      after_end(esign, true);
      return true;
    }
    fail("{% raw %} without {% endraw %}", line);
  }

  // Tokens of a {{ ... }} or {% ... %} tag, up to its end marker (outside any brackets).
  bool tag_body(char kind) {
    const bool block = kind == '%';
    const int start_line = line_;
    out_.push_back({block ? Token::kBlockBegin : Token::kVarBegin, "", line_, {}});
    size_t q = p_ + 2;
    if (q < s_.size() && (s_[q] == '-' || s_[q] == '+')) ++q;
    advance_to(q);
    const std::string end = block ? "%}" : "}}";
    std::vector<char> brackets;
    while (true) {
      while (p_ < s_.size() && isspace(static_cast<unsigned char>(s_[p_]))) advance_to(p_ + 1);
      if (p_ >= s_.size()) fail(str("unterminated tag (", block ? "{% without %}" : "{{ without }}", ")"), start_line);
      if (brackets.empty()) {
        for (const char sign : {'-', '+', '\0'}) {
          if (sign == '+' && !block) continue;
          const size_t at = p_ + (sign ? 1 : 0);
          if ((!sign || s_[p_] == sign) && s_.compare(at, 2, end) == 0) {
            out_.push_back({block ? Token::kBlockEnd : Token::kVarEnd, "", line_, {}});
            advance_to(at + 2);
            return after_end(sign, block);
          }
        }
      }
      lex_token(brackets);
    }
  }

  void lex_token(std::vector<char>& brackets) {
    const char c = s_[p_];
    const int line = line_;
    if (isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t q = p_;
      while (q < s_.size() && (isalnum(static_cast<unsigned char>(s_[q])) || s_[q] == '_')) ++q;
      out_.push_back({Token::kName, s_.substr(p_, q - p_), line, {}});
      advance_to(q);
    } else if (isdigit(static_cast<unsigned char>(c))) {
      number();
    } else if (c == '\'' || c == '"') {
      string_literal(c);
    } else {
      static const char* ops[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[", "]", "(",
                                  ")", "{", "}", ">", "<", "=", ".", ":", "|", ",", ";"};
      for (const char* op : ops) {
        if (s_.compare(p_, strlen(op), op) != 0) continue;
        if (strchr("([{", op[0]) && op[1] == 0) brackets.push_back(op[0]);
        if (strchr(")]}", op[0]) && op[1] == 0) {
          const char open = op[0] == ')' ? '(' : op[0] == ']' ? '[' : '{';
          if (brackets.empty() || brackets.back() != open) fail(str("unexpected '", op, "'"), line);
          brackets.pop_back();
        }
        out_.push_back({Token::kOp, op, line, {}});
        advance_to(p_ + strlen(op));
        return;
      }
      fail(str("unexpected character '", c, "' in a tag"), line);
    }
  }

  void number() {
    size_t q = p_;
    std::string digits;
    bool is_float = false;
    auto run = [&] {
      while (q < s_.size() && (isdigit(static_cast<unsigned char>(s_[q])) || s_[q] == '_')) {
        if (s_[q] != '_') digits += s_[q];
        ++q;
      }
    };
    run();
    if (q + 1 < s_.size() && s_[q] == '.' && isdigit(static_cast<unsigned char>(s_[q + 1]))) {
      is_float = true;
      digits += s_[q++];
      run();
    }
    if (q < s_.size() && (s_[q] == 'e' || s_[q] == 'E')) {
      size_t r = q + 1;
      if (r < s_.size() && (s_[r] == '+' || s_[r] == '-')) ++r;
      if (r < s_.size() && isdigit(static_cast<unsigned char>(s_[r]))) {
        is_float = true;
        digits += s_.substr(q, r - q);
        q = r;
        run();
      }
    }
    Token t{is_float ? Token::kFloat : Token::kInt, s_.substr(p_, q - p_), line_, {}};
    if (is_float) {
      t.value = Value::number(std::strtod(digits.c_str(), nullptr));
    } else {
      errno = 0;
      const long long x = std::strtoll(digits.c_str(), nullptr, 10);
      if (errno == ERANGE) fail(str("integer literal ", t.text, " does not fit in 64 bits"), line_);
      t.value = Value::integer(x);
    }
    out_.push_back(t);
    advance_to(q);
  }

  // A quoted string with Python's escapes (\n \t \xHH \uHHHH \UHHHHHHHH \ooo ...); an unknown
  // escape keeps its backslash, as Python's unicode-escape does.
  void string_literal(char quote) {
    const int line = line_;
    std::vector<uint32_t> out;
    const auto cps = utf8_decode(s_.substr(p_ + 1));
    size_t k = 0, bytes = 1;
    auto take = [&]() {
      bytes += utf8_encode({cps[k]}).size();
      return cps[k++];
    };
    while (true) {
      if (k >= cps.size()) fail("unterminated string literal", line);
      uint32_t c = take();
      if (c == uint32_t(quote)) break;
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (k >= cps.size()) fail("unterminated string literal", line);
      c = take();
      auto hex = [&](int n) {
        uint32_t v = 0;
        for (int d = 0; d < n; ++d) {
          if (k >= cps.size() || !isxdigit(int(cps[k]))) fail("truncated \\x/\\u escape in a string literal", line);
          const uint32_t h = take();
          v = v * 16 + (isdigit(int(h)) ? h - '0' : (h | 32) - 'a' + 10);
        }
        return v;
      };
      switch (c) {
        case 'n': out.push_back('\n'); break;
        case 't': out.push_back('\t'); break;
        case 'r': out.push_back('\r'); break;
        case 'a': out.push_back(7); break;
        case 'b': out.push_back(8); break;
        case 'f': out.push_back(12); break;
        case 'v': out.push_back(11); break;
        case '\\': case '\'': case '"': out.push_back(c); break;
        case '\n': break;
        case 'x': out.push_back(hex(2)); break;
        case 'u': out.push_back(hex(4)); break;
        case 'U': out.push_back(hex(8)); break;
        default:
          if (c >= '0' && c <= '7') {
            uint32_t v = c - '0';
            for (int d = 0; d < 2 && k < cps.size() && cps[k] >= '0' && cps[k] <= '7'; ++d) v = v * 8 + (take() - '0');
            out.push_back(v);
          } else {
            out.push_back('\\');
            out.push_back(c);
          }
      }
    }
    out_.push_back({Token::kString, "", line, Value::string(utf8_encode(out))});
    advance_to(p_ + bytes);
  }

  std::string origin_, s_;
  size_t p_ = 0;
  int line_ = 1;
  std::vector<Token> out_;
};

}  // namespace

std::vector<Token> lex(const std::string& source, const std::string& origin) { return Lexer(source, origin).run(); }

}  // namespace weft::jinja
