// cli.h: forwards to cmd/cli.h while src/train.c and src/bench.c still include "cli.h";
// removed when they move under src/cmd/.
#include "cmd/cli.h"
