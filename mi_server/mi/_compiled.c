/* mi_server.mi._compiled: mq_get_size, mq_get_sizes and mq_fetch, compiled, for the
 * transports' compiled fast paths (compiled.h says how they call it).
 *
 * Optional accelerator: mi_server/mi/commands/mqueue.py and the MI core define what
 * these commands answer, and everything this does not answer goes to them.  What it
 * answers, over the shared-memory engine's words (engine/shm/native.h):
 *
 *   mq_get_size  one param, positional or named "name", of a defined queue: the size
 *                read without the lock, as Arena.size reads it
 *   mq_get_sizes no params (absent, [] or {}): every queue's size in one lock-free read,
 *                as Arena.sizes reads them, in OpenSIPS's order (reverse definition)
 *   mq_fetch     one param "name" of an unkeyed (addmode 0) queue, the arena mutex free
 *                (trylock: a busy engine is left to the Python path, which waits), no
 *                operation left to roll back, and a head item whose key and value are
 *                printable ASCII without '"' or '\': the item removed with
 *                Arena._pop_plain_py's logged writes (native.h), committed, unlocked;
 *                an empty queue's 404 "Empty queue"
 *
 * and the replies are MICore.run_checked's bytes for those requests (the JSON of
 * mqueue.py's values as orjson writes them: such strings and numbers are written as they
 * are).  Anything else -- an unknown queue, another command, a limit, a keyed queue, a
 * lock-free read that a writer disturbed, an item with other characters -- returns 0
 * before anything is changed, and MICore answers it.  tests/mi/test_compiled.py holds
 * both to the same bytes and the same queues on generated requests.
 *
 * Why: after the compiled HTTP loop, the Python MI command was what a request still cost
 * in user space (mq_get_size: ~10 us of a worker's ~40 us per keep-alive request, the
 * interpreter's caches cold after each sleep); this answers in well under a microsecond.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "../../mi_fifo/jsonrpc_request.h"
#include "../engine/shm/native.h"
#include "compiled.h"

typedef struct {
    char *name;
    Py_ssize_t name_len;
    uint64_t base;
    int mode;
    char *entry;  /* mq_get_sizes' {"name":<name as JSON>,"size": */
    Py_ssize_t entry_len;
} queue;

typedef struct {
    mqmi_commands api;  /* first: the capsule's pointer is this */
    PyObject *words;    /* the arena's memoryview cast('Q') */
    int count;          /* queues, in definition order */
    queue *queues;
    uint64_t *listed;   /* their bases in mq_get_sizes' order (reverse definition) */
    uint64_t *scratch;  /* native_sizes' 4 words per queue, then the sizes */
    Py_ssize_t mutex;   /* the arena mutex's word index; -1: no compiled mq_fetch */
    int lock_free;      /* Arena's _LOCK_FREE_READS: else no compiled sizes */
} commands;

/* ---- the reply ---- */

typedef struct {
    char *p;
    Py_ssize_t n, cap;
    int over;
} out_buf;

static void put(out_buf *o, const char *s, Py_ssize_t n) {
    if (o->over || o->n + n > o->cap) {
        o->over = 1;
        return;
    }
    memcpy(o->p + o->n, s, (size_t)n);
    o->n += n;
}

#define PUT_LIT(o, lit) put((o), (lit), (Py_ssize_t)sizeof(lit) - 1)

static void put_u64(out_buf *o, uint64_t v) {
    char digits[24];
    int n = snprintf(digits, sizeof digits, "%llu", (unsigned long long)v);
    put(o, digits, n);
}

/* the reply's end: ,"id":<id as the request gave it>} */
static Py_ssize_t finish(out_buf *o, const request *r) {
    PUT_LIT(o, ",\"id\":");
    put(o, r->id.p, r->id.n);
    PUT_LIT(o, "}");
    return o->over ? 0 : o->n;
}

/* printable ASCII but '"' and '\': orjson writes such a string as it is */
static int plain_json(const unsigned char *s, uint64_t n) {
    for (uint64_t k = 0; k < n; k++)
        if (s[k] < 0x20 || s[k] > 0x7e || s[k] == '"' || s[k] == '\\')
            return 0;
    return 1;
}

/* ---- the commands ---- */

static Py_ssize_t get_size(commands *c, int qi, const request *r, words_t *W, uint64_t n,
                           out_buf *o) {
    uint64_t size;
    if (!c->lock_free || !native_sizes(W, n, &c->queues[qi].base, 1, c->scratch, &size))
        return 0;
    PUT_LIT(o, "{\"jsonrpc\":\"2.0\",\"result\":{\"Queue\":{\"name\":\"");
    put(o, r->pval[0].p, r->pval[0].n);  /* simple: the queue's name as JSON writes it */
    PUT_LIT(o, "\",\"size\":");
    put_u64(o, size);
    PUT_LIT(o, "}}");
    return finish(o, r);
}

