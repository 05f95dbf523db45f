// Jinja2's filters and tests and the Python str/dict methods chat templates call, each with the
// signature and edge cases of the Python original (Jinja 3.1 filters.py / tests.py).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "runtime/data/jinja.h"

namespace weft::jinja {
namespace {

// Binds positional and keyword arguments to a Python-style parameter list.
struct Args {
  std::vector<Value> v;
  std::vector<bool> given;
  std::vector<Value> rest;  // extra positional arguments (select's test arguments)

  Args(const std::string& fn, const CallArgs& a, const std::vector<std::string>& names, bool varargs = false)
      : v(names.size()), given(names.size(), false) {
    for (size_t k = 0; k < a.pos.size(); ++k) {
      if (k < names.size()) {
        v[k] = a.pos[k];
        given[k] = true;
      } else if (varargs) {
        rest.push_back(a.pos[k]);
      } else {
        throw EvalError(fn + "() takes at most " + std::to_string(names.size()) + " arguments (" +
                        std::to_string(a.pos.size()) + " given)");
      }
    }
    for (const auto& [key, val] : a.kw) {
      auto it = std::find(names.begin(), names.end(), key);
      if (it == names.end()) throw EvalError(fn + "() got an unexpected keyword argument '" + key + "'");
      v[it - names.begin()] = val;
      given[it - names.begin()] = true;
    }
  }
  Value get(size_t k, const Value& dflt) const { return given[k] ? v[k] : dflt; }
  bool flag(size_t k, bool dflt = false) const { return given[k] ? truthy(v[k]) : dflt; }
  std::string str(size_t k, const std::string& dflt) const { return given[k] ? to_str(v[k]) : dflt; }
  int64_t integer(size_t k, int64_t dflt) const {
    if (!given[k]) return dflt;
    if (v[k].kind == Value::kInt) return v[k].i;
    if (v[k].kind == Value::kBool) return v[k].b;
    throw EvalError("expected an integer argument, got " + type_name(v[k]));
  }
};

const std::string& need_str(const Value& v, const std::string& what) {
  if (v.kind != Value::kString) throw EvalError(what + " needs a string, got " + type_name(v));
  return v.s;
}

// Jinja's attribute lookup for filters (map/selectattr/sort attribute=): dotted, ints index.
Value attr_path(const Value& v, const std::string& path) {
  Value cur = v;
  size_t b = 0;
  while (true) {
    const size_t e = path.find('.', b);
    const std::string part = path.substr(b, e == std::string::npos ? std::string::npos : e - b);
    const bool digits = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    cur = get_item(cur, digits ? Value::integer(std::stoll(part)) : Value::string(part));
    if (e == std::string::npos) return cur;
    b = e + 1;
  }
}

bool is_alpha(uint32_t c) {
  if (c < 0x80) return (c | 32) >= 'a' && (c | 32) <= 'z';
  return case_map(utf8_encode({c}), true) != case_map(utf8_encode({c}), false);
}

// Python's str.split(sep=None, maxsplit=-1).
Value py_split(const std::string& s, const Value& sep, int64_t maxsplit) {
  ValueList out;
  if (sep.kind == Value::kNone || sep.is_undefined()) {
    const auto cps = utf8_decode(s);
    size_t k = 0;
    while (true) {
      while (k < cps.size() && py_isspace(cps[k])) ++k;
      if (k == cps.size()) break;
      if (maxsplit >= 0 && int64_t(out.size()) == maxsplit) {
        size_t e = cps.size();
        while (e > k && py_isspace(cps[e - 1])) --e;
        out.push_back(Value::string(utf8_encode(cps, k, e)));
        break;
      }
      size_t e = k;
      while (e < cps.size() && !py_isspace(cps[e])) ++e;
      out.push_back(Value::string(utf8_encode(cps, k, e)));
      k = e;
    }
    return Value::make_list(out);
  }
  const std::string& d = need_str(sep, "split()");
  if (d.empty()) throw EvalError("split(): empty separator");
  size_t b = 0;
  while (true) {
    const size_t e = s.find(d, b);
    if (e == std::string::npos || (maxsplit >= 0 && int64_t(out.size()) == maxsplit)) break;
    out.push_back(Value::string(s.substr(b, e - b)));
    b = e + d.size();
  }
  out.push_back(Value::string(s.substr(b)));
  return Value::make_list(out);
}

// Python's str.replace(old, new, count=-1), including the empty-`old` case.
std::string py_replace(const std::string& s, const std::string& old, const std::string& rep, int64_t count) {
  std::string out;
  if (old.empty()) {
    const auto cps = utf8_decode(s);
    int64_t n = 0;
    for (size_t k = 0; k <= cps.size(); ++k) {
      if (count < 0 || n < count) {
        out += rep;
        ++n;
      }
      if (k < cps.size()) out += utf8_encode(cps, k, k + 1);
    }
    return out;
  }
  size_t b = 0;
  for (int64_t n = 0; count < 0 || n < count; ++n) {
    const size_t e = s.find(old, b);
    if (e == std::string::npos) break;
    out += s.substr(b, e - b) + rep;
    b = e + old.size();
  }
  return out + s.substr(b);
}

std::string py_title(const std::string& s) {  // Python's str.title()
  auto cps = utf8_decode(s);
  bool prev_cased = false;
  std::string out;
  for (uint32_t c : cps) {
    const std::string ch = utf8_encode({c});
    out += case_map(ch, !prev_cased);
    prev_cased = is_alpha(c);
  }
  return out;
}

std::string py_capitalize(const std::string& s) {
  const auto cps = utf8_decode(s);
  if (cps.empty()) return s;
  return case_map(utf8_encode(cps, 0, 1), true) + case_map(utf8_encode(cps, 1), false);
}

bool starts_or_ends(const std::string& s, const Value& arg, bool start) {
  auto one = [&](const Value& p) {
    const std::string& x = need_str(p, start ? "startswith()" : "endswith()");
    if (x.size() > s.size()) return false;
    return start ? s.compare(0, x.size(), x) == 0 : s.compare(s.size() - x.size(), x.size(), x) == 0;
  };
  if (arg.is_sequence()) return std::any_of(arg.list->begin(), arg.list->end(), one);
  return one(arg);
}

Value string_method(const std::string& s, const std::string& name) {
  static const std::set<std::string> known = {"strip", "lstrip", "rstrip", "split", "startswith", "endswith",
                                              "upper", "lower", "replace", "title", "capitalize", "join"};
  if (!known.count(name)) return Value::undefined("'str object' has no attribute '" + name + "'");
  return Value::callable("str." + name, [s, name](const CallArgs& a) -> Value {
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      Args p(name, a, {"chars"});
      const bool chars = p.given[0] && p.v[0].kind != Value::kNone;
      const std::string set = chars ? need_str(p.v[0], name + "()") : "";
      return Value::string(py_strip(s, chars ? &set : nullptr, name != "rstrip", name != "lstrip"));
    }
    if (name == "split") {
      Args p(name, a, {"sep", "maxsplit"});
      return py_split(s, p.get(0, Value::none()), p.integer(1, -1));
    }
    if (name == "startswith" || name == "endswith") {
      Args p(name, a, {"prefix"});
      if (!p.given[0]) throw EvalError(name + "() takes exactly one argument (0 given)");
      return Value::boolean(starts_or_ends(s, p.v[0], name == "startswith"));
    }
    if (name == "upper" || name == "lower") return Value::string(case_map(s, name == "upper"));
    if (name == "title") return Value::string(py_title(s));
    if (name == "capitalize") return Value::string(py_capitalize(s));
    if (name == "replace") {
      Args p(name, a, {"old", "new", "count"});
      return Value::string(py_replace(s, need_str(p.v[0], "replace()"), need_str(p.v[1], "replace()"), p.integer(2, -1)));
    }
    Args p(name, a, {"iterable"});  // join
    std::string out;
    bool first = true;
    for (const auto& x : iterate(p.v[0])) {
      out += (first ? "" : s) + need_str(x, "str.join()");
      first = false;
    }
    return Value::string(out);
  });
}

Value items_of(const Value& d) {
  ValueList out;
  if (d.is_undefined()) return Value::make_list(out);
  if (d.kind != Value::kDict) throw EvalError("items() needs a mapping, got " + type_name(d));
  for (const auto& [k, v] : d.dict->items) out.push_back(Value::make_list({k, v}, Value::kTuple));
  return Value::make_list(out);
}

Value dict_method(const Value& d, const std::string& name) {
  if (name != "get" && name != "items" && name != "keys" && name != "values") return Value::undefined("");
  return Value::callable("dict." + name, [d, name](const CallArgs& a) -> Value {
    if (name == "get") {
      Args p(name, a, {"key", "default"});
      const Value* v = d.dict->find(p.v[0]);
      return v ? *v : p.get(1, Value::none());
    }
    Args p(name, a, {});
    if (name == "items") return items_of(d);
    ValueList out;
    for (const auto& [k, v] : d.dict->items) out.push_back(name == "keys" ? k : v);
    return Value::make_list(out);
  });
}

// --- filters ---

using Filter = Value (*)(const Value&, const CallArgs&);

double to_double(const Value& v) {
  return v.kind == Value::kFloat ? v.f : v.kind == Value::kInt ? double(v.i) : double(v.b);
}

// Python's round(x, n): the exactly-rounded decimal of the binary value, ties to even.
double py_round(double x, int64_t n) {
  if (n == 0) return std::nearbyint(x);
  char buf[400];
  std::snprintf(buf, sizeof buf, "%.*f", int(std::clamp<int64_t>(n, 0, 300)), x);
  return std::strtod(buf, nullptr);
}

Value f_int(const Value& v, const CallArgs& a) {
  Args p("int", a, {"default", "base"});
  const Value dflt = p.get(0, Value::integer(0));
  if (v.kind == Value::kInt) return v;
  if (v.kind == Value::kBool) return Value::integer(v.b);
  if (v.kind == Value::kFloat) return std::isfinite(v.f) ? Value::integer(int64_t(v.f)) : dflt;
  if (v.kind == Value::kString) {
    const std::string t = py_strip(v.s, nullptr, true, true);
    char* end = nullptr;
    const long long x = std::strtoll(t.c_str(), &end, int(p.integer(1, 10)));
    if (!t.empty() && end && *end == 0) return Value::integer(x);
    const double d = std::strtod(t.c_str(), &end);
    if (!t.empty() && end && *end == 0 && std::isfinite(d)) return Value::integer(int64_t(d));
  }
  return dflt;
}

Value f_float(const Value& v, const CallArgs& a) {
  Args p("float", a, {"default"});
  if (v.is_number()) return Value::number(to_double(v));
  if (v.kind == Value::kString) {
    const std::string t = py_strip(v.s, nullptr, true, true);
    char* end = nullptr;
    const double d = std::strtod(t.c_str(), &end);
    if (!t.empty() && end && *end == 0) return Value::number(d);
  }
  return p.get(0, Value::number(0));
}

Value f_tojson(const Value& v, const CallArgs& a) {
  Args p("tojson", a, {"ensure_ascii", "indent", "separators", "sort_keys"});
  std::string indent, item_sep, key_sep;
  const Value ind = p.get(1, Value::none());
  if (ind.kind == Value::kInt) indent = std::string(std::max<int64_t>(ind.i, 0), ' ');
  else if (ind.kind == Value::kString) indent = ind.s;
  else if (ind.kind != Value::kNone) throw EvalError("tojson: indent must be an integer, a string or None");
  const Value seps = p.get(2, Value::none());
  if (seps.is_sequence() && seps.list->size() == 2) {
    item_sep = need_str((*seps.list)[0], "tojson separators");
    key_sep = need_str((*seps.list)[1], "tojson separators");
  } else if (seps.kind != Value::kNone) {
    throw EvalError("tojson: separators must be a pair of strings");
  }
  return Value::string(to_json(v, p.flag(0), ind.kind == Value::kNone ? nullptr : &indent, item_sep, key_sep, p.flag(3)));
}

Value f_join(const Value& v, const CallArgs& a) {
  Args p("join", a, {"d", "attribute"});
  const std::string sep = p.str(0, "");
  std::string out;
  bool first = true;
  for (const auto& x : iterate(v)) {
    out += (first ? "" : sep) + to_str(p.given[1] ? attr_path(x, to_str(p.v[1])) : x);
    first = false;
  }
  return Value::string(out);
}

Value f_default(const Value& v, const CallArgs& a) {
  Args p("default", a, {"default_value", "boolean"});
  if (v.is_undefined() || (p.flag(1) && !truthy(v))) return p.get(0, Value::string(""));
  return v;
}

Value f_indent(const Value& v, const CallArgs& a) {
  Args p("indent", a, {"width", "first", "blank"});
  const Value w = p.get(0, Value::integer(4));
  const std::string ind = w.kind == Value::kString ? w.s : std::string(std::max<int64_t>(p.integer(0, 4), 0), ' ');
  // Python's str.splitlines() over s + "\n" (Jinja's own quirk).
  std::vector<std::string> lines;
  {
    const auto cps = utf8_decode(to_str(v) + "\n");
    size_t b = 0;
    for (size_t k = 0; k < cps.size(); ++k) {
      const uint32_t c = cps[k];
      if (c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || (c >= 0x1c && c <= 0x1e) || c == 0x85 || c == 0x2028 ||
          c == 0x2029) {
        lines.push_back(utf8_encode(cps, b, k));
        if (c == '\r' && k + 1 < cps.size() && cps[k + 1] == '\n') ++k;
        b = k + 1;
      }
    }
    if (b < cps.size()) lines.push_back(utf8_encode(cps, b));
  }
  std::string out;
  for (size_t k = 0; k < lines.size(); ++k) {
    if (k == 0) out = lines[0];
    else out += "\n" + ((p.flag(2) || !lines[k].empty()) ? ind : "") + lines[k];
  }
  return Value::string(p.flag(1) ? ind + out : out);
}

Value f_round(const Value& v, const CallArgs& a) {
  Args p("round", a, {"precision", "method"});
  const int64_t n = p.integer(0, 0);
  const std::string method = p.str(1, "common");
  if (method == "common") return v.kind == Value::kFloat ? Value::number(py_round(v.f, n)) : v;
  if (method != "ceil" && method != "floor") throw EvalError("round: method must be common, ceil or floor");
  const double scale = std::pow(10.0, double(n)), x = to_double(v) * scale;
  return Value::number((method == "ceil" ? std::ceil(x) : std::floor(x)) / scale);
}

bool sort_less(const Value& a, const Value& b, bool case_sensitive) {
  if (!case_sensitive && a.kind == Value::kString && b.kind == Value::kString)
    return case_map(a.s, false) < case_map(b.s, false);
  return less(a, b);
}

Value f_sort(const Value& v, const CallArgs& a) {
  Args p("sort", a, {"reverse", "case_sensitive", "attribute"});
  ValueList items = iterate(v);
  const bool cs = p.flag(1);
  auto key = [&](const Value& x) { return p.given[2] ? attr_path(x, to_str(p.v[2])) : x; };
  std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
    return p.flag(0) ? sort_less(key(y), key(x), cs) : sort_less(key(x), key(y), cs);
  });
  return Value::make_list(items);
}

