/* mi_fifo._fastpath: the FIFO listener's common case, compiled.
 *
 * Optional accelerator (like PyYAML's _yaml or MarkupSafe's _speedups): the listener
 * works without it, and everything this does is defined by the pure-Python path
 * (mi_fifo.framer, mi_fifo.listener, mi_fifo.replyfifo), which it hands every other case.
 *
 * serve() blocks in read() on the listener's FIFO and answers, without running Python
 * bytecode for framing, decoding or the reply FIFO, every request of one narrow shape:
 *
 *     [ws] :NAME: [ws] {"jsonrpc":"2.0","method":M,"params":P,"id":I} [ws]
 *
 * members in any order, each at most once, the four lower-case names only; every string
 * printable ASCII without '"' or '\\' (no escapes), NAME also without ':', '.' or '/';
 * P absent, an array of such strings or an object whose values are such strings; I such a
 * string or an integer of at most 9 digits in its canonical form.  For those the decoded
 * values (str, list, tuple of pairs) are exactly what the Python framer's JSON scan gives,
 * and the envelope checks of MICore._one all pass, so only the command itself is left,
 * in the Python path's order (mi_fifo.listener, _Listener.answer): `stage(method, params,
 * id_text)` (MICore.stage_checked) makes the reply at once unless the command has side
 * effects, and then returns the work `finish` (MICore.finish) does once the reply FIFO is
 * open.  A ready reply is written right after the open, so the client, woken by the open,
 * finds it without sleeping in read() again.  A command that can hold its change pending
 * (mq_fetch of one item) comes back as (reply, settle): it ran with the engine locked and
 * its change uncommitted; settle(True) right after the open commits it, settle(False)
 * undoes it when the reply FIFO cannot be used, so its reply too is ready at the open.
 *
 * Anything else -- another shape, a request not complete in this read, a reply path that
 * does not open at once or fails a check, a name too long, a request over max_request --
 * is left to Python: serve() returns the bytes from that request on and the Python framer
 * takes them, with its logging, waits and error replies.  Nothing with side effects has
 * run for them (a read-only command may have, and runs again there).  A signal (EINTR) or end-of-file
 * (the listener's /dev/null swap) returns b"" after the Python signal handlers ran.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NAME_MAX_ 255    /* framer.NAME_MAX */
#define PATH_MAX_ 128    /* replyfifo.PATH_MAX */
#define OPEN_FLAGS (O_WRONLY | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC)

#include "jsonrpc_request.h"

typedef struct {
    const char *prefix;
    Py_ssize_t prefix_len;
    Py_ssize_t max_request;
    int refuse;                 /* the server's own FIFO: (dev, ino) */
    dev_t refuse_dev;
    ino_t refuse_ino;
    PyObject *stage, *finish, *write_slow;
    const volatile char *stop;  /* stop[0] != 0: the listener is stopping (or NULL) */
} server;

enum { SERVED, NOT_OURS, FAILED };

/* settle(commit) for a held command; 0, or -1 with the exception set.  The engine stays
 * locked until settle's body has run, so it must run: pending signal handlers run first,
 * here, so that none runs (and raises) as settle's frame begins.  Should the call still
 * fail, settle(False) is called once more, which undoes a change still pending (and does
 * nothing once nothing is); the first exception is kept.  A commit comes before the reply
 * is written: if this process dies after it, the client misses an item that was taken,
 * as when it dies after finish(); the other order would hand out an item that is then
 * put back. */
