/* A C caller of a library written by llgrad.export, for tests/test_export.py.
 *
 * Built against the generated header through "harness_bind.h", which the test writes
 * beside NAME.h (cc -IFOLDER harness.c FOLDER/NAME.a ...); it includes NAME.h and defines
 *   LIB_CALL(p, ws)        NAME(p[0], ..., p[N - 1], ws): the prototype checks the arity
 *   LIB_WORKSPACE_SIZE()   NAME_workspace_size()
 *   LIB_OK, LIB_ERROR_NULL, LIB_ERROR_OVERLAP   the header's macros
 *
 *   harness MODE MANIFEST
 *
 * MANIFEST: a line "N_IN N_OUT", then N_IN lines "PATH BYTES UPDATED" (the arguments,
 * read from PATH, which must hold exactly BYTES; UPDATED is 1 for one the function
 * updates in place, else 0), then N_OUT lines "PATH BYTES" (the results the caller
 * passes buffers for).  Every buffer is malloc'd with exactly its size.
 *
 * MODE
 *   run      one call, the workspace malloc'd with exactly LIB_WORKSPACE_SIZE() bytes;
 *            writes each result to its PATH and each argument, after the call, to
 *            PATH.after (arguments updated in place, or unchanged)
 *   guard    the same, with the workspace's last byte just before a PROT_NONE page, so
 *            a read or write past its end from any code (the kernels are not
 *            instrumented by ASan) stops the program
 *   threads:N  a reference call, then two threads started together, each with its own
 *            workspace, results and copy of the arguments, calling N times each and
 *            comparing every result with the reference byte for byte; writes the
 *            reference results as "run" does; prints "mismatches K"
 *   errors   the error cases; prints one line "CASE:I:J status S expected E untouched U"
 *            each (I, J: the buffers concerned, -1 for none; U: 1 when no argument and no
 *            result buffer changed)
 *
 * Exit status: 0 when everything asked for went as expected, 1 otherwise.
 */
#define _DEFAULT_SOURCE   /* POSIX.1-2008 (barriers), and MAP_ANONYMOUS */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness_bind.h"

#define MAX_BUFFERS 64

typedef struct {
    int n_in, n_out;
    char path[MAX_BUFFERS][4096];
    size_t bytes[MAX_BUFFERS];
    int updated[MAX_BUFFERS];
    void *data[MAX_BUFFERS];   /* arguments, read from the files, then results */
} Manifest;

static void die(const char *what, const char *detail) {
    fprintf(stderr, "harness: %s %s\n", what, detail ? detail : "");
    exit(2);
}

static void *allocate(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) die("out of memory", NULL);
    return p;
}

static void read_manifest(const char *file, Manifest *m) {
    FILE *f = fopen(file, "r");
    if (!f) die("cannot open", file);
    if (fscanf(f, "%d %d", &m->n_in, &m->n_out) != 2 || m->n_in + m->n_out > MAX_BUFFERS)
        die("bad manifest", file);
    for (int i = 0; i < m->n_in + m->n_out; i++)
        if (fscanf(f, "%4095s %zu", m->path[i], &m->bytes[i]) != 2
            || (i < m->n_in && fscanf(f, "%d", &m->updated[i]) != 1))
            die("bad manifest", file);
    fclose(f);
    for (int i = 0; i < m->n_in + m->n_out; i++) {
        m->data[i] = allocate(m->bytes[i]);
        if (i >= m->n_in) continue;
        FILE *in = fopen(m->path[i], "rb");
        if (!in) die("cannot open", m->path[i]);
        if (fread(m->data[i], 1, m->bytes[i], in) != m->bytes[i] || fgetc(in) != EOF)
            die("wrong size", m->path[i]);
        fclose(in);
    }
}

static void write_file(const char *path, const char *suffix, const void *data, size_t bytes) {
    char name[4200];
    snprintf(name, sizeof name, "%s%s", path, suffix);
    FILE *out = fopen(name, "wb");
    if (!out || fwrite(data, 1, bytes, out) != bytes || fclose(out)) die("cannot write", name);
}

static void write_results(const Manifest *m) {
    for (int i = 0; i < m->n_in + m->n_out; i++)
        write_file(m->path[i], i < m->n_in ? ".after" : "", m->data[i], m->bytes[i]);
}

/* LIB_WORKSPACE_SIZE() bytes ending right before an inaccessible page */
static void *guarded_workspace(void **region, size_t *region_bytes) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE), size = LIB_WORKSPACE_SIZE();
    size_t pages = (size + page - 1) / page + 1;
    char *base = mmap(NULL, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
    if (base == MAP_FAILED) die("mmap failed", NULL);
    if (mprotect(base + (pages - 1) * page, page, PROT_NONE)) die("mprotect failed", NULL);
    *region = base;
    *region_bytes = pages * page;
    return base + (pages - 1) * page - size;
}

static int run_once(Manifest *m, int guard) {
    void *region = NULL, *workspace;
    size_t region_bytes = 0;
    workspace = guard ? guarded_workspace(&region, &region_bytes)
                      : allocate(LIB_WORKSPACE_SIZE());
    int status = LIB_CALL(m->data, workspace);
    if (guard) munmap(region, region_bytes);
    else free(workspace);
    if (status != LIB_OK) {
        fprintf(stderr, "harness: status %d\n", status);
        return 1;
    }
    write_results(m);
    return 0;
}

/* ---- threads ---- */

typedef struct {
    const Manifest *m;
    int calls, mismatches;
    pthread_barrier_t *start;
} Worker;