Value f_dictsort(const Value& v, const CallArgs& a) {
  Args p("dictsort", a, {"case_sensitive", "by", "reverse"});
  ValueList items = *items_of(v).list;
  const size_t pos = p.str(1, "key") == "value" ? 1 : 0;
  const bool cs = p.flag(0);
  std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
    const Value &kx = (*x.list)[pos], &ky = (*y.list)[pos];
    return p.flag(2) ? sort_less(ky, kx, cs) : sort_less(kx, ky, cs);
  });
  return Value::make_list(items);
}

Value f_unique(const Value& v, const CallArgs& a) {
  Args p("unique", a, {"case_sensitive", "attribute"});
  ValueList out, seen;
  for (const auto& x : iterate(v)) {
    Value key = p.given[1] ? attr_path(x, to_str(p.v[1])) : x;
    if (!p.flag(0) && key.kind == Value::kString) key = Value::string(case_map(key.s, false));
    if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return equals(s, key); })) {
      seen.push_back(key);
      out.push_back(x);
    }
  }
  return Value::make_list(out);
}

Value f_minmax(const Value& v, const CallArgs& a, bool max) {
  Args p(max ? "max" : "min", a, {"case_sensitive", "attribute"});
  const ValueList items = iterate(v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  auto key = [&](const Value& x) { return p.given[1] ? attr_path(x, to_str(p.v[1])) : x; };
  Value best = items[0];
  for (const auto& x : items)
    if (max ? sort_less(key(best), key(x), p.flag(0)) : sort_less(key(x), key(best), p.flag(0))) best = x;
  return best;
}

// select/reject/selectattr/rejectattr: Jinja's select_or_reject.
Value select(const Value& v, const CallArgs& a, bool attr, bool keep) {
  CallArgs test_args;
  size_t k = 0;
  std::string attribute;
  if (attr) {
    if (a.pos.empty()) throw EvalError("selectattr/rejectattr need an attribute name");
    attribute = to_str(a.pos[k++]);
  }
  std::string test;
  if (k < a.pos.size()) test = need_str(a.pos[k++], "select test name");
  test_args.pos.assign(a.pos.begin() + k, a.pos.end());
  test_args.kw = a.kw;
  if (!test.empty() && !has_test(test)) throw EvalError("no test named '" + test + "'");
  ValueList out;
  for (const auto& x : iterate(v)) {
    const Value subject = attr ? attr_path(x, attribute) : x;
    const bool ok = test.empty() ? truthy(subject) : apply_test(test, subject, test_args);
    if (ok == keep) out.push_back(x);
  }
  return Value::make_list(out);
}

Value f_map(const Value& v, const CallArgs& a) {
  ValueList out;
  std::string attribute;
  Value dflt;
  bool by_attr = false;
  for (const auto& [k, x] : a.kw) {
    if (k == "attribute") attribute = to_str(x), by_attr = true;
    else if (k == "default") dflt = x;
    else throw EvalError("map() got an unexpected keyword argument '" + k + "'");
  }
  if (by_attr) {
    for (const auto& x : iterate(v)) {
      Value y = attr_path(x, attribute);
      out.push_back(y.is_undefined() && !dflt.is_undefined() ? dflt : y);
    }
    return Value::make_list(out);
  }
  if (a.pos.empty()) throw EvalError("map() needs a filter name or attribute=");
  const std::string filter = need_str(a.pos[0], "map filter name");
  if (!has_filter(filter)) throw EvalError("no filter named '" + filter + "'");
  CallArgs rest;
  rest.pos.assign(a.pos.begin() + 1, a.pos.end());
  for (const auto& x : iterate(v)) out.push_back(apply_filter(filter, x, rest));
  return Value::make_list(out);
}

Value f_first_last(const Value& v, bool last) {
  const ValueList items = iterate(v);
  if (items.empty()) return Value::undefined(last ? "No last item, sequence was empty." : "No first item, sequence was empty.");
  return last ? items.back() : items.front();
}

Value str_filter(const Value& v, const CallArgs& a, const std::string& name) {
  const std::string s = to_str(v);
  if (name == "upper" || name == "lower") return Value::string(case_map(s, name == "upper"));
  if (name == "capitalize") return Value::string(py_capitalize(s));
  if (name == "trim") {
    Args p("trim", a, {"chars"});
    const bool chars = p.given[0] && p.v[0].kind != Value::kNone;
    const std::string set = chars ? to_str(p.v[0]) : "";
    return Value::string(py_strip(s, chars ? &set : nullptr, true, true));
  }
  if (name == "replace") {
    Args p("replace", a, {"old", "new", "count"});
    return Value::string(py_replace(s, to_str(p.v[0]), to_str(p.v[1]), p.integer(2, -1)));
  }
  if (name == "wordcount") {
    int64_t n = 0;
    bool in_word = false;
    for (uint32_t c : utf8_decode(s)) {
      const bool w = c == '_' || (c < 0x80 ? std::isalnum(int(c)) != 0 : !py_isspace(c));
      if (w && !in_word) ++n;
      in_word = w;
    }
    return Value::integer(n);
  }
  // title: Jinja's own (capitalise after '-', whitespace and opening brackets).
  std::string out;
  bool start = true;
  for (uint32_t c : utf8_decode(s)) {
    const bool sep = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || py_isspace(c);
    out += sep ? utf8_encode({c}) : case_map(utf8_encode({c}), start);
    start = sep;
  }
  return Value::string(out);
}

Value dispatch(const std::string& name, const Value& v, const CallArgs& a) {
  static const std::set<std::string> str_filters = {"upper", "lower", "capitalize", "title", "trim", "replace", "wordcount"};
  if (str_filters.count(name)) return str_filter(v, a, name);
  if (name == "length" || name == "count") return Value::integer(length(v));
  if (name == "tojson") return f_tojson(v, a);
  if (name == "string") return Value::string(to_str(v));
  if (name == "safe") return v.kind == Value::kString ? v : Value::string(to_str(v));
  if (name == "int") return f_int(v, a);
  if (name == "float") return f_float(v, a);
  if (name == "join") return f_join(v, a);
  if (name == "first" || name == "last") return f_first_last(v, name == "last");
  if (name == "default" || name == "d") return f_default(v, a);
  if (name == "list") return Value::make_list(iterate(v));
  if (name == "items") return items_of(v);
  if (name == "select" || name == "reject") return select(v, a, false, name == "select");
  if (name == "selectattr" || name == "rejectattr") return select(v, a, true, name == "selectattr");
  if (name == "map") return f_map(v, a);
  if (name == "unique") return f_unique(v, a);
  if (name == "indent") return f_indent(v, a);
  if (name == "round") return f_round(v, a);
  if (name == "abs") {
    if (v.kind == Value::kFloat) return Value::number(std::fabs(v.f));
    if (v.kind == Value::kInt || v.kind == Value::kBool) return Value::integer(std::llabs(v.kind == Value::kInt ? v.i : v.b));
    throw EvalError("bad operand type for abs(): '" + type_name(v) + "'");
  }
  if (name == "dictsort") return f_dictsort(v, a);
  if (name == "sort") return f_sort(v, a);
  if (name == "min" || name == "max") return f_minmax(v, a, name == "max");
  if (name == "sum") {
    Args p("sum", a, {"attribute", "start"});
    Value total = p.get(1, Value::integer(0));
    for (const auto& x : iterate(v)) total = binary_op("+", total, p.given[0] ? attr_path(x, to_str(p.v[0])) : x);
    return total;
  }
  // reverse
  if (v.kind == Value::kString) {
    auto cps = utf8_decode(v.s);
    std::reverse(cps.begin(), cps.end());
    return Value::string(utf8_encode(cps));
  }
  ValueList items = iterate(v);
  std::reverse(items.begin(), items.end());
  return Value::make_list(items);
}

const std::set<std::string>& filter_names() {
  static const std::set<std::string> names = {
      "trim", "length", "count", "upper", "lower", "tojson", "string", "int", "float", "join", "first", "last",
      "default", "d", "capitalize", "title", "replace", "list", "items", "selectattr", "rejectattr", "select",
      "reject", "map", "safe", "unique", "indent", "round", "abs", "dictsort", "sort", "reverse", "min", "max",
      "sum", "wordcount"};
  return names;
}

const std::set<std::string>& test_names() {
  static const std::set<std::string> names = {
      "defined", "undefined", "none", "string", "mapping", "iterable", "number", "sequence", "true", "false",
      "boolean", "integer", "float", "callable", "equalto", "eq", "==", "ne", "!=", "lt", "<", "le", "<=", "gt",
      ">", "ge", ">=", "in", "odd", "even", "divisibleby", "lower", "upper", "sameas"};
  return names;
}

}  // namespace

