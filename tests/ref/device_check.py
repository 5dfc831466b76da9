#!/usr/bin/env python3
"""Cross-checks run on a machine with transformers + peft (the lent device), writing the
results to $OUT (or ./out-device):

1. Hugging Face GPT2LMHeadModel loads tests/ref/tiny, tiny-f16, tiny-bf16 and reproduces the
   logits of tests/ref/tiny_ref.safetensors (our independent PyTorch forward).
2. PEFT: a LoRA adapter (r=4, alpha=8, c_attn + c_proj + c_fc, random A and B) on tiny,
   saved with save_pretrained -> peft_adapter/, and the adapted model's logits for the
   reference tokens -> peft_ref.safetensors. qlora must load that adapter and match.
3. GPT-2 tokenizer ids (slow GPT2Tokenizer, the Python reference) for test strings, from
   the vocab.json/merges.txt given as argv[1] -> tokenizer_cases.json.
4. safetensors files written by qlora (argv[2:], if any) load with safetensors.torch.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.environ.get("OUT", "out-device")
os.makedirs(OUT, exist_ok=True)
report = {}

from transformers import GPT2LMHeadModel, GPT2Tokenizer  # noqa: E402

ref = load_file(os.path.join(HERE, "tiny_ref.safetensors"))
tokens = ref["tokens"].long()
for name in ["tiny", "tiny-f16", "tiny-bf16"]:
    m = GPT2LMHeadModel.from_pretrained(os.path.join(HERE, name), torch_dtype=torch.float32).eval()
    with torch.no_grad():
        logits = m(tokens).logits
    d = (logits - ref["logits"]).abs().max().item()
    report[f"hf_{name}_max_abs_diff"] = d
    print(f"HF GPT2LMHeadModel {name}: max |logits - ref| = {d:.3g}")

from peft import LoraConfig, get_peft_model  # noqa: E402

torch.manual_seed(7)
base = GPT2LMHeadModel.from_pretrained(os.path.join(HERE, "tiny"), torch_dtype=torch.float32)
cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["c_attn", "c_proj", "c_fc"],
                 init_lora_weights=False, task_type="CAUSAL_LM", fan_in_fan_out=True)
pm = get_peft_model(base, cfg).eval()
adir = os.path.join(OUT, "peft_adapter")
pm.save_pretrained(adir)
with torch.no_grad():
    logits = pm(tokens).logits
save_file({"logits": logits.contiguous(), "tokens": ref["tokens"]}, os.path.join(OUT, "peft_ref.safetensors"),
          metadata={"format": "pt"})
report["peft_keys"] = sorted(load_file(os.path.join(adir, "adapter_model.safetensors")).keys())[:4]
print("PEFT adapter saved:", os.listdir(adir))

if len(sys.argv) > 1:
    tok = GPT2Tokenizer(os.path.join(sys.argv[1], "vocab.json"), os.path.join(sys.argv[1], "merges.txt"))
    cases = ["Hello world", "Hello world's  end\n", "a\n\nb", "I'll we've they're it's don't 'S 'LL",
             "123 4567 3.14159 1,000,000", "naïve café résumé", "日本語のテキストです。", "👍🏽 🎉 emoji",
             "a   b\t\tc \n\n  d", "line one\r\nline two\r\n", "hi<|endoftext|>there", "!!!??? ... ---",
             "x\x1cy\x1fz", "non\u00a0breaking", "   leading", "trailing   ", "\n", " ", "",
             "The QLoRA paper fine-tunes a 65B model on one 48GB GPU.", "Ǆungla Ⅻ ½ ①",
             "tab\tafter", "mixed123abc 456def", "        eight spaces then word"]
    out = [{"text": c, "ids": tok.encode(c)} for c in cases]
    with open(os.path.join(OUT, "tokenizer_cases.json"), "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
    print("tokenizer cases:", len(out))

for path in sys.argv[2:]:
    try:
        t = load_file(path)
        report[f"load_{os.path.basename(path)}"] = f"ok, {len(t)} tensors"
    except Exception as e:  # report, do not stop
        report[f"load_{os.path.basename(path)}"] = f"FAILED: {e}"
    print(path, report[f"load_{os.path.basename(path)}"])

with open(os.path.join(OUT, "report.json"), "w") as f:
    json.dump(report, f, indent=1, default=str)