static int settle_held(PyObject *settle, int commit) {
    if (PyErr_CheckSignals() == 0) {
        PyObject *r = PyObject_CallOneArg(settle, commit ? Py_True : Py_False);
        if (r != NULL) {
            Py_DECREF(r);
            return 0;
        }
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *r = PyObject_CallOneArg(settle, Py_False);
    if (r == NULL)
        PyErr_Clear();
    Py_XDECREF(r);
    PyErr_Restore(type, value, tb);
    return -1;
}

/* One request starting at b[*i]: SERVED (and *i after it), NOT_OURS (nothing with side
 * effects was done: the Python path takes it from *i) or FAILED (a Python exception is
 * set; *i after the request, which is not answered). */
static int serve_one(const server *s, const char *b, Py_ssize_t n, Py_ssize_t *i) {
    Py_ssize_t j = skip_ws(b, *i, n);
    if (j >= n || b[j] != ':')
        return NOT_OURS;
    Py_ssize_t colon = j, name = j + 1;
    j = name;
    while (j < n && j - name <= NAME_MAX_) {
        unsigned char c = (unsigned char)b[j];
        if (c == ':' || c < 0x20 || c > 0x7e || c == '.' || c == '/' || c == '\\')
            break;
        j++;
    }
    Py_ssize_t name_len = j - name;
    /* an empty name (run, no reply) goes the Python way */
    if (j >= n || b[j] != ':' || name_len == 0 || name_len > NAME_MAX_)
        return NOT_OURS;
    j = skip_ws(b, j + 1, n);
    if (j >= n || b[j] != '{')
        return NOT_OURS;
    request r;
    if (!parse_request(b, n, &j, &r))
        return NOT_OURS;
    if (j - colon > s->max_request)
        return NOT_OURS;
    *i = j;  /* where the next request starts (NOT_OURS: the caller goes back to its start) */

    char path[PATH_MAX_ + 1];
    if (s->prefix_len + name_len > PATH_MAX_)
        return NOT_OURS;
    memcpy(path, s->prefix, s->prefix_len);
    memcpy(path + s->prefix_len, b + name, name_len);
    path[s->prefix_len + name_len] = '\0';

    PyObject *method = str_of(r.method);
    PyObject *params = method ? params_object(&r) : NULL;
    PyObject *id_text = params ? str_of(r.id) : NULL;
    PyObject *work = NULL;
    if (id_text != NULL) {
        /* slot 0 free for the callee: a bound method prepends self without a new tuple */
        PyObject *argv[4] = {NULL, method, params, id_text};
        work = PyObject_Vectorcall(s->stage, argv + 1, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                   NULL);
    }
    Py_XDECREF(method);
    Py_XDECREF(params);
    Py_XDECREF(id_text);
    if (work == NULL)
        return FAILED;

    /* A held command (stage returned (reply, settle)) has run with its change pending and
     * the engine locked: settle(True) commits once the reply FIFO is open, settle(False)
     * undoes it when the FIFO cannot be used; nothing that touches the engine runs in
     * between (the engine is locked until then). */
    PyObject *reply = NULL, *settle = NULL;
    if (PyTuple_CheckExact(work)) {
        int pair = PyTuple_GET_SIZE(work) == 2;
        if (!pair || !PyBytes_Check(PyTuple_GET_ITEM(work, 0))
                || !PyCallable_Check(PyTuple_GET_ITEM(work, 1))) {
            /* not a reply we can send: undo what a callable settle holds, first */
            int undone = pair && PyCallable_Check(PyTuple_GET_ITEM(work, 1))
                         ? settle_held(PyTuple_GET_ITEM(work, 1), 0) : 0;
            Py_DECREF(work);
            if (undone == 0)
                PyErr_SetString(PyExc_TypeError, "stage() must return (bytes, settle)");
            return FAILED;
        }
        reply = Py_NewRef(PyTuple_GET_ITEM(work, 0));
        settle = Py_NewRef(PyTuple_GET_ITEM(work, 1));
        Py_SETREF(work, NULL);
    }

    /* Anything but an open at once that passes the checks: the Python path does this
     * request again from the start, waits, refuses and logs as it always does.  Nothing
     * with side effects has run (`work` is only what would run it, a held change is
     * undone); a read-only command that ran runs again there, as the Python path itself
     * re-makes a ready reply after waiting for the reader. */
    int fd = open(path, OPEN_FLAGS);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode) || st.st_nlink != 1
            || (s->refuse && st.st_dev == s->refuse_dev && st.st_ino == s->refuse_ino))) {
        close(fd);
        fd = -1;
    }
    if (fd < 0) {
        Py_XDECREF(work);
        Py_XDECREF(reply);
        if (settle != NULL) {
            int failed = settle_held(settle, 0);
            Py_DECREF(settle);
            if (failed)
                return FAILED;
        }
        return NOT_OURS;
    }
    if (settle != NULL) {  /* committed before the reply is written: see settle_held */
        int failed = settle_held(settle, 1);
        Py_DECREF(settle);
        if (failed) {
            Py_DECREF(reply);
            close(fd);
            return FAILED;
        }
    } else if (!PyBytes_Check(work)) {  /* side effects: run them now */
        reply = PyObject_CallOneArg(s->finish, work);
        Py_DECREF(work);
        if (reply == NULL) {
            close(fd);
            return FAILED;
        }
        if (!PyBytes_Check(reply)) {
            Py_DECREF(reply);
            close(fd);
            PyErr_SetString(PyExc_TypeError, "finish() must return bytes");
            return FAILED;
        }
    } else {
        reply = work;
    }
    /* the reply alone, no newline, as OpenSIPS 3.6 writes it: opensips-cli's readline()
     * returns at the end of file we make by closing */
    ssize_t done = write(fd, PyBytes_AS_STRING(reply), (size_t)PyBytes_GET_SIZE(reply));
    if (done == PyBytes_GET_SIZE(reply)) {
        Py_DECREF(reply);
        close(fd);
        return SERVED;
    }
    /* a full pipe or a reader gone: write_slow(fd, reply, done, errno) finishes as
     * replyfifo.write_reply does (bounded wait, log) and closes fd */
    int err = done < 0 ? errno : 0;
    PyObject *res = PyObject_CallFunction(s->write_slow, "iOni", fd, reply,
                                          done < 0 ? (Py_ssize_t)0 : (Py_ssize_t)done, err);
    Py_DECREF(reply);
    if (res == NULL)
        return FAILED;
    Py_DECREF(res);
    return SERVED;
}

