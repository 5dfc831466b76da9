// hf_tokenizer_run.c: encoding and decoding with a loaded tokenizer.json; see hf_tokenizer.h.
// Each step follows the tokenizers 0.23 source it names; docs/llama.md, section 5, restates them.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "ds.h"
#include "hf_tokenizer_impl.h"

#define HF_CACHE_MAX (1 << 18)   // words remembered; beyond this, BPE runs uncached
#define HF_CACHE_WORD_BYTES 256  // longer words are not cached (tokenizers' MAX_LENGTH)

// Source bytes [a, b) of the input text that a byte of a later stage came from (hf_tok_encode_spans).
typedef struct {
    size_t a, b;
} Span;

// The text being tokenized, cut into pieces: each is text still to tokenize (id < 0) or an
// added token already found (id >= 0). Pieces point into buf. With track, src holds for every
// byte of buf the input bytes it came from (a step that inserts text gives it the span of the
// character it attaches to, as tokenizers aligns it), and an added token's piece its match.
typedef struct {
    size_t off, len;
    int id;
    bool first;  // begins at byte 0 of the input (Metaspace's prepend_scheme "first")
    Span span;   // with track, an added token's source bytes
} Piece;
typedef struct {
    char *buf;   // stb_ds
    Span *src;   // stb_ds, parallel to buf (with track only)
    Piece *v;    // stb_ds
    bool track;
} Pieces;

// Append a piece: text s[0..len) whose bytes came from src[0..len), or an added token id whose
// match is src[0]. src is read only with p->track (it may be NULL otherwise).
static void pieces_add(Pieces *p, const char *s, size_t len, int id, bool first, const Span *src) {
    Piece pc = {arrlenu(p->buf), len, id, first, {0, 0}};
    if (len) memcpy(arraddnptr(p->buf, len), s, len);
    if (p->track && id >= 0) pc.span = *src;
    else if (p->track && len) memcpy(arraddnptr(p->src, len), src, len * sizeof(Span));
    arrput(p->v, pc);
}

// Where the source spans of the bytes from buf[off] start; NULL without tracking.
static const Span *src_at(const Pieces *p, size_t off) { return p->track ? p->src + off : NULL; }

// The smallest span holding all of src[0..n) (n > 0).
static Span span_union(const Span *src, size_t n) {
    Span u = src[0];
    for (size_t i = 1; i < n; i++) {
        if (src[i].a < u.a) u.a = src[i].a;
        if (src[i].b > u.b) u.b = src[i].b;
    }
    return u;
}

static void pieces_free(Pieces *p) {
    arrfree(p->buf);
    arrfree(p->src);
    arrfree(p->v);
}

// Replace *p by *next (taking it over); *next is left empty, tracking as before.
static void pieces_swap(Pieces *p, Pieces *next) {
    pieces_free(p);
    *p = *next;
    *next = (Pieces){.track = p->track};
}

// Code point of the valid UTF-8 character at s (n bytes left); its length in *len.
static uint32_t decode_char(const char *s, size_t n, size_t *len) {
    utf8proc_int32_t cp = 0;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &cp);
    CHECK(k > 0);  // pieces are valid UTF-8: the input is checked, every step keeps it so
    *len = (size_t)k;
    return (uint32_t)cp;
}

static void put_char(char **out, uint32_t cp) {
    utf8proc_uint8_t b[4];
    utf8proc_ssize_t k = utf8proc_encode_char((utf8proc_int32_t)cp, b);
    for (utf8proc_ssize_t i = 0; i < k; i++) arrput(*out, (char)b[i]);
}

// Unicode White_Space (what Rust's char::is_whitespace and regex \s test): a fixed list since
// Unicode 6.3.
static bool is_white_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Rust's char::is_numeric: general category Nd, Nl or No.
static bool is_numeric(uint32_t c) {
    const utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    return cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO;
}

// ---- splitting a piece (normalizer.rs: NormalizedString::split; pattern.rs) ----------------

// A stretch of a piece: a match of the pattern or the text between matches.
typedef struct {
    size_t s, e;
    bool match;
} Seg;

// The segments of s[0..len) for a regex (Pattern for SysRegex): gaps and matches, empty matches
// included; an empty piece is one empty gap. invert swaps the flags (pattern::Invert).
static bool regex_segments(HfRegex *re, const char *s, size_t len, bool invert, Seg **segs, char *why, size_t cap) {
    if (len == 0) {
        arrput(*segs, ((Seg){0, 0, invert}));
        return true;
    }
    size_t *m = NULL, prev = 0;
    bool ok = hf_regex_find_all(re, s, len, &m, why, cap);
    for (size_t k = 0; ok && k < arrlenu(m); k += 2) {
        if (prev != m[k]) arrput(*segs, ((Seg){prev, m[k], invert}));
        arrput(*segs, ((Seg){m[k], m[k + 1], !invert}));
        prev = m[k + 1];
    }
    if (ok && prev != len) arrput(*segs, ((Seg){prev, len, invert}));
    arrfree(m);
    return ok;
}

// The segments for a character predicate (Pattern for Fn(char)): each matching character alone.
static void char_segments(const char *s, size_t len, bool (*pred)(uint32_t, uint32_t), uint32_t arg, Seg **segs) {
    if (len == 0) {
        arrput(*segs, ((Seg){0, 0, false}));
        return;
    }
    size_t last = 0, k;
    for (size_t i = 0; i < len; i += k) {
        const uint32_t c = decode_char(s + i, len - i, &k);
        if (!pred(c, arg)) continue;
        if (last < i) arrput(*segs, ((Seg){last, i, false}));
        arrput(*segs, ((Seg){i, i + k, true}));
        last = i + k;
    }
    if (len > last) arrput(*segs, ((Seg){last, len, false}));
}

