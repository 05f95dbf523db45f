// Template values with Python's semantics: truthiness, str()/repr(), equality and ordering,
// arithmetic, json.dumps, indexing and slicing by code point. Chat templates are rendered by
// Python, so every one of these must give Python's answer, byte for byte.
#include <clocale>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cwctype>
#include <locale.h>

#include "runtime/data/jinja.h"

namespace weft::jinja {

Value Value::make_list(ValueList items, Kind kind) {
  Value v;
  v.kind = kind;
  v.list = std::make_shared<ValueList>(std::move(items));
  return v;
}

Value Value::make_dict() {
  Value v;
  v.kind = kDict;
  v.dict = std::make_shared<Dict>();
  return v;
}

Value Value::callable(std::string name, Function fn) {
  Value v;
  v.kind = kCallable;
  v.s = std::move(name);
  v.fn = std::make_shared<Function>(std::move(fn));
  return v;
}

const Value* Dict::find(const Value& key) const {
  for (const auto& [k, v] : items)
    if (equals(k, key)) return &v;
  return nullptr;
}

const Value* Dict::find(const std::string& key) const {
  for (const auto& [k, v] : items)
    if (k.kind == Value::kString && k.s == key) return &v;
  return nullptr;
}

void Dict::set(const Value& key, Value value) {
  for (auto& [k, v] : items)
    if (equals(k, key)) {
      v = std::move(value);
      return;
    }
  items.emplace_back(key, std::move(value));
}

Value from_json(const nlohmann::ordered_json& j) {
  using T = nlohmann::ordered_json::value_t;
  switch (j.type()) {
    case T::null: return Value::none();
    case T::boolean: return Value::boolean(j.get<bool>());
    case T::number_integer: return Value::integer(j.get<int64_t>());
    case T::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      if (u > uint64_t(INT64_MAX)) return Value::number(double(u));
      return Value::integer(int64_t(u));
    }
    case T::number_float: return Value::number(j.get<double>());
    case T::string: return Value::string(j.get<std::string>());
    case T::array: {
      ValueList items;
      for (const auto& e : j) items.push_back(from_json(e));
      return Value::make_list(std::move(items));
    }
    case T::object: {
      Value d = Value::make_dict();
      for (auto it = j.begin(); it != j.end(); ++it) d.dict->items.emplace_back(Value::string(it.key()), from_json(it.value()));
      return d;
    }
    default: throw EvalError("a binary JSON value cannot be passed to a chat template");
  }
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Value::kUndefined:
    case Value::kNone: return false;
    case Value::kBool: return v.b;
    case Value::kInt: return v.i != 0;
    case Value::kFloat: return v.f != 0;
    case Value::kString: return !v.s.empty();
    case Value::kList:
    case Value::kTuple: return !v.list->empty();
    case Value::kDict: return !v.dict->items.empty();
    default: return true;
  }
}

std::string type_name(const Value& v) {
  switch (v.kind) {
    case Value::kUndefined: return "Undefined";
    case Value::kNone: return "NoneType";
    case Value::kBool: return "bool";
    case Value::kInt: return "int";
    case Value::kFloat: return "float";
    case Value::kString: return "str";
    case Value::kList: return "list";
    case Value::kTuple: return "tuple";
    case Value::kDict: return "dict";
    case Value::kNamespace: return "Namespace";
    default: return "function";
  }
}

// --- UTF-8 and Python's character classes ---

std::vector<uint32_t> utf8_decode(const std::string& s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = s[i];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if (i + n > s.size()) n = 1;
    uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1f) : n == 3 ? (c & 0x0f) : (c & 0x07);
    for (int k = 1; k < n; ++k) cp = cp << 6 | (static_cast<unsigned char>(s[i + k]) & 0x3f);
    out.push_back(cp);
    i += n;
  }
  return out;
}

