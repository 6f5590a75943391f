/* mi_server.engine.shm._speedups: the engine's lock and its fetch of an unkeyed queue, compiled.
 *
 * Optional accelerator (like mi_fifo._fastpath): Arena works without it, and
 * Arena._pop_plain_py in arena.py defines what this does.  pop_plain(words, base) makes
 * exactly that method's word writes, in the same order -- the undo log first, then the
 * log count, then the queue and free-list words -- and returns the same (key, value), so
 * an arena is the same whichever process, compiled or not, touched it, and a process that
 * dies inside it leaves what the Python version would: a busy undo log the next locker
 * rolls back.  Measured (benchmarks/mi_fifo.py, the FIFO listener serving mq_fetch): the
 * Python pop costs ~2.7 us of the listener's ~30 us per request there, this ~0.2 us.
 *
 * Every shared word is accessed through a volatile pointer, so the compiler keeps the
 * stores in program order: a process killed between two of them must not have made a
 * later one without the earlier (x86 keeps them in order for the lock-free readers too;
 * see _LOCK_FREE_READS in arena.py).  Every index is checked against the mapping first, so
 * a damaged arena raises IndexError, as the memoryview would, instead of faulting.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "native.h"  /* the word indices, the pop's plan and stores */

/* Tests only (see _count_stores): the stores pop_plain made, and the one after which the
 * process exits, without cleanup, as tests/engine/faults.py DieAtWrite makes the Python
 * version die (0: never; the count starts at 1). */
#define DIE_EXIT_CODE 77
static long stores;
static long die_at;

#define STORE(i, v) do {                                  \
        W[(i)] = (uint64_t)(v);                           \
        if (++stores == die_at)                           \
            _exit(DIE_EXIT_CODE);                         \
    } while (0)

static int out_of_range(void) {
    PyErr_SetString(PyExc_IndexError, "pop_plain: word index out of the arena");
    return -1;
}

PyDoc_STRVAR(pop_plain_doc,
"pop_plain(words, base) -> (key, value) | None\n\n"
"Arena._pop_plain_py, compiled: remove the head item of the unkeyed queue whose record is\n"
"at word `base`, its writes logged and NOT committed; None (nothing written) when the\n"
"queue is empty.  `words`: the arena's memoryview.cast('Q').  The caller holds the lock.");

static PyObject *pop_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "pop_plain(words, base) takes 2 arguments");
        return NULL;
    }
    Py_ssize_t base = PyLong_AsSsize_t(args[1]);
    if (base == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE) < 0)
        return NULL;
    PyObject *result = NULL;
    words_t *W = (words_t *)view.buf;
    uint64_t n = (uint64_t)view.len / 8;
    if (view.itemsize != 8 || view.len % 8) {
        PyErr_SetString(PyExc_TypeError, "pop_plain: words must be a cast('Q') view");
        goto out;
    }
    pop_plan pl;
    int found = base < 0 ? -1 : pop_plain_plan(W, n, (uint64_t)base, &pl);
    if (found < 0) {
        out_of_range();
        goto out;
    }
    if (!found) {
        result = Py_NewRef(Py_None);
        goto out;
    }
    /* the payload is copied out before anything is written (the Python version slices
     * the mapping first too); the block is only freed, never overwritten, by this */
    PyObject *key = PyUnicode_DecodeUTF8((const char *)view.buf + pl.o, (Py_ssize_t)pl.kl,
                                         "surrogatepass");
    PyObject *value = NULL;
    if (key != NULL)
        value = PyUnicode_DecodeUTF8((const char *)view.buf + pl.o + pl.kl,
                                     (Py_ssize_t)pl.vl, "surrogatepass");
    if (value == NULL) {
        /* undecodable: the Python version raises too, after its writes, and its callers
         * then roll those back; raising before any is the same end state */
        Py_XDECREF(key);
        goto out;
    }
    result = PyTuple_New(2);
    if (result == NULL) {
        Py_DECREF(key);
        Py_DECREF(value);
        goto out;
    }
    PyTuple_SET_ITEM(result, 0, key);
    PyTuple_SET_ITEM(result, 1, value);
    POP_PLAIN_STORES(STORE, (uint64_t)base, &pl);