PyDoc_STRVAR(serve_doc,
"serve(read_fd, size, prefix, max_request, refuse, stage, finish, write_slow[, stop])\n"
"-> bytes\n\n"
"Read the FIFO and answer the requests of the narrow shape until one is not (its bytes\n"
"and all after them are returned) or a signal, end-of-file or EAGAIN ends the read (b'').\n"
"refuse: (st_dev, st_ino) of the server's own FIFO, or None.  stage(method, params,\n"
"id_text) -> the reply (bytes), work for finish(work) -> bytes, called once the reply\n"
"FIFO is open, or (reply, settle): settle(True) is called once it is open, settle(False)\n"
"if it cannot be used (every request taken has an id, so there is always a reply);\n"
"write_slow(fd, reply, written, errno) finishes\n"
"a reply that did not go in one write and closes fd.  If one of them raises an Exception,\n"
"(bytes after that request, the exception) is returned instead.  stop: a bytearray\n"
"whose first byte the listener's stop-signal handler sets; once it is set the bytes\n"
"after the request just served are returned (the caller drops them and stops).");

static PyObject *serve(PyObject *module, PyObject *args) {
    int read_fd;
    Py_ssize_t size;
    Py_buffer prefix;
    server s;
    PyObject *refuse;
    Py_buffer stop = {0};
    if (!PyArg_ParseTuple(args, "iny*nOOOO|w*:serve", &read_fd, &size, &prefix,
                          &s.max_request, &refuse, &s.stage, &s.finish, &s.write_slow,
                          &stop))
        return NULL;
    /* the bytearray cannot be resized while its buffer is held: the pointer stays valid */
    s.stop = stop.buf != NULL && stop.len > 0 ? (const volatile char *)stop.buf : NULL;
    PyObject *result = NULL;
    char *buf = NULL;
    s.prefix = prefix.buf;
    s.prefix_len = prefix.len;
    if (memchr(s.prefix, 0, (size_t)s.prefix_len) != NULL) {  /* open() would cut it short */
        PyErr_SetString(PyExc_ValueError, "serve: NUL byte in the reply prefix");
        goto out;
    }
    s.refuse = refuse != Py_None;
    if (s.refuse) {
        unsigned long long dev, ino;
        if (!PyTuple_Check(refuse)) {
            PyErr_SetString(PyExc_TypeError, "serve: refuse must be (st_dev, st_ino) or None");
            goto out;
        }
        if (!PyArg_ParseTuple(refuse, "KK:refuse", &dev, &ino))
            goto out;
        s.refuse_dev = (dev_t)dev;
        s.refuse_ino = (ino_t)ino;
    }
    if (size <= 0 || !PyCallable_Check(s.stage) || !PyCallable_Check(s.finish)
            || !PyCallable_Check(s.write_slow)) {
        PyErr_SetString(PyExc_ValueError, "serve: bad size or callbacks");
        goto out;
    }
    buf = PyMem_Malloc((size_t)size);
    if (buf == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    for (;;) {
        /* handlers of signals that came while we were answering run now; one arriving
         * between this check and read() is seen at the next interval-timer tick, as with
         * os.read in the Python loop */
        if (PyErr_CheckSignals() < 0)
            goto out;
        ssize_t got;
        Py_BEGIN_ALLOW_THREADS
        got = read(read_fd, buf, (size_t)size);
        Py_END_ALLOW_THREADS
        if (got < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                /* a signal (its handler runs now), or nothing left on a non-blocking
                 * descriptor (never the listener's: tests and benchmarks use that) */
                if (PyErr_CheckSignals() < 0)
                    goto out;
                result = PyBytes_FromStringAndSize("", 0);
                goto out;
            }
            PyErr_SetFromErrno(PyExc_OSError);
            goto out;
        }
        if (got == 0) {  /* /dev/null swapped in by the signal handler */
            result = PyBytes_FromStringAndSize("", 0);
            goto out;
        }
        Py_ssize_t i = 0;
        for (;;) {
            i = skip_ws(buf, i, got);
            if (i == got)
                break;
            Py_ssize_t at = i;
            int status = serve_one(&s, buf, got, &i);
            if (status == FAILED) {
                /* A callback raised (they are written not to) or memory ran out: hand back
                 * the exception with the bytes after this request, so that nothing else in
                 * this read is lost.  KeyboardInterrupt and the like propagate. */
                if (!PyErr_ExceptionMatches(PyExc_Exception))
                    goto out;
                PyObject *type, *value, *tb;
                PyErr_Fetch(&type, &value, &tb);
                PyErr_NormalizeException(&type, &value, &tb);
                if (tb != NULL)
                    PyException_SetTraceback(value, tb);
                result = Py_BuildValue("(y#N)", buf + i, (Py_ssize_t)(got - i), value);
                Py_XDECREF(type);
                Py_XDECREF(tb);
                goto out;
            }
            if (status == NOT_OURS) {
                result = PyBytes_FromStringAndSize(buf + at, got - at);
                goto out;
            }
            /* a stop signal's handler (run here, or inside the callbacks) set the flag:
             * the rest of this read is not served */
            if (s.stop != NULL && (PyErr_CheckSignals() < 0 || s.stop[0])) {
                if (!PyErr_Occurred())
                    result = PyBytes_FromStringAndSize(buf + i, got - i);
                goto out;
            }
        }
    }
out:
    PyMem_Free(buf);
    PyBuffer_Release(&prefix);
    if (stop.obj != NULL)
        PyBuffer_Release(&stop);
    return result;
}

static PyMethodDef methods[] = {
    {"serve", serve, METH_VARARGS, serve_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "mi_fifo._fastpath",
    "The FIFO listener's common case, compiled (optional; see mi_fifo.fastpath).", -1, methods,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    return PyModule_Create(&module);
}