bool has_filter(const std::string& name) { return filter_names().count(name) > 0; }
bool has_test(const std::string& name) { return test_names().count(name) > 0; }

Value apply_filter(const std::string& name, const Value& v, const CallArgs& args) {
  if (!has_filter(name)) throw EvalError("no filter named '" + name + "'");
  return dispatch(name, v, args);
}

bool apply_test(const std::string& name, const Value& v, const CallArgs& a) {
  const Value arg = a.pos.empty() ? Value::undefined("") : a.pos[0];
  auto need_arg = [&]() {
    if (a.pos.empty()) throw EvalError("test '" + name + "' needs an argument");
  };
  const Value::Kind k = v.kind;
  if (name == "defined") return k != Value::kUndefined;
  if (name == "undefined") return k == Value::kUndefined;
  if (name == "none") return k == Value::kNone;
  if (name == "string") return k == Value::kString;
  if (name == "mapping") return k == Value::kDict;
  if (name == "iterable") return k == Value::kUndefined || k == Value::kString || v.is_sequence() || k == Value::kDict;
  if (name == "sequence") return k == Value::kUndefined || k == Value::kString || v.is_sequence() || k == Value::kDict;
  if (name == "number") return v.is_number();
  if (name == "true") return k == Value::kBool && v.b;
  if (name == "false") return k == Value::kBool && !v.b;
  if (name == "boolean") return k == Value::kBool;
  if (name == "integer") return k == Value::kInt;
  if (name == "float") return k == Value::kFloat;
  if (name == "callable") return k == Value::kCallable;
  if (name == "lower" || name == "upper") {
    const std::string s = to_str(v);
    return case_map(s, name == "upper") == s;
  }
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (k != Value::kInt && k != Value::kBool) throw EvalError("test '" + name + "' needs an integer, got " + type_name(v));
    const int64_t x = k == Value::kInt ? v.i : v.b;
    if (name == "odd") return x % 2 != 0;
    if (name == "even") return x % 2 == 0;
    need_arg();
    const Value m = binary_op("%", v, arg);
    return m.kind == Value::kFloat ? m.f == 0 : m.i == 0;
  }
  need_arg();
  if (name == "equalto" || name == "eq" || name == "==") return equals(v, arg);
  if (name == "ne" || name == "!=") return !equals(v, arg);
  if (name == "lt" || name == "<") return less(v, arg);
  if (name == "le" || name == "<=") return !less(arg, v);
  if (name == "gt" || name == ">") return less(arg, v);
  if (name == "ge" || name == ">=") return !less(v, arg);
  if (name == "in") return contains(arg, v);
  if (name == "sameas") {
    if (v.kind != arg.kind) return false;
    if (v.kind == Value::kNone || v.kind == Value::kUndefined) return true;
    if (v.kind == Value::kBool) return v.b == arg.b;
    if (v.is_sequence()) return v.list == arg.list;
    if (v.kind == Value::kDict || v.kind == Value::kNamespace) return v.dict == arg.dict;
    return equals(v, arg);
  }
  throw EvalError("no test named '" + name + "'");
}

Value method(const Value& obj, const std::string& name) {
  if (obj.kind == Value::kString) return string_method(obj.s, name);
  if (obj.kind == Value::kDict) return dict_method(obj, name);
  return Value::undefined("");
}

}  // namespace weft::jinja
