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
 * One job runs at a time: a call made while another thread's job is running (Python
 * threads, fastloss.dask's blocks, XLA's threads) runs its blocks serially on its own
 * thread. Pool threads spin for FL_POOL_SPIN_NS after their last block (back-to-back
 * calls find them awake), then sleep on a condition variable, woken by a job still
 * running FL_POOL_WAKE_NS after it started; they are created on first
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
 * fastloss/_runtime.pyx only: one pool per process. */
#ifndef FL_THREADPOOL_H
#define FL_THREADPOOL_H

#include <stdint.h>

typedef void (*fl_block_fn)(void *ctx, int64_t block, int tid, const void *tag);

#define FL_POOL_MAX_THREADS 256
#define FL_POOL_SPIN_NS 100000          /* pool threads spin 0.1 ms after a job, then sleep */
#define FL_POOL_WAKE_NS 50000           /* a job wakes sleeping pool threads after 50 us */
#define FL_POOL_CLOSED UINT32_MAX

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

static struct {
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
    int atfork_registered;
    pthread_mutex_t lock;
    pthread_cond_t wake;
} fl_pool = {.ticket = FL_POOL_CLOSED, .lock = PTHREAD_MUTEX_INITIALIZER,
             .wake = PTHREAD_COND_INITIALIZER};

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

/* Claim and run one block of the current job as thread tid; 0 when none is left for it. */
static int fl_pool_run_one(int tid) {
    for (;;) {
        uint64_t t = atomic_load_explicit(&fl_pool.ticket, memory_order_acquire);
        uint32_t k = (uint32_t)t;
        if (k == FL_POOL_CLOSED
            || (int64_t)k >= atomic_load_explicit(&fl_pool.nblocks, memory_order_acquire)
            || tid >= atomic_load_explicit(&fl_pool.nthreads, memory_order_acquire))
            return 0;
        if (!atomic_compare_exchange_weak_explicit(&fl_pool.ticket, &t, t + 1,
                                                   memory_order_acq_rel, memory_order_acquire))
            continue;
        fl_block_fn fn = atomic_load_explicit(&fl_pool.fn, memory_order_acquire);
        fn(atomic_load_explicit(&fl_pool.ctx, memory_order_acquire), (int64_t)k, tid, 0);
        atomic_fetch_add_explicit(&fl_pool.done, 1, memory_order_release);
        return 1;
    }
}

static void *fl_pool_thread(void *arg) {
    const int tid = (int)(intptr_t)arg;
    uint32_t seen = FL_POOL_CLOSED;      /* no job yet: join the current one, if any */
    for (;;) {
        uint32_t g = (uint32_t)(atomic_load(&fl_pool.ticket) >> 32);
        if (g != seen) {
            seen = g;
            while (fl_pool_run_one(tid))
                ;
            continue;
        }
        /* Wait for a newer job: spin a little, then sleep. */
        int64_t until = fl_pool_now_ns() + FL_POOL_SPIN_NS;
        for (int i = 1; (uint32_t)(atomic_load(&fl_pool.ticket) >> 32) == seen; i++) {
            fl_pool_pause();
            if (i % 64 == 0 && fl_pool_now_ns() > until) {
                pthread_mutex_lock(&fl_pool.lock);
                atomic_fetch_add(&fl_pool.sleepers, 1);
                while ((uint32_t)(atomic_load(&fl_pool.ticket) >> 32) == seen)
                    pthread_cond_wait(&fl_pool.wake, &fl_pool.lock);
                atomic_fetch_sub(&fl_pool.sleepers, 1);
                pthread_mutex_unlock(&fl_pool.lock);
                break;
            }
        }
    }
    return 0;
}

/* In a child made by fork() only the forking thread exists: forget the pool threads. */
static void fl_pool_after_fork_child(void) {
    fl_pool.started = 0;
    atomic_store(&fl_pool.busy, 0);
    atomic_store(&fl_pool.sleepers, 0);
    pthread_mutex_init(&fl_pool.lock, 0);
    pthread_cond_init(&fl_pool.wake, 0);
}