static Py_ssize_t get_sizes(commands *c, const request *r, words_t *W, uint64_t n,
                            out_buf *o) {
    uint64_t *sizes = c->scratch + 4 * (size_t)c->count;
    if (!c->lock_free || !native_sizes(W, n, c->listed, c->count, c->scratch, sizes))
        return 0;
    PUT_LIT(o, "{\"jsonrpc\":\"2.0\",\"result\":{\"Queue\":[");
    for (int i = 0; i < c->count; i++) {
        const queue *q = &c->queues[c->count - 1 - i];
        if (i)
            PUT_LIT(o, ",");
        put(o, q->entry, q->entry_len);
        put_u64(o, sizes[i]);
        PUT_LIT(o, "}");
    }
    PUT_LIT(o, "]}");
    return finish(o, r);
}

#define STORE_WORD(i, v) (W[(i)] = (uint64_t)(v))

static Py_ssize_t fetch(commands *c, int qi, const request *r, words_t *W, uint64_t n,
                        out_buf *o) {
    const queue *q = &c->queues[qi];
    if (c->mutex < 0 || q->mode != 0 || (uint64_t)c->mutex + 8 > n)
        return 0;
    pthread_mutex_t *m = (pthread_mutex_t *)(void *)(W + c->mutex);
    int err = pthread_mutex_trylock(m);
    if (err == EOWNERDEAD) {
        /* a dead holder's: made consistent and let go; the Python path takes it again
         * and rolls back what the holder left, as every locker does */
        pthread_mutex_consistent(m);
        pthread_mutex_unlock(m);
        return 0;
    }
    if (err)  /* busy (or this thread's, held pending): the Python path waits */
        return 0;
    Py_ssize_t len = 0;
    pop_plan pl;
    int found = W[H_LOGCNT] ? -1 : pop_plain_plan(W, n, q->base, &pl);
    if (found == 0) {
        PUT_LIT(o, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":404,\"message\":\"Empty queue\"}");
        len = finish(o, r);
    } else if (found > 0) {
        const unsigned char *kv = (const unsigned char *)W + pl.o;
        if (plain_json(kv, pl.kl + pl.vl)) {
            PUT_LIT(o, "{\"jsonrpc\":\"2.0\",\"result\":{\"Item\":{\"key\":\"");
            put(o, (const char *)kv, (Py_ssize_t)pl.kl);
            PUT_LIT(o, "\",\"value\":\"");
            put(o, (const char *)kv + pl.kl, (Py_ssize_t)pl.vl);
            PUT_LIT(o, "\"}}");
            len = finish(o, r);
            if (len > 0) {  /* the reply is made: only now is the item taken */
                POP_PLAIN_STORES(STORE_WORD, q->base, &pl);
                W[H_LOGCNT] = 0;  /* commit */
            }
        }
    }
    pthread_mutex_unlock(m);
    return len;
}

static int find_queue(const commands *c, span name) {
    for (int i = 0; i < c->count; i++)
        if (c->queues[i].name_len == name.n && memcmp(c->queues[i].name, name.p,
                                                      (size_t)name.n) == 0)
            return i;
    return -1;
}

static Py_ssize_t answer(mqmi_commands *api, const request *r, char *out, Py_ssize_t cap) {
    commands *c = (commands *)api;
    enum { GET_SIZE, GET_SIZES, FETCH } which;
    if (span_is(r->method, "mq_get_size"))
        which = GET_SIZE;
    else if (span_is(r->method, "mq_get_sizes"))
        which = GET_SIZES;
    else if (span_is(r->method, "mq_fetch"))
        which = FETCH;
    else
        return 0;
    int qi = -1;
    if (which == GET_SIZES) {
        if (r->nparams)  /* [] and {} count as absent; anything else: the recipe check */
            return 0;
    } else {
        if (r->nparams != 1 || (r->params_named && !span_is(r->pname[0], "name")))
            return 0;
        if ((qi = find_queue(c, r->pval[0])) < 0)
            return 0;  /* the Python path's 404 "No such queue" */
    }
    Py_buffer view;
    if (PyObject_GetBuffer(c->words, &view, PyBUF_WRITABLE) < 0) {
        PyErr_Clear();  /* a closed arena's released view: the Python path says so */
        return 0;
    }
    words_t *W = (words_t *)view.buf;
    uint64_t n = (uint64_t)view.len / 8;
    out_buf o = {out, 0, cap, 0};
    Py_ssize_t len = which == GET_SIZE ? get_size(c, qi, r, W, n, &o)
                     : which == GET_SIZES ? get_sizes(c, r, W, n, &o)
                     : fetch(c, qi, r, W, n, &o);
    PyBuffer_Release(&view);
    return len;
}

/* ---- the Python side ---- */

static void free_commands(commands *c) {
    if (c->queues != NULL)
        for (int i = 0; i < c->count; i++) {
            PyMem_Free(c->queues[i].name);
            PyMem_Free(c->queues[i].entry);
        }
    PyMem_Free(c->queues);
    PyMem_Free(c->listed);
    PyMem_Free(c->scratch);
    Py_XDECREF(c->words);
    PyMem_Free(c);
}

