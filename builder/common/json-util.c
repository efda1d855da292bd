#include <stdlib.h>
#include <string.h>

#include "builder/common/fd-util.h"
#include "builder/common/json-util.h"
#include "builder/common/xalloc.h"

json_t *kiln_json_loadb(const char *data, size_t len, const char *what, struct kiln_error **err)
{
        json_error_t jerr;
        json_t *j = json_loadb(data, len, JSON_ALLOW_NUL, &jerr);

        if (!j) {
                kiln_error_new(err, KILN_ERR_PARSE, "%s", jerr.text);
                if (err && *err) {
                        kiln_error_set_position(*err, what,
                                                (unsigned) (jerr.line > 0 ? jerr.line : 0),
                                                (unsigned) (jerr.column > 0 ? jerr.column : 0));
                }
                return NULL;
        }
        return j;
}

json_t *kiln_json_load_file(const char *path, size_t max, struct kiln_error **err)
{
        _cleanup_free_ char *data = NULL;
        size_t len;

        if (kiln_read_file_at(AT_FDCWD, path, max, &data, &len, err) < 0)
                return NULL;
        return kiln_json_loadb(data, len, path, err);
}

const char *kiln_json_get_string(const json_t *obj, const char *key)
{
        json_t *v = json_object_get(obj, key);
        return json_is_string(v) ? json_string_value(v) : NULL;
}

bool kiln_json_get_bool(const json_t *obj, const char *key, bool def)
{
        json_t *v = json_object_get(obj, key);
        return json_is_boolean(v) ? json_is_true(v) : def;
}

int kiln_json_string_array(const char *text, size_t len, char ***ret_items, size_t **ret_lens,
                           size_t *ret_n, struct kiln_error **err)
{
        _cleanup_json_ json_t *j = NULL;
        json_error_t jerr;
        char **items;
        size_t *lens, n, i;

        j = json_loadb(text, len, JSON_ALLOW_NUL, &jerr);
        if (!j)
                return kiln_error_new(err, KILN_ERR_PARSE, "%s", jerr.text);
        if (!json_is_array(j))
                return kiln_error_new(err, KILN_ERR_PARSE, "not a JSON array");
        n = json_array_size(j);
        for (i = 0; i < n; i++)
                if (!json_is_string(json_array_get(j, i)))
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "JSON array element %zu is not a string", i + 1);
        items = xcalloc(n + 1, sizeof(*items));
        lens = xcalloc(n + 1, sizeof(*lens));
        for (i = 0; i < n; i++) {
                json_t *s = json_array_get(j, i);
                lens[i] = json_string_length(s);
                items[i] = xmalloc(lens[i] + 1);
                memcpy(items[i], json_string_value(s), lens[i]);
                items[i][lens[i]] = '\0';
        }
        *ret_items = items;
        *ret_lens = lens;
        *ret_n = n;
        return 0;
}

const char *kiln_json_library_version(void)
{
        return jansson_version_str();
}