static void *work(void *arg) {
    Worker *w = arg;
    const Manifest *m = w->m;
    int n = m->n_in + m->n_out;
    void *mine[MAX_BUFFERS], *original[MAX_BUFFERS];
    for (int i = 0; i < n; i++) mine[i] = allocate(m->bytes[i]);
    for (int i = 0; i < m->n_in; i++) {   /* the arguments as read (the reference call */
        original[i] = allocate(m->bytes[i]);   /* may have updated them in place) */
        FILE *in = fopen(m->path[i], "rb");
        if (!in || fread(original[i], 1, m->bytes[i], in) != m->bytes[i]) die("reread", m->path[i]);
        fclose(in);
    }
    void *workspace = allocate(LIB_WORKSPACE_SIZE());
    pthread_barrier_wait(w->start);
    for (int k = 0; k < w->calls; k++) {
        for (int i = 0; i < m->n_in; i++) memcpy(mine[i], original[i], m->bytes[i]);
        for (int i = m->n_in; i < n; i++) memset(mine[i], 0xA5, m->bytes[i]);
        if (LIB_CALL(mine, workspace) != LIB_OK) { w->mismatches++; continue; }
        for (int i = 0; i < n; i++)   /* results, and arguments as updated */
            if (memcmp(mine[i], m->data[i], m->bytes[i])) { w->mismatches++; break; }
    }
    free(workspace);
    for (int i = 0; i < n; i++) free(mine[i]);
    for (int i = 0; i < m->n_in; i++) free(original[i]);
    return NULL;
}

static int run_threads(Manifest *m, int calls) {
    if (run_once(m, 0)) return 1;   /* the reference, as one thread computes it */
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    Worker workers[2];
    pthread_t threads[2];
    for (int t = 0; t < 2; t++) {
        workers[t] = (Worker){m, calls, 0, &start};
        if (pthread_create(&threads[t], NULL, work, &workers[t])) die("pthread_create", NULL);
    }
    int mismatches = 0;
    for (int t = 0; t < 2; t++) {
        pthread_join(threads[t], NULL);
        mismatches += workers[t].mismatches;
    }
    pthread_barrier_destroy(&start);
    printf("mismatches %d\n", mismatches);
    return mismatches != 0;
}

/* ---- errors ---- */

static int failures;

/* calls with `p` (pointers into m's buffers, some replaced) and reports whether it
 * returned `expected` and left every buffer as it was */
static void expect(const char *what, int index, int other, Manifest *m, void **p,
                   void *workspace, int expected) {
    int n = m->n_in + m->n_out;
    void *before[MAX_BUFFERS];
    for (int i = m->n_in; i < n; i++) memset(m->data[i], 0xA5, m->bytes[i]);
    for (int i = 0; i < n; i++) {
        before[i] = allocate(m->bytes[i]);
        memcpy(before[i], m->data[i], m->bytes[i]);
    }
    int status = LIB_CALL(p, workspace), untouched = 1;
    for (int i = 0; i < n; i++) {
        untouched &= !memcmp(before[i], m->data[i], m->bytes[i]);
        free(before[i]);
    }
    printf("%s:%d:%d status %d expected %d untouched %d\n", what, index, other, status,
           expected, untouched);
    failures += status != expected || !untouched;
}

static int run_errors(Manifest *m) {
    int n = m->n_in + m->n_out;
    void *p[MAX_BUFFERS], *workspace = allocate(LIB_WORKSPACE_SIZE());
#define RESET() memcpy(p, m->data, sizeof(void *) * (size_t)n)
    for (int i = 0; i < n; i++) {   /* each argument, then each result, NULL */
        RESET();
        p[i] = NULL;
        expect(i < m->n_in ? "null-argument" : "null-result", i, -1, m, p, workspace,
               LIB_ERROR_NULL);
    }
    RESET();
    expect("null-workspace", -1, -1, m, p, NULL, LIB_ERROR_NULL);
    for (int j = m->n_in; j < n; j++)   /* each result at the address of each argument */
        for (int i = 0; i < m->n_in; i++) {
            RESET();
            p[j] = m->data[i];
            expect("result-on-argument", j, i, m, p, workspace, LIB_ERROR_OVERLAP);
        }
    for (int u = 0; u < m->n_in; u++)   /* an argument updated in place is a result too */
        for (int i = 0; i < m->n_in; i++)
            if (m->updated[u] && i != u) {
                RESET();
                p[u] = m->data[i];
                expect("updated-on-argument", u, i, m, p, workspace, LIB_ERROR_OVERLAP);
            }
    if (m->n_out > 1) {   /* the last result at the address of the first one */
        RESET();
        p[n - 1] = m->data[m->n_in];
        expect("result-on-result", n - 1, m->n_in, m, p, workspace, LIB_ERROR_OVERLAP);
    }
#undef RESET
    free(workspace);
    return failures != 0;
}

int main(int argc, char **argv) {
    if (argc != 3) die("usage: harness run|guard|threads:N|errors MANIFEST", NULL);
    Manifest *m = calloc(1, sizeof *m);
    if (!m) die("out of memory", NULL);
    read_manifest(argv[2], m);
    int failed;
    if (!strcmp(argv[1], "run")) failed = run_once(m, 0);
    else if (!strcmp(argv[1], "guard")) failed = run_once(m, 1);
    else if (!strncmp(argv[1], "threads:", 8)) failed = run_threads(m, atoi(argv[1] + 8));
    else if (!strcmp(argv[1], "errors")) failed = run_errors(m);
    else die("unknown mode", argv[1]);
    for (int i = 0; i < m->n_in + m->n_out; i++) free(m->data[i]);
    free(m);
    return failed;
}
