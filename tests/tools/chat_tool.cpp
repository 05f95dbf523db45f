// weft_chat_tool: a test-only bridge that lets the Python parity test drive ChatTemplate.
//   weft_chat_tool [--model DIR]
// reads JSON Lines requests on stdin, one response line each on stdout:
//   {"template": str?, "origin": str?, "messages": [...], "bos_token": str?, "eos_token": str?,
//    "add_generation_prompt": bool?, "extra": {...}?, "assistant_spans": bool?}
//   -> {"text": str, "generation_spans": [[b, e], ...], "assistant_spans": [[b, e], ...]?}
//   or {"error": "one line"} when the template, or rendering it, fails.
// Without "template" the template is DIR's (load_chat_template). Spans are byte offsets.
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "weft/error.h"
#include "runtime/data/chat_template.h"

namespace {

using nlohmann::ordered_json;

ordered_json spans_json(const weft::ByteSpans& spans) {
  ordered_json out = ordered_json::array();
  for (const auto& [b, e] : spans) out.push_back({b, e});
  return out;
}

ordered_json serve(const ordered_json& req, const std::string& model_dir) {
  std::unique_ptr<weft::ChatTemplate> tmpl;
  if (req.contains("template")) {
    tmpl = std::make_unique<weft::ChatTemplate>(req["template"].get<std::string>(), req.value("origin", "template"));
  } else {
    WEFT_CHECK(!model_dir.empty(), "a request without \"template\" needs --model DIR");
    tmpl = weft::load_chat_template(model_dir);
  }
  weft::ChatContext ctx;
  ctx.bos_token = req.value("bos_token", "");
  ctx.eos_token = req.value("eos_token", "");
  ctx.add_generation_prompt = req.value("add_generation_prompt", false);
  if (req.contains("extra")) ctx.extra = req["extra"];
  const ordered_json& messages = req.at("messages");
  const weft::Rendered r = tmpl->render(messages, ctx);
  ordered_json out = {{"text", r.text}, {"generation_spans", spans_json(r.generation_spans)}};
  if (req.value("assistant_spans", false)) out["assistant_spans"] = spans_json(tmpl->assistant_spans(messages, ctx));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir;
  for (int k = 1; k < argc; ++k) {
    if (!std::strcmp(argv[k], "--model") && k + 1 < argc) {
      model_dir = argv[++k];
    } else {
      std::fprintf(stderr, "usage: weft_chat_tool [--model DIR] < requests.jsonl\n");
      return 2;
    }
  }
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    ordered_json out;
    try {
      out = serve(ordered_json::parse(line), model_dir);
    } catch (const std::exception& e) {
      out = {{"error", e.what()}};
    }
    // Rendered text may hold any bytes a template produced; replace invalid UTF-8 rather than throw.
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n" << std::flush;
  }
  return 0;
}