static bool pred_numeric(uint32_t c, uint32_t unused) {
    (void)unused;
    return is_numeric(c);
}
static bool pred_equal(uint32_t c, uint32_t want) { return c == want; }

// Merge the segments by behavior, in place (SplitDelimiterBehavior); returns the count kept.
// A segment with match set afterwards is one to remove.
static size_t apply_behavior(Seg *g, size_t n, HfSplitBehavior b) {
    size_t out = 0;
    bool prev_match = false;
    if (b == HF_SPLIT_ISOLATED || b == HF_SPLIT_REMOVED) {
        for (size_t k = 0; k < n; k++) g[k].match = b == HF_SPLIT_REMOVED && g[k].match;
        return n;
    }
    if (b == HF_SPLIT_MERGED_NEXT) {  // the fold of MergedWithPrevious, right to left
        for (size_t k = n; k-- > 0;) {
            const bool m = g[k].match;
            if (m && !prev_match && out > 0) g[n - out].s = g[k].s;
            else g[n - ++out] = (Seg){g[k].s, g[k].e, false};
            prev_match = m;
        }
        memmove(g, g + n - out, out * sizeof *g);
        return out;
    }
    for (size_t k = 0; k < n; k++) {
        const bool m = g[k].match;
        const bool join = b == HF_SPLIT_CONTIGUOUS ? m == prev_match : (m && !prev_match);
        if (join && out > 0) g[out - 1].e = g[k].e;
        else g[out++] = (Seg){g[k].s, g[k].e, false};
        prev_match = m;
    }
    return out;
}

// Append the kept, non-empty segments of piece text (its bytes from src) as pieces of out.
static void emit_segments(Pieces *out, const char *text, const Span *src, Seg *g, size_t n, HfSplitBehavior b,
                          bool first) {
    n = apply_behavior(g, n, b);
    for (size_t k = 0; k < n; k++)
        if (!g[k].match && g[k].e > g[k].s)
            pieces_add(out, text + g[k].s, g[k].e - g[k].s, -1, first && g[k].s == 0, src ? src + g[k].s : NULL);
}

// ---- added tokens (added_vocabulary.rs: find_matches) --------------------------------------

// The leftmost-longest token of set occurring in s[from..len); false if none.
static bool find_added(const HfAddedSet *set, const char *s, size_t len, size_t from, size_t *at,
                       const HfAdded **tok) {
    for (size_t i = from; i < len; i++) {
        const HfAdded *bucket = set->by_byte[(uint8_t)s[i]];
        for (size_t k = 0; k < arrlenu(bucket); k++)  // longest first
            if (bucket[k].len <= len - i && !memcmp(s + i, bucket[k].pattern, bucket[k].len)) {
                *at = i;
                *tok = &bucket[k];
                return true;
            }
    }
    return false;
}

// single_word: no word character (\w) right before or right after the match.
static bool is_single_word(const HfTokenizer *t, const char *s, size_t len, size_t start, size_t stop) {
    if (start > 0) {
        size_t c = start - 1;
        while (c > 0 && ((uint8_t)s[c] & 0xC0) == 0x80) c--;  // back to the previous character
        if (hf_regex_matches_at(t->word_char, s, len, c)) return false;
    }
    return stop == len || !hf_regex_matches_at(t->word_char, s, len, stop);
}

