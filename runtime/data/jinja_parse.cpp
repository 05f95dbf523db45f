// Jinja2 source -> syntax tree. The lexer applies Jinja's whitespace rules as transformers
// configures them (trim_blocks, lstrip_blocks, '-' and '+' markers, newline normalisation, one
// trailing newline dropped); the parser follows Jinja's grammar and operator precedence.
#include <algorithm>
#include <cstdlib>

#include "core/error.h"
#include "runtime/data/jinja.h"

namespace weft::jinja {
namespace {

constexpr int kMaxDepth = 200;  // nesting bound: hostile templates must not overflow the stack

struct Token {
  enum Kind { kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kInt, kFloat, kString, kOp, kEof };
  Kind kind;
  std::string text;
  int line;
  Value value;  // kInt, kFloat, kString
};

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

class Parser {
 public:
  Parser(std::vector<Token> tokens, const std::string& origin) : t_(std::move(tokens)), origin_(origin) {}

  Body parse_template() {
    std::string end;
    Body body = subparse({}, end, 0);
    return body;
  }

 private:
  struct DepthGuard {
    DepthGuard(Parser& p) : p_(p) {
      if (++p_.depth_ > kMaxDepth) p_.fail(str("expression or block nested more than ", kMaxDepth, " deep"));
    }
    ~DepthGuard() { --p_.depth_; }
    Parser& p_;
  };

  const Token& cur() const { return t_[pos_]; }
  const Token& peek(size_t n = 1) const { return t_[std::min(pos_ + n, t_.size() - 1)]; }
  void next() {
    if (pos_ + 1 < t_.size()) ++pos_;
  }
  bool at_op(const char* op) const { return cur().kind == Token::kOp && cur().text == op; }
  bool at_name(const char* name) const { return cur().kind == Token::kName && cur().text == name; }
  bool skip_op(const char* op) {
    if (!at_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(const char* name) {
    if (!at_name(name)) return false;
    next();
    return true;
  }
  [[noreturn]] void fail(const std::string& what, int line = 0) {
    weft::fail(str(origin_, ":", line ? line : cur().line, ": ", what));
  }
  std::string describe(const Token& t) const {
    switch (t.kind) {
      case Token::kText: return "text";
      case Token::kVarBegin: return "'{{'";
      case Token::kVarEnd: return "'}}'";
      case Token::kBlockBegin: return "'{%'";
      case Token::kBlockEnd: return "'%}'";
      case Token::kEof: return "end of template";
      case Token::kString: return "a string";
      default: return "'" + t.text + "'";
    }
  }
  void expect_op(const char* op) {
    if (!skip_op(op)) fail(str("expected '", op, "', got ", describe(cur())));
  }
  std::string expect_name(const char* what) {
    if (cur().kind != Token::kName) fail(str("expected ", what, ", got ", describe(cur())));
    std::string n = cur().text;
    next();
    return n;
  }
  void expect_block_end(const std::string& tag) {
    if (cur().kind != Token::kBlockEnd) fail(str("expected '%}' to close {% ", tag, " %}, got ", describe(cur())));
    next();
  }

  static ExprPtr make(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }
  static NodePtr node(Node::Kind kind, int line) {
    auto n = std::make_unique<Node>();
    n->kind = kind;
    n->line = line;
    return n;
  }

  // --- statements ---

  // Nodes up to one of `ends` (a block tag name, consumed; `end` says which) or the template's end.
  Body subparse(const std::vector<std::string>& ends, std::string& end, int open_line) {
    DepthGuard guard(*this);
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.kind == Token::kEof) {
        if (!ends.empty()) fail(str("unexpected end of template: the block opened on line ", open_line,
                                    " needs {% ", ends.back(), " %}"));
        return body;
      }
      if (t.kind == Token::kText) {
        auto n = node(Node::kText, t.line);
        n->text = t.text;
        body.push_back(std::move(n));
        next();
      } else if (t.kind == Token::kVarBegin) {
        auto n = node(Node::kOutput, t.line);
        next();
        n->exprs.push_back(parse_tuple(true, {}));
        if (cur().kind != Token::kVarEnd) fail(str("expected '}}', got ", describe(cur())));
        next();
        body.push_back(std::move(n));
      } else if (t.kind == Token::kBlockBegin) {
        next();
        const int line = cur().line;
        const std::string name = expect_name("a tag name after '{%'");
        if (std::find(ends.begin(), ends.end(), name) != ends.end()) {
          end = name;
          return body;
        }
        body.push_back(statement(name, line));
      } else {
        fail(str("unexpected ", describe(t)));
      }
    }
  }