std::string utf8_encode(const std::vector<uint32_t>& cps, size_t begin, size_t end) {
  std::string out;
  end = std::min(end, cps.size());
  for (size_t i = begin; i < end; ++i) {
    const uint32_t c = cps[i];
    if (c < 0x80) {
      out += char(c);
    } else if (c < 0x800) {
      out += {char(0xc0 | c >> 6), char(0x80 | (c & 0x3f))};
    } else if (c < 0x10000) {
      out += {char(0xe0 | c >> 12), char(0x80 | (c >> 6 & 0x3f)), char(0x80 | (c & 0x3f))};
    } else {
      out += {char(0xf0 | c >> 18), char(0x80 | (c >> 12 & 0x3f)), char(0x80 | (c >> 6 & 0x3f)), char(0x80 | (c & 0x3f))};
    }
  }
  return out;
}

// Python's str.isspace().
bool py_isspace(uint32_t c) {
  return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

std::string py_strip(const std::string& s, const std::string* chars, bool left, bool right) {
  const auto cps = utf8_decode(s);
  const auto set = chars ? utf8_decode(*chars) : std::vector<uint32_t>{};
  auto strip = [&](uint32_t c) { return chars ? std::find(set.begin(), set.end(), c) != set.end() : py_isspace(c); };
  size_t b = 0, e = cps.size();
  while (left && b < e && strip(cps[b])) ++b;
  while (right && e > b && strip(cps[e - 1])) --e;
  return utf8_encode(cps, b, e);
}

// Unicode case mapping through the C library's UTF-8 tables (one code point to one, as towupper
// does; Python's rare one-to-many mappings such as 'ß'.upper() == 'SS' are not reproduced).
std::string case_map(const std::string& s, bool upper) {
  static locale_t loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", nullptr);
  auto cps = utf8_decode(s);
  for (auto& c : cps) {
    if (c < 0x80) {
      if (upper && c >= 'a' && c <= 'z') c -= 32;
      if (!upper && c >= 'A' && c <= 'Z') c += 32;
    } else if (loc) {
      c = upper ? towupper_l(wint_t(c), loc) : towlower_l(wint_t(c), loc);
    }
  }
  return utf8_encode(cps);
}

// --- str() and repr() ---

// Python's repr(float): the shortest digits that round-trip, fixed notation for exponents in
// [-4, 16), scientific otherwise.
std::string py_float_repr(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  char buf[64];
  for (int prec = 0; prec < 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*e", prec, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  std::string e(buf);
  const bool neg = e[0] == '-';
  if (neg) e = e.substr(1);
  const size_t epos = e.find('e');
  const int exp10 = std::atoi(e.c_str() + epos + 1);
  std::string digits;
  for (size_t k = 0; k < epos; ++k)
    if (e[k] != '.') digits += e[k];
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  const int decpt = exp10 + 1;
  std::string out;
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) {
      out = "0." + std::string(-decpt, '0') + digits;
    } else if (decpt >= int(digits.size())) {
      out = digits + std::string(decpt - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, decpt) + "." + digits.substr(decpt);
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    const int a = std::abs(decpt - 1);
    out += std::string("e") + (decpt - 1 < 0 ? "-" : "+") + (a < 10 ? "0" : "") + std::to_string(a);
  }
  return neg ? "-" + out : out;
}

namespace {

std::string repr_string(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos, has_double = s.find('"') != std::string::npos;
  const char q = has_single && !has_double ? '"' : '\'';
  std::string out(1, q);
  for (uint32_t c : utf8_decode(s)) {
    if (c == uint32_t(q) || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0xa0) || c == 0xad) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += utf8_encode({c});
    }
  }
  return out + q;
}

}  // namespace

std::string repr(const Value& v) {
  switch (v.kind) {
    case Value::kString: return repr_string(v.s);
    case Value::kList:
    case Value::kTuple: {
      const bool tuple = v.kind == Value::kTuple;
      std::string out = tuple ? "(" : "[";
      for (size_t k = 0; k < v.list->size(); ++k) out += (k ? ", " : "") + repr((*v.list)[k]);
      if (tuple && v.list->size() == 1) out += ",";
      return out + (tuple ? ")" : "]");
    }
    case Value::kDict: {
      std::string out = "{";
      bool first = true;
      for (const auto& [k, x] : v.dict->items) {
        out += (first ? "" : ", ") + repr(k) + ": " + repr(x);
        first = false;
      }
      return out + "}";
    }
    case Value::kUndefined: return "Undefined";
    default: return to_str(v);
  }
}

