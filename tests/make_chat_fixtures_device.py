#!/usr/bin/env python3
"""Chat fine-tuning fixtures for qlora (issue 16), written by transformers itself.

What it makes under OUTDIR (committed as tests/ref/chat_data/; tests/test_chat_fixtures.c reads it):
  tok_NAME/        tokenizer.json and tokenizer_config.json of one case: the fixture tokenizers of
                   tests/ref/llama/tok_* (tok_llama3: tok_qwen2's with Llama 3's four special
                   tokens added) with a chat template written here in the style of the real
                   model's (SmolLM2-Instruct, Qwen2.5-Instruct, Llama-2-chat, Mistral-Instruct-v0.1,
                   TinyLlama-chat / zephyr, Llama-3-Instruct) and its bos_token / eos_token
  model_NAME/      a tiny random LlamaForCausalLM (fp32, vocabulary = the tokenizer's) with the
                   same tokenizer files, for the loss checks
  chat_cases.json  per case and conversation: the messages, apply_chat_template's text and ids,
                   the assistant contents' tokens and the end-of-turn tokens as transformers'
                   {% generation %} masks give them, the expected labels for train_on_eos
                   turn / all / last / none (roles_to_train [assistant]), the generation prompt's
                   text and ids, and (model cases) the loss of LlamaForCausalLM over the "turn"
                   labels: what qlora's first training step must report
  VERSIONS.json    library versions, the date, this script's sha256

How the expected labels are made, independently of qlora's way (text spans): each template comes
in three renderings that give the same text (asserted): the template itself, one with every
assistant content inside {% generation %}, and one with the end-of-turn text after each turn
inside {% generation %} (assistant turns only, and every turn for "all"). transformers maps each
generation block to tokens with the fast tokenizer's char_to_token
(return_assistant_tokens_mask=True), so the content tokens and the end-of-turn tokens are
transformers' own answer.

Run on the lent machine (CPU; no downloads: everything is built from files in the repository):
    /opt/torch/.venv/bin/python3 tests/make_chat_fixtures_device.py tests/ref/chat_data
Without transformers (a quick check of the templates with jinja2 alone):
    python3 tests/make_chat_fixtures_device.py --check-templates
"""
import datetime
import hashlib
import json
import os
import platform
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
LLAMA_REF = os.path.join(REPO, "tests", "ref", "llama")

# ---------------------------------------------------------------------------------------------
# templates: plain (what the folder holds), and the two marked renderings
# ---------------------------------------------------------------------------------------------

def marked(expr, kind, want, role_test="message['role'] == 'assistant'"):
    """Jinja that prints expr, inside {% generation %} when kind == want and role_test holds."""
    if kind != want:
        return "{{ " + expr + " }}"
    if role_test is None:
        return "{% generation %}{{ " + expr + " }}{% endgeneration %}"
    return ("{% if " + role_test + " %}{% generation %}{{ " + expr + " }}{% endgeneration %}"
            "{% else %}{{ " + expr + " }}{% endif %}")


def smollm2(kind):
    if kind == "plain":  # SmolLM2-Instruct's template
        return ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                "{% endif %}")
    eot_role = None if kind == "eot_all" else "message['role'] == 'assistant'"
    return ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
            "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
            "<|im_end|>\n' }}{% endif %}{{ '<|im_start|>' + message['role'] + '\n' }}"
            + marked("message['content']", kind, "content")
            + marked("'<|im_end|>'", "eot" if kind == "eot_all" else kind, "eot", eot_role)
            + "{{ '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def qwen2(kind):
    if kind == "plain":  # Qwen2.5-Instruct's template without its tools branch
        return ("{%- if messages[0]['role'] == 'system' %}\n"
                "    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
                "{%- else %}\n"
                "    {{- '<|im_start|>system\\n" + QWEN_SYSTEM + "<|im_end|>\\n' }}\n"
                "{%- endif %}\n"
                "{%- for message in messages %}\n"
                "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
                "(message.role == \"assistant\" and not message.tool_calls) %}\n"
                "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
                "    {%- endif %}\n"
                "{%- endfor %}\n"
                "{%- if add_generation_prompt %}\n"
                "    {{- '<|im_start|>assistant\\n' }}\n"
                "{%- endif %}\n")
    eot_role = None if kind == "eot_all" else "message['role'] == 'assistant'"
    eot_kind = "eot" if kind == "eot_all" else kind
    return ("{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' }}"
            + marked("messages[0]['content']", "plain", "content")
            + marked("'<|im_end|>'", eot_kind, "eot", None if kind == "eot_all" else "false")
            + "{{ '\\n' }}{%- else %}{{- '<|im_start|>system\\n" + QWEN_SYSTEM + "<|im_end|>\\n' }}{%- endif %}"
            "{%- for message in messages %}{%- if (message.role == \"user\") or (message.role == \"system\" and not "
            "loop.first) or (message.role == \"assistant\") %}{{- '<|im_start|>' + message.role + '\\n' }}"
            + marked("message.content", kind, "content")
            + marked("'<|im_end|>'", eot_kind, "eot", eot_role)
            + "{{ '\\n' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
            "{%- endif %}")


