/* SPDX-License-Identifier: MIT */
/* Helpers shared by the setup code in native/src (never on the packet path). */
#ifndef MIRRORD_SRC_UTIL_H
#define MIRRORD_SRC_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

/* A function libmirrord exports (native/libmirrord.map lists them).  Everything is built
 * with -fvisibility=hidden; the library's build (make lib) defines MR_BUILD_LIB, so these
 * become visible there and stay hidden inside the cffi modules, which export nothing. */
#ifdef MR_BUILD_LIB
#define MR_EXPORT __attribute__((visibility("default")))
#else
#define MR_EXPORT
#endif

/* Write one line naming the reason into err, return rc (a negative errno). */
static inline int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static inline int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

#endif