static void capsule_free(PyObject *capsule) {
    commands *c = PyCapsule_GetPointer(capsule, MQMI_COMMANDS_CAPSULE);
    if (c != NULL)
        free_commands(c);
}

static char *copy_bytes(PyObject *b, Py_ssize_t *n) {
    char *p;
    if (PyBytes_AsStringAndSize(b, &p, n) < 0)
        return NULL;
    char *copy = PyMem_Malloc((size_t)*n + 1);
    if (copy == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(copy, p, (size_t)*n);
    return copy;
}

PyDoc_STRVAR(build_doc,
"build(words, queues, mutex, lock_free) -> capsule\n\n"
"The compiled commands over an arena: `words` its memoryview cast('Q'), `queues` its\n"
"queues in definition order as (name as UTF-8, record base, addmode, mq_get_sizes' entry\n"
"head b'{\"name\":<name as JSON>,\"size\":'), `mutex` the mutex's word index (-1: no\n"
"compiled mq_fetch), `lock_free` whether sizes may be read without the lock.  See\n"
"mi_server/mi/compiled.py.");

static PyObject *build(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyMemoryView_Check(args[0]) || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "build(words, queues: list, mutex, lock_free)");
        return NULL;
    }
    Py_ssize_t mutex = PyLong_AsSsize_t(args[2]);
    int lock_free = PyObject_IsTrue(args[3]);
    if ((mutex == -1 && PyErr_Occurred()) || lock_free < 0)
        return NULL;
    Py_ssize_t count = PyList_GET_SIZE(args[1]);
    if (count < 1 || count > 100000) {
        PyErr_SetString(PyExc_ValueError, "build: 1 to 100000 queues");
        return NULL;
    }
    commands *c = PyMem_Calloc(1, sizeof(commands));
    if (c == NULL)
        return PyErr_NoMemory();
    c->api.answer = answer;
    c->words = Py_NewRef(args[0]);
    c->count = (int)count;
    c->mutex = mutex;
    c->lock_free = lock_free;
    c->queues = PyMem_Calloc((size_t)count, sizeof(queue));
    c->listed = PyMem_Calloc((size_t)count, sizeof(uint64_t));
    c->scratch = PyMem_Calloc((size_t)count * 5, sizeof(uint64_t));
    if (c->queues == NULL || c->listed == NULL || c->scratch == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *t = PyList_GET_ITEM(args[1], i);
        PyObject *name, *entry;
        unsigned long long base;
        int mode;
        if (!PyArg_ParseTuple(t, "SKiS", &name, &base, &mode, &entry))
            goto fail;
        queue *q = &c->queues[i];
        q->base = base;
        q->mode = mode;
        if ((q->name = copy_bytes(name, &q->name_len)) == NULL
                || (q->entry = copy_bytes(entry, &q->entry_len)) == NULL)
            goto fail;
    }
    for (Py_ssize_t i = 0; i < count; i++)
        c->listed[i] = c->queues[count - 1 - i].base;
    PyObject *capsule = PyCapsule_New(c, MQMI_COMMANDS_CAPSULE, capsule_free);
    if (capsule == NULL)
        goto fail;
    return capsule;
fail:
    free_commands(c);
    return NULL;
}

PyDoc_STRVAR(answer_doc,
"answer(capsule, request: bytes) -> bytes | None\n\n"
"What a fast path gets for one JSON-RPC request: the reply bytes, or None when the\n"
"request is not of the narrow shape or the compiled commands leave it to the MI core\n"
"(nothing ran then).  For tests and benchmarks; the fast paths call the C function.");

static PyObject *answer_py(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "answer(capsule, request: bytes)");
        return NULL;
    }
    mqmi_commands *api = PyCapsule_GetPointer(args[0], MQMI_COMMANDS_CAPSULE);
    if (api == NULL)
        return NULL;
    const char *b = PyBytes_AS_STRING(args[1]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[1]), j = skip_ws(b, 0, n);
    request r;
    if (j >= n || b[j] != '{' || !parse_request(b, n, &j, &r) || skip_ws(b, j, n) != n)
        Py_RETURN_NONE;
    char out[65536];
    Py_ssize_t len = api->answer(api, &r, out, sizeof out);
    if (len <= 0)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize(out, len);
}

static PyMethodDef methods[] = {
    {"build", (PyCFunction)(void (*)(void))build, METH_FASTCALL, build_doc},
    {"answer", (PyCFunction)(void (*)(void))answer_py, METH_FASTCALL, answer_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "mi_server.mi._compiled",
    "mq_get_size, mq_get_sizes and mq_fetch, compiled (optional; see mi_server.mi.compiled).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__compiled(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddStringConstant(m, "CAPSULE", MQMI_COMMANDS_CAPSULE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
