/* A tiny TAP producer for the unit suite (meson runs these with protocol: 'tap'). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "builder/common/cleanup.h"

/** Records one test point; returns `ok` so callers can add diagnostics on failure. */
bool tap_ok(bool ok, const char *fmt, ...) _printf_(2, 3);

/** Compares two byte strings; on mismatch prints both, escaped, as diagnostics. */
bool tap_eq_mem(const void *got, size_t got_len, const void *want, size_t want_len, const char *fmt,
                ...) _printf_(5, 6);
bool tap_eq_str(const char *got, const char *want, const char *fmt, ...) _printf_(3, 4);
bool tap_eq_int(long long got, long long want, const char *fmt, ...) _printf_(3, 4);

/** Records a test point that cannot run here ("ok N # SKIP why"); under KILN_MUST_WORK=1 it
 * fails instead. */
void tap_skip(const char *fmt, ...) _printf_(1, 2);

/** Prints a "# ..." diagnostic line. */
void tap_diag(const char *fmt, ...) _printf_(1, 2);

/** Prints the plan and returns the process exit code (0 when every point passed). */
int tap_done(void);

/**
 * Ends a test that cannot run on this machine: a TAP skip, or a failure when
 * KILN_MUST_WORK=1 is set (CI). Does not return.
 */
_noreturn_ void tap_skip_all(const char *fmt, ...) _printf_(1, 2);

/** Removes `name` under `dirfd` and everything in it, never following symlinks (made
 * writable first; errors ignored): test scratch cleanup. */
void tap_rm_rf_at(int dirfd, const char *name);

/**
 * Returns the path of a file under the BuildKit conformance data (KILN_CONFORMANCE_DIR,
 * set by meson to ../shared/conformance/buildkit beside the checkout), or skips the
 * whole test when the data is absent. The result is malloc'd.
 */
char *tap_conformance_path(const char *relative);

/** Reads a whole file or fails the test run (exit 1). The result is malloc'd. */
char *tap_read_file(const char *path, size_t *ret_len);
