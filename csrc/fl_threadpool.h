/* fastloss's thread pool: a caller-runs parallel loop over numbered blocks.
 *
 * fl_run_blocks(fn, ctx, nblocks, nthreads) calls fn(ctx, b, tid, NULL) once for every
 * block b in [0, nblocks), on the calling thread (tid 0) and on up to nthreads - 1 pool
 * threads (tid 1..), and returns when every block is done. Blocks are claimed one at a
 * time from a shared counter, so the caller runs every block no pool thread has claimed:
 * a pool thread that wakes late (its core busy with another library's spinning BLAS
 * threads, or an idle virtual CPU that takes milliseconds to wake) costs nothing, and
 * the caller waits only for blocks a pool thread has actually started. An OpenMP
 * parallel region cannot do this: its closing barrier waits for every thread of the
 * team to arrive (issue #18). Results do not depend on who runs a block: each block
 * writes its own outputs and partial sums, indexed by b; per-thread scratch is indexed
 * by tid < nthreads.
 *
 * Each pool runs one job at a time. Callers on several threads at once (Python threads,
 * fastloss.dask's blocks, XLA's threads) each take a free pool of FL_POOL_SLOTS, as
 * each would get its own OpenMP team; with every pool taken, a call runs its blocks on
 * its own thread. Pool threads spin for FL_POOL_SPIN_NS after their last block (back-to-back
 * calls find them awake), then sleep on a condition variable, woken by a job whose first
 * blocks predict FL_POOL_WAKE_NS or more on the caller alone; they are created on first
 * use, up to FL_POOL_MAX_THREADS - 1, with every signal blocked (Python handles signals on
 * its main thread), and forgotten in a child made by fork() (which gets fresh ones).
 *
 * Claiming: `ticket` packs the job's generation (high 32 bits) and its next unclaimed
 * block (low 32 bits). A thread claims block k of job g with a compare-exchange from
 * (g, k) to (g, k + 1), so a thread that read an older job's ticket can never claim a
 * block of a newer one. Before writing a new job's description the caller closes the
 * ticket ((g', FL_POOL_CLOSED)); description fields are written with release and read
 * with acquire, so a thread that saw the new description sees the closed ticket and its
 * compare-exchange fails. `done` counts finished blocks; the caller returns when it
 * reaches nblocks, and until then no job description changes. This file is included by
 * fastloss/_runtime.pyx only: one set of pools per process. */
#ifndef FL_THREADPOOL_H
#define FL_THREADPOOL_H

#include <stdint.h>

typedef void (*fl_block_fn)(void *ctx, int64_t block, int tid, const void *tag);

#define FL_POOL_SLOTS 8                 /* pools, for callers on several threads at once */
#define FL_POOL_MAX_THREADS 256         /* threads of one job, the caller included */
#define FL_POOL_SPIN_NS 100000          /* pool threads spin 0.1 ms after a job, then sleep */
#define FL_POOL_WAKE_NS 100000          /* a job predicted to take 0.1 ms wakes sleepers */
#define FL_POOL_CLOSED UINT32_MAX

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

struct fl_pool {
    _Atomic uint64_t ticket;               /* (generation << 32) | next block */
    _Atomic(fl_block_fn) fn;
    _Atomic(void *) ctx;
    _Atomic int64_t nblocks;
    _Atomic int nthreads;
    _Atomic int64_t done;                  /* blocks finished in this job */
    _Atomic int busy;                      /* a caller owns the pool */
    _Atomic int sleepers;                  /* pool threads in (or entering) cond_wait */
    uint32_t generation;                   /* written by the owning caller only */
    int started;                           /* pool threads created (under `lock`) */
    pthread_mutex_t lock;
    pthread_cond_t wake;
};

static struct fl_pool fl_pools[FL_POOL_SLOTS];
static pthread_once_t fl_pools_once = PTHREAD_ONCE_INIT;

static inline void fl_pool_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static int64_t fl_pool_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint32_t fl_pool_generation(struct fl_pool *P) {
    return (uint32_t)(atomic_load(&P->ticket) >> 32);
}

/* Claim and run one block of P's current job as thread tid; 0 when none is left for it. */
static int fl_pool_run_one(struct fl_pool *P, int tid) {
    for (;;) {
        uint64_t t = atomic_load_explicit(&P->ticket, memory_order_acquire);
        uint32_t k = (uint32_t)t;
        if (k == FL_POOL_CLOSED
            || (int64_t)k >= atomic_load_explicit(&P->nblocks, memory_order_acquire)
            || tid >= atomic_load_explicit(&P->nthreads, memory_order_acquire))
            return 0;
        if (!atomic_compare_exchange_weak_explicit(&P->ticket, &t, t + 1,
                                                   memory_order_acq_rel, memory_order_acquire))
            continue;
        fl_block_fn fn = atomic_load_explicit(&P->fn, memory_order_acquire);
        fn(atomic_load_explicit(&P->ctx, memory_order_acquire), (int64_t)k, tid, 0);
        atomic_fetch_add_explicit(&P->done, 1, memory_order_release);
        return 1;
    }
}