def llama2(kind):
    head = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
            "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
            "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
            "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles "
            "must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and "
            "system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + "
            "message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
            "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
            "{% elif message['role'] == 'assistant' %}")
    if kind == "plain":  # Llama-2-chat's template
        return head + "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
    return (head + "{{ ' ' }}" + marked("content.strip()", kind, "content", None) + "{{ ' ' }}"
            + marked("eos_token", "eot" if kind == "eot_all" else kind, "eot", None) + "{% endif %}{% endfor %}")


def mistral(kind):
    head = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
            "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
            "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
            "{% elif message['role'] == 'assistant' %}")
    tail = "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
    if kind == "plain":  # Mistral-7B-Instruct-v0.1's template
        return head + "{{ message['content'] + eos_token}}" + tail
    return (head + marked("message['content']", kind, "content", None)
            + marked("eos_token", "eot" if kind == "eot_all" else kind, "eot", None) + tail)


def zephyr(kind):
    if kind == "plain":  # TinyLlama-1.1B-Chat-v1.0's (zephyr) template: newlines after the block tags
        return ("{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + "
                "message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + "
                "message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'"
                "  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n"
                "{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}")
    eot_role = None if kind == "eot_all" else "message['role'] == 'assistant'"
    return ("{% for message in messages %}{{ '<|' + message['role'] + '|>\n' }}"
            + marked("message['content']", kind, "content")
            + marked("eos_token", "eot" if kind == "eot_all" else kind, "eot", eot_role)
            + "{{ '\n' }}{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}{% endfor %}")


def llama3(kind):
    if kind == "plain":  # Meta-Llama-3-8B-Instruct's template
        return ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
                "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
                "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
                "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant"
                "<|end_header_id|>\n\n' }}{% endif %}")
    eot_role = None if kind == "eot_all" else "message['role'] == 'assistant'"
    return ("{% for message in messages %}{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
            "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
            + marked("message['content'] | trim", kind, "content")
            + marked("'<|eot_id|>'", "eot" if kind == "eot_all" else kind, "eot", eot_role)
            + "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
            "{% endif %}")


# name: (template, tokenizer folder it starts from, bos, eos, system messages allowed, model)
CASES = {
    "smollm2": (smollm2, "tok_smollm2", "<|im_start|>", "<|im_end|>", True, True),
    "qwen2": (qwen2, "tok_qwen2", None, "<|im_end|>", True, False),
    "llama2": (llama2, "tok_llama2", "<s>", "</s>", True, True),
    "mistral": (mistral, "tok_llama2_metaspace", "<s>", "</s>", False, False),
    "zephyr": (zephyr, "tok_llama2", "<s>", "</s>", True, False),
    "llama3": (llama3, "tok_llama3", "<|begin_of_text|>", "<|eot_id|>", True, True),
}
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def conversations(system_ok):
    """The conversations of every case: three from data/chat, then whitespace, Unicode, newlines
    and special-token text inside contents, and a longer exchange."""
    convs = []
    with open(os.path.join(REPO, "data", "chat", "train.jsonl"), encoding="utf-8") as f:
        for line in f.readlines()[:3]:
            convs.append(json.loads(line)["messages"])
    convs += [
        [{"role": "user", "content": "  Hello there!  "}, {"role": "assistant", "content": "  Hi! How can I help?\n"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Café? 😀 日本"},
         {"role": "assistant", "content": "Oui — café ☕, 12 °C.\n\nBye."}],
        [{"role": "user", "content": "Say <|im_end|> please"}, {"role": "assistant", "content": "Fine: <|im_end|> said."}],
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
         {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}],
    ]
    if not system_ok:
        convs = [[m for m in c if m["role"] != "system"] for c in convs]
    return convs


