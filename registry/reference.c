/*
 * Image references, normalised the way Docker's github.com/distribution/reference does it:
 * ParseNormalizedNamed (splitDockerDomain, the lower-case check, then Parse of
 * "domain/remainder") followed by TagNameOnly. The grammar of reference/regexp.go is matched
 * by hand; each matcher names the pattern it stands for. The regexps are anchored and the
 * pieces they join never overlap (a domain ends at the first '/', a tag starts at the first ':'
 * after the last '/', a digest at the first '@'), so no backtracking is needed.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "builder/common/xalloc.h"
#include "registry/registry.h"

#define NAME_TOTAL_LENGTH_MAX 255 /* RepositoryNameTotalLengthMax */
#define TAG_LENGTH_MAX        128
#define DEFAULT_DOMAIN        "docker.io"
#define LEGACY_DEFAULT_DOMAIN "index.docker.io"
#define DEFAULT_ENDPOINT      "registry-1.docker.io"
#define OFFICIAL_REPO_PREFIX  "library/"
#define DEFAULT_TAG           "latest"

static bool is_lower_alnum(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alpha(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
        return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
        return is_alpha(c) || is_digit(c);
}

static bool is_xdigit(char c)
{
        return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_word(char c)
{
        return is_alnum(c) || c == '_';
}

static bool is_lower_hex(char c)
{
        return is_digit(c) || (c >= 'a' && c <= 'f');
}

/* pathComponent: [a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)* */
static bool match_path_component(const char *s, size_t len)
{
        size_t i = 0;

        for (;;) {
                size_t start = i;

                while (i < len && is_lower_alnum(s[i]))
                        i++;
                if (i == start)
                        return false;
                if (i == len)
                        return true;
                if (s[i] == '.') {
                        i++;
                } else if (s[i] == '_') {
                        i += (i + 1 < len && s[i + 1] == '_') ? 2 : 1;
                } else if (s[i] == '-') {
                        while (i < len && s[i] == '-')
                                i++;
                } else {
                        return false;
                }
        }
}

/* remoteName: pathComponent(?:/pathComponent)* */
static bool match_remote_name(const char *s, size_t len)
{
        size_t start = 0, i;

        for (i = 0; i <= len; i++) {
                if (i == len || s[i] == '/') {
                        if (!match_path_component(s + start, i - start))
                                return false;
                        start = i + 1;
                }
        }
        return true;
}

/* domainNameComponent: [a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9] */
static bool match_domain_component(const char *s, size_t len)
{
        size_t i;

        if (len == 0 || !is_alnum(s[0]) || !is_alnum(s[len - 1]))
                return false;
        for (i = 1; i + 1 < len; i++)
                if (!is_alnum(s[i]) && s[i] != '-')
                        return false;
        return true;
}

/* domainAndPort: (?:domainName|\[[a-fA-F0-9:]+\])(?::[0-9]+)? */
static bool match_domain_and_port(const char *s, size_t len)
{
        size_t host_end, i;

        if (len > 0 && s[0] == '[') {
                for (i = 1; i < len && (is_xdigit(s[i]) || s[i] == ':'); i++)
                        ;
                if (i == 1 || i == len || s[i] != ']')
                        return false;
                host_end = i + 1;
        } else {
                size_t start = 0;

                for (host_end = 0; host_end < len && s[host_end] != ':'; host_end++)
                        ;
                for (i = 0; i <= host_end; i++) {
                        if (i == host_end || s[i] == '.') {
                                if (!match_domain_component(s + start, i - start))
                                        return false;
                                start = i + 1;
                        }
                }
        }
        if (host_end == len)
                return true;
        if (s[host_end] != ':' || host_end + 1 == len)
                return false;
        for (i = host_end + 1; i < len; i++)
                if (!is_digit(s[i]))
                        return false;
        return true;
}

/* tag: [\w][\w.-]{0,127} */
static bool match_tag(const char *s, size_t len)
{
        size_t i;

        if (len == 0 || len > TAG_LENGTH_MAX || !is_word(s[0]))
                return false;
        for (i = 1; i < len; i++)
                if (!is_word(s[i]) && s[i] != '.' && s[i] != '-')
                        return false;
        return true;
}

/* digestPat: [A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,} */
static bool match_digest(const char *s, size_t len)
{
        size_t i = 0, hex;

        for (;;) {
                if (i == len || !is_alpha(s[i]))
                        return false;
                i++;
                while (i < len && is_alnum(s[i]))
                        i++;
                if (i < len && (s[i] == '-' || s[i] == '_' || s[i] == '+' || s[i] == '.')) {
                        i++;
                        continue;
                }
                break;
        }
        if (i == len || s[i] != ':')
                return false;
        for (hex = 0, i++; i < len; i++, hex++)
                if (!is_xdigit(s[i]))
                        return false;
        return hex >= 32;
}

struct ref_match {
        const char *name, *domain, *path, *tag, *digest;
        size_t name_len, domain_len, path_len, tag_len, digest_len;
};

/* ReferenceRegexp: ^(namePat)(?::(tag))?(?:@(digestPat))?$ with namePat's domain split off as
 * anchoredNameRegexp does. */
static bool match_reference(const char *s, struct ref_match *m)
{
        const char *at = strchr(s, '@'), *slash, *colon, *end;
        size_t left_len;

        memset(m, 0, sizeof(*m));
        left_len = at ? (size_t) (at - s) : strlen(s);
        if (at) {
                m->digest = at + 1;
                m->digest_len = strlen(at + 1);
                if (!match_digest(m->digest, m->digest_len))
                        return false;
        }
        end = s + left_len;
        slash = memrchr(s, '/', left_len);
        colon = memchr(slash ? slash : s, ':', (size_t) (end - (slash ? slash : s)));
        m->name = s;
        m->name_len = colon ? (size_t) (colon - s) : left_len;
        if (colon) {
                m->tag = colon + 1;
                m->tag_len = (size_t) (end - m->tag);
                if (!match_tag(m->tag, m->tag_len))
                        return false;
        }
        slash = memchr(s, '/', m->name_len);
        if (slash && match_domain_and_port(s, (size_t) (slash - s)) &&
            match_remote_name(slash + 1, m->name_len - (size_t) (slash - s) - 1)) {
                m->domain = s;
                m->domain_len = (size_t) (slash - s);
                m->path = slash + 1;
                m->path_len = m->name_len - m->domain_len - 1;
                return true;
        }
        if (!match_remote_name(s, m->name_len))
                return false;
        m->domain = s;
        m->domain_len = 0;
        m->path = s;
        m->path_len = m->name_len;
        return true;
}

static char *ascii_lower(const char *s)
{
        char *r = xstrdup(s), *p;

        for (p = r; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                        *p = (char) (*p - 'A' + 'a');
        return r;
}

static bool has_upper(const char *s, size_t len)
{
        size_t i;

        for (i = 0; i < len; i++)
                if (s[i] >= 'A' && s[i] <= 'Z')
                        return true;
        return false;
}

static int invalid(struct kiln_error **err, const char *what, const char *input)
{
        return kiln_error_new(err, KILN_ERR_INVALID, "%s: '%s'", what, input);
}

/* go-digest's Digest.Validate for what digestPat accepted. */
static int validate_digest(const char *d, size_t len, const char *input, struct kiln_error **err)
{
        static const struct {
                const char *name;
                size_t hex_len;
        } algorithms[] = { { "sha256", 64 }, { "sha384", 96 }, { "sha512", 128 } };
        const char *colon = memchr(d, ':', len);
        size_t alg_len = (size_t) (colon - d), hex_len = len - alg_len - 1, i, k;

        for (k = 0; k < ELEMENTSOF(algorithms); k++)
                if (strlen(algorithms[k].name) == alg_len &&
                    memcmp(algorithms[k].name, d, alg_len) == 0)
                        break;
        if (k == ELEMENTSOF(algorithms)) {
                /* DigestRegexp wants a lower-case algorithm; anything else is a bad format. */
                if (has_upper(d, alg_len))
                        return invalid(err, "invalid checksum digest format", input);
                return invalid(err, "unsupported digest algorithm", input);
        }
        if (hex_len != algorithms[k].hex_len)
                return invalid(err, "invalid checksum digest length", input);
        for (i = 0; i < hex_len; i++)
                if (!is_lower_hex(colon[1 + i]))
                        return invalid(err, "invalid checksum digest format", input);
        return 0;
}

/* anchoredIdentifierRegexp: ^[a-f0-9]{64}$ */
static bool is_identifier(const char *s)
{
        size_t i;

        for (i = 0; i < 64; i++)
                if (!is_lower_hex(s[i]))
                        return false;
        return s[64] == '\0';
}

int reg_ref_parse(const char *s, struct reg_ref *ret, struct kiln_error **err)
{
        _cleanup_free_ char *full = NULL;
        const char *slash, *domain, *remainder, *first_colon;
        size_t first_len, domain_len, remote_len;
        bool library;
        struct ref_match m;

        if (!s)
                return kiln_error_new(err, KILN_ERR_INVALID, "invalid reference format: no name");
        if (is_identifier(s))
                return kiln_error_new(err, KILN_ERR_INVALID,
                                      "invalid repository name '%s', cannot specify 64-byte "
                                      "hexadecimal strings",
                                      s);

        /* splitDockerDomain */
        slash = strchr(s, '/');
        first_len = slash ? (size_t) (slash - s) : 0;
        if (!slash ||
            (!memchr(s, '.', first_len) && !memchr(s, ':', first_len) &&
             !(first_len == strlen("localhost") && memcmp(s, "localhost", first_len) == 0) &&
             !has_upper(s, first_len))) {
                domain = DEFAULT_DOMAIN;
                domain_len = strlen(DEFAULT_DOMAIN);
                remainder = s;
        } else {
                domain = s;
                domain_len = first_len;
                remainder = slash + 1;
        }
        if (domain_len == strlen(LEGACY_DEFAULT_DOMAIN) &&
            memcmp(domain, LEGACY_DEFAULT_DOMAIN, domain_len) == 0) {
                domain = DEFAULT_DOMAIN;
                domain_len = strlen(DEFAULT_DOMAIN);
        }
        library = domain_len == strlen(DEFAULT_DOMAIN) &&
                  memcmp(domain, DEFAULT_DOMAIN, domain_len) == 0 && !strchr(remainder, '/');

        /* The repository part (up to the first ':') must be lower case. */
        first_colon = strchr(remainder, ':');
        remote_len = first_colon ? (size_t) (first_colon - remainder) : strlen(remainder);
        if (has_upper(remainder, remote_len))
                return invalid(err, "invalid reference format: repository name must be lowercase",
                               s);

        full = xasprintf("%.*s/%s%s", (int) domain_len, domain, library ? OFFICIAL_REPO_PREFIX : "",
                         remainder);

        /* Parse */
        if (!match_reference(full, &m)) {
                _cleanup_free_ char *lower = ascii_lower(full);
                struct ref_match ml;

                if (match_reference(lower, &ml))
                        return invalid(err,
                                       "invalid reference format: repository name must be "
                                       "lowercase",
                                       s);
                return invalid(err, "invalid reference format", s);
        }
        if (m.name_len > NAME_TOTAL_LENGTH_MAX)
                return kiln_error_new(err, KILN_ERR_INVALID,
                                      "repository name must not be more than %d characters: '%s'",
                                      NAME_TOTAL_LENGTH_MAX, s);
        if (m.digest && validate_digest(m.digest, m.digest_len, s, err) < 0)
                return -1;
        /* Docker would return a name without a domain here ("foo_bar.com/x" reads as a path
         * when the first component is no valid host); kiln has no registry to send it to. */
        if (m.domain_len == 0)
                return invalid(err, "invalid reference format", s);

        ret->domain = xstrndup(m.domain, m.domain_len);
        ret->path = xstrndup(m.path, m.path_len);
        ret->tag = m.tag ? xstrndup(m.tag, m.tag_len) : NULL;
        ret->digest = m.digest ? xstrndup(m.digest, m.digest_len) : NULL;
        /* TagNameOnly */
        if (!ret->tag && !ret->digest)
                ret->tag = xstrdup(DEFAULT_TAG);
        return 0;
}

char *reg_ref_string(const struct reg_ref *r)
{
        return xasprintf("%s/%s%s%s%s%s", r->domain, r->path, r->tag ? ":" : "",
                         r->tag ? r->tag : "", r->digest ? "@" : "", r->digest ? r->digest : "");
}

char *reg_ref_repository(const struct reg_ref *r)
{
        return xasprintf("%s/%s", r->domain, r->path);
}

const char *reg_ref_endpoint(const struct reg_ref *r)
{
        if (strcmp(r->domain, DEFAULT_DOMAIN) == 0)
                return DEFAULT_ENDPOINT;
        return r->domain;
}

void reg_ref_release(struct reg_ref *r)
{
        if (!r)
                return;
        free(r->domain);
        free(r->path);
        free(r->tag);
        free(r->digest);
        memset(r, 0, sizeof(*r));
}

bool reg_tag_valid(const char *tag)
{
        return tag && match_tag(tag, strlen(tag));
}
