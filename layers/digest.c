/* SHA-256 over OpenSSL's EVP interface: the one file of kiln that includes OpenSSL. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "builder/common/xalloc.h"
#include "layers/layers.h"

struct layer_sha256 {
        EVP_MD_CTX *ctx;
};

static void must(int ok)
{
        /* EVP only fails here on allocation failure: treat it like the x* allocators. */
        if (!ok)
                abort();
}

/*
 * The implementation is fetched once, explicitly. EVP_sha256() would look it up in OpenSSL's
 * method store (under its locks) at every init, and kiln forks children that hash while other
 * threads of the parent may be inside that store: a lock copied held into a child never opens.
 */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void fetch_sha256(void)
{
        sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

struct layer_sha256 *layer_sha256_new(void)
{
        struct layer_sha256 *h = xmalloc(sizeof(*h));

        must(pthread_once(&sha256_once, fetch_sha256) == 0 && sha256_md != NULL);
        h->ctx = EVP_MD_CTX_new();
        must(h->ctx != NULL);
        must(EVP_DigestInit_ex(h->ctx, sha256_md, NULL));
        return h;
}

void layer_sha256_update(struct layer_sha256 *h, const void *data, size_t len)
{
        if (len)
                must(EVP_DigestUpdate(h->ctx, data, len));
}

void layer_sha256_final(struct layer_sha256 *h, char out[LAYER_DIGEST_SIZE])
{
        static const char hex[] = "0123456789abcdef";
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int n = 0, i;

        must(EVP_DigestFinal_ex(h->ctx, md, &n));
        memcpy(out, "sha256:", 7);
        for (i = 0; i < n && i < 32; i++) {
                out[7 + 2 * i] = hex[md[i] >> 4];
                out[8 + 2 * i] = hex[md[i] & 0xF];
        }
        out[71] = '\0';
}

struct layer_sha256 *layer_sha256_free(struct layer_sha256 *h)
{
        if (!h)
                return NULL;
        EVP_MD_CTX_free(h->ctx);
        free(h);
        return NULL;
}

bool layer_digest_valid(const char *digest)
{
        size_t i;

        if (!digest || strncmp(digest, "sha256:", 7) != 0 || strlen(digest) != 71)
                return false;
        for (i = 7; i < 71; i++)
                if (!((digest[i] >= '0' && digest[i] <= '9') ||
                      (digest[i] >= 'a' && digest[i] <= 'f')))
                        return false;
        return true;
}

const char *layer_crypto_version(void)
{
        return OpenSSL_version(OPENSSL_VERSION);
}

char *layer_base64_encode(const void *data, size_t len)
{
        char *out;

        if (len > (size_t) INT_MAX / 2)
                abort();
        out = xmalloc(4 * ((len + 2) / 3) + 1);
        EVP_EncodeBlock((unsigned char *) out, data, (int) len);
        return out;
}

int layer_base64_decode(const char *text, void **ret, size_t *ret_len, struct kiln_error **err)
{
        size_t len = strlen(text), pad = 0, i;
        unsigned char *out;
        int n;

        if (len % 4 != 0 || len > (size_t) INT_MAX / 2)
                return kiln_error_new(err, KILN_ERR_INVALID, "malformed base64");
        for (i = 0; i < len; i++) {
                char ch = text[i];
                bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                          ch == '+' || ch == '/' || (ch == '=' && i >= len - 2);
                if (!ok)
                        return kiln_error_new(err, KILN_ERR_INVALID, "malformed base64");
        }
        if (len && text[len - 1] == '=')
                pad++;
        if (len > 1 && text[len - 2] == '=')
                pad++;
        out = xmalloc(len / 4 * 3 + 1);
        n = EVP_DecodeBlock(out, (const unsigned char *) text, (int) len);
        if (n < 0) {
                free(out);
                return kiln_error_new(err, KILN_ERR_INVALID, "malformed base64");
        }
        /* EVP_DecodeBlock counts the padding as data bytes. */
        n -= (int) pad;
        out[n] = '\0';
        *ret = out;
        *ret_len = (size_t) n;
        return 0;
}

void layer_chain_id(const char *parent, const char *diff_id, char out[LAYER_DIGEST_SIZE])
{
        struct layer_sha256 *h;

        if (!parent[0]) {
                memmove(out, diff_id, LAYER_DIGEST_SIZE);
                return;
        }
        /* ChainID(L0|...|Ln) = sha256(ChainID(L0|...|Ln-1) + " " + DiffID(Ln)) */
        h = layer_sha256_new();
        layer_sha256_update(h, parent, strlen(parent));
        layer_sha256_update(h, " ", 1);
        layer_sha256_update(h, diff_id, strlen(diff_id));
        layer_sha256_final(h, out);
        layer_sha256_free(h);
}