  NodePtr statement(const std::string& name, int line) {
    if (name == "if") return if_statement(line);
    if (name == "for") return for_statement(line);
    if (name == "set") return set_statement(line);
    if (name == "macro") return macro_statement(line);
    if (name == "generation") {
      auto n = node(Node::kGeneration, line);
      expect_block_end(name);
      std::string end;
      n->bodies.push_back(subparse({"endgeneration"}, end, line));
      expect_block_end("endgeneration");
      return n;
    }
    if (name == "break" || name == "continue") {
      if (loops_ == 0) fail(str("{% ", name, " %} outside a for loop"), line);
      expect_block_end(name);
      return node(name == "break" ? Node::kBreak : Node::kContinue, line);
    }
    static const std::vector<std::string> known_end = {"endif", "endfor", "endset", "endmacro", "endgeneration",
                                                       "elif", "else"};
    if (std::find(known_end.begin(), known_end.end(), name) != known_end.end())
      fail(str("unexpected {% ", name, " %} (no open block it closes)"), line);
    fail(str("unsupported tag {% ", name, " %} (chat templates support if, for, set, macro, break, continue, "
             "generation and raw)"), line);
  }

  NodePtr if_statement(int line) {
    auto n = node(Node::kIf, line);
    std::string end = "elif";
    while (end == "elif") {
      n->exprs.push_back(parse_tuple(false, {}));
      expect_block_end("if");
      n->bodies.push_back(subparse({"elif", "else", "endif"}, end, line));
    }
    if (end == "else") {
      expect_block_end("else");
      n->bodies.push_back(subparse({"endif"}, end, line));
    }
    expect_block_end("endif");
    return n;
  }

  // Assignment targets: a name, `a, b` or `(a, b)`.
  std::vector<std::string> targets(const char* tag) {
    const bool paren = skip_op("(");
    std::vector<std::string> names;
    do {
      if (paren && at_op(")")) break;
      names.push_back(expect_name(str("a variable name in {% ", tag, " %}").c_str()));
    } while (skip_op(","));
    if (paren) expect_op(")");
    return names;
  }

  NodePtr for_statement(int line) {
    auto n = node(Node::kFor, line);
    n->targets = targets("for");
    if (!skip_name("in")) fail(str("expected 'in' in {% for %}, got ", describe(cur())));
    n->exprs.push_back(parse_tuple(false, {"recursive"}));
    n->exprs.push_back(skip_name("if") ? parse_expression(true) : nullptr);
    if (at_name("recursive")) fail("recursive for loops are not supported");
    expect_block_end("for");
    ++loops_;
    std::string end;
    n->bodies.push_back(subparse({"endfor", "else"}, end, line));
    --loops_;
    if (end == "else") {
      expect_block_end("else");
      n->bodies.push_back(subparse({"endfor"}, end, line));
    }
    expect_block_end("endfor");
    return n;
  }