/* A pool thread; arg: slot * FL_POOL_MAX_THREADS + tid. */
static void *fl_pool_thread(void *arg) {
    struct fl_pool *P = &fl_pools[(intptr_t)arg / FL_POOL_MAX_THREADS];
    const int tid = (int)((intptr_t)arg % FL_POOL_MAX_THREADS);
    uint32_t seen = FL_POOL_CLOSED;      /* no job yet: join the current one, if any */
    for (;;) {
        uint32_t g = fl_pool_generation(P);
        if (g != seen) {
            seen = g;
            while (fl_pool_run_one(P, tid))
                ;
            continue;
        }
        /* Wait for a newer job: spin a little, then sleep. */
        int64_t until = fl_pool_now_ns() + FL_POOL_SPIN_NS;
        for (int i = 1; fl_pool_generation(P) == seen; i++) {
            fl_pool_pause();
            if (i % 64 == 0 && fl_pool_now_ns() > until) {
                pthread_mutex_lock(&P->lock);
                atomic_fetch_add(&P->sleepers, 1);
                while (fl_pool_generation(P) == seen)
                    pthread_cond_wait(&P->wake, &P->lock);
                atomic_fetch_sub(&P->sleepers, 1);
                pthread_mutex_unlock(&P->lock);
                break;
            }
        }
    }
    return 0;
}

/* Fresh pools, no threads: at load, and in a child made by fork() (only the forking
   thread exists there; a lock another thread held at fork time stays held). */
static void fl_pools_reset(void) {
    for (int s = 0; s < FL_POOL_SLOTS; s++) {
        struct fl_pool *P = &fl_pools[s];
        atomic_store(&P->ticket, (uint64_t)P->generation << 32 | FL_POOL_CLOSED);
        atomic_store(&P->busy, 0);
        atomic_store(&P->sleepers, 0);
        P->started = 0;
        pthread_mutex_init(&P->lock, 0);
        pthread_cond_init(&P->wake, 0);
    }
}

static void fl_pools_init(void) {
    fl_pools_reset();
    pthread_atfork(0, 0, fl_pools_reset);
}

/* Make sure P has n pool threads; returns n, or fewer if creating threads failed. */
static int fl_pool_start(struct fl_pool *P, int n) {
    pthread_mutex_lock(&P->lock);
    if (P->started < n) {
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);   /* the new threads inherit this mask */
        while (P->started < n) {
            pthread_t th;
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            intptr_t arg = (intptr_t)(P - fl_pools) * FL_POOL_MAX_THREADS + P->started + 1;
            int rc = pthread_create(&th, &attr, fl_pool_thread, (void *)arg);
            pthread_attr_destroy(&attr);
            if (rc != 0)
                break;
            P->started++;
        }
        pthread_sigmask(SIG_SETMASK, &old, 0);
    }
    if (n > P->started)
        n = P->started;
    pthread_mutex_unlock(&P->lock);
    return n;
}

/* A free pool, now owned by the caller, or NULL. */
static struct fl_pool *fl_pool_acquire(void) {
    pthread_once(&fl_pools_once, fl_pools_init);
    for (int s = 0; s < FL_POOL_SLOTS; s++) {
        int expected = 0;
        if (atomic_load_explicit(&fl_pools[s].busy, memory_order_relaxed) == 0
            && atomic_compare_exchange_strong(&fl_pools[s].busy, &expected, 1))
            return &fl_pools[s];
    }
    return 0;
}

static void fl_run_blocks(fl_block_fn fn, void *ctx, int64_t nblocks, int nthreads) {
    if (nthreads > nblocks)
        nthreads = (int)nblocks;
    if (nthreads > FL_POOL_MAX_THREADS)
        nthreads = FL_POOL_MAX_THREADS;
    struct fl_pool *P = nthreads > 1 && nblocks < (int64_t)FL_POOL_CLOSED ? fl_pool_acquire() : 0;
    if (!P) {
        for (int64_t b = 0; b < nblocks; b++)
            fn(ctx, b, 0, 0);
        return;
    }
    nthreads = 1 + fl_pool_start(P, nthreads - 1);
    const uint64_t g = (uint64_t)(++P->generation) << 32;
    atomic_store(&P->ticket, g | FL_POOL_CLOSED);
    atomic_store_explicit(&P->done, 0, memory_order_relaxed);
    atomic_store_explicit(&P->fn, fn, memory_order_release);
    atomic_store_explicit(&P->ctx, ctx, memory_order_release);
    atomic_store_explicit(&P->nblocks, nblocks, memory_order_release);
    atomic_store_explicit(&P->nthreads, nthreads, memory_order_release);
    atomic_store(&P->ticket, g);                 /* publish: block 0 is claimable */
    /* Spinning pool threads join at once; sleeping ones are woken only once the job looks
       long: its blocks so far, at the caller's pace, predict FL_POOL_WAKE_NS or more for the
       whole job. A wake-up costs the caller a system call, and the woken thread may be
       scheduled on the caller's own core (the other busy with another library's threads),
       which costs a short job more than it gains. */
    const int64_t start = fl_pool_now_ns();
    int64_t mine = 0;
    int asleep = 1;
    while (fl_pool_run_one(P, 0)) {
        mine++;
        if (asleep && atomic_load(&P->sleepers) > 0
            && (fl_pool_now_ns() - start) * nblocks >= FL_POOL_WAKE_NS * mine) {
            pthread_mutex_lock(&P->lock);
            pthread_cond_broadcast(&P->wake);
            pthread_mutex_unlock(&P->lock);
            asleep = 0;
        }
    }
    /* Every block is claimed; wait for the ones pool threads are still running. */
    for (int i = 1; atomic_load_explicit(&P->done, memory_order_acquire) < nblocks; i++) {
        if (i % 256 == 0)
            sched_yield();
        else
            fl_pool_pause();
    }
    atomic_store_explicit(&P->busy, 0, memory_order_release);
}

#else   /* no POSIX threads: every loop runs on the calling thread */
static void fl_run_blocks(fl_block_fn fn, void *ctx, int64_t nblocks, int nthreads) {
    (void)nthreads;
    for (int64_t b = 0; b < nblocks; b++)
        fn(ctx, b, 0, 0);
}
#endif

#endif
