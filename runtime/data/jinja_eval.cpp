// Renders a parsed template: Jinja2's scoping (a for-loop iteration and a macro call get their
// own scope; if does not), loop variables, namespaces, macros, loop controls and the generation
// extension, with transformers' globals. Every error becomes "ORIGIN:LINE: what".
#include <ctime>
#include <map>

#include "weft/error.h"
#include "runtime/data/jinja.h"

namespace weft::jinja {
namespace {

constexpr int kMaxCallDepth = 64;              // macro recursion
constexpr int64_t kMaxSteps = 2'000'000;  // nodes and expressions evaluated per render (a long chat: ~1e5)
constexpr size_t kMaxOutput = size_t(256) << 20;  // bytes rendered
constexpr int64_t kMaxRange = 100'000;         // Jinja's sandbox bound on range()

struct Frame {
  std::map<std::string, Value> vars;
  std::shared_ptr<Frame> parent;
};
using FramePtr = std::shared_ptr<Frame>;

enum class Flow { kNormal, kBreak, kContinue };

class Interpreter {
 public:
  explicit Interpreter(const std::string& origin) : origin_(origin) {}

  Output run(const Body& body, const std::vector<std::pair<std::string, Value>>& vars) {
    auto globals = std::make_shared<Frame>();
    define_globals(*globals);
    auto root = std::make_shared<Frame>();
    root->parent = globals;
    for (const auto& [k, v] : vars) root->vars[k] = v;
    Output result;
    out_ = &result.text;
    spans_ = &result.generation_spans;
    try {
      exec(body, root);
    } catch (const RaisedError& e) {
      fail(str(origin_, ":", line_, ": raise_exception: ", e.what()));
    } catch (const EvalError& e) {
      fail(str(origin_, ":", line_, ": ", e.what()));
    }
    return result;
  }

 private:
  void step(int line) {
    line_ = line;
    if (++steps_ > kMaxSteps) throw EvalError(str("rendering took more than ", kMaxSteps, " steps (a runaway loop?)"));
  }

  void write(const std::string& s) {
    if (out_->size() + s.size() > kMaxOutput) throw EvalError(str("rendered text exceeds ", kMaxOutput >> 20, " MiB"));
    *out_ += s;
  }

  static Value lookup(const FramePtr& frame, const std::string& name) {
    for (Frame* f = frame.get(); f; f = f->parent.get()) {
      auto it = f->vars.find(name);
      if (it != f->vars.end()) return it->second;
    }
    return Value::undefined("'" + name + "' is undefined");
  }

  // --- statements ---

  Flow exec(const Body& body, const FramePtr& frame) {
    for (const auto& n : body) {
      const Flow f = exec(*n, frame);
      if (f != Flow::kNormal) return f;
    }
    return Flow::kNormal;
  }

  Flow exec(const Node& n, const FramePtr& frame) {
    step(n.line);
    switch (n.kind) {
      case Node::kText: write(n.text); break;
      case Node::kOutput: write(to_str(eval(*n.exprs[0], frame))); break;
      case Node::kIf:
        for (size_t k = 0; k < n.bodies.size(); ++k) {
          if (k == n.exprs.size() || truthy(eval(*n.exprs[k], frame))) return exec(n.bodies[k], frame);
        }
        break;
      case Node::kFor: return exec_for(n, frame);
      case Node::kSet: exec_set(n, frame); break;
      case Node::kSetBlock: frame->vars[n.targets[0]] = Value::string(capture(n.bodies[0], frame)); break;
      case Node::kMacro: frame->vars[n.targets[0]] = make_macro(n, frame); break;
      case Node::kBreak: return Flow::kBreak;
      case Node::kContinue: return Flow::kContinue;
      case Node::kGeneration: {
        // transformers' AssistantTracker records where the block's output lands in the rendered
        // text; output captured by a block set or macro call is not the rendered text.
        const size_t begin = out_->size();
        const Flow f = exec(n.bodies[0], frame);
        if (capture_depth_ == 0) spans_->emplace_back(begin, out_->size());
        return f;
      }
    }
    return Flow::kNormal;
  }

  std::string capture(const Body& body, const FramePtr& frame) {
    std::string buf;
    std::string* saved = out_;
    out_ = &buf;
    ++capture_depth_;
    try {
      exec(body, frame);
    } catch (...) {
      out_ = saved;
      --capture_depth_;
      throw;
    }
    out_ = saved;
    --capture_depth_;
    return buf;
  }