std::string to_str(const Value& v) {
  switch (v.kind) {
    case Value::kUndefined: return "";
    case Value::kNone: return "None";
    case Value::kBool: return v.b ? "True" : "False";
    case Value::kInt: return std::to_string(v.i);
    case Value::kFloat: return py_float_repr(v.f);
    case Value::kString: return v.s;
    case Value::kNamespace: return "<Namespace>";
    case Value::kCallable: return "<function " + v.s + ">";
    default: return repr(v);
  }
}

// --- comparison ---

namespace {
double as_double(const Value& v) { return v.kind == Value::kFloat ? v.f : v.kind == Value::kInt ? double(v.i) : double(v.b); }
int64_t as_int(const Value& v) { return v.kind == Value::kInt ? v.i : int64_t(v.b); }
}  // namespace

bool equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind == Value::kFloat || b.kind == Value::kFloat) return as_double(a) == as_double(b);
    return as_int(a) == as_int(b);
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::kUndefined:
    case Value::kNone: return true;
    case Value::kString: return a.s == b.s;
    case Value::kList:
    case Value::kTuple:
      if (a.list->size() != b.list->size()) return false;
      for (size_t k = 0; k < a.list->size(); ++k)
        if (!equals((*a.list)[k], (*b.list)[k])) return false;
      return true;
    case Value::kDict:
      if (a.dict->items.size() != b.dict->items.size()) return false;
      for (const auto& [k, x] : a.dict->items) {
        const Value* y = b.dict->find(k);
        if (!y || !equals(x, *y)) return false;
      }
      return true;
    case Value::kNamespace: return a.dict == b.dict;
    default: return a.fn == b.fn;
  }
}

bool less(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind == Value::kFloat || b.kind == Value::kFloat) return as_double(a) < as_double(b);
    return as_int(a) < as_int(b);
  }
  if (a.kind == Value::kString && b.kind == Value::kString) return a.s < b.s;  // UTF-8 order = code point order
  if (a.is_sequence() && a.kind == b.kind) {
    for (size_t k = 0; k < a.list->size() && k < b.list->size(); ++k) {
      if (!equals((*a.list)[k], (*b.list)[k])) return less((*a.list)[k], (*b.list)[k]);
    }
    return a.list->size() < b.list->size();
  }
  throw EvalError("'<' not supported between instances of '" + type_name(a) + "' and '" + type_name(b) + "'");
}

// --- json.dumps ---

namespace {

void json_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out += '"';
  for (uint32_t c : utf8_decode(s)) {
    char buf[16];
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20 || (ensure_ascii && c > 0x7e)) {
          if (c >= 0x10000) {
            const uint32_t v = c - 0x10000;
            std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xd800 | (v >> 10), 0xdc00 | (v & 0x3ff));
          } else {
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
          }
          out += buf;
        } else {
          out += utf8_encode({c});
        }
    }
  }
  out += '"';
}

struct JsonWriter {
  bool ensure_ascii;
  const std::string* indent;
  std::string item_sep, key_sep;
  bool sort_keys;
  std::string out;

  void newline(int depth) {
    if (!indent) return;
    out += '\n';
    for (int d = 0; d < depth; ++d) out += *indent;
  }

  std::string key_text(const Value& k) {
    switch (k.kind) {
      case Value::kString: return k.s;
      case Value::kNone: return "null";
      case Value::kBool: return k.b ? "true" : "false";
      case Value::kInt: return std::to_string(k.i);
      case Value::kFloat: return py_float_repr(k.f);
      default: throw EvalError("keys must be str, int, float, bool or None, not " + type_name(k));
    }
  }

