/* JSON helpers over jansson; json-util.c is the one place that turns json_error_t into kiln errors.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "builder/common/error.h"

/* jansson provides json_decrefp() itself. */
#define _cleanup_json_ _cleanup_(json_decrefp)

/** Parses a JSON document (NUL bytes allowed in strings). PARSE error with line:column. */
json_t *kiln_json_loadb(const char *data, size_t len, const char *what, struct kiln_error **err);

/** Reads and parses a JSON file of at most `max` bytes. */
json_t *kiln_json_load_file(const char *path, size_t max, struct kiln_error **err);

/** Returns obj[key] as a string, or NULL when absent or not a string. */
const char *kiln_json_get_string(const json_t *obj, const char *key);

/** Returns obj[key] as a boolean, or `def` when absent or not a boolean. */
bool kiln_json_get_bool(const json_t *obj, const char *key, bool def);

/**
 * Decodes `text` as a JSON array of strings, the way Go's encoding/json reads a Dockerfile's
 * exec form. On success *ret_items and *ret_lens are malloc'd arrays of `*ret_n` malloc'd
 * strings (which may contain NUL bytes) and their lengths. Fails with PARSE when the text is
 * not a JSON array, and INVALID when it is one but holds something other than strings.
 */
int kiln_json_string_array(const char *text, size_t len, char ***ret_items, size_t **ret_lens,
                           size_t *ret_n, struct kiln_error **err);

/** Returns jansson's version string. */
const char *kiln_json_library_version(void);
