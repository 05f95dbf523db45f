// Jinja2 tokens -> syntax tree, following Jinja's grammar and operator precedence.
#include <algorithm>
#include <cstdlib>

#include "weft/error.h"
#include "runtime/data/jinja.h"

namespace weft::jinja {
namespace {

constexpr int kMaxDepth = 200;  // nesting bound: hostile templates must not overflow the stack

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
  Parser parser(lex(source, origin), origin);
  return parser.parse_template();
}

}  // namespace weft::jinja
