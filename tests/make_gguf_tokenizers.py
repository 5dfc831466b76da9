#!/usr/bin/env python3
"""Writes two tokenizer folders of tests/ref/llama/ that `qlora export-gguf` can hand to
llama.cpp, derived from the fixtures of tests/make_llama_fixtures.py (docs/gguf.md, "Tokenizer"):

  tok_smollm2_gguf  tok_smollm2 without its added token 'xyzzy', whose single_word rule llama.cpp
                    cannot express (it would find 'xyzzy' inside words too).
  tok_llama2_spm    tok_llama2 with its merges listed the way transformers converts a SentencePiece
                    model (Llama 2's and TinyLlama's tokenizer.json): for every token, in id order
                    (SentencePiece's score order), every split into two tokens, ordered by the ids
                    of the two parts. tok_llama2 was trained as BPE by tokenizers, whose merges
                    leave out most such splits; llama.cpp's SentencePiece-style tokenizer joins any
                    two pieces that make a token, so only a complete list tokenizes alike.

Regenerate with  python3 tests/make_gguf_tokenizers.py  (standard library only; the outputs are
committed). The vocabularies, added tokens and every other field are those of the sources.
"""
import json
import os
import shutil

REF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref", "llama")


def load(name):
    with open(os.path.join(REF, name, "tokenizer.json"), encoding="utf-8") as f:
        return json.load(f)


def save(tok, src, dst):
    out = os.path.join(REF, dst)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=2)
        f.write("\n")
    shutil.copy(os.path.join(REF, src, "tokenizer_config.json"), os.path.join(out, "tokenizer_config.json"))


def smollm2_gguf():
    tok = load("tok_smollm2")
    tok["added_tokens"] = [a for a in tok["added_tokens"] if a["content"] != "xyzzy"]
    save(tok, "tok_smollm2", "tok_smollm2_gguf")


def llama2_spm():
    tok = load("tok_llama2")
    vocab = tok["model"]["vocab"]
    merges = []
    for piece, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
        splits = [(piece[:i], piece[i:]) for i in range(1, len(piece))
                  if piece[:i] in vocab and piece[i:] in vocab]
        merges += sorted(splits, key=lambda p: (vocab[p[0]], vocab[p[1]]))
    tok["model"]["merges"] = [list(m) for m in merges]
    save(tok, "tok_llama2", "tok_llama2_spm")


if __name__ == "__main__":
    smollm2_gguf()
    llama2_spm()
