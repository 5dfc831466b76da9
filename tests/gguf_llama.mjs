// gguf_llama.mjs: the llama.cpp side of tests/test_gguf_llama.sh. Loads a GGUF file with the
// real llama.cpp (the npm package node-llama-cpp, CPU only) and, for each text DIR/N.txt
// (N = 0 .. COUNT-1), prints its tokenization by llama.cpp and, with --logprobs, the
// next-token log-probabilities llama.cpp gives the ids in DIR/N.ids (qlora's tokenization):
//   tokens N: ID ID ...          (with the BOS / EOS the model file asks llama.cpp to add, as
//                                 llama_tokenize with add_special does)
//   logprobs N: LP LP ...        (for ids[1..n-1], each given the ids before it)
// Usage: node tests/gguf_llama.mjs PACKAGE_DIR MODEL.gguf [--lora FILE.gguf] [--logprobs] DIR COUNT
// llama.cpp runs with its defaults otherwise (CPU, 2 threads, the model's context length).
import fs from 'fs';
import path from 'path';

const args = process.argv.slice(2);
const opt = (name) => {
    const i = args.indexOf(name);
    return i < 0 ? null : args.splice(i, 2)[1];
};
const flag = (name) => {
    const i = args.indexOf(name);
    return i >= 0 && args.splice(i, 1).length === 1;
};
const lora = opt('--lora'), logprobs = flag('--logprobs');
const [pkg, modelPath, dir, count] = args;
if (!pkg || !modelPath || !dir || !count) {
    console.error('usage: node tests/gguf_llama.mjs PACKAGE_DIR MODEL.gguf [--lora F] [--logprobs] DIR COUNT');
    process.exit(2);
}
const { getLlama } = await import(path.join(path.resolve(pkg), 'dist/index.js'));
const llama = await getLlama({ gpu: false, logLevel: 'error', build: 'never' });
const model = await llama.loadModel({ modelPath });
const ctxOptions = { contextSize: Math.min(model.trainContextSize, 4096), batchSize: 512, threads: 2 };
if (lora) ctxOptions.lora = { adapters: [{ filePath: lora }] };
const context = logprobs ? await model.createContext(ctxOptions) : null;
const sequence = context ? context.getSequence() : null;

// log p(ids[i+1] | ids[0..i]) for every i, from llama.cpp's raw logits (a log-softmax in double).
async function scoreIds(ids) {
    await sequence.clearHistory();  // each text from position 0, as qlora scores it
    const input = ids.map((t, i) => (i + 1 < ids.length ? [t, { generateNext: { logits: true } }] : t));
    const res = await sequence.controlledEvaluate(input);
    const out = [];
    for (let i = 0; i + 1 < ids.length; i++) {
        const logits = res[i].next.logits;
        let max = -Infinity, sum = 0;
        for (const v of logits.values()) max = Math.max(max, v);
        for (const v of logits.values()) sum += Math.exp(v - max);
        out.push(logits.get(ids[i + 1]) - max - Math.log(sum));
    }
    return out;
}

for (let n = 0; n < Number(count); n++) {
    const text = fs.readFileSync(path.join(dir, `${n}.txt`), 'utf8');
    // node-llama-cpp's tokenize(text) adds no special tokens; the file's add_bos / add_eos do
    const bos = model.tokens.shouldPrependBosToken && model.tokens.bos !== null ? [model.tokens.bos] : [];
    const eos = model.tokens.shouldAppendEosToken && model.tokens.eos !== null ? [model.tokens.eos] : [];
    console.log(`tokens ${n}: ${[...bos, ...model.tokenize(text), ...eos].join(' ')}`);
    if (logprobs) {
        const ids = fs.readFileSync(path.join(dir, `${n}.ids`), 'utf8').trim().split(/\s+/).map(Number);
        const lp = await scoreIds(ids);
        console.log(`logprobs ${n}: ${lp.map((v) => v.toPrecision(9)).join(' ')}`);
    }
}
await llama.dispose();