out:
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(count_stores_doc,
"_count_stores(die_at=0) -> int\n\n"
"Tests only: the word stores pop_plain made since the last call; from now on, the process\n"
"exits (status 77, no cleanup) right after the die_at-th store (0: never).");

static PyObject *count_stores(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    long n = 0;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "_count_stores(die_at=0)");
        return NULL;
    }
    if (nargs == 1) {
        n = PyLong_AsLong(args[0]);
        if (n == -1 && PyErr_Occurred())
            return NULL;
        if (n < 0) {
            PyErr_SetString(PyExc_ValueError, "_count_stores: die_at must be >= 0");
            return NULL;
        }
    }
    long made = stores;
    stores = 0;
    die_at = n;
    return PyLong_FromLong(made);
}

/* ---- the arena lock: a process-shared robust mutex in the arena header ----------------
 *
 * What flock gives the engine (see lock.py), without a system call when nobody else holds
 * it: exclusion between processes, and release when the holder dies -- the kernel marks a
 * robust mutex whose owner exited, kill -9 included, and hands it to the next locker with
 * EOWNERDEAD; the mutex is made consistent at once, and that locker rolls back the dead
 * holder's operation as every locker does after taking the lock (arena.py).  Also as
 * flock: taking it again in the thread that holds it succeeds (errorcheck type: EDEADLK
 * instead of a deadlock), and releasing it when not held does nothing.  Measured: lock and
 * unlock ~0.1 us together, the flock pair ~0.4 us warm and ~0.8 us in the FIFO listener. */

#define MUTEX_BYTES 64   /* layout.py MUTEX_WORDS * 8 */
_Static_assert(sizeof(pthread_mutex_t) <= MUTEX_BYTES, "the header holds the mutex");
_Static_assert(_Alignof(pthread_mutex_t) <= 8, "a word-aligned mutex");

/* Which C library's pthread_mutex_t this module was built against, and its size: an arena
 * records it, and a process built against another refuses the arena (lock.py) instead of
 * misreading the mutex.  glibc keeps this layout stable across its versions. */
#ifdef __GLIBC__
#define MUTEX_LIBC 1
#else
#define MUTEX_LIBC 2
#endif
#define MUTEX_ABI ((MUTEX_LIBC << 16) | (int)sizeof(pthread_mutex_t))

/* The wait's deadlines on the monotonic clock where the C library can (glibc 2.30), so a
 * step of the wall clock does not stretch the interval between signal checks. */
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30))
#define MUTEX_WAIT_CLOCK CLOCK_MONOTONIC
#define MUTEX_WAIT(m, until) pthread_mutex_clocklock((m), CLOCK_MONOTONIC, (until))
#else
#define MUTEX_WAIT_CLOCK CLOCK_REALTIME
#define MUTEX_WAIT(m, until) pthread_mutex_timedlock((m), (until))
#endif

/* The mutex at word `index` of `words`, or NULL with an exception set; *view to release. */
static pthread_mutex_t *mutex_at(PyObject *const *args, Py_ssize_t nargs, Py_buffer *view) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "expected (words, index)");
        return NULL;
    }
    Py_ssize_t index = PyLong_AsSsize_t(args[1]);
    if (index == -1 && PyErr_Occurred())
        return NULL;
    if (PyObject_GetBuffer(args[0], view, PyBUF_WRITABLE) < 0)
        return NULL;
    if (index < 0 || index > (view->len - MUTEX_BYTES) / 8) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_IndexError, "mutex: word index out of the arena");
        return NULL;
    }
    return (pthread_mutex_t *)((char *)view->buf + index * 8);
}

/* None when `err` is 0, else OSError(err); `view` is released either way. */
static PyObject *mutex_result(int err, Py_buffer *view) {
    PyBuffer_Release(view);
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(mutex_init_doc,
"mutex_init(words, index) -> None\n\n"
"Make the (zeroed) words at `index` a process-shared, robust, error-checking mutex.\n"
"Once, when the arena is laid out, before any other process can see it.");

static PyObject *mutex_init(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer view;
    pthread_mutex_t *m = mutex_at(args, nargs, &view);
    if (m == NULL)
        return NULL;
    pthread_mutexattr_t attr;
    int err = pthread_mutexattr_init(&attr);
    if (err)
        return mutex_result(err, &view);
    if (!(err = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED))
            && !(err = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST))
            && !(err = pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK)))
        err = pthread_mutex_init(m, &attr);
    pthread_mutexattr_destroy(&attr);
    return mutex_result(err, &view);
}