  void write(const Value& v, int depth) {
    if (depth > 200) throw EvalError("tojson: value nested too deeply");
    switch (v.kind) {
      case Value::kNone: out += "null"; return;
      case Value::kBool: out += v.b ? "true" : "false"; return;
      case Value::kInt: out += std::to_string(v.i); return;
      case Value::kFloat:
        out += std::isnan(v.f) ? "NaN" : std::isinf(v.f) ? (v.f > 0 ? "Infinity" : "-Infinity") : py_float_repr(v.f);
        return;
      case Value::kString: json_string(out, v.s, ensure_ascii); return;
      case Value::kList:
      case Value::kTuple: {
        if (v.list->empty()) {
          out += "[]";
          return;
        }
        out += '[';
        for (size_t k = 0; k < v.list->size(); ++k) {
          if (k) out += item_sep;
          newline(depth + 1);
          write((*v.list)[k], depth + 1);
        }
        newline(depth);
        out += ']';
        return;
      }
      case Value::kDict: {
        if (v.dict->items.empty()) {
          out += "{}";
          return;
        }
        std::vector<std::pair<std::string, const Value*>> items;
        for (const auto& [k, x] : v.dict->items) items.emplace_back(key_text(k), &x);
        if (sort_keys)
          std::stable_sort(items.begin(), items.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
        out += '{';
        for (size_t k = 0; k < items.size(); ++k) {
          if (k) out += item_sep;
          newline(depth + 1);
          json_string(out, items[k].first, ensure_ascii);
          out += key_sep;
          write(*items[k].second, depth + 1);
        }
        newline(depth);
        out += '}';
        return;
      }
      default: throw EvalError("Object of type " + type_name(v) + " is not JSON serializable");
    }
  }
};

}  // namespace

std::string to_json(const Value& v, bool ensure_ascii, const std::string* indent, const std::string& item_sep,
                    const std::string& key_sep, bool sort_keys) {
  JsonWriter w{ensure_ascii, indent, item_sep, key_sep, sort_keys, {}};
  if (w.item_sep.empty() && w.key_sep.empty()) {
    w.item_sep = indent ? "," : ", ";
    w.key_sep = ": ";
  }
  w.write(v, 0);
  return w.out;
}

// --- containers ---

ValueList iterate(const Value& v) {
  switch (v.kind) {
    case Value::kUndefined: return {};
    case Value::kList:
    case Value::kTuple: return *v.list;
    case Value::kDict: {
      ValueList keys;
      for (const auto& kv : v.dict->items) keys.push_back(kv.first);
      return keys;
    }
    case Value::kString: {
      ValueList chars;
      for (uint32_t c : utf8_decode(v.s)) chars.push_back(Value::string(utf8_encode({c})));
      return chars;
    }
    default: throw EvalError("'" + type_name(v) + "' object is not iterable");
  }
}

int64_t length(const Value& v) {
  switch (v.kind) {
    case Value::kUndefined: return 0;
    case Value::kString: return int64_t(utf8_decode(v.s).size());
    case Value::kList:
    case Value::kTuple: return int64_t(v.list->size());
    case Value::kDict: return int64_t(v.dict->items.size());
    default: throw EvalError("object of type '" + type_name(v) + "' has no len()");
  }
}

bool contains(const Value& c, const Value& item) {
  switch (c.kind) {
    case Value::kUndefined: return false;
    case Value::kString:
      if (item.kind != Value::kString)
        throw EvalError("'in <string>' requires string as left operand, not " + type_name(item));
      return c.s.find(item.s) != std::string::npos;
    case Value::kList:
    case Value::kTuple:
      for (const auto& x : *c.list)
        if (equals(x, item)) return true;
      return false;
    case Value::kDict: return c.dict->find(item) != nullptr;
    default: throw EvalError("argument of type '" + type_name(c) + "' is not iterable");
  }
}

// --- arithmetic ---