  static void bind(Frame& frame, const std::vector<std::string>& names, const Value& v) {
    if (names.size() == 1) {
      frame.vars[names[0]] = v;
      return;
    }
    const ValueList items = iterate(v);
    if (items.size() != names.size())
      throw EvalError(str("cannot unpack ", items.size(), " values into ", names.size(), " names"));
    for (size_t k = 0; k < names.size(); ++k) frame.vars[names[k]] = items[k];
  }

  void exec_set(const Node& n, const FramePtr& frame) {
    const Value v = eval(*n.exprs[0], frame);
    if (!n.attr_target) {
      bind(*frame, n.targets, v);
      return;
    }
    const Value ns = lookup(frame, n.targets[0]);
    if (ns.kind != Value::kNamespace)
      throw EvalError(str("cannot assign attribute '", n.targets[1], "' on '", n.targets[0],
                          "': only a namespace() takes attributes"));
    if (!n.targets[1].empty() && n.targets[1][0] == '_')
      throw EvalError("Chat templates cannot store underscore-prefixed attributes on a namespace");
    ns.dict->set(Value::string(n.targets[1]), v);
  }

  Flow exec_for(const Node& n, const FramePtr& frame) {
    const ValueList all = iterate(eval(*n.exprs[0], frame));
    ValueList items;
    for (const auto& x : all) {
      if (!n.exprs[1]) {
        items.push_back(x);
        continue;
      }
      auto scope = std::make_shared<Frame>();
      scope->parent = frame;
      bind(*scope, n.targets, x);
      if (truthy(eval(*n.exprs[1], scope))) items.push_back(x);
    }
    const int64_t len = int64_t(items.size());
    for (int64_t k = 0; k < len; ++k) {
      step(n.line);
      auto scope = std::make_shared<Frame>();
      scope->parent = frame;
      bind(*scope, n.targets, items[k]);
      scope->vars["loop"] = loop_value(items, k);
      if (exec(n.bodies[0], scope) == Flow::kBreak) break;
    }
    if (items.empty() && n.bodies.size() > 1) return exec(n.bodies[1], frame);
    return Flow::kNormal;
  }

  static Value loop_value(const ValueList& items, int64_t k) {
    const int64_t len = int64_t(items.size());
    Value loop = Value::make_dict();
    auto set = [&](const char* key, Value v) { loop.dict->items.emplace_back(Value::string(key), std::move(v)); };
    set("index", Value::integer(k + 1));
    set("index0", Value::integer(k));
    set("revindex", Value::integer(len - k));
    set("revindex0", Value::integer(len - k - 1));
    set("first", Value::boolean(k == 0));
    set("last", Value::boolean(k == len - 1));
    set("length", Value::integer(len));
    set("depth", Value::integer(1));
    set("depth0", Value::integer(0));
    set("previtem", k > 0 ? items[k - 1] : Value::undefined("there is no previous item"));
    set("nextitem", k + 1 < len ? items[k + 1] : Value::undefined("there is no next item"));
    set("cycle", Value::callable("loop.cycle", [k](const CallArgs& a) {
          if (a.pos.empty()) throw EvalError("no items for cycling given");
          return a.pos[size_t(k) % a.pos.size()];
        }));
    return loop;
  }

  Value make_macro(const Node& n, const FramePtr& frame) {
    std::weak_ptr<Frame> defined_in = frame;
    const Node* node = &n;
    return Value::callable(n.targets[0], [this, node, defined_in](const CallArgs& a) -> Value {
      if (++call_depth_ > kMaxCallDepth) {
        --call_depth_;
        throw EvalError(str("macro calls nested more than ", kMaxCallDepth, " deep"));
      }
      const int saved_line = line_;
      auto scope = std::make_shared<Frame>();
      scope->parent = defined_in.lock();
      const size_t nparams = node->targets.size() - 1;
      if (a.pos.size() > nparams) throw EvalError(str("macro '", node->targets[0], "' takes at most ", nparams, " arguments"));
      for (size_t k = 0; k < nparams; ++k) {
        const std::string& p = node->targets[k + 1];
        if (k < a.pos.size()) scope->vars[p] = a.pos[k];
      }
      for (const auto& [key, v] : a.kw) {
        auto it = std::find(node->targets.begin() + 1, node->targets.end(), key);
        if (it == node->targets.end()) throw EvalError(str("macro '", node->targets[0], "' takes no keyword argument '", key, "'"));
        scope->vars[key] = v;
      }
      for (size_t k = 0; k < nparams; ++k) {
        const std::string& p = node->targets[k + 1];
        if (scope->vars.count(p)) continue;
        scope->vars[p] = node->exprs[k] ? eval(*node->exprs[k], scope)
                                        : Value::undefined("parameter '" + p + "' was not provided");
      }
      std::string text = capture(node->bodies[0], scope);
      --call_depth_;
      line_ = saved_line;
      return Value::string(std::move(text));
    });
  }