  NodePtr set_statement(int line) {
    if (cur().kind == Token::kName && peek().kind == Token::kOp && peek().text == "." && peek(2).kind == Token::kName) {
      auto n = node(Node::kSet, line);
      n->attr_target = true;
      n->targets.push_back(cur().text);
      n->targets.push_back(peek(2).text);
      pos_ += 3;
      expect_op("=");
      n->exprs.push_back(parse_tuple(true, {}));
      expect_block_end("set");
      return n;
    }
    std::vector<std::string> names = targets("set");
    if (skip_op("=")) {
      auto n = node(Node::kSet, line);
      n->targets = std::move(names);
      n->exprs.push_back(parse_tuple(true, {}));
      expect_block_end("set");
      return n;
    }
    if (names.size() != 1) fail("a block {% set %} assigns one name");
    if (at_op("|")) fail("filters on a block {% set %} are not supported");
    auto n = node(Node::kSetBlock, line);
    n->targets = std::move(names);
    expect_block_end("set");
    std::string end;
    n->bodies.push_back(subparse({"endset"}, end, line));
    expect_block_end("endset");
    return n;
  }

  NodePtr macro_statement(int line) {
    auto n = node(Node::kMacro, line);
    n->targets.push_back(expect_name("a macro name"));
    expect_op("(");
    while (!at_op(")")) {
      if (n->targets.size() > 1) expect_op(",");
      if (at_op(")")) break;
      n->targets.push_back(expect_name("a macro parameter name"));
      n->exprs.push_back(skip_op("=") ? parse_expression(true) : nullptr);
    }
    expect_op(")");
    expect_block_end("macro");
    const int saved = loops_;
    loops_ = 0;
    std::string end;
    n->bodies.push_back(subparse({"endmacro"}, end, line));
    loops_ = saved;
    expect_block_end("endmacro");
    return n;
  }

  // --- expressions (Jinja's precedence, loosest first) ---

  bool tuple_end(const std::vector<std::string>& extra) const {
    const Token& t = cur();
    if (t.kind == Token::kVarEnd || t.kind == Token::kBlockEnd || t.kind == Token::kEof) return true;
    if (t.kind == Token::kOp && (t.text == ")" || t.text == "=")) return true;
    return t.kind == Token::kName && std::find(extra.begin(), extra.end(), t.text) != extra.end();
  }

  ExprPtr parse_tuple(bool with_condexpr, const std::vector<std::string>& extra, bool parens = false) {
    const int line = cur().line;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (tuple_end(extra)) break;
      items.push_back(parse_expression(with_condexpr));
      if (at_op(",")) is_tuple = true;
      else break;
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!parens) fail(str("expected an expression, got ", describe(cur())));
    }
    auto e = make(Expr::kTuple, line);
    e->args = std::move(items);
    return e;
  }

  ExprPtr parse_expression(bool with_condexpr) { return with_condexpr ? parse_condexpr() : parse_or(); }

  ExprPtr parse_condexpr() {
    DepthGuard guard(*this);
    ExprPtr e = parse_or();
    while (at_name("if")) {
      const int line = cur().line;
      next();
      auto c = make(Expr::kCond, line);
      c->args.push_back(parse_or());
      c->args.push_back(std::move(e));
      c->args.push_back(skip_name("else") ? parse_condexpr() : nullptr);
      e = std::move(c);
    }
    return e;
  }

  ExprPtr logical(Expr::Kind kind, const char* word, ExprPtr (Parser::*operand)()) {
    ExprPtr e = (this->*operand)();
    while (at_name(word)) {
      auto b = make(kind, cur().line);
      next();
      b->args.push_back(std::move(e));
      b->args.push_back((this->*operand)());
      e = std::move(b);
    }
    return e;
  }
  ExprPtr parse_or() { return logical(Expr::kOr, "or", &Parser::parse_and); }
  ExprPtr parse_and() { return logical(Expr::kAnd, "and", &Parser::parse_not); }

