"""Chat templates: Weft's Jinja interpreter (runtime/data/chat_template.h, driven through
weft_chat_tool) against transformers' own renderer (render_jinja_template, the function
apply_chat_template calls), on the published templates of Llama 3 / 3.1 Instruct, Qwen 2.5
Instruct and Llama 2 chat (tests/parity/chat_templates.json: each model's tokenizer_config.json
"chat_template" string), on the same templates with {% generation %} blocks (spans equal to
transformers' AssistantTracker indices, compared in bytes), and on a list of Jinja constructs.
No downloads: transformers gets the template text directly."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pyutil"))
import weft_test as wt  # noqa: E402
from transformers.utils.chat_template_utils import render_jinja_template  # noqa: E402

TOOL = os.path.join(wt.BUILD, "tests", "weft_chat_tool")
HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = json.load(open(os.path.join(HERE, "chat_templates.json"), encoding="utf-8"))
FAILURES = []


def weft_render(requests, model_dir=None):
    """One weft_chat_tool run for a batch of requests; returns its responses."""
    cmd = [TOOL] + (["--model", model_dir] if model_dir else [])
    p = subprocess.run(cmd, input="\n".join(json.dumps(r, ensure_ascii=False) for r in requests) + "\n",
                       capture_output=True, text=True, encoding="utf-8", timeout=600)
    assert p.returncode == 0, p.stderr
    out = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(out) == len(requests), (len(out), len(requests), p.stderr)
    return out


def hf_render(template, messages, add_generation_prompt=False, extra=None, tokens=True, mask=False):
    """transformers' rendering as apply_chat_template(tokenize=False) does it: None-valued keys
    dropped, special tokens and extra kwargs as template variables. Returns (text, char spans)
    or (None, error text)."""
    messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
    kwargs = dict(extra or {})
    tools = kwargs.pop("tools", None)
    special = {"bos_token": "<s>", "eos_token": "</s>"} if tokens else {}
    try:
        texts, indices = render_jinja_template([messages], tools=tools, chat_template=template,
                                               add_generation_prompt=add_generation_prompt,
                                               return_assistant_tokens_mask=mask, **{**special, **kwargs})
    except Exception as e:  # the template raised: Weft must report an error too
        return None, f"{type(e).__name__}: {e}"
    return texts[0], (indices[0] if mask else [])


def char_to_byte_spans(text, spans):
    return [[len(text[:b].encode("utf-8")), len(text[:e].encode("utf-8"))] for b, e in spans]


def check(name, ok, detail=""):
    if not ok:
        FAILURES.append(f"{name}: {detail}")
        print(f"FAIL {name}: {detail}")


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city, in °C.",
                                      "parameters": {"type": "object", "required": ["city"],
                                                     "properties": {"city": {"type": "string"},
                                                                    "days": {"type": "integer", "default": 1}}}}},
    {"type": "function", "function": {"name": "zeta", "description": "Sorted keys would put me first",
                                      "parameters": {"type": "object", "properties": {}}}},
]

CONVERSATIONS = {
    "multi_turn": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "6."},
    ],
    "unicode_spaces_empty": [
        {"role": "user", "content": "  Grüße, 世界! 🚀 trailing spaces   \n"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "\tquote ' and \" and \\ backslash"},
        {"role": "assistant", "content": "  Ça va — très bien.  "},
    ],
    "single_user": [{"role": "user", "content": "Hello"}],
    "no_system_two_turns": [
        {"role": "user", "content": "A"},
        {"role": "assistant", "content": "B", "extra_key": None},
        {"role": "user", "content": "C"},
        {"role": "assistant", "content": "D\n"},
    ],
}

TOOL_CONVERSATION = [
    {"role": "system", "content": "Use tools."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}]},
    {"role": "tool", "content": "{\"temp\": 21.5}"},
    {"role": "assistant", "content": "It is 21.5 °C."},
]


def with_generation(name, template):
    """The published template with {% generation %} around each assistant reply and its
    end-of-turn marker (the text is unchanged)."""
    edits = {
        "llama3": ("{{ content }}",
                   "{% if message['role'] == 'assistant' and loop.index0 > 0 %}"
                   "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% generation %}"
                   "{{ message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}{% else %}{{ content }}{% endif %}"),
        "llama31": ("{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}",
                    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}\n"
                    "        {%- if message.role == 'assistant' %}{% generation %}{{- message['content'] | trim + '<|eot_id|>' }}"
                    "{% endgeneration %}{% else %}{{- message['content'] | trim + '<|eot_id|>' }}{% endif %}"),
        "qwen25": ("{%- if (message.role == \"user\") or",
                   "{%- if message.role == \"assistant\" and not message.tool_calls %}\n"
                   "        {{- '<|im_start|>assistant\\n' }}{% generation %}{{- message.content + '<|im_end|>' + '\\n' }}"
                   "{% endgeneration %}\n    {%- elif (message.role == \"user\") or"),
        "llama2": ("{{ ' '  + content.strip() + ' ' + eos_token }}",
                   "{% generation %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endgeneration %}"),
    }
    old, new = edits[name]
    assert template.count(old) == 1, name
    return template.replace(old, new)


def published_templates():
    cases = []  # (label, template, messages, add_generation_prompt, extra)
    for name, template in TEMPLATES.items():
        for conv_name, messages in CONVERSATIONS.items():
            for agp in (False, True):
                cases.append((f"{name}/{conv_name}/agp={agp}", template, messages, agp, {}))
    for name in ("llama31", "qwen25"):
        for agp in (False, True):
            cases.append((f"{name}/tools/agp={agp}", TEMPLATES[name], TOOL_CONVERSATION, agp, {"tools": TOOLS}))
    cases.append(("llama31/tools_in_system", TEMPLATES["llama31"], TOOL_CONVERSATION, False,
                  {"tools": TOOLS, "tools_in_user_message": False, "date_string": "01 Jan 2025"}))
    cases.append(("llama31/builtin_tools", TEMPLATES["llama31"], CONVERSATIONS["multi_turn"], True,
                  {"builtin_tools": ["brave_search", "code_interpreter", "wolfram_alpha"]}))
    # Llama 2 raises on roles that do not alternate: both must fail.
    cases.append(("llama2/raises", TEMPLATES["llama2"], [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
                  False, {}))
    return cases


def test_published_templates():
    cases = published_templates()
    requests = [{"template": t, "origin": label, "messages": m, "bos_token": "<s>", "eos_token": "</s>",
                 "add_generation_prompt": agp, "extra": extra} for label, t, m, agp, extra in cases]
    for (label, t, m, agp, extra), got in zip(cases, weft_render(requests)):
        want, err = hf_render(t, m, agp, extra)
        if want is None:
            check(label, "error" in got and "Conversation roles must alternate" in got["error"], f"want error {err}, got {got}")
        else:
            check(label, got.get("text") == want, f"\n weft: {got.get('text', got.get('error'))!r}\n   hf: {want!r}")
    print(f"published templates: {len(cases)} renders compared")


def test_generation_spans():
    requests, expected = [], []
    for name, template in TEMPLATES.items():
        gen = with_generation(name, template)
        convs = list(CONVERSATIONS.items()) + ([("tools", TOOL_CONVERSATION)] if name in ("llama31", "qwen25") else [])
        for conv_name, messages in convs:
            extra = {"tools": TOOLS} if conv_name == "tools" else {}
            want, spans = hf_render(gen, messages, False, extra, mask=True)
            plain, _ = hf_render(template, messages, False, extra)
            assert want == plain, f"{name}: the generation variant must render the published text"
            base = {"messages": messages, "bos_token": "<s>", "eos_token": "</s>", "extra": extra, "assistant_spans": True}
            requests.append({"template": gen, "origin": f"{name}+generation", **base})
            requests.append({"template": template, "origin": name, **base})
            expected.append((f"{name}/{conv_name}", want, char_to_byte_spans(want, spans)))
    got = weft_render(requests)
    for k, (label, text, spans) in enumerate(expected):
        gen, plain = got[2 * k], got[2 * k + 1]
        check(label + "/text", gen.get("text") == text, gen)
        check(label + "/generation_spans", gen.get("generation_spans") == spans, f"{gen.get('generation_spans')} != {spans}")
        check(label + "/assistant_spans(generation)", gen.get("assistant_spans") == spans, gen.get("assistant_spans"))
        # Without generation blocks the prefix rule finds the same text (tool-call turns aside,
        # which the generation variants leave unmarked).
        if "tools" not in label:
            check(label + "/assistant_spans(prefix)", plain.get("assistant_spans") == spans,
                  f"{plain.get('assistant_spans', plain.get('error'))} != {spans}")
    print(f"generation spans: {len(expected)} conversations compared")


# Jinja constructs, each rendered by both with messages=[] and these variables.
VARS = {"d": {"b": 1, "a": [1, 2.5, None, True], "é": "ü"}, "s": "  Hello World  ", "n": 7, "f": 2.675,
        "items": [{"name": "x", "v": 3}, {"name": "Y", "v": 1}, {"v": 2}], "neg": -3}
SNIPPETS = [
    "{{ 1.0 }} {{ 1e20 }} {{ 1.5e-7 }} {{ 10/4 }} {{ 7//2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 0.1 + 0.2 }}",
    "{{ [1, 'a', none, true, {'k': 'v'}] }} {{ ('a',) }} {{ (1, 2) }} {{ ['it\\'s', \"q\\\"\"] }} {{ 'a\\tb\\n' ~ '\\u00e9\\x41' }}",
    "{{ d }}|{{ d | tojson }}|{{ d | tojson(indent=2) }}|{{ d | tojson(separators=(',', ':'), sort_keys=true) }}",
    "{{ d.b }} {{ d['a'][1] }} {{ d.missing }}|{{ d.missing is defined }} {{ d.get('b') }} {{ d.get('z', 'dflt') }}",
    "{% for k, v in d.items() %}{{ loop.index }}/{{ loop.length }}:{{ k }}={{ v }}{{ ',' if not loop.last }}{% endfor %}",
    "{% for k in d %}{{ k }}{{ loop.revindex }}{{ loop.first }}{% else %}none{% endfor %}{% for x in [] %}x{% else %}empty{% endfor %}",
    "{% for x in [1, 2, 3, 4] if x is even %}{{ x }}{{ loop.index0 }}{% endfor %}",
    "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{{ x }}{% if x >= 5 %}{% break %}{% endif %}{% endfor %}",
    "{% set ns = namespace(total=0, seen=[]) %}{% for it in items %}{% set ns.total = ns.total + it.v %}{% endfor %}{{ ns.total }}",
    "{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = i * 10 %}{{ x }}{% endfor %}{{ x }}",
    "{% set a, b = 1, 'two' %}{{ a }}{{ b }}{% set blk %}[{{ a }}]{% endset %}{{ blk | length }}{{ blk }}",
    "{% macro greet(who, punct='!') %}Hi {{ who }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', punct='?') }}",
    "{{ s | trim }}|{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ s | upper }}|{{ s | lower }}|{{ s.split() }}",
    "{{ 'a,b,,c'.split(',') }} {{ 'a b c'.split(' ', 1) }} {{ 'x.y'.startswith('x') }} {{ 'x.y'.endswith(('q', 'y')) }}",
    "{{ 'hello wORLD'|title }} {{ 'hello wORLD'.title() }} {{ 'hELLO'|capitalize }} {{ 'aXbX'|replace('X', '-') }} {{ 'ab'.replace('', '.') }}",
    "{{ 'abcdef'[1:4] }} {{ 'abcdef'[::-2] }} {{ [1, 2, 3, 4][-2:] }} {{ 'é中🚀'[1] }} {{ 'é中🚀' | length }} {{ 'é中🚀'[-1:] }}",
    "{{ items | map(attribute='name') | list }} {{ items | selectattr('name', 'defined') | map(attribute='v') | join('+') }}",
    "{{ items | rejectattr('name') | list }} {{ [1, 2, 3, 4] | select('odd') | list }} {{ [1, 2, 3] | reject('equalto', 2) | list }}",
    "{{ [3, 1, 2] | sort }} {{ ['b', 'A', 'c'] | sort }} {{ items | sort(attribute='v') | map(attribute='v') | list }} {{ [1, 2] | reverse | list }}",
    "{{ [1, 1, 'A', 'a'] | unique | list }} {{ d | dictsort }} {{ [4, 9, 2] | max }} {{ [4, 9, 2] | min }} {{ [1, 2.5] | sum }}",
    "{{ [1, 2] | first }} {{ 'abc' | last }} {{ [] | first is defined }} {{ 'x' | list }} {{ d | items | list }} {{ d | length }}",
    "{{ f | round }} {{ f | round(2) }} {{ 2.5 | round }} {{ 3.5 | round }} {{ 7 | round }} {{ f | round(1, 'floor') }} {{ neg | abs }}",
    "{{ '42' | int + 1 }} {{ '4.7' | int }} {{ 'x' | int(5) }} {{ '2.5' | float }} {{ 3 | float }} {{ n | string ~ '!' }}",
    "{{ missing | default('d') }} {{ '' | default('d') }} {{ '' | default('d', true) }} {{ none | d('x') }}",
    "{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(3, first=true) }}|{{ 'a\\n\\nb' | indent('> ', blank=true) }}",
    "{{ n is odd }} {{ n is divisibleby 7 }} {{ n is number }} {{ true is number }} {{ true is integer }} {{ 1.5 is float }}",
    "{{ s is string }} {{ d is mapping }} {{ items is sequence }} {{ missing is undefined }} {{ none is none }} {{ n is not none }}",
    "{{ 'a' in 'cat' }} {{ 'z' not in 'cat' }} {{ 2 in [1, 2] }} {{ 'b' in d }} {{ 1 < 2 < 3 }} {{ 1 == 1.0 }} {{ [1, 2] == [1, 2] }}",
    "{{ 1 if n > 3 else 0 }}|{{ 'x' if false }}|{{ none }}|{{ true }}|{{ n and 'y' }}|{{ 0 or '' }}|{{ not n }}|{{ -n }}",
    "{{ 'a' ~ 1 ~ none ~ true ~ 1.5 }} {{ 'ab' * 3 }} {{ [0] * 3 }} {{ [1] + [2] }} {{ 'x' + 'y' }}",
    "{{ dict(a=1, b='x') }} {{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ 'done' | safe }} {{ 'one two  three' | wordcount }}",
    "a\n  {# comment #}\nb\n  {% if true %}\nc\n  {{ n }}\n  {%+ if true %}x{% endif +%}\ny\n  {% endif %}  \nz\n\n",
    "a  {% if true %}  b {% endif %}\n  c\r\nd \n {%- if true -%} \n e \n {%- endif %}  {{- ' f ' -}}  g",
    "{% raw %}{{ not rendered }}{% endraw %}{# {{ also not }} #}end",
    "{{ raise_exception('bad ' ~ n) }}",
    "{{ 1 + 'a' }}",
    "{{ missing.attr }}",
]


def test_snippets():
    requests = [{"template": s, "origin": f"snippet{k}", "messages": [], "extra": VARS} for k, s in enumerate(SNIPPETS)]
    for k, (snippet, got) in enumerate(zip(SNIPPETS, weft_render(requests))):
        want, err = hf_render(snippet, [], extra=VARS, tokens=False)
        if want is None:
            check(f"snippet{k}", "error" in got and got["error"].startswith(f"snippet{k}:1:"), f"want an error ({err}), got {got}")
        else:
            check(f"snippet{k} {snippet[:40]!r}", got.get("text") == want,
                  f"\n weft: {got.get('text', got.get('error'))!r}\n   hf: {want!r}")
    print(f"snippets: {len(SNIPPETS)} compared")


def test_errors_and_model_dir():
    # A template that is not prefix-stable and has no generation blocks: an error naming it and
    # the assistant message.
    unstable = "{% for m in messages %}{{ m.content }}{% endfor %}{% if messages[-1].role == 'user' %}?{% endif %}"
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    got = weft_render([{"template": unstable, "origin": "unstable.jinja", "messages": msgs, "assistant_spans": True}])[0]
    check("not prefix-stable", "error" in got and got["error"].startswith("unstable.jinja:")
          and "assistant message 1" in got["error"] and "generation" in got["error"], got)

    # A model directory: chat_template.jinja wins over tokenizer_config.json, whose list form
    # is read by its "default" entry.
    d = wt.tmpdir("chat_model")
    config = {"chat_template": [{"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": TEMPLATES["qwen25"]}]}
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f)
    conv = CONVERSATIONS["multi_turn"]
    got = weft_render([{"messages": conv}], model_dir=d)[0]
    check("model dir: list default", got.get("text") == hf_render(TEMPLATES["qwen25"], conv)[0], got)
    with open(os.path.join(d, "chat_template.jinja"), "w", encoding="utf-8") as f:
        f.write(TEMPLATES["llama3"])
    got = weft_render([{"messages": conv, "bos_token": "<s>"}], model_dir=d)[0]
    check("model dir: chat_template.jinja", got.get("text") == hf_render(TEMPLATES["llama3"], conv)[0], got)
    os.remove(os.path.join(d, "chat_template.jinja"))
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"chat_template": "{% for m in messages %}{{ m.content | nosuchfilter }}{% endfor %}"}, f)
    got = weft_render([{"messages": conv}], model_dir=d)[0]
    check("model dir: unknown filter", got.get("error", "").startswith(os.path.join(d, "tokenizer_config.json") + ":chat_template:1:")
          and "unknown filter 'nosuchfilter'" in got.get("error", ""), got)


if __name__ == "__main__":
    test_published_templates()
    test_generation_spans()
    test_snippets()
    test_errors_and_model_dir()
    if FAILURES:
        print(f"{len(FAILURES)} failures")
        sys.exit(1)
    print("ok")
