// bpe.h: the byte-pair-encoding merge loop, shared by the GPT-2 tokenizer (tokenizer.c, vocab.json +
// merges.txt) and the Hugging Face one (hf_tokenizer.c, tokenizer.json).
//
// A merge table maps an adjacent pair of token ids (left, right) to the id of the merged token
// and the merge's rank (its line in merges.txt, its index in tokenizer.json's "merges"; lower
// merges first). bpe_merge applies it to one word given as a sequence of symbol ids: the
// adjacent pair with the lowest rank is merged first, equal ranks left to right, until no
// adjacent pair is in the table. That is GPT-2's "merge every occurrence of the best pair"
// rule and the priority queue of Hugging Face tokenizers (models/bpe/word.rs, merge_all), in
// O(n log n) for a word of n symbols.
// Not here: vocabularies, pre-tokenization, files (tokenizer.c, hf_tokenizer.c).
#ifndef QLORA_BPE_H
#define QLORA_BPE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct BpeMerges BpeMerges;

BpeMerges *bpe_merges_create(void);
void bpe_merges_free(BpeMerges *m);

// Add the merge (left, right) -> merged with the given rank. Returns false, leaving the table
// unchanged, if the pair already has a merge (the caller decides whether that is an error).
bool bpe_merges_add(BpeMerges *m, int left, int right, int merged, int rank);

// Number of merges in the table.
size_t bpe_merges_count(const BpeMerges *m);

// Merge the n symbol ids of one word in place; returns the number of ids left (<= n).
// Allocates its scratch per call; ids must be ids the table's merges were built for.
size_t bpe_merge(const BpeMerges *m, int *ids, size_t n);

#endif
