// gguf_llama.mjs: the llama.cpp side of tests/test_gguf_llama.sh. Loads a GGUF file with the
// real llama.cpp (the npm package node-llama-cpp, CPU only) and, for each text DIR/N.txt
// (N = 0 .. COUNT-1), prints its tokenization by llama.cpp and, with --logprobs, the
// next-token log-probabilities llama.cpp gives the ids in DIR/N.ids (qlora's tokenization):
//   tokens N: ID ID ...          (with the BOS / EOS the model file asks llama.cpp to add, as
//                                 llama_tokenize with add_special does)
//   logprobs N: LP LP ...        (for ids[1..n-1], each given the ids before it)
// Usage: node tests/gguf_llama.mjs PACKAGE_DIR (RUN [-- RUN]... | --runs FILE)
//   RUN: [--out FILE] MODEL.gguf [--lora FILE.gguf] [--logprobs] DIR COUNT
//   --runs FILE: one RUN a line (arguments split at white space)
// Each RUN loads its model (and adapter) afresh and writes its lines to FILE (stdout without
// --out); node and llama.cpp start once for all of them, which is most of a short run's time.
// A RUN that fails is reported on stderr and writes no FILE; the others still run (exit 1).
// llama.cpp runs with its defaults otherwise (CPU, 1 thread, the model's context length).
import fs from 'fs';
import path from 'path';

const USAGE = 'usage: node tests/gguf_llama.mjs PACKAGE_DIR ([--out F] MODEL.gguf [--lora F] [--logprobs] DIR COUNT ' +
    '[-- ...] | --runs FILE)';
const usage = () => {
    console.error(USAGE);
    process.exit(2);
};
// One RUN's arguments as { out, lora, logprobs, modelPath, dir, count }.
function parseRun(group) {
    const opt = (name) => {
        const i = group.indexOf(name);
        return i < 0 ? null : group.splice(i, 2)[1];
    };
    const flag = (name) => {
        const i = group.indexOf(name);
        return i >= 0 && group.splice(i, 1).length === 1;
    };
    const out = opt('--out'), lora = opt('--lora'), logprobs = flag('--logprobs');
    const [modelPath, dir, count] = group;
    if (group.length !== 3 || !(Number(count) >= 0)) usage();
    return { out, lora, logprobs, modelPath, dir, count: Number(count) };
}

const [pkg, ...rest] = process.argv.slice(2);
const groups = [];
if (rest[0] === '--runs' && rest.length === 2) {
    for (const line of fs.readFileSync(rest[1], 'utf8').split('\n'))
        if (line.trim()) groups.push(line.trim().split(/\s+/));
} else {
    for (let args = rest; args.length;) {
        const cut = args.indexOf('--');
        groups.push(cut < 0 ? args : args.slice(0, cut));
        args = cut < 0 ? [] : args.slice(cut + 1);
    }
}
if (!pkg || !groups.length) usage();
const runs = groups.map(parseRun);
const { getLlama } = await import(path.join(path.resolve(pkg), 'dist/index.js'));
const llama = await getLlama({ gpu: false, logLevel: 'error', build: 'never' });

// log p(ids[i+1] | ids[0..i]) for every i, from llama.cpp's raw logits (a log-softmax in double).
async function scoreIds(sequence, ids) {
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

// One RUN: its lines (tokens, and logprobs with --logprobs) for each text, written to run.out or stdout.
async function runOne({ out, lora, logprobs, modelPath, dir, count }) {
    const model = await llama.loadModel({ modelPath });
    // One thread: the models are tiny, their output was byte for byte the same with 1 and 2 threads
    // (checked once, all 27 runs), and on a busy machine a second thread waiting for its partner made
    // the runs 3x slower.
    const ctxOptions = { contextSize: Math.min(model.trainContextSize, 4096), batchSize: 512, threads: 1 };
    if (lora) ctxOptions.lora = { adapters: [{ filePath: lora }] };
    const context = logprobs ? await model.createContext(ctxOptions) : null;
    const sequence = context ? context.getSequence() : null;
    const lines = [];
    for (let n = 0; n < count; n++) {
        const text = fs.readFileSync(path.join(dir, `${n}.txt`), 'utf8');
        // node-llama-cpp's tokenize(text) adds no special tokens; the file's add_bos / add_eos do
        const bos = model.tokens.shouldPrependBosToken && model.tokens.bos !== null ? [model.tokens.bos] : [];
        const eos = model.tokens.shouldAppendEosToken && model.tokens.eos !== null ? [model.tokens.eos] : [];
        lines.push(`tokens ${n}: ${[...bos, ...model.tokenize(text), ...eos].join(' ')}`);
        if (logprobs) {
            const ids = fs.readFileSync(path.join(dir, `${n}.ids`), 'utf8').trim().split(/\s+/).map(Number);
            const lp = await scoreIds(sequence, ids);
            lines.push(`logprobs ${n}: ${lp.map((v) => v.toPrecision(9)).join(' ')}`);
        }
    }
    if (out) fs.writeFileSync(out, lines.map((l) => l + '\n').join(''));
    else console.log(lines.join('\n'));
    if (context) await context.dispose();
    await model.dispose();
}

for (const run of runs) {
    try {
        await runOne(run);
    } catch (e) {
        console.error(`${run.modelPath}${run.lora ? ' + ' + run.lora : ''}: ${e.message}`);
        process.exitCode = 1;
    }
}
await llama.dispose();
