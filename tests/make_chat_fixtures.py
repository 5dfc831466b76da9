#!/usr/bin/env python3
"""Expected renderings of chat templates, made by the real jinja2, for tests/test_chat_template.c.

Renders every template of tests/ref/chat/templates/ (written for these tests) and
tests/ref/chat/named/ (copies of qlora's named templates; the C test checks they are the same
text as src/chat_template_load.c) over the conversations below, with and without
add_generation_prompt, in the environment transformers' apply_chat_template builds:
jinja2's ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with the
loopcontrols extension, a {% generation %} block that renders its body, the globals
raise_exception and strftime_now, and tojson as json.dumps(ensure_ascii=False). Variables are
the conversation's, plus tools=None and documents=None when it has none.

A rendering that raises records the error's type, message and template line instead: the C
test then expects qlora to fail at that line (with the same message for raise_exception).

Run with Debian's jinja2 (apt-get install python3-jinja2), from the repository root:
    /usr/bin/python3 tests/make_chat_fixtures.py      # writes tests/ref/chat/cases.json
"""
import datetime
import glob
import json
import os
import sys
import traceback

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref", "chat")


class Generation(jinja2.ext.Extension):
    """{% generation %}...{% endgeneration %}: the body, rendered as it is."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


HARD = ("Line one\nline two\r\nline three\rend\ttab  \u00e9\u00e8 \u4e2d\u6587 \U0001F600 e\u0301 "
        "quotes ' \" and \\ backslash, braces {{ not_a_var }} {% if x %} {# not a comment #} "
        "<|im_end|> </s> [INST]")
TOOLS = [{"type": "function", "function": {
    "name": "get_forecast", "description": "Forecast for a city, \u00b0C",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                                    "threshold": {"type": "number", "default": 21.5}},
                   "required": ["city"]},
    "return": {"type": "string"}}}]

# name -> variables (messages and whatever else the template reads)
CONVERSATIONS = {
    "basic": {"messages": [{"role": "user", "content": "What is the weather in Oslo?"},
                           {"role": "assistant", "content": "Cold and clear, -3 \u00b0C."}],
              "bos_token": "<s>", "eos_token": "</s>"},
    "system": {"messages": [{"role": "system", "content": "You answer in one sentence."},
                            {"role": "user", "content": "Will it rain in Paris?"},
                            {"role": "assistant", "content": "  Yes, after noon.  "},
                            {"role": "user", "content": "And tomorrow?"}],
               "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "hard": {"messages": [{"role": "system", "content": "\u00a0\u3000 padded with Unicode spaces \u2003\n"},
                          {"role": "user", "content": HARD},
                          {"role": "assistant", "content": "\n\n  reply with {{ braces }} and 'quotes'\n"}],
             "bos_token": "<s>", "eos_token": "</s>"},
    "empty_content": {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}],
                      "eos_token": "<|im_end|>"},
    "long": {"messages": [{"role": "user" if i % 2 == 0 else "assistant", "content": "turn %d" % i}
                          for i in range(12)],
             "bos_token": "<s>", "eos_token": "</s>"},
    "single": {"messages": [{"role": "user", "content": "Hi"}]},
    "bad_role": {"messages": [{"role": "user", "content": "Hi"}, {"role": "robot", "content": "beep"}],
                 "bos_token": "<s>", "eos_token": "</s>"},
    "not_alternating": {"messages": [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
                        "bos_token": "<s>", "eos_token": "</s>"},
    "no_messages": {"messages": [], "bos_token": "<s>", "eos_token": "</s>"},
    "tools": {"messages": [
        {"role": "system", "content": "Use the tools."},
        {"role": "user", "content": "Forecast for Bergen?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call00001", "type": "function",
             "function": {"name": "get_forecast", "arguments": {"city": "Bergen", "days": 2}}}]},
        {"role": "tool", "tool_call_id": "call00001", "content": "{\"rain\": true, \"max\": 9}"},
        {"role": "tool", "tool_call_id": "call00001", "content": "second result"},
        {"role": "assistant", "content": "Rain, up to 9 \u00b0C."}],
        "tools": TOOLS, "bos_token": "<s>", "eos_token": "</s>"},
}

# Templates whose output hardly depends on the conversation run over these only.
FEW = ["basic", "hard", "no_messages"]
ONLY = {"expressions": FEW, "whitespace": FEW + ["system"], "whitespace_crlf": FEW,
        "whitespace_cr": ["basic"], "unicode_space": ["basic"]}


def synthesized(templates):
    """Templates whose bytes matter: CR LF and CR line ends, Unicode spaces before tags."""
    ws = templates["whitespace"]
    return {
        "whitespace_crlf": ws.replace("\n", "\r\n") + "\r\n",
        "whitespace_cr": ws.replace("\n", "\r") + "\n\n",
        "unicode_space": ("\u00a0\u3000{% if true %}A{% endif %}\n\u2003 {% if true %}B{% endif %}\n"
                          "C \u00a0{%- if true %} D{% endif %}\n\u2028{{ 'E' }}\n\u0085{# c #}F\n"),
    }


def error_line(exc):
    """The template line an exception was raised at (jinja2 rewrites tracebacks to it)."""
    if getattr(exc, "lineno", None):
        return exc.lineno
    line = 0
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == "<template>":
            line = lineno
    return line


def render(env, text, variables, agp):
    v = {"tools": None, "documents": None, **variables, "add_generation_prompt": agp}
    try:
        return {"expected": env.from_string(text).render(**v)}
    except Exception as exc:  # noqa: BLE001 -- every failure is a fixture
        return {"error_type": type(exc).__name__, "error": str(exc), "error_line": error_line(exc)}


def main():
    env = make_env()
    templates = {}
    for kind in ("templates", "named"):
        for path in sorted(glob.glob(os.path.join(ROOT, kind, "*.jinja"))):
            name = os.path.basename(path)[:-6]
            with open(path, encoding="utf-8", newline="") as f:
                templates[("named/" if kind == "named" else "") + name] = f.read()
    templates.update(synthesized(templates))
    cases = []
    for name, text in templates.items():
        for conv in ONLY.get(name, CONVERSATIONS):
            for agp in (False, True):
                case = {"template": name, "conversation": conv, "add_generation_prompt": agp}
                case.update(render(env, text, CONVERSATIONS[conv], agp))
                cases.append(case)
    out = {"generator": "tests/make_chat_fixtures.py", "jinja2": jinja2.__version__,
           "python": sys.version.split()[0], "templates": templates, "conversations": CONVERSATIONS,
           "cases": cases}
    path = os.path.join(ROOT, "cases.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    n_err = sum("error" in c for c in cases)
    print(f"{path}: {len(cases)} cases ({n_err} errors) over {len(templates)} templates, jinja2 {jinja2.__version__}")


if __name__ == "__main__":
    main()
