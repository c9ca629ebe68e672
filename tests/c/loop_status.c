/* A C caller of an exported function with two bounded while_loops, for
 * tests/test_export_loop_status.py.  "loop_bind.h", written by the test, includes the
 * generated header and defines LIB_CALL(x, y, out, ws), LIB_WORKSPACE_SIZE() and
 * LIB_OK, LIB_LOOP0, LIB_LOOP1 (the header's codes).
 *
 *   loop_status X Y EXPECTED
 *
 * calls the function on the float64 scalars X and Y and checks that it returns the
 * code named by EXPECTED (ok, loop0 or loop1); prints "status S result R".
 * Exit status: 0 when the code is the expected one, 1 otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loop_bind.h"

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    int expected = !strcmp(argv[3], "loop0") ? LIB_LOOP0
                 : !strcmp(argv[3], "loop1") ? LIB_LOOP1 : LIB_OK;
    double x = atof(argv[1]), y = atof(argv[2]), out = 0;
    void *workspace = malloc(LIB_WORKSPACE_SIZE());
    if (!workspace) return 2;
    int status = LIB_CALL(&x, &y, &out, workspace);
    free(workspace);
    printf("status %d result %.17g\n", status, out);
    return status == expected ? 0 : 1;
}
