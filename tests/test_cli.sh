#!/bin/sh
# test_cli.sh: the real binary on bad input: every malformed file of tests/bad/ and every
# usage error exits 2 with exactly one line on stderr, naming the file or option; a NaN
# weight is refused by name. Run by tests/run.sh with QLORA set to the binary under test.
set -u
. tests/lib.sh

while IFS="$(printf '\t')" read -r file phrase; do
    expect 2 "$phrase" "$Q" dequantize "tests/bad/$file" "$tmp/o.safetensors"
    expect 2 "tests/bad/$file" "$Q" quantize "tests/bad/$file" "$tmp/o.safetensors"
done <tests/bad/safetensors.list

expect 2 "tensor 'w': element 1 is NaN" "$Q" quantize tests/bad/nan.safetensors "$tmp/o.safetensors"
[ ! -e "$tmp/o.safetensors" ] && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: output left behind"; }
expect 2 "unknown command 'frobnicate'" "$Q" frobnicate
expect 2 "QLORA_GEMM: matrix-product engine: expected auto, openblas or native, found 'fast'" env QLORA_GEMM=fast "$Q" tokenize --help
expect 2 "--gemm" "$Q" bench --gemm fast
expect 2 "unknown option '--bogus'" "$Q" quantize --bogus a b
expect 2 "--blocksize must be a power of two" "$Q" quantize --blocksize 48 tests/data/small.safetensors "$tmp/x"
expect 2 "--type must be nf4 or fp4" "$Q" quantize --type int3 tests/data/small.safetensors "$tmp/x"
expect 2 "option --blocksize needs a value" "$Q" quantize tests/data/small.safetensors "$tmp/x" --blocksize
expect 2 "expected IN.safetensors and OUT.safetensors" "$Q" quantize tests/data/small.safetensors
expect 2 "cannot open" "$Q" quantize tests/data/missing.safetensors "$tmp/x"
expect 1 "cannot create" "$Q" quantize tests/data/small.safetensors /nonexistent-dir/x.safetensors

# a build without MPI started by an MPI launcher as one of several ranks refuses to run N
# copies of the job into one folder (issue 17 finding 5); a launcher of one rank is fine
expect 2 "OMPI_COMM_WORLD_SIZE=2: started by an MPI launcher as one of several ranks" env OMPI_COMM_WORLD_SIZE=2 "$Q" train tests/data/missing.yaml
expect 2 "make MPI=1" env PMI_SIZE=4 "$Q" train tests/data/missing.yaml
expect 2 "PMIX_RANK=1" env PMIX_RANK=1 "$Q" train tests/data/missing.yaml
expect 2 "missing.yaml: cannot open" env OMPI_COMM_WORLD_SIZE=1 PMIX_RANK=0 "$Q" train tests/data/missing.yaml

# only regular files are read (issue 17 findings 7 and 20): a directory, a FIFO (which
# must not block) or a device behind a symlink is refused by name with exit 2
mkfifo "$tmp/fifo"
ln -s /dev/zero "$tmp/zero"
printf 'base_model: tests/ref/tiny\ndataset: tests/ref/train_data.jsonl\nmax_steps: 1\nsequence_len: 32\n' >"$tmp/job.yaml"
expect 2 "tests: expected a regular file, found a directory" "$Q" train tests
expect 2 "$tmp/fifo: expected a regular file, found a FIFO" timeout 20 "$Q" train "$tmp/fifo"
expect 2 "tests/data: expected a regular file, found a directory" "$Q" train "$tmp/job.yaml" --set dataset=tests/data --set output_dir="$tmp/o1"
expect 2 "$tmp/fifo: expected a regular file, found a FIFO" timeout 20 "$Q" train "$tmp/job.yaml" --set dataset="$tmp/fifo" --set output_dir="$tmp/o2"
expect 2 "$tmp/zero: expected a regular file, found a character device" "$Q" tokenize --model tests/ref/tiny --file "$tmp/zero"
expect 2 "tests: expected a regular file, found a directory" "$Q" eval --model tests/ref/tiny --text tests
for f in config.json vocab.json merges.txt; do
    cp -r tests/ref/tiny "$tmp/m-$f" && rm "$tmp/m-$f/$f" && ln -s /dev/zero "$tmp/m-$f/$f"
    expect 2 "$f: expected a regular file, found a character device" timeout 20 "$Q" eval --model "$tmp/m-$f" --text tests/ref/train_data.jsonl
done
cp -r tests/ref/tiny "$tmp/m-fifo" && rm "$tmp/m-fifo/model.safetensors" && mkfifo "$tmp/m-fifo/model.safetensors"
expect 2 "model.safetensors: expected a regular file, found a FIFO" timeout 20 "$Q" eval --model "$tmp/m-fifo" --text tests/ref/train_data.jsonl

# a --set assignment sets one key: a line break in the value or YAML syntax in the key
# cannot inject others (issue 17 finding 17)
nl='
'
expect 2 "--set dataset: expected a one-line value, found a line break" "$Q" train "$tmp/job.yaml" --check --set "dataset=x${nl}max_steps: 7"
expect 2 "--set max_steps: 7 #: expected a key of letters, digits and '_', found ':'" "$Q" train "$tmp/job.yaml" --check --set "max_steps: 7 #=x"
"$Q" train "$tmp/job.yaml" --check --set "dataset=a b" >"$tmp/out" 2>&1 && grep -q "^dataset: \"a b\"$" "$tmp/out" && grep -q "^max_steps: 1$" "$tmp/out"
check "a one-line --set value with a space is still taken whole" $?

# a successful run says what it wrote and exits 0
if "$Q" quantize tests/data/small.safetensors "$tmp/q.safetensors" >"$tmp/out" 2>&1 &&
    grep -q "^layer.weight *390 *1560 *210 *4.308" "$tmp/out" &&
    "$Q" dequantize "$tmp/q.safetensors" "$tmp/d.safetensors" >/dev/null 2>&1; then
    pass=$((pass + 1))
else
    fail=$((fail + 1))
    echo "FAIL: quantize/dequantize happy path"
    cat "$tmp/out"
fi
# a file that is already quantized is refused, not quantized again (issue 17 finding 15)
expect 2 "the file is already quantized" "$Q" quantize "$tmp/q.safetensors" "$tmp/qq.safetensors"
[ ! -e "$tmp/qq.safetensors" ]; check "no re-quantized file is written" $?
"$Q" --help | grep -q "quantize" && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: --help"; }
finish test_cli.sh
