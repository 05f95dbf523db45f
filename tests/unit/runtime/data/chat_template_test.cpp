// ChatTemplate's errors: one line naming the template's origin and line and what is wrong
// (syntax, unknown filter/test/tag, raise_exception, type errors), and bounded failure instead
// of a hang or a stack overflow on hostile templates.
#include "runtime/data/chat_template.h"

#include <gtest/gtest.h>

#include "weft/error.h"

namespace weft {
namespace {

using nlohmann::ordered_json;

std::string error_of(const std::string& source, const ordered_json& messages = ordered_json::array()) {
  try {
    ChatTemplate t(source, "tmpl.jinja");
    t.render(messages, ChatContext{});
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    return msg;
  }
  return "(no error)";
}

TEST(ChatTemplate, SyntaxErrorsNameOriginAndLine) {
  EXPECT_EQ(error_of("a\nb\n{% if x %}\nno end"), "tmpl.jinja:4: unexpected end of template: the block opened on line 3 "
                                                 "needs {% endif %}");
  EXPECT_EQ(error_of("line1\n{{ x | nosuch }}"), "tmpl.jinja:2: unknown filter 'nosuch'");
  EXPECT_EQ(error_of("\n\n{{ x is nosuch }}"), "tmpl.jinja:3: unknown test 'nosuch'");
  EXPECT_EQ(error_of("{% include 'other.jinja' %}").rfind("tmpl.jinja:1: unsupported tag {% include %}", 0), 0u);
  EXPECT_EQ(error_of("{{ 1 + }}"), "tmpl.jinja:1: unexpected '}}' in an expression");
  EXPECT_EQ(error_of("{{ (1 + }}"), "tmpl.jinja:1: unexpected '}'");
  EXPECT_EQ(error_of("{{ 'open"), "tmpl.jinja:1: unterminated string literal");
  EXPECT_EQ(error_of("\n{# never closed"), "tmpl.jinja:2: unterminated comment ({# without #})");
  EXPECT_EQ(error_of("{% break %}"), "tmpl.jinja:1: {% break %} outside a for loop");
  EXPECT_EQ(error_of("{% endif %}"), "tmpl.jinja:1: unexpected {% endif %} (no open block it closes)");
}

TEST(ChatTemplate, RuntimeErrorsNameOriginAndLine) {
  EXPECT_EQ(error_of("x\n{{ raise_exception('Roles must alternate') }}"),
            "tmpl.jinja:2: raise_exception: Roles must alternate");
  EXPECT_EQ(error_of("{% for m in messages %}\n{{ m.content + 1 }}{% endfor %}", ordered_json::parse(R"([{"content": "a"}])")),
            "tmpl.jinja:2: unsupported operand type(s) for +: 'str' and 'int'");
  EXPECT_EQ(error_of("{{ nothing.attr }}"), "tmpl.jinja:1: 'nothing' is undefined");
  EXPECT_EQ(error_of("{{ 5() }}"), "tmpl.jinja:1: 'int' object is not callable");
}

TEST(ChatTemplate, HostileTemplatesFailInsteadOfHanging) {
  std::string parens = "{{ ";
  parens.append(5000, '(').append("1").append(5000, ')').append(" }}");
  EXPECT_NE(error_of(parens).find("nested more than"), std::string::npos);
  std::string deep;
  for (int k = 0; k < 5000; ++k) deep += "{% if true %}";
  EXPECT_NE(error_of(deep).find("nested more than"), std::string::npos);
  EXPECT_NE(error_of("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").find("macro calls nested more than"),
            std::string::npos);
  EXPECT_NE(error_of("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}").find("steps"),
            std::string::npos);
  EXPECT_NE(error_of("{{ range(1000000) | length }}").find("range too big"), std::string::npos);
  EXPECT_NE(error_of("{{ 'x' * 10000000000 }}").find("too large"), std::string::npos);
}

TEST(ChatTemplate, AssistantSpansByPrefix) {
  ChatTemplate t("{% for m in messages %}<{{ m.role }}>{{ m.content }}</>{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}",
                 "chatml-like");
  const auto msgs = ordered_json::parse(R"([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                                            {"role": "user", "content": "?"}, {"role": "assistant", "content": "!"}])");
  const Rendered r = t.render(msgs, ChatContext{});
  ASSERT_EQ(r.text, "<user>hi</><assistant>yo</><user>?</><assistant>!</>");
  const ByteSpans spans = t.assistant_spans(msgs, ChatContext{});
  ASSERT_EQ(spans.size(), 2u);
  EXPECT_EQ(r.text.substr(spans[0].first, spans[0].second - spans[0].first), "yo</>");
  EXPECT_EQ(r.text.substr(spans[1].first, spans[1].second - spans[1].first), "!</>");
}

}  // namespace
}  // namespace weft
