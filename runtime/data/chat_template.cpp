// ChatTemplate: transformers' apply_chat_template inputs (messages with null keys dropped and
// reasoning fields aliased, special tokens, tools/documents) over the Jinja interpreter, and
// the assistant spans fine-tuning trains on.
#include "runtime/data/chat_template.h"

#include <filesystem>

#include "weft/error.h"
#include "core/fileio.h"
#include "runtime/data/jinja.h"

namespace weft {

using nlohmann::ordered_json;

struct ChatTemplate::Impl {
  jinja::Body body;
  bool has_generation = false;
};

namespace {

bool contains_generation(const jinja::Body& body) {
  for (const auto& n : body) {
    if (n->kind == jinja::Node::kGeneration) return true;
    for (const auto& b : n->bodies)
      if (contains_generation(b)) return true;
  }
  return false;
}

// transformers drops message keys whose value is None, then gives the reasoning a message
// carries under any of its names as both `thinking` and `reasoning_content`.
ordered_json normalize_message(const ordered_json& m) {
  if (!m.is_object()) return m;
  ordered_json out = ordered_json::object();
  for (auto it = m.begin(); it != m.end(); ++it)
    if (!it.value().is_null()) out[it.key()] = it.value();
  for (const char* field : {"reasoning_content", "thinking", "reasoning"}) {
    auto it = out.find(field);
    if (it == out.end()) continue;
    const ordered_json reasoning = *it;
    ordered_json aliased = ordered_json::object();
    aliased["thinking"] = reasoning;
    for (auto kv = out.begin(); kv != out.end(); ++kv) aliased[kv.key()] = kv.value();
    aliased["reasoning_content"] = reasoning;
    return aliased;
  }
  return out;
}

}  // namespace

ChatTemplate::ChatTemplate(std::string source, std::string origin) : impl_(new Impl), origin_(std::move(origin)) {
  impl_->body = jinja::parse(source, origin_);
  impl_->has_generation = contains_generation(impl_->body);
}

ChatTemplate::~ChatTemplate() = default;

bool ChatTemplate::has_generation_blocks() const { return impl_->has_generation; }

Rendered ChatTemplate::render(const ordered_json& messages, const ChatContext& ctx) const {
  WEFT_CHECK(messages.is_array(), origin_, ": messages must be an array of message objects, got ", messages.type_name());
  WEFT_CHECK(ctx.extra.is_object(), origin_, ": template variables must be a JSON object");
  ordered_json msgs = ordered_json::array();
  for (const auto& m : messages) msgs.push_back(normalize_message(m));
  std::vector<std::pair<std::string, jinja::Value>> vars;
  try {
    // apply_chat_template's argument order: special tokens, then keyword arguments (which win).
    if (!ctx.bos_token.empty()) vars.emplace_back("bos_token", jinja::Value::string(ctx.bos_token));
    if (!ctx.eos_token.empty()) vars.emplace_back("eos_token", jinja::Value::string(ctx.eos_token));
    vars.emplace_back("messages", jinja::from_json(msgs));
    vars.emplace_back("tools", jinja::Value::none());
    vars.emplace_back("documents", jinja::Value::none());
    vars.emplace_back("add_generation_prompt", jinja::Value::boolean(ctx.add_generation_prompt));
    for (auto it = ctx.extra.begin(); it != ctx.extra.end(); ++it) vars.emplace_back(it.key(), jinja::from_json(it.value()));
  } catch (const jinja::EvalError& e) {
    fail(str(origin_, ": ", e.what()));
  }
  jinja::Output out = jinja::render(impl_->body, origin_, vars);
  return Rendered{std::move(out.text), std::move(out.generation_spans)};
}

Rendered ChatTemplate::render(const nlohmann::json& messages, const ChatContext& ctx) const {
  return render(ordered_json(messages), ctx);
}

ByteSpans ChatTemplate::assistant_spans(const ordered_json& messages, const ChatContext& ctx) const {
  ChatContext full_ctx = ctx;
  full_ctx.add_generation_prompt = false;
  const Rendered full = render(messages, full_ctx);
  if (impl_->has_generation) return full.generation_spans;
  ByteSpans spans;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ordered_json& m = messages[i];
    if (!m.is_object() || m.value("role", ordered_json()) != "assistant") continue;
    ChatContext with_prompt = ctx;
    with_prompt.add_generation_prompt = true;
    ordered_json before = ordered_json::array(), upto = ordered_json::array();
    for (size_t k = 0; k < i; ++k) before.push_back(messages[k]);
    upto = before;
    upto.push_back(m);
    // A template may refuse a prefix (e.g. one that must end with a user turn); that is the
    // not-prefix-stable case too.
    std::string p, q;
    try {
      p = render(before, with_prompt).text;
      q = render(upto, full_ctx).text;
    } catch (const Error& e) {
      fail(str(origin_, ": cannot find assistant message ", i, " by rendering the conversation up to it (", e.what(),
               "); add {% generation %} blocks around the assistant replies to this template"));
    }
    const bool stable = q.compare(0, p.size(), p) == 0 && full.text.compare(0, q.size(), q) == 0;
    WEFT_CHECK(stable, origin_, ": the template is not prefix-stable at assistant message ", i,
               " (rendering the conversation up to a reply is not a prefix of rendering it whole), so the reply's "
               "text cannot be located; add {% generation %} blocks around the assistant replies to this template");
    spans.emplace_back(p.size(), q.size());
  }
  return spans;
}

ByteSpans ChatTemplate::assistant_spans(const nlohmann::json& messages, const ChatContext& ctx) const {
  return assistant_spans(ordered_json(messages), ctx);
}

std::unique_ptr<ChatTemplate> load_chat_template(const std::string& hf_dir) {
  namespace fs = std::filesystem;
  const fs::path jinja_file = fs::path(hf_dir) / "chat_template.jinja";
  if (fs::exists(jinja_file)) return std::make_unique<ChatTemplate>(read_file(jinja_file.string()), jinja_file.string());
  const std::string config = (fs::path(hf_dir) / "tokenizer_config.json").string();
  WEFT_CHECK(fs::exists(config), hf_dir, " has no chat template (neither chat_template.jinja nor tokenizer_config.json); "
             "use a chat model's directory or --format prompt-completion");
  ordered_json tc;
  try {
    tc = ordered_json::parse(read_file(config));
  } catch (const nlohmann::json::exception& e) {
    fail(str(config, ": not valid JSON (", e.what(), ")"));
  }
  auto it = tc.find("chat_template");
  WEFT_CHECK(it != tc.end() && !it->is_null(), config, " has no \"chat_template\" (and there is no chat_template.jinja); "
             "use a chat model's directory or --format prompt-completion");
  const std::string origin = config + ":chat_template";
  if (it->is_string()) return std::make_unique<ChatTemplate>(it->get<std::string>(), origin);
  WEFT_CHECK(it->is_array(), config, ": \"chat_template\" must be a string or a list of {\"name\", \"template\"}, got ",
             it->type_name());
  for (const auto& entry : *it) {
    if (entry.is_object() && entry.value("name", ordered_json()) == "default") {
      WEFT_CHECK(entry.contains("template") && entry["template"].is_string(), config,
                 ": the \"default\" chat template has no \"template\" string");
      return std::make_unique<ChatTemplate>(entry["template"].get<std::string>(), origin + "[default]");
    }
  }
  fail(str(config, ": \"chat_template\" is a list without a template named \"default\""));
}

}  // namespace weft
