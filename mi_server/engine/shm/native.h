/* The arena's words as plain C: what the engine's compiled part (_speedups.c) and the
 * MI's compiled commands (mi_server/mi/_compiled.c) read and write, in one place.
 *
 * arena.py defines every operation; this header holds the word indices it writes out
 * (tests hold them against layout.py), the lock-free read of queue counters that
 * Arena.size/sizes prove consistent, and the unkeyed pop of Arena._pop_plain_py: its
 * plan (every index checked against the mapping before anything is written) and its
 * stores, in their order.  Every shared word goes through a volatile pointer, so the
 * compiler keeps loads and stores in program order (see _LOCK_FREE_READS in arena.py for
 * why that is enough on x86).  No Python: the includer handles objects and errors. */

#ifndef MQMI_ARENA_NATIVE_H
#define MQMI_ARENA_NATIVE_H

#include <stdint.h>

/* word indices, as arena.py / layout.py write them out (see _pop_plain_py) */
#define H_LARGE 12       /* the list of free blocks too large for a size class */
#define H_LOGCNT 13      /* undo log count: nonzero while an operation is uncommitted */
#define H_ROLLBACKS 15   /* rollbacks so far: lock-free readers detect one between passes */
#define H_LOG 16         /* undo log entries: (word index, old value) pairs */
#define H_FREE 272       /* free-list heads by size class (block words / 2) */
#define SIZE_CLASSES 4096
#define Q_HEAD 0
#define Q_TAIL 1
#define Q_ADDED 2        /* then fetched, dropped by size, dropped by addmode */
#define Q_FETCHED 3
#define I_NEXT 0
#define I_PREV 1
#define I_LENS 3
#define I_BWORDS 5
#define I_PAYLOAD 7
#define LOGGED 10        /* log words the pop writes */

typedef volatile uint64_t words_t;

/* The sizes of the queues whose records start at bases[0:count], read without the lock
 * as Arena.sizes reads them: the four counters twice, a quiet undo log between the passes
 * and no rollback during them.  1 with out[0:count] set; 0 when that could not be proved
 * (a writer was busy, or died) or a base is out of the mapping: the caller then takes
 * the locked way.  seen: room for 4 * count words. */
static int native_sizes(words_t *W, uint64_t nwords, const uint64_t *bases, int count,
                        uint64_t *seen, uint64_t *out) {
    if (H_ROLLBACKS >= nwords)
        return 0;
    uint64_t rollbacks = W[H_ROLLBACKS];
    for (int i = 0; i < count; i++) {
        if (bases[i] + Q_ADDED + 4 > nwords)
            return 0;
        for (int k = 0; k < 4; k++)
            seen[4 * i + k] = W[bases[i] + Q_ADDED + k];
    }
    if (W[H_LOGCNT])
        return 0;
    for (int i = 0; i < count; i++)
        for (int k = 0; k < 4; k++)
            if (W[bases[i] + Q_ADDED + k] != seen[4 * i + k])
                return 0;
    if (W[H_ROLLBACKS] != rollbacks)
        return 0;
    for (int i = 0; i < count; i++) {
        const uint64_t *c = seen + 4 * i;  /* added - fetched - dropped by size, by mode */
        out[i] = c[0] - c[1] - c[2] - c[3];
    }
    return 1;
}

/* What the pop of the unkeyed queue at `base` reads before it writes (_pop_plain_py). */
typedef struct {
    uint64_t p, kl, vl, o, nx, fh, f, fold, succ_prev;
} pop_plan;

/* 1: the head item's plan; 0: the queue is empty; -1: an index out of the mapping of
 * nwords words (a damaged arena; nothing read beyond it). */
static int pop_plain_plan(words_t *W, uint64_t nwords, uint64_t base, pop_plan *pl) {
    if (base + Q_FETCHED >= nwords || H_FREE + SIZE_CLASSES > nwords)
        return -1;
    uint64_t p = W[base + Q_HEAD];
    if (!p)
        return 0;
    if (p + I_PAYLOAD > nwords)
        return -1;
    uint64_t lens = W[p + I_LENS];
    pl->p = p;
    pl->kl = lens & 0xFFFFFFFFu;
    pl->vl = lens >> 32;
    pl->o = (p + I_PAYLOAD) * 8;
    pl->nx = W[p + I_NEXT];
    uint64_t c = W[p + I_BWORDS] >> 1;
    pl->fh = c < SIZE_CLASSES ? H_FREE + c : H_LARGE;
    pl->f = W[base + Q_FETCHED];
    pl->fold = W[pl->fh];
    pl->succ_prev = pl->nx ? pl->nx + I_PREV : base + Q_TAIL;
    if (pl->o + pl->kl + pl->vl > nwords * 8 || pl->succ_prev >= nwords)
        return -1;
    return 1;
}

/* The pop's writes, logged and NOT committed (the log count is left at LOGGED), in
 * _pop_plain_py's order: the undo log, the log count, the queue and free-list words.
 * STORE(i, v) writes word i; the payload at pl->o is only freed, never overwritten. */
#define POP_PLAIN_STORES(STORE, base, pl) do {                                     \
        STORE(H_LOG + 0, (base));                                                  \
        STORE(H_LOG + 1, (pl)->p);                                                 \
        STORE(H_LOG + 2, (pl)->succ_prev); /* next item's prev, or the tail: p */  \
        STORE(H_LOG + 3, (pl)->p);                                                 \
        STORE(H_LOG + 4, (base) + Q_FETCHED);                                      \
        STORE(H_LOG + 5, (pl)->f);                                                 \
        STORE(H_LOG + 6, (pl)->p);  /* the freed block's first word: its link */   \
        STORE(H_LOG + 7, (pl)->nx);                                                \
        STORE(H_LOG + 8, (pl)->fh);                                                \
        STORE(H_LOG + 9, (pl)->fold);                                              \
        STORE(H_LOGCNT, LOGGED);                                                   \
        STORE((base) + Q_HEAD, (pl)->nx);                                          \
        STORE((pl)->succ_prev, 0);                                                 \
        STORE((base) + Q_FETCHED, (pl)->f + 1);                                    \
        STORE((pl)->p + I_NEXT, (pl)->fold);                                       \
        STORE((pl)->fh, (pl)->p);                                                  \
    } while (0)

#endif  /* MQMI_ARENA_NATIVE_H */