// Cut the tokens of set out of one text piece (its bytes from src), appending the pieces to out.
// As tokenizers: the search goes on after each match as found; a match that fails single_word
// stays text; lstrip / rstrip take the whitespace around a match into it (lstrip never before the
// previous piece).
static void split_added_piece(const HfTokenizer *t, const HfAddedSet *set, const char *s, size_t len,
                              bool first, const Span *src, Pieces *out) {
    size_t start_offset = 0, pos = 0, at, k;
    const HfAdded *tok;
    while (pos < len && find_added(set, s, len, pos, &at, &tok)) {
        size_t start = at, stop = at + tok->len;
        pos = stop;
        if (tok->single_word && !is_single_word(t, s, len, start, stop)) continue;
        if (tok->lstrip) {
            size_t ns = start;
            while (ns > 0) {  // step back over whitespace characters
                size_t c = ns - 1;
                while (c > 0 && ((uint8_t)s[c] & 0xC0) == 0x80) c--;
                if (!is_white_space(decode_char(s + c, len - c, &k))) break;
                ns = c;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (tok->rstrip)
            while (stop < len && is_white_space(decode_char(s + stop, len - stop, &k))) stop += k;
        if (start_offset < start)
            pieces_add(out, s + start_offset, start - start_offset, -1, first && start_offset == 0,
                       src ? src + start_offset : NULL);
        const Span match = src ? span_union(src + start, stop - start) : (Span){0, 0};
        pieces_add(out, "", 0, tok->id, false, &match);
        start_offset = stop;
    }
    if (start_offset < len)
        pieces_add(out, s + start_offset, len - start_offset, -1, first && start_offset == 0,
                   src ? src + start_offset : NULL);
}

static void split_added(const HfTokenizer *t, const HfAddedSet *set, Pieces *p) {
    if (!set->n) return;
    Pieces out = {.track = p->track};
    for (size_t i = 0; i < arrlenu(p->v); i++) {
        const Piece pc = p->v[i];
        if (pc.id >= 0) pieces_add(&out, "", 0, pc.id, false, &pc.span);
        else split_added_piece(t, set, p->buf + pc.off, pc.len, pc.first, src_at(p, pc.off), &out);
    }
    pieces_swap(p, &out);
}

// ---- normalizers (normalizers/{unicode,prepend,replace}.rs) --------------------------------

// The span text inserted at byte at of a piece of len bytes (their sources src) attaches to: the
// character there, or an empty span after the last one.
static Span attach_span(const Span *src, size_t len, size_t at) {
    if (at < len) return src[at];
    return len ? (Span){src[len - 1].b, src[len - 1].b} : (Span){0, 0};
}

// Replace every match of re in s[0..len) by content, into the stb_ds *out (cleared first). With
// src (the sources of s's bytes), *out_src (cleared first) gets the sources of *out's bytes: a
// replacement's bytes have the span of the last character it replaces, as tokenizers 0.23 aligns
// them (an empty match: of the character after it).
static bool replace_all(HfRegex *re, const char *content, const char *s, size_t len, const Span *src, char **out,
                        Span **out_src, char *why, size_t cap) {
    Seg *g = NULL;
    bool ok = regex_segments(re, s, len, false, &g, why, cap);
    arrsetlen(*out, 0);
    if (src) arrsetlen(*out_src, 0);
    for (size_t k = 0; ok && k < arrlenu(g); k++) {
        const char *from = g[k].match ? content : s + g[k].s;
        const size_t n = g[k].match ? strlen(content) : g[k].e - g[k].s;
        if (n) memcpy(arraddnptr(*out, n), from, n);
        if (!src || !n) continue;
        if (!g[k].match) {
            memcpy(arraddnptr(*out_src, n), src + g[k].s, n * sizeof(Span));
            continue;
        }
        size_t last = g[k].e;  // the match's last character (tokenizers 0.23 aligns the replacement to it)
        while (last > g[k].s && (last == g[k].e || ((uint8_t)s[last] & 0xC0) == 0x80)) last--;
        const Span sp = g[k].e > g[k].s ? span_union(src + last, g[k].e - last) : attach_span(src, len, g[k].s);
        for (size_t i = 0; i < n; i++) arrput(*out_src, sp);
    }
    arrfree(g);
    return ok;
}

// Append the NFC form of s[0..n) (valid UTF-8) to *out; returns its length.
static size_t nfc_append(const char *s, size_t n, char **out) {
    utf8proc_uint8_t *nfc = NULL;
    utf8proc_ssize_t k = utf8proc_map((const utf8proc_uint8_t *)(n ? s : ""), (utf8proc_ssize_t)n, &nfc,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    CHECK(k >= 0);  // the text is valid UTF-8; only running out of memory fails
    if (k) memcpy(arraddnptr(*out, (size_t)k), nfc, (size_t)k);
    free(nfc);
    return (size_t)k;
}

// The sources of the NFC form c[0..m) of one changed canonical segment s[0..n) (its bytes from src),
// appended to *out_src, as tokenizers aligns them (unicode_normalization_alignments: each output
// character to the input character its first part came from): an output character equal to an
// input character not taken yet (the last such: a composition consumed the first ones) keeps that
// one's span, any other the span of the segment's first character (a decomposition's parts, a
// composition's result: "e" + U+0301 composed to U+00E9 has the span of the "e").
static void nfc_segment_spans(const char *s, size_t n, const Span *src, const char *c, size_t m, Span **out_src) {
    size_t *at = NULL, k, kc;  // the input characters' offsets, then n
    for (size_t i = 0; i < n; i += k) {
        arrput(at, i);
        decode_char(s + i, n - i, &k);
    }
    const size_t nc = arrlenu(at);
    arrput(at, n);
    bool *taken = xcalloc(nc, sizeof(bool));
    for (size_t q = 0; q < m; q += kc) {
        const uint32_t oc = decode_char(c + q, m - q, &kc);
        Span sp = span_union(src, at[1]);
        for (size_t i = nc; i-- > 0;) {
            if (taken[i] || decode_char(s + at[i], n - at[i], &k) != oc) continue;
            taken[i] = true;
            sp = span_union(src + at[i], at[i + 1] - at[i]);
            break;
        }
        for (size_t j = 0; j < kc; j++) arrput(*out_src, sp);
    }
    free(taken);
    arrfree(at);
}

// NFC of s[0..n) appended to *out; with src, the sources of the new bytes appended to *out_src.
// Text NFC leaves alone keeps its spans. Otherwise each canonical segment (a starter and the
// non-starters after it) is composed alone: one NFC leaves alone keeps its spans, a changed one
// is aligned by nfc_segment_spans. If composing segment by segment differs from composing the
// whole (Hangul jamo, the few starters that compose), every byte gets the piece's span.
static void nfc_step(const char *s, size_t n, const Span *src, char **out, Span **out_src) {
    const size_t start = arrlenu(*out), m = nfc_append(s, n, out);
    if (!src || m == 0) return;
    if (m == n && !memcmp(*out + start, s, n)) {
        memcpy(arraddnptr(*out_src, n), src, n * sizeof(Span));
        return;
    }
    char *seg = NULL;
    Span *seg_src = NULL;
    for (size_t i = 0, j, k; i < n; i = j) {
        decode_char(s + i, n - i, &k);
        for (j = i + k; j < n; j += k) {
            const uint32_t c = decode_char(s + j, n - j, &k);
            if (utf8proc_get_property((utf8proc_int32_t)c)->combining_class == 0) break;
        }
        const size_t got = nfc_append(s + i, j - i, &seg);
        if (got == j - i && !memcmp(seg + arrlenu(seg) - got, s + i, got))
            memcpy(arraddnptr(seg_src, got), src + i, got * sizeof(Span));
        else
            nfc_segment_spans(s + i, j - i, src + i, seg + arrlenu(seg) - got, got, &seg_src);
    }
    if (arrlenu(seg) == m && !memcmp(seg, *out + start, m)) {
        memcpy(arraddnptr(*out_src, m), seg_src, m * sizeof(Span));
    } else {
        const Span all = span_union(src, n);
        for (size_t q = 0; q < m; q++) arrput(*out_src, all);
    }
    arrfree(seg);
    arrfree(seg_src);
}

// The normalizer steps on s[0..len) into *out (replaced); with src, the sources of *out's bytes
// into *out_src (replaced). Prepend's text attaches to the first character.
static bool normalize(const HfTokenizer *t, const char *s, size_t len, const Span *src, char **out, Span **out_src,
                      char *why, size_t why_cap) {
    char *cur = NULL, *next = NULL;
    Span *cur_src = NULL, *next_src = NULL;
    if (len) memcpy(arraddnptr(cur, len), s, len);
    if (src && len) memcpy(arraddnptr(cur_src, len), src, len * sizeof(Span));
    bool ok = true;
    for (size_t i = 0; ok && i < arrlenu(t->norm); i++) {
        const HfNormStep *st = &t->norm[i];
        const size_t n = arrlenu(cur);
        arrsetlen(next, 0);
        arrsetlen(next_src, 0);
        if (st->kind == HF_NORM_NFC) {
            nfc_step(cur, n, src ? cur_src : NULL, &next, &next_src);
        } else if (st->kind == HF_NORM_PREPEND) {
            const size_t k = strlen(st->text);
            if (n && k) {  // only a non-empty piece
                memcpy(arraddnptr(next, k), st->text, k);
                for (size_t q = 0; src && q < k; q++) arrput(next_src, cur_src[0]);
            }
            if (n) memcpy(arraddnptr(next, n), cur, n);
            if (n && src) memcpy(arraddnptr(next_src, n), cur_src, n * sizeof(Span));
        } else {
            ok = replace_all(st->re, st->text, cur, n, src ? cur_src : NULL, &next, &next_src, why, why_cap);
        }
        char *tmp = cur;
        cur = next;
        next = tmp;
        Span *tmp_src = cur_src;
        cur_src = next_src;
        next_src = tmp_src;
    }
    arrsetlen(*out, 0);
    if (arrlenu(cur)) memcpy(arraddnptr(*out, arrlenu(cur)), cur, arrlenu(cur));
    if (src) {
        arrsetlen(*out_src, 0);
        if (arrlenu(cur_src)) memcpy(arraddnptr(*out_src, arrlenu(cur_src)), cur_src, arrlenu(cur_src) * sizeof(Span));
    }
    arrfree(cur);
    arrfree(next);
    arrfree(cur_src);
    arrfree(next_src);
    return ok;
}

bool hf_normalize(const HfTokenizer *t, const char *s, size_t len, char **out, char *why, size_t why_cap) {
    return normalize(t, s, len, NULL, out, NULL, why, why_cap);
}

static bool normalize_pieces(const HfTokenizer *t, Pieces *p, char *why, size_t cap) {
    if (!arrlenu(t->norm)) return true;
    Pieces out = {.track = p->track};
    char *norm = NULL;
    Span *norm_src = NULL;
    bool ok = true;
    for (size_t i = 0; ok && i < arrlenu(p->v); i++) {
        const Piece pc = p->v[i];
        if (pc.id >= 0) {
            pieces_add(&out, "", 0, pc.id, false, &pc.span);
            continue;
        }
        ok = normalize(t, p->buf + pc.off, pc.len, src_at(p, pc.off), &norm, &norm_src, why, cap);
        if (ok && arrlenu(norm)) pieces_add(&out, norm, arrlenu(norm), -1, pc.first, norm_src);
    }
    arrfree(norm);
    arrfree(norm_src);
    pieces_swap(p, &out);
    return ok;
}

// ---- pre-tokenizers (pre_tokenizers/{split,digits,byte_level,metaspace}.rs) ------------------

// Split a piece s (its bytes from src) by regex segments (Split; ByteLevel's own regex with Isolated).
static bool split_regex(HfRegex *re, bool invert, HfSplitBehavior b, const char *s, const Span *src, const Piece *pc,
                        Pieces *out, char *why, size_t cap) {
    Seg *g = NULL;
    bool ok = regex_segments(re, s, pc->len, invert, &g, why, cap);
    if (ok) emit_segments(out, s, src, g, arrlenu(g), b, pc->first);
    arrfree(g);
    return ok;
}

// ByteLevel: maybe a leading space (attached to the first character), maybe the GPT-2 regex
// split, then every byte becomes its GPT-2 byte character (t->byte_sym, from gpt2_tokenizer.h's
// tok_byte_symbol), whose bytes all come from that byte's source.
static bool pre_byte_level(const HfTokenizer *t, const HfPreStep *st, const char *s, const Span *src,
                           const Piece *pc, Pieces *out, char *why, size_t cap) {
    char *text = NULL;
    Span *text_src = NULL;
    if (st->add_prefix_space && (pc->len == 0 || s[0] != ' ')) {
        arrput(text, ' ');
        if (src) arrput(text_src, attach_span(src, pc->len, 0));
    }
    if (pc->len) memcpy(arraddnptr(text, pc->len), s, pc->len);
    if (src && pc->len) memcpy(arraddnptr(text_src, pc->len), src, pc->len * sizeof(Span));
    Piece whole = {0, arrlenu(text), -1, pc->first, {0, 0}};
    Pieces split = {.track = src != NULL};
    bool ok = true;
    if (st->use_regex)
        ok = split_regex(t->byte_level_re, false, HF_SPLIT_ISOLATED, text, text_src, &whole, &split, why, cap);
    else if (whole.len) pieces_add(&split, text, whole.len, -1, whole.first, text_src);
    char *mapped = NULL;
    Span *mapped_src = NULL;
    for (size_t i = 0; ok && i < arrlenu(split.v); i++) {
        const Piece *q = &split.v[i];
        arrsetlen(mapped, 0);
        arrsetlen(mapped_src, 0);
        for (size_t k = 0; k < q->len; k++) {
            const uint8_t b = (uint8_t)split.buf[q->off + k];
            memcpy(arraddnptr(mapped, t->byte_sym_len[b]), t->byte_sym[b], t->byte_sym_len[b]);
            for (size_t j = 0; src && j < t->byte_sym_len[b]; j++) arrput(mapped_src, split.src[q->off + k]);
        }
        pieces_add(out, mapped, arrlenu(mapped), -1, q->first, mapped_src);
    }
    arrfree(mapped);
    arrfree(mapped_src);
    pieces_free(&split);
    arrfree(text);
    arrfree(text_src);
    return ok;
}

// Metaspace: spaces become the replacement (from the space's source), which is prepended by the
// scheme (attached to the first character); maybe split before each replacement.
static void pre_metaspace(const HfPreStep *st, const char *s, const Span *src, const Piece *pc, Pieces *out) {
    char *text = NULL, rep[5] = {0};
    Span *text_src = NULL;
    put_char(&text, st->repl);
    memcpy(rep, text, arrlenu(text));
    arrsetlen(text, 0);
    const size_t r = strlen(rep);
    for (size_t i = 0; i < pc->len; i++) {
        const size_t n = s[i] == ' ' ? r : 1;
        if (s[i] == ' ') memcpy(arraddnptr(text, r), rep, r);
        else arrput(text, s[i]);
        for (size_t j = 0; src && j < n; j++) arrput(text_src, src[i]);
    }
    const bool starts = arrlenu(text) >= r && !memcmp(text, rep, r);
    const bool prepend = !starts && arrlenu(text) > 0 &&  // NormalizedString::prepend needs a character
                         (st->scheme == HF_PREPEND_ALWAYS || (st->scheme == HF_PREPEND_FIRST && pc->first));
    if (prepend) {
        const size_t n = arrlenu(text);
        arraddnptr(text, r);  // grow, then shift right
        memmove(text + r, text, n);
        memcpy(text, rep, r);
        if (src) {
            const Span first = text_src[0];
            arraddnptr(text_src, r);
            memmove(text_src + r, text_src, n * sizeof(Span));
            for (size_t j = 0; j < r; j++) text_src[j] = first;
        }
    }
    if (st->split) {
        Seg *g = NULL;
        char_segments(text, arrlenu(text), pred_equal, st->repl, &g);
        emit_segments(out, text, text_src, g, arrlenu(g), HF_SPLIT_MERGED_NEXT, pc->first);
        arrfree(g);
    } else if (arrlenu(text)) {
        pieces_add(out, text, arrlenu(text), -1, pc->first, text_src);
    }
    arrfree(text);
    arrfree(text_src);
}

static bool pre_tokenize(const HfTokenizer *t, Pieces *p, char *why, size_t cap) {
    bool ok = true;
    for (size_t s = 0; ok && s < arrlenu(t->pre); s++) {
        const HfPreStep *st = &t->pre[s];
        Pieces out = {.track = p->track};
        for (size_t i = 0; ok && i < arrlenu(p->v); i++) {
            const Piece *pc = &p->v[i];
            const char *text = p->buf + pc->off;
            const Span *src = src_at(p, pc->off);
            if (pc->id >= 0) {
                pieces_add(&out, "", 0, pc->id, false, &pc->span);
            } else if (st->kind == HF_PRE_SPLIT) {
                ok = split_regex(st->re, st->invert, st->behavior, text, src, pc, &out, why, cap);
            } else if (st->kind == HF_PRE_DIGITS) {
                Seg *g = NULL;
                char_segments(text, pc->len, pred_numeric, 0, &g);
                emit_segments(&out, text, src, g, arrlenu(g),
                              st->individual_digits ? HF_SPLIT_ISOLATED : HF_SPLIT_CONTIGUOUS, pc->first);
                arrfree(g);
            } else if (st->kind == HF_PRE_BYTE_LEVEL) {
                ok = pre_byte_level(t, st, text, src, pc, &out, why, cap);
            } else {
                pre_metaspace(st, text, src, pc, &out);
            }
        }
        pieces_swap(p, &out);
    }
    return ok;
}

// ---- the BPE model (models/bpe/model.rs: merge_word, tokenize_with_cache) ------------------

// The model vocabulary's id of s[0..len), or -1 (a string with a NUL byte is never a token).
static int model_id(const HfTokenizer *t, const char *s, size_t len, char **key) {
    if (memchr(s, '\0', len)) return -1;
    arrsetlen(*key, len + 1);
    memcpy(*key, s, len);
    (*key)[len] = '\0';
    HfStrInt *map = t->model_map;
    ptrdiff_t k = shgeti(map, *key);
    return k >= 0 ? map[k].value : -1;
}

// The symbols of one word before merging: a character in the vocabulary is itself; else its
// bytes' <0xNN> tokens (byte_fallback); else unk (consecutive ones fused with fuse_unk); else
// nothing. As merge_word: a pending unk is written only when a known character or the end
// comes, so byte-fallback symbols can precede it.
static void word_symbols(const HfTokenizer *t, const char *w, size_t len, int **sym, char **key) {
    int unk = -1;  // pending unk symbol
    size_t k;
    for (size_t i = 0; i < len; i += k) {
        decode_char(w + i, len - i, &k);
        const int id = model_id(t, w + i, k, key);
        if (id >= 0) {
            if (unk >= 0) arrput(*sym, unk);
            unk = -1;
            arrput(*sym, id);
            continue;
        }
        bool all_bytes = t->byte_fallback;
        for (size_t j = 0; all_bytes && j < k; j++) all_bytes = t->byte_token[(uint8_t)w[i + j]] >= 0;
        if (all_bytes) {
            for (size_t j = 0; j < k; j++) arrput(*sym, t->byte_token[(uint8_t)w[i + j]]);
            continue;
        }
        if (t->model_unk < 0) continue;  // no unk token: the character is dropped
        if (unk >= 0 && !t->fuse_unk) arrput(*sym, unk);
        unk = t->model_unk;
    }
    if (unk >= 0) arrput(*sym, unk);
}

// Append the ids of one word (a non-empty piece after pre-tokenization).
static void bpe_word(HfTokenizer *t, const char *w, size_t len, int **ids) {
    char *key = NULL;
    const int whole = t->ignore_merges ? model_id(t, w, len, &key) : -1;
    if (whole >= 0) {
        arrput(*ids, whole);
        arrfree(key);
        return;
    }
    const bool cacheable = len < HF_CACHE_WORD_BYTES && !memchr(w, '\0', len);  // keys are C strings
    if (cacheable) {
        model_id(t, w, len, &key);  // builds the key
        ptrdiff_t c = shgeti(t->cache, key);
        if (c >= 0) {
            const int *v = t->cache[c].value;
            if (arrlenu(v)) memcpy(arraddnptr(*ids, arrlenu(v)), v, arrlenu(v) * sizeof(int));
            arrfree(key);
            return;
        }
    }
    int *sym = NULL;
    word_symbols(t, w, len, &sym, &key);
    const size_t n = bpe_merge(t->merges, sym, arrlenu(sym));
    arrsetlen(sym, n);
    if (n) memcpy(arraddnptr(*ids, n), sym, n * sizeof(int));
    if (cacheable && shlen(t->cache) < HF_CACHE_MAX) {
        arrsetlen(key, len + 1);
        memcpy(key, w, len);
        key[len] = '\0';
        shput(t->cache, key, sym);
    } else {
        arrfree(sym);
    }
    arrfree(key);
}

static int fallback_byte(const char *s, size_t len);

// Whether word_symbols has no symbol of its own for the character c[0..k): not in the
// vocabulary and not all bytes byte-fallback tokens (it becomes unk, or nothing).
static bool char_unknown(const HfTokenizer *t, const char *c, size_t k, char **key) {
    if (model_id(t, c, k, key) >= 0) return false;
    bool all_bytes = t->byte_fallback;
    for (size_t j = 0; all_bytes && j < k; j++) all_bytes = t->byte_token[(uint8_t)c[j]] >= 0;
    return !all_bytes;
}

// Bytes of the character at s (n > 0 bytes left).
static size_t char_len(const char *s, size_t n) {
    size_t k;
    decode_char(s, n, &k);
    return k;
}

// Append to *spans the source span of each of ids[0..n), the ids BPE made of word w[0..len) (its
// bytes from src), walking the word less the characters word_symbols drops (no unk token to stand
// for them): a vocabulary token covers the bytes that spell it, a byte-fallback token one byte,
// unk the character it stands for (and with fuse_unk the unknown ones after it); a lone id (a
// merged word, ignore_merges' whole-word id) covers the word.
static void word_spans(const HfTokenizer *t, const char *w, size_t len, const Span *src, const int *ids, size_t n,
                       Span **spans) {
    char *key = NULL, *kept = NULL;  // the word less the dropped characters
    size_t *at = NULL;               // byte of kept -> its byte in w
    for (size_t p = 0, k; p < len; p += k) {
        k = char_len(w + p, len - p);
        if (t->model_unk < 0 && char_unknown(t, w + p, k, &key)) continue;
        memcpy(arraddnptr(kept, k), w + p, k);
        for (size_t j = 0; j < k; j++) arrput(at, p + j);
    }
    const size_t m = arrlenu(kept);
    for (size_t i = 0, p = 0; i < n; i++) {
        const char *s = ids[i] < t->n_model ? t->vocab[ids[i]] : "";
        const size_t sl = strlen(s);
        size_t e = m;  // a lone id, or one that spells nothing here (not expected): the rest
        if (n == 1) e = m;
        else if (sl && sl <= m - p && !memcmp(kept + p, s, sl)) e = p + sl;
        else if (t->byte_fallback && p < m && fallback_byte(s, sl) >= 0) e = p + 1;
        else if (ids[i] == t->model_unk && p < m) {
            e = p + char_len(kept + p, m - p);
            while (t->fuse_unk && e < m && char_unknown(t, kept + e, char_len(kept + e, m - e), &key))
                e += char_len(kept + e, m - e);
        }
        const size_t x = p < m ? src[at[p]].a : (len ? src[len - 1].b : 0);
        arrput(*spans, e > p ? span_union(src + at[p], at[e - 1] + 1 - at[p]) : ((Span){x, x}));
        p = e;
    }
    arrfree(key);
    arrfree(kept);
    arrfree(at);
}

// ---- post-processor (processors/template.rs) -----------------------------------------------

// Every template runs, with or without add_special (TemplateProcessing::apply_template): the text
// goes where $A stands (once, twice or not at all); the special ids only with add_special. With
// spans (parallel to the ids from `from`), a special id gets an empty span at the start of the
// text (before $A) or its end (text_len).
static void apply_templates(const HfTokenizer *t, size_t from, bool add_special, size_t text_len, int **ids,
                            Span **spans) {
    for (size_t k = 0; k < arrlenu(t->post); k++) {
        int *seq = NULL;  // this sequence's ids so far
        Span *seq_src = NULL;
        const size_t n = arrlenu(*ids) - from;
        if (n) memcpy(arraddnptr(seq, n), *ids + from, n * sizeof(int));
        if (n && spans) memcpy(arraddnptr(seq_src, n), *spans, n * sizeof(Span));
        arrsetlen(*ids, from);
        if (spans) arrsetlen(*spans, 0);
        const int *items = t->post[k].items;
        bool after = false;
        for (size_t i = 0; i < arrlenu(items); i++) {
            if (items[i] != HF_TEMPLATE_SEQ) {
                if (add_special) arrput(*ids, items[i]);
                if (add_special && spans) arrput(*spans, after ? ((Span){text_len, text_len}) : ((Span){0, 0}));
            } else if (n) {
                memcpy(arraddnptr(*ids, n), seq, n * sizeof(int));
                if (spans) memcpy(arraddnptr(*spans, n), seq_src, n * sizeof(Span));
            }
            after |= items[i] == HF_TEMPLATE_SEQ;
        }
        arrfree(seq);
        arrfree(seq_src);
    }
}

bool hf_tok_encode_spans(HfTokenizer *t, const char *text, size_t len, bool add_special, int **ids, size_t **spans,
                         Error *err) {
    for (size_t i = 0; i < len;) {
        size_t k = utf8_seq_len((const uint8_t *)text + i, len - i);
        if (!k) return error_set(err, "byte %zu is not valid UTF-8 (tokenizer.json models take Unicode text)", i);
        i += k;
    }
    const size_t from = arrlenu(*ids);
    char why[400];
    Pieces p = {.track = spans != NULL};
    Span *src = NULL, *tok_src = NULL;  // the input's bytes; then each id's span
    for (size_t i = 0; spans && i < len; i++) arrput(src, ((Span){i, i + 1}));
    if (len) pieces_add(&p, text, len, -1, true, src);
    arrfree(src);
    split_added(t, &t->raw_set, &p);
    bool ok = normalize_pieces(t, &p, why, sizeof why);
    if (ok) split_added(t, &t->norm_set, &p);
    ok = ok && pre_tokenize(t, &p, why, sizeof why);
    for (size_t i = 0; ok && i < arrlenu(p.v); i++) {
        const Piece *pc = &p.v[i];
        const size_t before = arrlenu(*ids);
        if (pc->id >= 0) arrput(*ids, pc->id);
        else if (pc->len) bpe_word(t, p.buf + pc->off, pc->len, ids);
        if (spans && pc->id >= 0) arrput(tok_src, pc->span);
        else if (spans && pc->len)
            word_spans(t, p.buf + pc->off, pc->len, p.src + pc->off, *ids + before, arrlenu(*ids) - before, &tok_src);
    }
    pieces_free(&p);
    if (!ok) {
        arrfree(tok_src);
        return error_set(err, "%s", why);
    }
    apply_templates(t, from, add_special, len, ids, spans ? &tok_src : NULL);
    for (size_t i = 0; i < arrlenu(tok_src); i++) {
        arrput(*spans, tok_src[i].a);
        arrput(*spans, tok_src[i].b);
    }
    arrfree(tok_src);
    return true;
}

bool hf_tok_encode(HfTokenizer *t, const char *text, size_t len, bool add_special, int **ids, Error *err) {
    return hf_tok_encode_spans(t, text, len, add_special, ids, NULL, err);
}

// ---- decoding (decoders/*.rs, byte_level.rs, metaspace.rs) ---------------------------------

// Length of the longest prefix of b[0..n) that starts a valid UTF-8 character (1-4), and
// whether it is a whole character: Rust's from_utf8_lossy replaces each maximal invalid
// prefix ("maximal subpart") by one U+FFFD.
static size_t utf8_subpart(const uint8_t *b, size_t n, bool *whole) {
    const uint8_t c = b[0];
    size_t width = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    *whole = width == 1;
    if (width <= 1) return 1;
    const uint8_t lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80, hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
    size_t k = 1;
    if (k < n && b[k] >= lo && b[k] <= hi) k++;
    while (k > 1 && k < width && k < n && b[k] >= 0x80 && b[k] <= 0xBF) k++;
    *whole = k == width;
    return k;
}

static void put_lossy(char **out, const uint8_t *b, size_t n) {
    for (size_t i = 0; i < n;) {
        bool whole;
        const size_t k = utf8_subpart(b + i, n - i, &whole);
        if (whole) memcpy(arraddnptr(*out, k), b + i, k);
        else put_char(out, 0xFFFD);
        i += k;
    }
}

static bool all_utf8(const uint8_t *b, size_t n) {
    for (size_t i = 0; i < n;) {
        bool whole;
        i += utf8_subpart(b + i, n - i, &whole);
        if (!whole) return false;
    }
    return true;
}

// The token strings being decoded: pieces of one buffer (ids unused).
static void dec_byte_level(const HfTokenizer *t, const Pieces *in, Pieces *out) {
    char *bytes = NULL, *text = NULL;
    for (size_t i = 0; i < arrlenu(in->v); i++) {
        const char *s = in->buf + in->v[i].off;
        const size_t len = in->v[i].len, start = arrlenu(bytes);
        bool mapped = true;
        size_t k;
        for (size_t j = 0; mapped && j < len; j += k) {
            const uint32_t c = decode_char(s + j, len - j, &k);
            mapped = c < 324 && t->char_byte[c] >= 0;
            if (mapped) arrput(bytes, (char)t->char_byte[c]);
        }
        if (!mapped) {  // not all byte characters (an added token): its own UTF-8
            arrsetlen(bytes, start);
            if (len) memcpy(arraddnptr(bytes, len), s, len);
        }
    }
    put_lossy(&text, (const uint8_t *)bytes, arrlenu(bytes));
    pieces_add(out, text ? text : "", arrlenu(text), -1, false, NULL);
    arrfree(bytes);
    arrfree(text);
}

// A token "<0xNN>" as ByteFallback reads it: six bytes, and u8::from_str_radix(.., 16) of the
// two in the middle (which also takes "+N").
static int hex_value(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static int fallback_byte(const char *s, size_t len) {
    if (len != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return -1;
    const int hi = hex_value(s[3]), lo = hex_value(s[4]);
    if (lo < 0) return -1;
    return hi >= 0 ? hi * 16 + lo : s[3] == '+' ? lo : -1;
}

static void flush_bytes(char **bytes, Pieces *out) {
    if (!arrlenu(*bytes)) return;
    if (all_utf8((const uint8_t *)*bytes, arrlenu(*bytes))) {
        pieces_add(out, *bytes, arrlenu(*bytes), -1, false, NULL);
    } else {  // an invalid run: one U+FFFD per byte
        for (size_t k = 0; k < arrlenu(*bytes); k++) pieces_add(out, "\xEF\xBF\xBD", 3, -1, false, NULL);
    }
    arrsetlen(*bytes, 0);
}

static void dec_byte_fallback(const Pieces *in, Pieces *out) {
    char *bytes = NULL;
    for (size_t i = 0; i < arrlenu(in->v); i++) {
        const char *s = in->buf + in->v[i].off;
        const int b = fallback_byte(s, in->v[i].len);
        if (b >= 0) {
            arrput(bytes, (char)b);
            continue;
        }
        flush_bytes(&bytes, out);
        pieces_add(out, s, in->v[i].len, -1, false, NULL);
    }
    flush_bytes(&bytes, out);
    arrfree(bytes);
}

// Strip: up to start leading and stop trailing copies of the character.
static void dec_strip(const HfDecStep *st, const char *s, size_t len, Pieces *out) {
    size_t *at = NULL, k;  // character offsets, plus the end
    for (size_t i = 0; i < len; i += k) {
        arrput(at, i);
        decode_char(s + i, len - i, &k);
    }
    const size_t n = arrlenu(at);
    arrput(at, len);
    size_t a = 0, b = n;
    while (a < st->start && a < n && decode_char(s + at[a], len - at[a], &k) == st->ch) a++;
    for (size_t i = 0; i < st->stop && b > 0 && decode_char(s + at[b - 1], len - at[b - 1], &k) == st->ch; i++) b--;
    // tokenizers slices chars[start_cut..stop_cut] and would panic if they crossed: give ""
    if (b > a) pieces_add(out, s + at[a], at[b] - at[a], -1, false, NULL);
    else pieces_add(out, "", 0, -1, false, NULL);
    arrfree(at);
}

static void dec_metaspace(const HfDecStep *st, const char *s, size_t len, bool first_token, Pieces *out) {
    char *text = NULL;
    size_t k;
    for (size_t i = 0; i < len; i += k) {
        const uint32_t c = decode_char(s + i, len - i, &k);
        if (c != st->ch) memcpy(arraddnptr(text, k), s + i, k);
        else if (!first_token || st->scheme == HF_PREPEND_NEVER) arrput(text, ' ');
    }
    pieces_add(out, text ? text : "", arrlenu(text), -1, false, NULL);
    arrfree(text);
}

// One decoder step over the whole token list.
static void decode_step(const HfTokenizer *t, const HfDecStep *st, const Pieces *in, Pieces *out) {
    if (st->kind == HF_DEC_BYTE_LEVEL || st->kind == HF_DEC_BYTE_FALLBACK) {
        if (st->kind == HF_DEC_BYTE_LEVEL) dec_byte_level(t, in, out);
        else dec_byte_fallback(in, out);
        return;
    }
    if (st->kind == HF_DEC_FUSE) {  // buf holds the pieces back to back, in order
        pieces_add(out, in->buf ? in->buf : "", arrlenu(in->buf), -1, false, NULL);
        return;
    }
    char *text = NULL, why[300];
    for (size_t i = 0; i < arrlenu(in->v); i++) {
        const char *s = in->buf + in->v[i].off;
        const size_t len = in->v[i].len;
        if (st->kind == HF_DEC_STRIP) {
            dec_strip(st, s, len, out);
        } else if (st->kind == HF_DEC_METASPACE) {
            dec_metaspace(st, s, len, i == 0, out);
        } else {  // Replace, per token
            if (!replace_all(st->re, st->content, s, len, NULL, &text, NULL, why, sizeof why)) {
                // a regex that gives up while decoding: keep the token as it is (decode cannot fail)
                arrsetlen(text, 0);
                if (len) memcpy(arraddnptr(text, len), s, len);
            }
            pieces_add(out, text ? text : "", arrlenu(text), -1, false, NULL);
        }
    }
    arrfree(text);
}

void hf_tok_decode(const HfTokenizer *t, const int *ids, size_t n, bool skip_special, char **out) {
    Pieces p = {0};
    for (size_t i = 0; i < n; i++) {
        const int id = ids[i];
        if (id < 0 || id >= t->n_total || (skip_special && t->skip_special[id])) continue;
        pieces_add(&p, t->token_str[id], strlen(t->token_str[id]), -1, false, NULL);
    }
    if (!t->has_decoder) {  // tokens joined by single spaces
        for (size_t i = 0; i < arrlenu(p.v); i++) {
            if (i) arrput(*out, ' ');
            if (p.v[i].len) memcpy(arraddnptr(*out, p.v[i].len), p.buf + p.v[i].off, p.v[i].len);
        }
        pieces_free(&p);
        return;
    }
    for (size_t s = 0; s < arrlenu(t->dec); s++) {
        Pieces next = {0};
        decode_step(t, &t->dec[s], &p, &next);
        pieces_swap(&p, &next);
    }
    for (size_t i = 0; i < arrlenu(p.v); i++)
        if (p.v[i].len) memcpy(arraddnptr(*out, p.v[i].len), p.buf + p.v[i].off, p.v[i].len);
    pieces_free(&p);
}
