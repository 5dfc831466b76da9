// dist.h: data-parallel training across processes with MPI (built with `make MPI=1`); in
// the default build every function is the single-process identity. Each rank holds its
// own quantized base and adapter; only gradients, loss sums and a stop flag cross ranks.
// Not here: which micro-batches a rank takes (train.c).
#ifndef QLORA_DIST_H
#define QLORA_DIST_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

typedef struct {
    int rank, size;
} Dist;

// Start MPI if built with it (no-op otherwise); fills d. Call once, first thing.
void dist_init(Dist *d, int *argc, char ***argv);
void dist_finalize(void);
// In a build without MPI: false (status 2) if an MPI launcher started this process as one of
// several ranks (OMPI_COMM_WORLD_SIZE, PMI_SIZE, MV2_COMM_WORLD_SIZE > 1, or a rank
// variable > 0), since every copy would run the whole job into the same folder. True in
// the MPI build and when started alone.
bool dist_check_launcher(Error *err);
// In-place sum of buf[0..n) over all ranks (MPI_Allreduce); returns seconds spent.
double dist_sum_floats(float *buf, size_t n);
double dist_sum_double(double x);
// True on every rank if it is true on any (for a stop request that reached one rank).
bool dist_any(bool x);

#endif