  ExprPtr parse_not() {
    DepthGuard guard(*this);
    if (at_name("not")) {
      auto e = make(Expr::kNot, cur().line);
      next();
      e->args.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const int line = cur().line;
    ExprPtr first = parse_math1();
    auto e = make(Expr::kCompare, line);
    while (true) {
      std::string op;
      if (cur().kind == Token::kOp && (at_op("==") || at_op("!=") || at_op("<") || at_op(">") || at_op("<=") || at_op(">="))) {
        op = cur().text;
        next();
      } else if (at_name("in")) {
        op = "in";
        next();
      } else if (at_name("not") && peek().kind == Token::kName && peek().text == "in") {
        op = "not in";
        pos_ += 2;
      } else {
        break;
      }
      e->ops.push_back(op);
      e->args.push_back(parse_math1());
    }
    if (e->ops.empty()) return first;
    e->args.insert(e->args.begin(), std::move(first));
    return e;
  }

  ExprPtr binary(std::initializer_list<const char*> ops, ExprPtr (Parser::*operand)()) {
    ExprPtr e = (this->*operand)();
    while (cur().kind == Token::kOp &&
           std::any_of(ops.begin(), ops.end(), [&](const char* op) { return cur().text == op; })) {
      auto b = make(Expr::kBinary, cur().line);
      b->name = cur().text;
      next();
      b->args.push_back(std::move(e));
      b->args.push_back((this->*operand)());
      e = std::move(b);
    }
    return e;
  }
  ExprPtr parse_math1() { return binary({"+", "-"}, &Parser::parse_concat); }
  ExprPtr parse_concat() { return binary({"~"}, &Parser::parse_math2); }
  ExprPtr parse_math2() { return binary({"*", "/", "//", "%"}, &Parser::parse_pow); }
  ExprPtr parse_pow() { return binary({"**"}, &Parser::parse_unary_filtered); }
  ExprPtr parse_unary_filtered() { return parse_unary(true); }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    ExprPtr e;
    if (at_op("-") || at_op("+")) {
      e = make(Expr::kUnary, cur().line);
      e->name = cur().text;
      next();
      e->args.push_back(parse_unary(false));
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    while (with_filter) {
      if (at_op("|")) e = parse_filter(std::move(e));
      else if (at_name("is")) e = parse_test(std::move(e));
      else if (at_op("(")) e = parse_call(std::move(e));
      else break;
    }
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    const int line = t.line;
    if (t.kind == Token::kName) {
      static const std::vector<std::pair<std::string, Value>> literals = {
          {"true", Value::boolean(true)},  {"True", Value::boolean(true)}, {"false", Value::boolean(false)},
          {"False", Value::boolean(false)}, {"none", Value::none()},        {"None", Value::none()}};
      for (const auto& [word, v] : literals)
        if (t.text == word) {
          auto e = make(Expr::kLiteral, line);
          e->value = v;
          next();
          return e;
        }
      auto e = make(Expr::kName, line);
      e->name = t.text;
      next();
      return e;
    }
    if (t.kind == Token::kString) {
      std::string s;
      while (cur().kind == Token::kString) {  // adjacent literals concatenate
        s += cur().value.s;
        next();
      }
      auto e = make(Expr::kLiteral, line);
      e->value = Value::string(s);
      return e;
    }
    if (t.kind == Token::kInt || t.kind == Token::kFloat) {
      auto e = make(Expr::kLiteral, line);
      e->value = t.value;
      next();
      return e;
    }
    if (skip_op("(")) {
      ExprPtr e = parse_tuple(true, {}, true);
      expect_op(")");
      return e;
    }
    if (skip_op("[")) {
      auto e = make(Expr::kList, line);
      while (!at_op("]")) {
        if (!e->args.empty()) expect_op(",");
        if (at_op("]")) break;
        e->args.push_back(parse_expression(true));
      }
      expect_op("]");
      return e;
    }
    if (skip_op("{")) {
      auto e = make(Expr::kDict, line);
      while (!at_op("}")) {
        if (!e->args.empty()) expect_op(",");
        if (at_op("}")) break;
        e->args.push_back(parse_expression(true));
        expect_op(":");
        e->args.push_back(parse_expression(true));
      }
      expect_op("}");
      return e;
    }
    fail(str("unexpected ", describe(t), " in an expression"));
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      const int line = cur().line;
      if (skip_op(".")) {
        if (cur().kind == Token::kInt) {
          auto g = make(Expr::kItem, line);
          auto k = make(Expr::kLiteral, line);
          k->value = cur().value;
          next();
          g->args.push_back(std::move(e));
          g->args.push_back(std::move(k));
          e = std::move(g);
        } else {
          auto g = make(Expr::kAttr, line);
          g->name = expect_name("an attribute name after '.'");
          g->args.push_back(std::move(e));
          e = std::move(g);
        }
      } else if (skip_op("[")) {
        e = parse_subscript(std::move(e), line);
      } else if (at_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr obj, int line) {
    ExprPtr parts[3];
    bool is_slice = false;
    if (!at_op(":")) parts[0] = parse_expression(true);
    if (skip_op(":")) {
      is_slice = true;
      if (!at_op("]") && !at_op(":")) parts[1] = parse_expression(true);
      if (skip_op(":") && !at_op("]")) parts[2] = parse_expression(true);
    }
    expect_op("]");
    auto e = make(is_slice ? Expr::kSlice : Expr::kItem, line);
    e->args.push_back(std::move(obj));
    e->args.push_back(std::move(parts[0]));
    if (is_slice) {
      e->args.push_back(std::move(parts[1]));
      e->args.push_back(std::move(parts[2]));
    }
    return e;
  }

  // (args, name=value, ...) into e's args/kwargs, after e's own leading operands.
  void call_args(Expr& e) {
    expect_op("(");
    bool first = true;
    while (!at_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (at_op(")")) break;
      if (at_op("*") || at_op("**")) fail("*args and **kwargs in calls are not supported");
      if (cur().kind == Token::kName && peek().kind == Token::kOp && peek().text == "=") {
        std::string key = cur().text;
        pos_ += 2;
        e.kwargs.emplace_back(key, parse_expression(true));
      } else {
        if (!e.kwargs.empty()) fail("a positional argument follows a keyword argument");
        e.args.push_back(parse_expression(true));
      }
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto e = make(Expr::kCall, cur().line);
    e->args.push_back(std::move(callee));
    call_args(*e);
    return e;
  }

  ExprPtr parse_filter(ExprPtr subject) {
    const int line = cur().line;
    next();  // '|'
    auto e = make(Expr::kFilter, line);
    e->name = expect_name("a filter name after '|'");
    while (at_op(".") && peek().kind == Token::kName) {
      e->name += "." + peek().text;
      pos_ += 2;
    }
    if (!has_filter(e->name)) fail(str("unknown filter '", e->name, "'"), line);
    e->args.push_back(std::move(subject));
    if (at_op("(")) call_args(*e);
    return e;
  }

  ExprPtr parse_test(ExprPtr subject) {
    const int line = cur().line;
    next();  // 'is'
    auto e = make(Expr::kTest, line);
    e->negated = skip_name("not");
    e->name = expect_name("a test name after 'is'");
    if (!has_test(e->name)) fail(str("unknown test '", e->name, "'"), line);
    e->args.push_back(std::move(subject));
    const Token& t = cur();
    if (at_op("(")) {
      call_args(*e);
    } else if ((t.kind == Token::kName || t.kind == Token::kString || t.kind == Token::kInt || t.kind == Token::kFloat ||
                at_op("[") || at_op("{")) &&
               !at_name("else") && !at_name("or") && !at_name("and")) {
      if (at_name("is")) fail("tests cannot be chained with 'is'");
      e->args.push_back(parse_postfix(parse_primary()));
    }
    return e;
  }

  std::vector<Token> t_;
  std::string origin_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loops_ = 0;
};

}  // namespace

Body parse(const std::string& source, const std::string& origin) {
  Lexer lexer(source, origin);
  Parser parser(lexer.run(), origin);
  return parser.parse_template();
}

}  // namespace weft::jinja