namespace {

constexpr size_t kMaxValueBytes = size_t(64) << 20;  // a bound on '*' repetition

Value repeat(const Value& seq, int64_t n) {
  if (n <= 0) return seq.kind == Value::kString ? Value::string("") : Value::make_list({}, seq.kind);
  const size_t unit = seq.kind == Value::kString ? seq.s.size() : seq.list->size();
  if (unit && uint64_t(n) > kMaxValueBytes / unit) throw EvalError("repetition result too large");
  if (seq.kind == Value::kString) {
    std::string out;
    for (int64_t k = 0; k < n; ++k) out += seq.s;
    return Value::string(out);
  }
  ValueList out;
  for (int64_t k = 0; k < n; ++k) out.insert(out.end(), seq.list->begin(), seq.list->end());
  return Value::make_list(out, seq.kind);
}

Value int_op(const std::string& op, int64_t x, int64_t y) {
  int64_t r = 0;
  bool overflow = false;
  if (op == "+") overflow = __builtin_add_overflow(x, y, &r);
  else if (op == "-") overflow = __builtin_sub_overflow(x, y, &r);
  else if (op == "*") overflow = __builtin_mul_overflow(x, y, &r);
  else if (op == "//" || op == "%") {
    if (y == 0) throw EvalError("integer division or modulo by zero");
    int64_t q = x / y, m = x % y;
    if (m != 0 && ((m < 0) != (y < 0))) {
      --q;
      m += y;
    }
    r = op == "//" ? q : m;
  } else if (op == "**") {
    if (y < 0) return Value::number(std::pow(double(x), double(y)));
    r = 1;
    for (int64_t k = 0; k < y && !overflow; ++k) overflow = __builtin_mul_overflow(r, x, &r);
  }
  if (overflow) throw EvalError("integer overflow in '" + op + "' (Weft's templates use 64-bit integers)");
  return Value::integer(r);
}

}  // namespace

Value binary_op(const std::string& op, const Value& a, const Value& b) {
  if (op == "~") return Value::string(to_str(a) + to_str(b));
  if (a.is_undefined() || b.is_undefined())
    throw EvalError((a.is_undefined() ? a.s : b.s).empty() ? "undefined value in '" + op + "'" : (a.is_undefined() ? a.s : b.s));
  if (a.is_number() && b.is_number()) {
    if (op == "/") {
      if (as_double(b) == 0) throw EvalError("division by zero");
      return Value::number(as_double(a) / as_double(b));
    }
    if (a.kind != Value::kFloat && b.kind != Value::kFloat) return int_op(op, as_int(a), as_int(b));
    const double x = as_double(a), y = as_double(b);
    if (op == "+") return Value::number(x + y);
    if (op == "-") return Value::number(x - y);
    if (op == "*") return Value::number(x * y);
    if (op == "**") return Value::number(std::pow(x, y));
    if (y == 0) throw EvalError("float division by zero");
    const double q = std::floor(x / y);
    if (op == "//") return Value::number(q);
    double m = std::fmod(x, y);
    if (m != 0 && ((m < 0) != (y < 0))) m += y;
    return Value::number(m);
  }
  if (op == "+" && a.kind == b.kind && a.kind == Value::kString) return Value::string(a.s + b.s);
  if (op == "+" && a.kind == b.kind && a.is_sequence()) {
    ValueList out = *a.list;
    out.insert(out.end(), b.list->begin(), b.list->end());
    return Value::make_list(out, a.kind);
  }
  if (op == "*" && (a.kind == Value::kString || a.is_sequence()) && (b.kind == Value::kInt || b.kind == Value::kBool))
    return repeat(a, as_int(b));
  if (op == "*" && (b.kind == Value::kString || b.is_sequence()) && (a.kind == Value::kInt || a.kind == Value::kBool))
    return repeat(b, as_int(a));
  if (op == "%" && a.kind == Value::kString)
    throw EvalError("printf-style string formatting ('...' % values) is not supported; use ~ or + to join strings");
  throw EvalError("unsupported operand type(s) for " + op + ": '" + type_name(a) + "' and '" + type_name(b) + "'");
}

