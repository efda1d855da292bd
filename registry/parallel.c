/* A small worker pool for blob transfers: a shared counter hands out indexes; the first failure
 * stops the hand-out and is what the caller sees. */
#include <pthread.h>

#include "registry/registry-internal.h"

#define MAX_WORKERS 32

struct pool {
        int (*fn)(void *ctx, size_t i, struct kiln_error **err);
        void *ctx;
        size_t n, next;
        pthread_mutex_t lock;
        struct kiln_error *first_err;
        bool stop;
};

static void *worker(void *arg)
{
        struct pool *p = arg;

        for (;;) {
                struct kiln_error *err = NULL;
                size_t i;

                pthread_mutex_lock(&p->lock);
                if (p->stop || p->next >= p->n) {
                        pthread_mutex_unlock(&p->lock);
                        return NULL;
                }
                i = p->next++;
                pthread_mutex_unlock(&p->lock);
                if (p->fn(p->ctx, i, &err) < 0) {
                        pthread_mutex_lock(&p->lock);
                        if (!p->first_err)
                                p->first_err = TAKE_PTR(err);
                        p->stop = true;
                        pthread_mutex_unlock(&p->lock);
                }
                kiln_error_free(err);
        }
}

int reg_run_parallel(unsigned parallel, size_t n, int (*fn)(void *ctx, size_t i, struct kiln_error **err),
                     void *ctx, struct kiln_error **err)
{
        struct pool p = { .fn = fn, .ctx = ctx, .n = n };
        pthread_t threads[MAX_WORKERS];
        unsigned want = parallel == 0 ? 1 : parallel > MAX_WORKERS ? MAX_WORKERS : parallel, i, started = 0;

        if (want > n)
                want = (unsigned) n;
        pthread_mutex_init(&p.lock, NULL);
        for (i = 1; i < want; i++)
                if (pthread_create(&threads[started], NULL, worker, &p) == 0)
                        started++;
        worker(&p); /* this thread works too */
        for (i = 0; i < started; i++)
                pthread_join(threads[i], NULL);
        pthread_mutex_destroy(&p.lock);
        if (p.first_err) {
                *err = p.first_err;
                return -1;
        }
        return 0;
}