PyDoc_STRVAR(mutex_lock_doc,
"mutex_lock(words, index) -> None\n\n"
"Take the arena mutex at `index`, waiting for it with the GIL released; a dead holder's\n"
"mutex is taken over (the caller then rolls back its operation).  Python signal\n"
"handlers run while it waits, every 50 ms, as they do during flock.");

static PyObject *mutex_lock(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer view;
    pthread_mutex_t *m = mutex_at(args, nargs, &view);
    if (m == NULL)
        return NULL;
    int err = pthread_mutex_trylock(m);  /* the common case: nobody holds it */
    while (err == EBUSY) {
        struct timespec until;
        clock_gettime(MUTEX_WAIT_CLOCK, &until);
        until.tv_nsec += 50 * 1000 * 1000;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec += 1;
            until.tv_nsec -= 1000000000L;
        }
        Py_BEGIN_ALLOW_THREADS
        err = MUTEX_WAIT(m, &until);
        Py_END_ALLOW_THREADS
        if (err == ETIMEDOUT) {
            if (PyErr_CheckSignals() < 0) {
                PyBuffer_Release(&view);
                return NULL;
            }
            err = EBUSY;
        }
    }
    if (err == EOWNERDEAD)  /* ours now; what its holder left is rolled back by the caller */
        err = pthread_mutex_consistent(m);
    else if (err == EDEADLK)  /* this thread holds it already: as flock, that is fine */
        err = 0;
    return mutex_result(err, &view);
}

PyDoc_STRVAR(mutex_unlock_doc,
"mutex_unlock(words, index) -> None\n\n"
"Release the arena mutex at `index`; nothing when this thread does not hold it.");

static PyObject *mutex_unlock(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer view;
    pthread_mutex_t *m = mutex_at(args, nargs, &view);
    if (m == NULL)
        return NULL;
    int err = pthread_mutex_unlock(m);
    return mutex_result(err == EPERM ? 0 : err, &view);  /* EPERM: not held, as LOCK_UN */
}

static PyMethodDef methods[] = {
    {"pop_plain", (PyCFunction)(void (*)(void))pop_plain, METH_FASTCALL, pop_plain_doc},
    {"mutex_init", (PyCFunction)(void (*)(void))mutex_init, METH_FASTCALL, mutex_init_doc},
    {"mutex_lock", (PyCFunction)(void (*)(void))mutex_lock, METH_FASTCALL, mutex_lock_doc},
    {"mutex_unlock", (PyCFunction)(void (*)(void))mutex_unlock, METH_FASTCALL,
     mutex_unlock_doc},
    {"_count_stores", (PyCFunction)(void (*)(void))count_stores, METH_FASTCALL,
     count_stores_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "mi_server.engine.shm._speedups",
    "The engine's lock and unkeyed fetch, compiled (optional; see mi_server.engine.shm.lock).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    /* the word indices this file and native.h's other users assume, for
     * tests/engine/test_speedups_build.py to hold against layout.py */
    PyObject *words = Py_BuildValue(
        "{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i}",
        "H_LARGE", H_LARGE, "H_LOGCNT", H_LOGCNT, "H_ROLLBACKS", H_ROLLBACKS,
        "Q_ADDED", Q_ADDED, "H_LOG", H_LOG, "H_FREE", H_FREE,
        "MAX_CLASS", SIZE_CLASSES, "Q_HEAD", Q_HEAD, "Q_TAIL", Q_TAIL,
        "Q_FETCHED", Q_FETCHED, "I_NEXT", I_NEXT, "I_PREV", I_PREV, "I_LENS", I_LENS,
        "I_BWORDS", I_BWORDS, "I_PAYLOAD", I_PAYLOAD, "MUTEX_WORDS", MUTEX_BYTES / 8);
    if (words == NULL || PyModule_AddObject(m, "LAYOUT", words) < 0
            || PyModule_AddIntConstant(m, "MUTEX_ABI", MUTEX_ABI) < 0) {
        Py_XDECREF(words);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