// --- attribute and item access ---

Value get_attr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) throw EvalError(obj.s.empty() ? "undefined value has no attribute '" + name + "'" : obj.s);
  if (obj.kind == Value::kDict || obj.kind == Value::kString) {
    Value m = method(obj, name);
    if (!m.is_undefined()) return m;
  }
  if (obj.kind == Value::kDict || obj.kind == Value::kNamespace) {
    if (const Value* v = obj.dict->find(name)) return *v;
  }
  return Value::undefined("'" + (obj.kind == Value::kNamespace ? std::string("Namespace") : type_name(obj) + " object") +
                          "' has no attribute '" + name + "'");
}

namespace {

// Python's index normalisation: negative counts from the end; false when out of range.
bool norm_index(int64_t& k, size_t n) {
  if (k < 0) k += int64_t(n);
  return k >= 0 && k < int64_t(n);
}

}  // namespace

Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) throw EvalError(obj.s.empty() ? "undefined value has no item " + repr(key) : obj.s);
  const bool int_key = key.kind == Value::kInt || key.kind == Value::kBool;
  if (obj.is_sequence() && int_key) {
    int64_t k = as_int(key);
    if (norm_index(k, obj.list->size())) return (*obj.list)[k];
  } else if (obj.kind == Value::kString && int_key) {
    const auto cps = utf8_decode(obj.s);
    int64_t k = as_int(key);
    if (norm_index(k, cps.size())) return Value::string(utf8_encode(cps, k, k + 1));
  } else if (obj.kind == Value::kDict || obj.kind == Value::kNamespace) {
    if (const Value* v = obj.dict->find(key)) return *v;
  }
  if (key.kind == Value::kString) {
    Value v = get_attr(obj, key.s);
    if (!v.is_undefined()) return v;
  }
  return Value::undefined("'" + type_name(obj) + " object' has no attribute " + repr(key));
}

Value slice(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  auto opt = [](const Value& v, const char* what) -> std::pair<bool, int64_t> {
    if (v.is_undefined() || v.kind == Value::kNone) return {false, 0};
    if (v.kind != Value::kInt && v.kind != Value::kBool)
      throw EvalError(std::string("slice ") + what + " must be an integer or None, not " + type_name(v));
    return {true, as_int(v)};
  };
  if (obj.is_undefined()) throw EvalError(obj.s.empty() ? "cannot slice an undefined value" : obj.s);
  const bool str = obj.kind == Value::kString;
  if (!str && !obj.is_sequence()) throw EvalError("'" + type_name(obj) + "' object is not subscriptable");
  std::vector<uint32_t> cps;
  if (str) cps = utf8_decode(obj.s);
  const int64_t n = str ? int64_t(cps.size()) : int64_t(obj.list->size());
  auto [has_step, st] = opt(step, "step");
  if (!has_step) st = 1;
  if (st == 0) throw EvalError("slice step cannot be zero");
  // Python's PySlice_AdjustIndices.
  auto adjust = [&](std::pair<bool, int64_t> v, int64_t dflt) {
    if (!v.first) return dflt;
    int64_t k = v.second;
    if (k < 0) {
      k += n;
      if (k < 0) k = st < 0 ? -1 : 0;
    } else if (k >= n) {
      k = st < 0 ? n - 1 : n;
    }
    return k;
  };
  const int64_t b = adjust(opt(start, "start"), st < 0 ? n - 1 : 0);
  const int64_t e = adjust(opt(stop, "stop"), st < 0 ? -1 : n);
  std::vector<int64_t> idx;
  for (int64_t k = b; st > 0 ? k < e : k > e; k += st) idx.push_back(k);
  if (str) {
    std::vector<uint32_t> out;
    for (int64_t k : idx) out.push_back(cps[k]);
    return Value::string(utf8_encode(out));
  }
  ValueList out;
  for (int64_t k : idx) out.push_back((*obj.list)[k]);
  return Value::make_list(out, obj.kind);
}

}  // namespace weft::jinja