/* Make sure n pool threads exist; returns n, or fewer if creating threads failed. */
static int fl_pool_start(int n) {
    pthread_mutex_lock(&fl_pool.lock);
    if (!fl_pool.atfork_registered)
        fl_pool.atfork_registered = pthread_atfork(0, 0, fl_pool_after_fork_child) == 0;
    if (fl_pool.started < n) {
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);   /* the new threads inherit this mask */
        while (fl_pool.started < n) {
            pthread_t th;
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            int rc = pthread_create(&th, &attr, fl_pool_thread, (void *)(intptr_t)(fl_pool.started + 1));
            pthread_attr_destroy(&attr);
            if (rc != 0)
                break;
            fl_pool.started++;
        }
        pthread_sigmask(SIG_SETMASK, &old, 0);
    }
    if (n > fl_pool.started)
        n = fl_pool.started;
    pthread_mutex_unlock(&fl_pool.lock);
    return n;
}

static void fl_run_blocks(fl_block_fn fn, void *ctx, int64_t nblocks, int nthreads) {
    if (nthreads > nblocks)
        nthreads = (int)nblocks;
    if (nthreads > FL_POOL_MAX_THREADS)
        nthreads = FL_POOL_MAX_THREADS;
    int expected = 0;
    if (nthreads <= 1 || nblocks >= (int64_t)FL_POOL_CLOSED
        || !atomic_compare_exchange_strong(&fl_pool.busy, &expected, 1)) {
        for (int64_t b = 0; b < nblocks; b++)
            fn(ctx, b, 0, 0);
        return;
    }
    nthreads = 1 + fl_pool_start(nthreads - 1);
    const uint64_t g = (uint64_t)(++fl_pool.generation) << 32;
    atomic_store(&fl_pool.ticket, g | FL_POOL_CLOSED);
    atomic_store_explicit(&fl_pool.done, 0, memory_order_relaxed);
    atomic_store_explicit(&fl_pool.fn, fn, memory_order_release);
    atomic_store_explicit(&fl_pool.ctx, ctx, memory_order_release);
    atomic_store_explicit(&fl_pool.nblocks, nblocks, memory_order_release);
    atomic_store_explicit(&fl_pool.nthreads, nthreads, memory_order_release);
    atomic_store(&fl_pool.ticket, g);            /* publish: block 0 is claimable */
    /* Spinning pool threads join at once; sleeping ones are woken only if the job is
       still running FL_POOL_WAKE_NS later: the wake-up costs the caller a system call,
       and the woken thread may be scheduled on the caller's own core (the other busy
       with another library's threads), which costs a short job more than it gains. */
    int64_t wake_at = fl_pool_now_ns() + FL_POOL_WAKE_NS;
    while (fl_pool_run_one(0)) {
        if (wake_at && atomic_load(&fl_pool.sleepers) > 0 && fl_pool_now_ns() >= wake_at) {
            pthread_mutex_lock(&fl_pool.lock);
            pthread_cond_broadcast(&fl_pool.wake);
            pthread_mutex_unlock(&fl_pool.lock);
            wake_at = 0;
        }
    }
    /* Every block is claimed; wait for the ones pool threads are still running. */
    for (int i = 1; atomic_load_explicit(&fl_pool.done, memory_order_acquire) < nblocks; i++) {
        if (i % 256 == 0)
            sched_yield();
        else
            fl_pool_pause();
    }
    atomic_store_explicit(&fl_pool.busy, 0, memory_order_release);
}

#else   /* no POSIX threads: every loop runs on the calling thread */
static void fl_run_blocks(fl_block_fn fn, void *ctx, int64_t nblocks, int nthreads) {
    (void)nthreads;
    for (int64_t b = 0; b < nblocks; b++)
        fn(ctx, b, 0, 0);
}
#endif

#endif
