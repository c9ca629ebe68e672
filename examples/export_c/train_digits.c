/* Train the digits MLP from C with the exported training epoch, then classify the test
 * set with the exported forward pass.  No Python at run time: build with
 *
 *     python examples/export_c/export.py && make -C examples/export_c
 *     ./examples/export_c/build/train_digits [EPOCHS [FOLDER]]
 *
 * FOLDER holds the arrays export.py wrote (default: the folder of this program). */
#define _POSIX_C_SOURCE 199309L /* clock_gettime */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "predict.h"
#include "train_epoch.h"

/* Every size comes from the generated headers. */
#define N_HIDDEN TRAIN_EPOCH_PARAMS_B1_SIZE
#define N_CLASSES TRAIN_EPOCH_PARAMS_B2_SIZE
#define N_FEATURES (TRAIN_EPOCH_PARAMS_W1_SIZE / N_HIDDEN)
#define N_TRAIN (TRAIN_EPOCH_DATA_0_SIZE / N_FEATURES)
#define N_TEST PREDICT_OUT_SIZE
#define STEPS TRAIN_EPOCH_LOSSES_SIZE /* minibatches per epoch */

/* The parameters, and Adam's moments in the same shapes (params['b1'] is b1, ...). */
struct mlp {
    float b1[TRAIN_EPOCH_PARAMS_B1_SIZE], b2[TRAIN_EPOCH_PARAMS_B2_SIZE];
    float w1[TRAIN_EPOCH_PARAMS_W1_SIZE], w2[TRAIN_EPOCH_PARAMS_W2_SIZE];
};

static struct mlp params;      /* read from FOLDER */
static struct mlp adam_m, adam_v;
static float adam_step;        /* zero, as optim.adam(...).init(params) starts */

static float x_train[N_TRAIN * N_FEATURES], y_train[N_TRAIN * N_CLASSES];
static float x_test[N_TEST * N_FEATURES], y_test[N_TEST * N_CLASSES];
static int64_t rows[N_TRAIN];                 /* a permutation of the training rows */
static int64_t order[TRAIN_EPOCH_ORDER_SIZE]; /* rows of step i: order[i * batch ...] */
static double losses[STEPS];
static int64_t predicted[N_TEST];

/* Reads FOLDER/NAME.f32, which must hold exactly n floats; exits on any error. */
static void read_floats(const char *folder, const char *name, float *out, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.f32", folder, name);
    FILE *file = fopen(path, "rb");
    if (!file) {
        perror(path);
        exit(1);
    }
    size_t got = fread(out, sizeof *out, n, file);
    int extra = fgetc(file) != EOF;
    fclose(file);
    if (got != n || extra) {
        fprintf(stderr, "%s: expected %zu float32 values (run export.py again?)\n", path, n);
        exit(1);
    }
}

/* splitmix64: a small, good generator for shuffling */
static uint64_t next_random(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

/* Fisher-Yates (the modulo's bias is below 1e-15 for these sizes) */
static void shuffle(int64_t *a, size_t n, uint64_t *state) {
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)(next_random(state) % (i + 1));
        int64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void check(int status, const char *what) {
    if (status != 0) { /* TRAIN_EPOCH_OK and PREDICT_OK are 0 */
        fprintf(stderr, "%s returned error %d\n", what, status);
        exit(1);
    }
}

int main(int argc, char **argv) {
    int epochs = argc > 1 ? atoi(argv[1]) : 20;
    char folder[4096] = ".";
    if (argc > 2) {
        snprintf(folder, sizeof folder, "%s", argv[2]);
    } else if (strrchr(argv[0], '/')) { /* the folder this program is in */
        snprintf(folder, sizeof folder, "%.*s", (int)(strrchr(argv[0], '/') - argv[0]),
                 argv[0]);
    }
    if (epochs < 1) {
        fprintf(stderr, "usage: %s [EPOCHS [FOLDER]]\n", argv[0]);
        return 2;
    }
    read_floats(folder, "x_train", x_train, N_TRAIN * N_FEATURES);
    read_floats(folder, "y_train", y_train, N_TRAIN * N_CLASSES);
    read_floats(folder, "x_test", x_test, N_TEST * N_FEATURES);
    read_floats(folder, "y_test", y_test, N_TEST * N_CLASSES);
    read_floats(folder, "params_b1", params.b1, TRAIN_EPOCH_PARAMS_B1_SIZE);
    read_floats(folder, "params_b2", params.b2, TRAIN_EPOCH_PARAMS_B2_SIZE);
    read_floats(folder, "params_w1", params.w1, TRAIN_EPOCH_PARAMS_W1_SIZE);
    read_floats(folder, "params_w2", params.w2, TRAIN_EPOCH_PARAMS_W2_SIZE);

    size_t workspace_bytes = train_epoch_workspace_size();
    if (predict_workspace_size() > workspace_bytes) workspace_bytes = predict_workspace_size();
    void *workspace = malloc(workspace_bytes); /* one for both: they never run at once */
    if (!workspace) {
        perror("malloc");
        return 1;
    }

    uint64_t random_state = 0;
    for (size_t i = 0; i < N_TRAIN; i++) rows[i] = (int64_t)i;
    printf("%d training rows, %d test rows, %d steps per epoch\n", N_TRAIN, N_TEST, STEPS);
    for (int epoch = 1; epoch <= epochs; epoch++) {
        shuffle(rows, N_TRAIN, &random_state); /* the rows past the last full batch rest */
        memcpy(order, rows, sizeof order);
        double start = seconds();
        check(train_epoch(params.b1, params.b2, params.w1, params.w2,
                          adam_m.b1, adam_m.b2, adam_m.w1, adam_m.w2, &adam_step,
                          adam_v.b1, adam_v.b2, adam_v.w1, adam_v.w2,
                          x_train, y_train, order, losses, workspace),
              "train_epoch");
        double elapsed = seconds() - start, total = 0;
        for (int i = 0; i < STEPS; i++) total += losses[i];
        printf("epoch %3d  loss %.4f  (%.2f ms)\n", epoch, total / STEPS, 1e3 * elapsed);
    }

    check(predict(params.b1, params.b2, params.w1, params.w2, x_test, predicted, workspace),
          "predict");
    int correct = 0;
    for (int i = 0; i < N_TEST; i++) correct += y_test[i * N_CLASSES + predicted[i]] == 1.0f;
    printf("test accuracy %.4f (%d of %d)\n", (double)correct / N_TEST, correct, N_TEST);
    free(workspace);
    return 0;
}
