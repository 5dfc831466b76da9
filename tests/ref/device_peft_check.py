#!/usr/bin/env python3
"""Interoperability check run where transformers + peft are installed (the lent device):
an adapter written by `qlora train` loads in Hugging Face PEFT, and a model folder written
by `qlora merge` loads in transformers; both give the loss qlora computed. Any model type
transformers knows (GPT-2, LLaMA, Qwen2, Mistral).

usage: device_peft_check.py BASE_DIR ADAPTER_DIR MERGED_DIR DATA.jsonl QLORA_ADAPTER_LOSS QLORA_MERGED_LOSS
"""
import json
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

base_dir, adapter_dir, merged_dir, data, want_adapter, want_merged = sys.argv[1:7]
examples = [json.loads(line)["input_ids"] for line in open(data) if line.strip()]


def mean_loss(model):
    total, count = 0.0, 0
    with torch.no_grad():
        for ids in examples:
            x = torch.tensor([ids])
            logits = model(x).logits[0, :-1]
            total += torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum").item()
            count += len(ids) - 1
    return total / count


base = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32).eval()
peft_model = PeftModel.from_pretrained(base, adapter_dir).eval()
la = mean_loss(peft_model)
merged = AutoModelForCausalLM.from_pretrained(merged_dir, torch_dtype=torch.float32).eval()
lm = mean_loss(merged)
ok_a = abs(la - float(want_adapter)) <= 1e-5 * float(want_adapter)
ok_m = abs(lm - float(want_merged)) <= 1e-5 * float(want_merged)
print(f"PEFT + qlora adapter: loss {la:.6f} (qlora eval: {want_adapter}) {'OK' if ok_a else 'MISMATCH'}")
print(f"transformers + qlora merged model: loss {lm:.6f} (qlora eval: {want_merged}) {'OK' if ok_m else 'MISMATCH'}")
sys.exit(0 if ok_a and ok_m else 1)
