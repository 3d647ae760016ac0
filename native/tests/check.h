/* SPDX-License-Identifier: MIT */
/* The C tests' one assertion: count the failure, say where and why, then `action` (return
 * from the test, or go on). Each test file defines CHECK from it. */
#ifndef MIRRORD_TESTS_CHECK_H
#define MIRRORD_TESTS_CHECK_H
#include <stdio.h>

static int failures;
#define CHECK_THEN(action, cond, ...)                                                      \
	do {                                                                               \
		if (!(cond)) {                                                             \
			fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                                      \
			fputc('\n', stderr);                                               \
			failures++;                                                        \
			action;                                                            \
		}                                                                          \
	} while (0)

/* The end of a test program's main: its verdict on stdout (the runner reads "ok") and its
 * exit status. */
static inline int check_exit(void)
{
	if (failures) {
		printf("%d failures\n", failures);
		return 1;
	}
	printf("ok\n");
	return 0;
}
#endif