# ---------------------------------------------------------------------------------------------
# jinja2 alone: the three renderings agree (no transformers needed)
# ---------------------------------------------------------------------------------------------

def jinja_env():
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):  # renders its body, as transformers' AssistantTracker does
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return nodes.CallBlock(self.call_method("_body", []), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.globals["raise_exception"] = raise_exception
    return env


def check_templates():
    env = jinja_env()
    for name, (tmpl, _, bos, eos, system_ok, _) in CASES.items():
        for conv in conversations(system_ok):
            for gen in (False, True):
                msgs = conv[:-1] if gen else conv
                texts = {k: env.from_string(tmpl(k)).render(messages=msgs, bos_token=bos or "", eos_token=eos,
                                                            add_generation_prompt=gen)
                         for k in ("plain", "content", "eot", "eot_all")}
                assert len(set(texts.values())) == 1, (name, texts)
        print(f"{name}: the plain and marked templates render alike")


# ---------------------------------------------------------------------------------------------
# transformers
# ---------------------------------------------------------------------------------------------

def wjson(path, obj, indent=1):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def make_tokenizer_folder(out, name, tmpl, src, bos, eos):
    """tok_NAME: the fixture tokenizer (Llama 3's specials added for llama3) and a
    tokenizer_config.json with the template and the case's bos / eos."""
    from tokenizers import AddedToken, Tokenizer
    d = os.path.join(out, f"tok_{name}")
    os.makedirs(d, exist_ok=True)
    if src == "tok_llama3":
        t = Tokenizer.from_file(os.path.join(LLAMA_REF, "tok_qwen2", "tokenizer.json"))
        t.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in LLAMA3_SPECIALS])
        t.save(os.path.join(d, "tokenizer.json"))
        with open(os.path.join(LLAMA_REF, "tok_qwen2", "tokenizer_config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
    else:
        shutil.copy(os.path.join(LLAMA_REF, src, "tokenizer.json"), os.path.join(d, "tokenizer.json"))
        with open(os.path.join(LLAMA_REF, src, "tokenizer_config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"  # the file as it is (5.x's LlamaTokenizer rebuilds it)
    cfg["bos_token"] = bos
    cfg["eos_token"] = eos
    cfg["chat_template"] = tmpl("plain")
    wjson(os.path.join(d, "tokenizer_config.json"), cfg, indent=2)
    return d


def load_tokenizer(d):
    """The folder's tokenizer.json as it is (transformers' generic fast tokenizer; 5.x's
    LlamaTokenizer would rebuild Llama 2's pre-tokenizer), with the case's bos / eos."""
    try:
        from transformers import PreTrainedTokenizerFast as Fast
    except ImportError:  # the 5.x name
        from transformers import TokenizersBackend as Fast
    with open(os.path.join(d, "tokenizer_config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    tok = Fast(tokenizer_file=os.path.join(d, "tokenizer.json"), bos_token=cfg.get("bos_token"),
               eos_token=cfg.get("eos_token"))
    tok.chat_template = cfg["chat_template"]
    return tok


def masks_of(tok, msgs, tmpl):
    """transformers' ids and the generation masks of the marked renderings."""
    out = {}
    for kind in ("plain", "content", "eot", "eot_all"):
        r = tok.apply_chat_template(msgs, chat_template=tmpl(kind), tokenize=True, return_dict=True,
                                    return_assistant_tokens_mask=kind != "plain")
        out[kind] = (list(r["input_ids"]), list(r.get("assistant_masks", [])))
    ids = out["plain"][0]
    for kind in ("content", "eot", "eot_all"):
        assert out[kind][0] == ids, f"the {kind} rendering tokenizes differently"
    return ids, out["content"][1], out["eot"][1], out["eot_all"][1]


def labels_for(ids, content, eot, eot_all):
    """Expected labels (-100 = not trained) for train_on_eos turn, all, last, none."""
    last = [0] * len(ids)
    runs = [i for i, m in enumerate(eot) if m]
    if runs:  # the last contiguous run of end-of-turn tokens
        k = len(runs) - 1
        while k > 0 and runs[k - 1] == runs[k] - 1:
            k -= 1
        for i in runs[k:]:
            last[i] = 1
    res = {}
    for mode, e in (("turn", eot), ("all", eot_all), ("last", last), ("none", [0] * len(ids))):
        res[mode] = [t if (c or x) else -100 for t, c, x in zip(ids, content, e)]
    return res


def make_model(out, name, tok_dir, tok, seed):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    kw = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=512, hidden_act="silu", initializer_range=0.02,
              attention_dropout=0.0, tie_word_embeddings=True, rms_norm_eps=1e-5,
              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    try:
        cfg = LlamaConfig(**kw, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                          attn_implementation="eager")
    except Exception:  # noqa: BLE001 - 4.x spelling
        cfg = LlamaConfig(**kw, rope_theta=10000.0)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).float().eval()
    d = os.path.join(out, f"model_{name}")
    model.save_pretrained(d)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tok_dir, f), os.path.join(d, f))
    return model


def case_fixtures(out, name, spec, seed):
    import torch
    tmpl, src, bos, eos, system_ok, with_model = spec
    d = make_tokenizer_folder(out, name, tmpl, src, bos, eos)
    tok = load_tokenizer(d)
    model = make_model(out, name, d, tok, seed) if with_model else None
    entry = {"name": name, "tokenizer": f"tok_{name}", "model": f"model_{name}" if with_model else None,
             "template": tmpl("plain"), "bos_token": bos, "eos_token": eos, "conversations": []}
    for msgs in conversations(system_ok):
        rendered = tok.apply_chat_template(msgs, tokenize=False)
        ids, content, eot, eot_all = masks_of(tok, msgs, tmpl)
        assert ids == tok(rendered, add_special_tokens=False)["input_ids"], "apply_chat_template != tokenizer(text)"
        assert sum(content) > 0 and sum(eot) > 0, f"{name}: no assistant tokens found"
        prompt = msgs[:-1]
        c = {"messages": msgs, "rendered": rendered, "input_ids": ids, "content_mask": content, "eot_mask": eot,
             "eot_mask_all": eot_all, "labels": labels_for(ids, content, eot, eot_all), "prompt_messages": prompt,
             "prompt_rendered": tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True),
             "prompt_ids": list(tok.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True,
                                                        return_dict=True)["input_ids"])}
        if model is not None:
            with torch.no_grad():
                lab = torch.tensor([c["labels"]["turn"]])
                c["loss_turn"] = model(input_ids=torch.tensor([ids]), labels=lab).loss.item()
        entry["conversations"].append(c)
    print(f"{name}: {len(entry['conversations'])} conversations, {sum(len(c['input_ids']) for c in entry['conversations'])} "
          f"tokens{', losses ' + str([round(c['loss_turn'], 4) for c in entry['conversations']]) if model else ''}")
    return entry


def versions():
    import importlib.metadata as md
    v = {"python": platform.python_version(), "date": datetime.date.today().isoformat()}
    for p in ("torch", "transformers", "tokenizers", "jinja2", "safetensors"):
        try:
            v[p] = md.version(p)
        except Exception:  # noqa: BLE001
            v[p] = None
    with open(os.path.abspath(__file__), "rb") as f:
        v["script_sha256"] = hashlib.sha256(f.read()).hexdigest()
    v["command"] = "python3 tests/make_chat_fixtures_device.py OUTDIR"
    return v


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--check-templates":
        check_templates()
        return
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "tests", "ref", "chat_data")
    os.makedirs(out, exist_ok=True)
    import torch
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    check_templates()
    cases = [case_fixtures(out, name, spec, 100 + k) for k, (name, spec) in enumerate(CASES.items())]
    wjson(os.path.join(out, "chat_cases.json"), {"cases": cases})
    wjson(os.path.join(out, "VERSIONS.json"), versions(), indent=2)
    print("wrote", out)


if __name__ == "__main__":
    main()
