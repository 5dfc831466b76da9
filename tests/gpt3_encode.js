// gpt3_encode.js: the independent reference for tests/test_tokenizer_js.sh. Encodes each text
// below with the npm package gpt-3-encoder's JavaScript GPT-2 encoder and writes OUT/N.txt
// (the text, UTF-8) and OUT/N.ids (its ids, space-separated), N = 0, 1, ...
// Usage: node tests/gpt3_encode.js PACKAGE_DIR OUT
// The texts avoid where gpt-3-encoder knowingly differs from GPT-2's Python encoder:
// <|endoftext|> (plain text to it), U+001C..U+001F and U+0085 (whitespace to Python's \s,
// not to JavaScript's), U+FEFF (the reverse), invalid UTF-8 (JavaScript strings cannot hold
// it) and tokens with two commas (it keys its merge table by "a,b").
'use strict';
const fs = require('fs');
const path = require('path');

const TEXTS = [
    'Hello world',
    "I'll we've they're it's don't 'S 'LL can't O'Neil",
    '123 4567 3.14159 2024-11-28 0x1F 1e10 $9.99',
    'naïve café résumé Ünïcödé Ångström',
    '日本語のテキストです。中文 한국어',
    '👍🏽 🎉 emoji 🇯🇵 👨‍👩‍👧',
    'a   b\t\tc \n\n  d',
    'line one\r\nline two\r\n',
    '        eight spaces then word',
    'trailing   ',
    '!!!??? ... --- ((())) @#$%^&*',
    'Ǆungla Ⅻ ½ ① ٣٤٥ ०१२',
    'mixed123abc 456def αβγ123',
    'The QLoRA paper fine-tunes a 65B model on one 48GB GPU.',
    'non\u00a0breaking\u2003em space\u3000ideographic',
    'tab\tafter\u2028line separator',
    'supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis',
    "don't\n\n\nstop  \t\n",
    'Привет, мир! Γειά σου κόσμε',
    '',
];

const [pkg, out] = process.argv.slice(2);
if (!pkg || !out) {
    console.error('usage: node tests/gpt3_encode.js PACKAGE_DIR OUT');
    process.exit(2);
}
const { encode } = require(path.resolve(pkg));
TEXTS.forEach((text, i) => {
    fs.writeFileSync(path.join(out, `${i}.txt`), text, 'utf8');
    fs.writeFileSync(path.join(out, `${i}.ids`), encode(text).join(' ') + '\n');
});
console.log(`${TEXTS.length} texts encoded`);
