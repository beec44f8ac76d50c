/*
 * A C client of the mlos IPC door: connects to a running `axon serve` (its --ipc-name, "mlos" by
 * default), writes a float32 [rows, cols] input named by the command line into its arena, asks the
 * server to run the model on it in place, and prints the outputs.
 *
 *   ipc-client [NAME] [MODEL] [INPUT] [ROWS] [COLS] [REPEAT]
 *   ipc-client mlos mlp x 2 4        # the demo MLP
 *
 * The input holds 0.1, 0.2, 0.3, ... With REPEAT > 1 it runs that many times and prints the median
 * and 99th percentile round-trip times, and the median of the model's own run time (which the
 * server reports in each response). Exit status: 0 on success, 1 on an error response, 2 on a connection failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mlos_ipc.h"

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int compare(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

int main(int argc, char** argv) {
  const char* name = argc > 1 ? argv[1] : "mlos";
  const char* model = argc > 2 ? argv[2] : "mlp";
  const char* input = argc > 3 ? argv[3] : "x";
  long rows = argc > 4 ? atol(argv[4]) : 1;
  long cols = argc > 5 ? atol(argv[5]) : 4;
  long repeat = argc > 6 ? atol(argv[6]) : 1;
  if (rows <= 0 || cols <= 0 || repeat <= 0) {
    fprintf(stderr, "rows, cols and repeat must be positive\n");
    return 2;
  }

  char error[256];
  mlos_ipc_client* client = mlos_ipc_connect(name, 16u << 20, error, sizeof error);
  if (client == NULL) {
    fprintf(stderr, "%s\n", error);
    return 2;
  }

  /* The input at the start of the arena, the outputs in a window after it. */
  uint64_t in_bytes = (uint64_t)rows * (uint64_t)cols * sizeof(float);
  uint64_t window = (in_bytes + MLOS_IPC_ALIGN - 1) / MLOS_IPC_ALIGN * MLOS_IPC_ALIGN;
  if (window * 2 > mlos_ipc_arena_bytes(client)) {
    fprintf(stderr, "the input does not fit the arena\n");
    mlos_ipc_close(client);
    return 2;
  }
  float* x = (float*)mlos_ipc_arena(client);
  for (uint64_t i = 0; i < (uint64_t)rows * (uint64_t)cols; i++) x[i] = 0.1f * (float)(i + 1);

  struct mlos_ipc_request request;
  memset(&request, 0, sizeof request);
  request.kind = MLOS_IPC_INFER;
  snprintf(request.model, sizeof request.model, "%s", model);
  request.n_inputs = 1;
  snprintf(request.inputs[0].name, sizeof request.inputs[0].name, "%s", input);
  request.inputs[0].dtype = 1; /* float32 */
  request.inputs[0].rank = 2;
  request.inputs[0].shape[0] = rows;
  request.inputs[0].shape[1] = cols;
  request.inputs[0].offset = 0;
  request.inputs[0].bytes = in_bytes;
  request.out_offset = window;
  request.out_bytes = mlos_ipc_arena_bytes(client) - window;

  double* times = (double*)malloc(sizeof(double) * (size_t)repeat);
  double* compute = (double*)malloc(sizeof(double) * (size_t)repeat);
  struct mlos_ipc_response response;
  for (long i = 0; i < repeat; i++) {
    request.id = (uint64_t)i + 1;
    double t0 = now_us();
    if (mlos_ipc_infer(client, &request, &response, 10000, error, sizeof error) != 0) {
      fprintf(stderr, "%s\n", error);
      free(times);
      free(compute);
      mlos_ipc_close(client);
      return 2;
    }
    times[i] = now_us() - t0;
    compute[i] = (double)response.compute_ns / 1e3;
    if (response.status != 0) {
      fprintf(stderr, "%s: %s\n", response.code, response.message);
      free(times);
      free(compute);
      mlos_ipc_close(client);
      return 1;
    }
  }

  const uint8_t* arena = (const uint8_t*)mlos_ipc_arena(client);
  for (uint32_t o = 0; o < response.n_outputs; o++) {
    const struct mlos_ipc_tensor* t = &response.outputs[o];
    printf("%s [", t->name);
    for (uint32_t k = 0; k < t->rank; k++) printf(k ? ", %lld" : "%lld", (long long)t->shape[k]);
    printf("]");
    if (t->dtype == 1) {
      const float* y = (const float*)(arena + t->offset);
      for (uint64_t i = 0; i < t->bytes / sizeof(float); i++) printf(" %.6g", y[i]);
    }
    printf("\n");
  }
  if (repeat > 1) {
    qsort(times, (size_t)repeat, sizeof(double), compare);
    qsort(compute, (size_t)repeat, sizeof(double), compare);
    printf("round trip p50 %.2f us p99 %.2f us; model compute p50 %.2f us p99 %.2f us; %ld requests\n", times[repeat / 2],
           times[repeat * 99 / 100], compute[repeat / 2], compute[repeat * 99 / 100], repeat);
  }
  free(times);
  free(compute);
  mlos_ipc_close(client);
  return 0;
}