  // --- expressions ---

  CallArgs eval_args(const Expr& e, const FramePtr& frame, size_t skip) {
    CallArgs a;
    for (size_t k = skip; k < e.args.size(); ++k) a.pos.push_back(eval(*e.args[k], frame));
    for (const auto& [key, x] : e.kwargs) a.kw.emplace_back(key, eval(*x, frame));
    return a;
  }

  Value eval(const Expr& e, const FramePtr& frame) {
    step(e.line);
    switch (e.kind) {
      case Expr::kLiteral: return e.value;
      case Expr::kName: return lookup(frame, e.name);
      case Expr::kAttr: return get_attr(eval(*e.args[0], frame), e.name);
      case Expr::kItem: return get_item(eval(*e.args[0], frame), eval(*e.args[1], frame));
      case Expr::kSlice: {
        auto part = [&](size_t k) { return e.args[k] ? eval(*e.args[k], frame) : Value::none(); };
        return slice(eval(*e.args[0], frame), part(1), part(2), part(3));
      }
      case Expr::kUnary: {
        const Value v = eval(*e.args[0], frame);
        if (!v.is_number()) throw EvalError(str("bad operand type for unary ", e.name, ": '", type_name(v), "'"));
        if (e.name == "+") return v.kind == Value::kBool ? Value::integer(v.b) : v;
        if (v.kind == Value::kFloat) return Value::number(-v.f);
        return binary_op("-", Value::integer(0), v);
      }
      case Expr::kBinary: return binary_op(e.name, eval(*e.args[0], frame), eval(*e.args[1], frame));
      case Expr::kAnd: {
        Value l = eval(*e.args[0], frame);
        return truthy(l) ? eval(*e.args[1], frame) : l;
      }
      case Expr::kOr: {
        Value l = eval(*e.args[0], frame);
        return truthy(l) ? l : eval(*e.args[1], frame);
      }
      case Expr::kNot: return Value::boolean(!truthy(eval(*e.args[0], frame)));
      case Expr::kCompare: return compare(e, frame);
      case Expr::kCond:
        if (truthy(eval(*e.args[0], frame))) return eval(*e.args[1], frame);
        return e.args[2] ? eval(*e.args[2], frame) : Value::undefined("the inline if's condition was false");
      case Expr::kFilter: {
        const Value v = eval(*e.args[0], frame);
        return apply_filter(e.name, v, eval_args(e, frame, 1));
      }
      case Expr::kTest: {
        const Value v = eval(*e.args[0], frame);
        return Value::boolean(apply_test(e.name, v, eval_args(e, frame, 1)) != e.negated);
      }
      case Expr::kCall: {
        const Value f = eval(*e.args[0], frame);
        const CallArgs a = eval_args(e, frame, 1);
        if (f.kind != Value::kCallable) {
          if (f.is_undefined()) throw EvalError(f.s.empty() ? "calling an undefined value" : f.s);
          throw EvalError(str("'", type_name(f), "' object is not callable"));
        }
        Value r = (*f.fn)(a);
        line_ = e.line;
        return r;
      }
      case Expr::kList:
      case Expr::kTuple: {
        ValueList items;
        for (const auto& x : e.args) items.push_back(eval(*x, frame));
        return Value::make_list(std::move(items), e.kind == Expr::kList ? Value::kList : Value::kTuple);
      }
      case Expr::kDict: {
        Value d = Value::make_dict();
        for (size_t k = 0; k + 1 < e.args.size(); k += 2) d.dict->set(eval(*e.args[k], frame), eval(*e.args[k + 1], frame));
        return d;
      }
    }
    throw EvalError("unknown expression");
  }

