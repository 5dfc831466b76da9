// hf_tokenizers_ref.js: the `tokenizers` library's answers for test_hf_tokenizer.c.
// node tests/hf_tokenizers_ref.js PACKAGE_DIR TOKENIZER_JSON TEXTS_JSON OUT_JSON
// TEXTS_JSON is an array of strings; OUT_JSON gets, per text, the ids without and with special
// tokens, the offsets of the first (in bytes of the UTF-8 text: [start, end) per id, flattened),
// the decode of the first and the decode of the second skipping special tokens.
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require(path.resolve(process.argv[2]));

(async () => {
    const tok = Tokenizer.fromFile(process.argv[3]);
    const texts = JSON.parse(fs.readFileSync(process.argv[4], 'utf8'));
    const out = [];
    for (const s of texts) {
        const ids = Array.from((await tok.encode(s, null, { addSpecialTokens: false })).getIds());
        const ids2 = Array.from((await tok.encode(s, null, { addSpecialTokens: true })).getIds());
        // the library's offsets count characters: turn them into bytes of the UTF-8 text
        const chars = Array.from(s), at = [0];
        for (const c of chars) at.push(at[at.length - 1] + Buffer.byteLength(c, 'utf8'));
        const offs = [];
        for (const [a, b] of (await tok.encode(s, null, { addSpecialTokens: false })).getOffsets()) offs.push(at[a], at[b]);
        out.push({ ids, ids2, offs, dec: await tok.decode(ids, false), dec2: await tok.decode(ids2, true) });
    }
    fs.writeFileSync(process.argv[5], JSON.stringify(out));
})().catch((e) => {
    console.error(`hf_tokenizers_ref: ${e}`);
    process.exit(1);
});
