// Chat templates: a model's Jinja2 chat template (tokenizer_config.json "chat_template" or
// chat_template.jinja) rendered exactly as transformers' apply_chat_template renders it, and the
// byte ranges of the rendered text that are assistant output to train on.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace weft {

// What a template sees besides `messages`.
struct ChatContext {
  // The tokenizer's special tokens as strings; an empty one is left undefined, as transformers
  // leaves a tokenizer's missing (None) special tokens out.
  std::string bos_token, eos_token;
  bool add_generation_prompt = false;
  // More template variables (tools, documents, date_string, ...), an object. `tools` and
  // `documents` are none unless given here, as in transformers.
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
};

using ByteSpans = std::vector<std::pair<size_t, size_t>>;  // [begin, end) byte offsets

struct Rendered {
  std::string text;
  ByteSpans generation_spans;  // where each {% generation %} block's output lies in `text`
};

// One parsed chat template. The Jinja2 subset: {{ }}, {% %}, {# #}, '-'/'+' whitespace control
// with trim_blocks and lstrip_blocks; if/elif/else, for (else, `if` filter, tuple unpacking,
// loop.index/index0/revindex/revindex0/first/last/length/previtem/nextitem/cycle), set (names,
// tuples, namespace attributes, block set), macro, break/continue, generation, raw; literals,
// attribute/subscript/slice access (missing -> undefined: falsy, renders ""), arithmetic, ~,
// comparisons, and/or/not, in/not in, is-tests, inline if/else, calls; Jinja's filters and tests
// that chat templates use, Python str/dict methods (strip, split, startswith, get, items, ...),
// and transformers' globals (raise_exception, strftime_now, range, dict, namespace) and tojson.
// Values print as Python prints them (True, None, ['a', 1]). Integers are 64-bit.
// Anything else is an error naming the origin, the line and the construct. Rendering is bounded
// (nesting, macro recursion, steps, output size), so a hostile template fails instead of hanging.
// Immutable after construction; render() and assistant_spans() may run on several threads.
class ChatTemplate {
 public:
  // Parses `source` once. `origin` names it in errors (e.g. "DIR/tokenizer_config.json").
  // Throws weft::Error "ORIGIN:LINE: what" for a syntax error or an unsupported construct.
  ChatTemplate(std::string source, std::string origin);
  ~ChatTemplate();
  ChatTemplate(const ChatTemplate&) = delete;
  ChatTemplate& operator=(const ChatTemplate&) = delete;

  // Renders `messages` (an array of message objects) as apply_chat_template(messages,
  // tokenize=False) does: message keys whose value is null are dropped first, and reasoning
  // fields are aliased as transformers aliases them. Throws weft::Error "ORIGIN:LINE: what" for
  // runtime errors, "ORIGIN:LINE: raise_exception: MSG" when the template raises. Key order is
  // kept with ordered_json (tojson prints keys in the caller's order, as Python does); with
  // nlohmann::json keys arrive sorted.
  Rendered render(const nlohmann::ordered_json& messages, const ChatContext& ctx) const;
  Rendered render(const nlohmann::json& messages, const ChatContext& ctx) const;

  // Byte ranges of render(messages, ctx with add_generation_prompt=false).text that are
  // assistant output to train on, in order:
  //  - the template has {% generation %} blocks: exactly their output (what transformers'
  //    return_assistant_tokens_mask marks);
  //  - otherwise, for each assistant message i: P = render(messages[:i], generation prompt on),
  //    Q = render(messages[:i+1], off); when Q starts with P and the full render starts with Q,
  //    the span is Q[len(P):] (the reply and its end-of-turn marker). A template for which that
  //    does not hold is an error naming the origin and the message index.
  // Throws weft::Error as render() does.
  ByteSpans assistant_spans(const nlohmann::ordered_json& messages, const ChatContext& ctx) const;
  ByteSpans assistant_spans(const nlohmann::json& messages, const ChatContext& ctx) const;

  bool has_generation_blocks() const;
  const std::string& origin() const { return origin_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string origin_;
};

// The chat template of a Hugging Face model directory, as transformers picks it:
// DIR/chat_template.jinja if present, else tokenizer_config.json's "chat_template" (a string,
// or a list of {name, template} from which "default" is used). Throws weft::Error naming the
// file when there is none or it is malformed.
std::unique_ptr<ChatTemplate> load_chat_template(const std::string& hf_dir);

}  // namespace weft