  Value compare(const Expr& e, const FramePtr& frame) {
    Value left = eval(*e.args[0], frame);
    for (size_t k = 0; k < e.ops.size(); ++k) {
      Value right = eval(*e.args[k + 1], frame);
      const std::string& op = e.ops[k];
      bool ok;
      if (op == "==") ok = equals(left, right);
      else if (op == "!=") ok = !equals(left, right);
      else if (op == "<") ok = less(left, right);
      else if (op == ">") ok = less(right, left);
      else if (op == "<=") ok = !less(right, left);
      else if (op == ">=") ok = !less(left, right);
      else if (op == "in") ok = contains(right, left);
      else ok = !contains(right, left);
      if (!ok) return Value::boolean(false);
      left = std::move(right);
    }
    return Value::boolean(true);
  }

  // --- globals (transformers' environment) ---

  static void define_globals(Frame& g) {
    g.vars["raise_exception"] = Value::callable("raise_exception", [](const CallArgs& a) -> Value {
      throw RaisedError(a.pos.empty() ? "" : to_str(a.pos[0]));
    });
    g.vars["strftime_now"] = Value::callable("strftime_now", [](const CallArgs& a) -> Value {
      if (a.pos.size() != 1 || a.pos[0].kind != Value::kString) throw EvalError("strftime_now(format) takes one string");
      const std::time_t now = std::time(nullptr);
      std::tm tm{};
      localtime_r(&now, &tm);
      std::string buf(256 + a.pos[0].s.size() * 8, '\0');
      const size_t n = std::strftime(buf.data(), buf.size(), a.pos[0].s.c_str(), &tm);
      return Value::string(buf.substr(0, n));
    });
    g.vars["range"] = Value::callable("range", [](const CallArgs& a) -> Value {
      std::vector<int64_t> p;
      for (const auto& v : a.pos) {
        if (v.kind != Value::kInt && v.kind != Value::kBool) throw EvalError("range() takes integers, got " + type_name(v));
        p.push_back(v.kind == Value::kInt ? v.i : v.b);
      }
      if (p.empty() || p.size() > 3 || !a.kw.empty()) throw EvalError("range() takes 1 to 3 integer arguments");
      const int64_t start = p.size() > 1 ? p[0] : 0, stop = p.size() > 1 ? p[1] : p[0], st = p.size() > 2 ? p[2] : 1;
      if (st == 0) throw EvalError("range() arg 3 must not be zero");
      ValueList out;
      for (int64_t k = start; st > 0 ? k < stop : k > stop; k += st) {
        if (int64_t(out.size()) >= kMaxRange) throw EvalError(str("range too big (at most ", kMaxRange, " items)"));
        out.push_back(Value::integer(k));
      }
      return Value::make_list(std::move(out));
    });
    auto dict_from = [](const CallArgs& a, Value d) {
      if (a.pos.size() > 1) throw EvalError("dict()/namespace() take at most one positional argument");
      if (!a.pos.empty()) {
        if (a.pos[0].kind == Value::kDict || a.pos[0].kind == Value::kNamespace) {
          for (const auto& kv : a.pos[0].dict->items) d.dict->set(kv.first, kv.second);
        } else {
          for (const auto& pair : iterate(a.pos[0])) {
            const ValueList kv = iterate(pair);
            if (kv.size() != 2) throw EvalError("dict() needs (key, value) pairs");
            d.dict->set(kv[0], kv[1]);
          }
        }
      }
      for (const auto& [k, v] : a.kw) d.dict->set(Value::string(k), v);
      return d;
    };
    g.vars["dict"] = Value::callable("dict", [dict_from](const CallArgs& a) { return dict_from(a, Value::make_dict()); });
    g.vars["namespace"] = Value::callable("namespace", [dict_from](const CallArgs& a) {
      Value ns = dict_from(a, Value::make_dict());
      ns.kind = Value::kNamespace;
      for (const auto& kv : ns.dict->items)
        if (kv.first.kind == Value::kString && !kv.first.s.empty() && kv.first.s[0] == '_')
          throw EvalError("Chat templates cannot store underscore-prefixed attributes on a namespace");
      return ns;
    });
  }

  std::string origin_;
  std::string* out_ = nullptr;
  std::vector<std::pair<size_t, size_t>>* spans_ = nullptr;
  int capture_depth_ = 0;
  int call_depth_ = 0;
  int line_ = 0;
  int64_t steps_ = 0;
};

}  // namespace

Output render(const Body& body, const std::string& origin, const std::vector<std::pair<std::string, Value>>& vars) {
  Interpreter interp(origin);
  return interp.run(body, vars);
}

}  // namespace weft::jinja
