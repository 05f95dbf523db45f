// A Jinja2 interpreter for the subset of the language chat templates use, configured the way
// transformers configures its environment (trim_blocks, lstrip_blocks, loop controls, the
// {% generation %} extension, its globals and tojson). Internal to runtime/data: the public API is
// ChatTemplate (chat_template.h), which documents the supported subset.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace weft::jinja {

struct Value;
struct Dict;
struct CallArgs;
using ValueList = std::vector<Value>;
using Function = std::function<Value(const CallArgs&)>;

// A template value with Python's semantics (what Jinja2 computes with). Lists, dicts and
// namespaces are shared on copy, as Python objects are; only namespaces are ever mutated.
struct Value {
  enum Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kTuple, kDict, kNamespace, kCallable };
  Kind kind = kUndefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;  // kString: the UTF-8 text; kUndefined: why ("'x' is undefined"); kCallable: name
  std::shared_ptr<ValueList> list;  // kList, kTuple
  std::shared_ptr<Dict> dict;       // kDict, kNamespace
  std::shared_ptr<Function> fn;     // kCallable

  static Value undefined(std::string why) { Value v; v.s = std::move(why); return v; }
  static Value none() { Value v; v.kind = kNone; return v; }
  static Value boolean(bool x) { Value v; v.kind = kBool; v.b = x; return v; }
  static Value integer(int64_t x) { Value v; v.kind = kInt; v.i = x; return v; }
  static Value number(double x) { Value v; v.kind = kFloat; v.f = x; return v; }
  static Value string(std::string x) { Value v; v.kind = kString; v.s = std::move(x); return v; }
  static Value make_list(ValueList items, Kind kind = kList);
  static Value make_dict();
  static Value callable(std::string name, Function fn);

  bool is_undefined() const { return kind == kUndefined; }
  bool is_number() const { return kind == kBool || kind == kInt || kind == kFloat; }
  bool is_sequence() const { return kind == kList || kind == kTuple; }
};

// Insertion-ordered mapping, as Python's dict (tojson and items() keep the caller's key order).
struct Dict {
  std::vector<std::pair<Value, Value>> items;
  const Value* find(const Value& key) const;
  const Value* find(const std::string& key) const;
  void set(const Value& key, Value value);
};

struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
};

// Thrown by evaluation for what Python would raise (TypeError, UndefinedError, ...); the renderer
// adds the template's origin and line.
struct EvalError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// raise_exception(msg) in a template.
struct RaisedError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// --- values (jinja_value.cpp) ---
Value from_json(const nlohmann::ordered_json& j);
bool truthy(const Value& v);
std::string to_str(const Value& v);   // Python str()
std::string repr(const Value& v);     // Python repr()
std::string type_name(const Value& v);  // Python's type name, for errors: "int", "str", "list", ...
bool equals(const Value& a, const Value& b);
bool less(const Value& a, const Value& b);  // Python <; throws EvalError for unorderable types
// Python's json.dumps(v, ensure_ascii, indent, separators, sort_keys) with indent < 0 meaning None
// and empty separators meaning the default; throws EvalError for values JSON cannot hold.
std::string to_json(const Value& v, bool ensure_ascii, const std::string* indent, const std::string& item_sep,
                    const std::string& key_sep, bool sort_keys);
ValueList iterate(const Value& v);  // for-loops and filters: list items, dict keys, str chars
int64_t length(const Value& v);
std::vector<uint32_t> utf8_decode(const std::string& s);
std::string utf8_encode(const std::vector<uint32_t>& cps, size_t begin = 0, size_t end = SIZE_MAX);
bool py_isspace(uint32_t cp);
std::string py_strip(const std::string& s, const std::string* chars, bool left, bool right);
std::string case_map(const std::string& s, bool upper);
std::string py_float_repr(double x);
Value binary_op(const std::string& op, const Value& a, const Value& b);
bool contains(const Value& container, const Value& item);  // Python `item in container`
Value get_attr(const Value& obj, const std::string& name);  // Jinja's getattr (obj.name)
Value get_item(const Value& obj, const Value& key);         // Jinja's getitem (obj[key])
Value slice(const Value& obj, const Value& start, const Value& stop, const Value& step);

// --- filters, tests, methods (jinja_builtins.cpp) ---
bool has_filter(const std::string& name);
bool has_test(const std::string& name);
Value apply_filter(const std::string& name, const Value& v, const CallArgs& args);
bool apply_test(const std::string& name, const Value& v, const CallArgs& args);
// str/dict methods Jinja exposes as attributes (s.strip, d.items): a bound callable, or undefined.
Value method(const Value& obj, const std::string& name);

// --- syntax tree (jinja_parse.cpp) ---
struct Expr;
using ExprPtr = std::unique_ptr<Expr>;
struct Expr {
  enum Kind { kLiteral, kName, kAttr, kItem, kSlice, kUnary, kBinary, kAnd, kOr, kNot, kCompare, kCond,
              kFilter, kTest, kCall, kList, kTuple, kDict };
  Kind kind = kLiteral;
  int line = 0;
  std::string name;               // kName, kAttr, kFilter, kTest: the name; kUnary/kBinary: the operator
  Value value;                    // kLiteral
  std::vector<ExprPtr> args;      // operands / positional arguments (kSlice/kCond: may hold nulls)
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;   // kCompare: one operator per operand after the first
  bool negated = false;           // kTest: `is not`
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;
struct Node {
  enum Kind { kText, kOutput, kIf, kFor, kSet, kSetBlock, kMacro, kBreak, kContinue, kGeneration };
  Kind kind = kText;
  int line = 0;
  std::string text;                  // kText
  std::vector<ExprPtr> exprs;        // kOutput: [e]; kIf: conditions; kFor: [iter, filter|null];
                                     // kSet: [value]; kMacro: parameter defaults (null = none)
  std::vector<Body> bodies;          // kIf: a body per condition, then else; kFor: [body, else];
                                     // kSetBlock, kMacro, kGeneration: [body]
  std::vector<std::string> targets;  // kFor/kSet/kSetBlock: names; kSet on `ns.attr`: [ns, attr];
                                     // kMacro: [name, parameters...]
  bool attr_target = false;          // kSet: assigns a namespace attribute
};

// --- tokens (jinja_lexer.cpp) ---
struct Token {  // kText: text between tags; kOp: an operator or bracket
  enum Kind { kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kInt, kFloat, kString, kOp, kEof };
  Kind kind;
  std::string text;
  int line;
  Value value;  // kInt, kFloat, kString
};

// Splits `source` into tokens; throws weft::Error "ORIGIN:LINE: what" (unterminated tag, string,
// comment or raw block; a stray character).
std::vector<Token> lex(const std::string& source, const std::string& origin);

// Parses `source` (already the whole template); throws weft::Error "ORIGIN:LINE: what".
Body parse(const std::string& source, const std::string& origin);

// --- rendering (jinja_eval.cpp) ---
struct Output {
  std::string text;
  std::vector<std::pair<size_t, size_t>> generation_spans;  // byte ranges of {% generation %} output
};
// Renders `body` with `vars` as the template's variables (over the globals transformers defines:
// raise_exception, strftime_now, range, dict, namespace). Throws weft::Error "ORIGIN:LINE: what"
// for every runtime error, raise_exception included. Bounded: recursion, loop steps and output size.
Output render(const Body& body, const std::string& origin, const std::vector<std::pair<std::string, Value>>& vars);

}  // namespace weft::jinja
