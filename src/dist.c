// dist.c: see dist.h.
#include "dist.h"

#include <stdlib.h>

#ifdef QLORA_MPI
#include <mpi.h>

static bool g_mpi_on;  // set once by dist_init; read-only afterwards

void dist_init(Dist *d, int *argc, char ***argv) {
    MPI_Init(argc, argv);
    g_mpi_on = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->size);
}

void dist_finalize(void) {
    if (g_mpi_on) MPI_Finalize();
}

bool dist_check_launcher(Error *err) {
    (void)err;
    return true;
}

double dist_sum_floats(float *buf, size_t n) {
    double t0 = MPI_Wtime();
    // counts are int in MPI: reduce in chunks of at most 2^30 floats
    for (size_t off = 0; off < n; off += (size_t)1 << 30) {
        size_t k = n - off < ((size_t)1 << 30) ? n - off : (size_t)1 << 30;
        MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
    return MPI_Wtime() - t0;
}

double dist_sum_double(double x) {
    double y;
    MPI_Allreduce(&x, &y, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return y;
}

bool dist_any(bool x) {
    int in = x, out = 0;
    MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return out != 0;
}


#else
void dist_init(Dist *d, int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    d->rank = 0;
    d->size = 1;
}
void dist_finalize(void) {}

bool dist_check_launcher(Error *err) {
    static const char *const size_vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"};
    static const char *const rank_vars[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"};
    for (int k = 0; k < 6; k++) {
        const char *name = k < 3 ? size_vars[k] : rank_vars[k - 3];
        const char *v = getenv(name);
        if (v && atol(v) > (k < 3 ? 1 : 0))
            return error_set(err, "%s=%s: started by an MPI launcher as one of several ranks, but this qlora "
                                  "was built without MPI and every rank would train the whole job into the "
                                  "same output_dir; build with 'make MPI=1' and run build/mpi/qlora",
                             name, v);
    }
    return true;
}
double dist_sum_floats(float *buf, size_t n) {
    (void)buf;
    (void)n;
    return 0.0;
}
double dist_sum_double(double x) { return x; }
bool dist_any(bool x) { return x; }
#endif
