/* mi_server.datagram._fastpath: the datagram listener's common request, compiled.
 *
 * Optional accelerator, like mi_fifo._fastpath: the listener (mi_server/datagram/
 * server.py) works without it, and everything this does is defined by the Python path
 * (server.Listener.serve, protocol.DatagramProtocol.answer), which it hands every other
 * datagram.
 *
 * serve(read_fd, send_fd, size, ctx, stop) sleeps in a blocking recvfrom() on read_fd and
 * answers, without running Python bytecode for the receive, the JSON decoding or the send,
 * every datagram that is one request of the FIFO fast path's narrow shape
 * (mi_fifo/jsonrpc_request.h) at most `size` - 1 bytes long (the buffer), followed by
 * JSON whitespace and ASCII only (bytes after the value are ignored, but the Python path
 * decodes the whole datagram as UTF-8 first).  For those the decoded values are what
 * jsonvalues.parse gives and the envelope checks of MICore._one pass, so only the command
 * is left: stage(method, params, id_text, budget) (MICore.stage_checked_held, which is
 * MICore.stage_held for such a request) gives either the reply bytes, within the budget,
 * or (reply, settle) for a held mq_fetch, or anything else (a reply over the budget,
 * TOO_LARGE, a Staged command), which outcome(work) (DatagramProtocol.outcome) turns into
 * (reply or None, settle or None) as the Python path does.  The reply goes to the sender
 * with sendto(MSG_DONTWAIT) on send_fd (the socket itself: read_fd is a duplicate the
 * stop handler may replace, see server.Listener), then settle(sent) commits or undoes a
 * held change at once.  A reply that cannot be sent (no sender address, a full queue, an
 * error) is reported to drop(address, errno) (errno 0: no address), which logs it at a
 * limited rate; settle(False) then undoes a held fetch.  A settle that raises an
 * Exception is reported to settle_failed(sent, exc).
 *
 * Anything else -- an empty datagram, one over the buffer, another shape, a batch, a
 * notification -- comes back as (data, address), address as socket.recvfrom gives it,
 * and the Python path serves it; nothing has run for it.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "../../mi_fifo/jsonrpc_request.h"

#include "../../mi_fifo/exception_value.h"  /* take_exception() */

/* Set `exc` (from take_exception) again; the reference is taken. */
static void restore_exception(PyObject *exc) {
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
}

typedef struct {
    int send_fd;
    Py_ssize_t budget;
    PyObject *budget_obj;       /* budget as a Python int, for stage() */
    PyObject *stage, *outcome, *drop, *settle_failed;
    const volatile char *stop;  /* stop[0] != 0: the listener is stopping */
} server;

typedef struct {
    struct sockaddr_storage sa;
    socklen_t len;
} peer;

/* The sender's address as socket.recvfrom gives it (CPython's makesockaddr). */
static PyObject *address_object(const peer *from) {
    const struct sockaddr *sa = (const struct sockaddr *)&from->sa;
    char host[INET6_ADDRSTRLEN];
    if (from->len == 0)
        Py_RETURN_NONE;
    switch (sa->sa_family) {
    case AF_INET: {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        if (inet_ntop(AF_INET, &a->sin_addr, host, sizeof host) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(si)", host, (int)ntohs(a->sin_port));
    }
    case AF_INET6: {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        if (inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(siII)", host, (int)ntohs(a->sin6_port),
                             (unsigned int)ntohl(a->sin6_flowinfo),
                             (unsigned int)a->sin6_scope_id);
    }
    case AF_UNIX: {
        const struct sockaddr_un *a = (const struct sockaddr_un *)sa;
        Py_ssize_t n = (Py_ssize_t)from->len - (Py_ssize_t)offsetof(struct sockaddr_un, sun_path);
        if (n > 0 && a->sun_path[0] == '\0')  /* Linux's abstract namespace */
            return PyBytes_FromStringAndSize(a->sun_path, n);
        if (n < 0)
            n = 0;
        return PyUnicode_DecodeFSDefaultAndSize(a->sun_path,
                                                (Py_ssize_t)strnlen(a->sun_path, (size_t)n));
    }
    default:
        return Py_BuildValue("(iy#)", (int)sa->sa_family, (const char *)sa,
                             (Py_ssize_t)from->len);
    }
}

/* Whether the sender can be answered: an unbound unix socket has no address
 * (socket.recvfrom gives '' or None, which server.Listener.send refuses). */
static int has_address(const peer *from) {
    if (from->len == 0)
        return 0;
    if (((const struct sockaddr *)&from->sa)->sa_family != AF_UNIX)
        return 1;
    const struct sockaddr_un *a = (const struct sockaddr_un *)&from->sa;
    Py_ssize_t n = (Py_ssize_t)from->len - (Py_ssize_t)offsetof(struct sockaddr_un, sun_path);
    return n > 0 && (a->sun_path[0] == '\0' || strnlen(a->sun_path, (size_t)n) > 0);
}

/* The request of the narrow shape filling b[0:n]: JSON whitespace before it, ASCII after
 * (the Python path decodes the whole datagram as UTF-8 and ignores what follows the
 * value). */
static int narrow_datagram(const char *b, Py_ssize_t n, request *r) {
    Py_ssize_t i = skip_ws(b, 0, n);
    if (i >= n || b[i] != '{' || !parse_request(b, n, &i, r))
        return 0;
    for (; i < n; i++)
        if ((unsigned char)b[i] >= 0x80)
            return 0;
    return 1;
}

/* drop(address, errno): the rate-limited log line of a reply not sent; 0 or -1. */
static int report_drop(const server *s, const peer *from, int err) {
    PyObject *address = address_object(from);
    if (address == NULL)
        return -1;
    PyObject *res = PyObject_CallFunction(s->drop, "Oi", address, err);
    Py_DECREF(address);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return 0;
}

/* Send the reply without blocking; 1 if it went out, 0 if not (reported to drop), -1
 * with an exception set. */
static int send_reply(const server *s, PyObject *reply, const peer *from) {
    if (!has_address(from))
        return report_drop(s, from, 0) < 0 ? -1 : 0;
    for (;;) {
        ssize_t done = sendto(s->send_fd, PyBytes_AS_STRING(reply),
                              (size_t)PyBytes_GET_SIZE(reply), MSG_DONTWAIT,
                              (const struct sockaddr *)&from->sa, from->len);
        if (done >= 0)
            return 1;
        if (errno != EINTR)
            break;
        if (PyErr_CheckSignals() < 0)  /* as socket.sendto retries (PEP 475) */
            return -1;
    }
    return report_drop(s, from, errno) < 0 ? -1 : 0;
}

/* settle(sent) for a held change, at once.  The engine stays locked until its body has
 * run, so pending signal handlers run first, here, so that none runs (and raises) as its
 * frame begins.  An Exception from settle goes to settle_failed (one warning, as
 * server.Listener.settle); anything else (a signal handler that raised) propagates, after
 * settle(sent) was tried: a reply that went out is committed whatever comes next, as an
 * item both delivered and put back would be delivered twice. */
static int settle_held(const server *s, PyObject *settle, int sent) {
    if (PyErr_CheckSignals() == 0) {
        PyObject *r = PyObject_CallOneArg(settle, sent ? Py_True : Py_False);
        if (r != NULL) {
            Py_DECREF(r);
            return 0;
        }
        if (PyErr_ExceptionMatches(PyExc_Exception)) {
            PyObject *exc = take_exception();
            PyObject *res = PyObject_CallFunction(s->settle_failed, "OO",
                                                  sent ? Py_True : Py_False, exc);
            Py_DECREF(exc);
            if (res == NULL)
                return -1;
            Py_DECREF(res);
            return 0;
        }
    }
    PyObject *exc = take_exception();
    PyObject *r = PyObject_CallOneArg(settle, sent ? Py_True : Py_False);
    if (r == NULL)
        PyErr_Clear();
    Py_XDECREF(r);
    restore_exception(exc);
    return -1;
}

/* Answer the request r: 0, or -1 with an exception set (nothing is left held). */
static int serve_one(const server *s, const request *r, const peer *from) {
    PyObject *method = str_of(r->method);
    PyObject *params = method ? params_object(r) : NULL;
    PyObject *id_text = params ? str_of(r->id) : NULL;
    PyObject *work = NULL;
    if (id_text != NULL) {
        /* slot 0 free for the callee: a bound method prepends self without a new tuple */
        PyObject *argv[5] = {NULL, method, params, id_text, s->budget_obj};
        work = PyObject_Vectorcall(s->stage, argv + 1, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                   NULL);
    }
    Py_XDECREF(method);
    Py_XDECREF(params);
    Py_XDECREF(id_text);
    if (work == NULL)
        return -1;

    PyObject *reply = NULL, *settle = NULL;
    if (PyBytes_CheckExact(work) && PyBytes_GET_SIZE(work) <= s->budget) {
        reply = work;                        /* the common case: a reply within the buffer */
    } else if (PyTuple_CheckExact(work) && PyTuple_GET_SIZE(work) == 2
               && PyBytes_CheckExact(PyTuple_GET_ITEM(work, 0))
               && PyCallable_Check(PyTuple_GET_ITEM(work, 1))) {
        reply = Py_NewRef(PyTuple_GET_ITEM(work, 0));   /* held: (reply, settle) */
        settle = Py_NewRef(PyTuple_GET_ITEM(work, 1));
        Py_DECREF(work);
    } else {
        /* the rest, as the Python path answers it: (reply or None, settle or None) */
        PyObject *res = PyObject_CallOneArg(s->outcome, work);
        Py_DECREF(work);
        if (res == NULL)
            return -1;
        if (!PyTuple_CheckExact(res) || PyTuple_GET_SIZE(res) != 2) {
            Py_DECREF(res);
            PyErr_SetString(PyExc_TypeError, "outcome() must return (reply, settle)");
            return -1;
        }
        PyObject *rep = PyTuple_GET_ITEM(res, 0), *set = PyTuple_GET_ITEM(res, 1);
        if (set != Py_None)
            settle = Py_NewRef(set);
        if (rep != Py_None)
            reply = Py_NewRef(rep);
        Py_DECREF(res);
        if (reply != NULL && !PyBytes_Check(reply)) {
            Py_CLEAR(reply);
            PyErr_SetString(PyExc_TypeError, "outcome() must return bytes or None");
            if (settle != NULL) {
                int failed = settle_held(s, settle, 0);
                Py_DECREF(settle);
                if (failed)  /* that error replaces the TypeError */
                    return -1;
                PyErr_SetString(PyExc_TypeError, "outcome() must return bytes or None");
            }
            return -1;
        }
    }
    int sent = 0;
    if (reply != NULL) {
        sent = send_reply(s, reply, from);
        Py_DECREF(reply);
    }
    if (settle != NULL) {
        /* also after a failed send report: a held change must never stay locked */
        PyObject *exc = sent < 0 ? take_exception() : NULL;
        int failed = settle_held(s, settle, sent > 0);
        Py_DECREF(settle);
        if (exc != NULL) {
            if (failed)
                PyErr_Clear();
            restore_exception(exc);
            return -1;
        }
        if (failed)
            return -1;
    }
    return sent < 0 ? -1 : 0;
}

PyDoc_STRVAR(serve_doc,
"serve(read_fd, send_fd, size, ctx, stop) -> None | (data, address) | Exception\n\n"
"Receive datagrams (at most size bytes) on read_fd and answer those of the narrow\n"
"request shape within size - 1 bytes, the buffer, sending from send_fd, until:\n"
"a datagram it does not take ((data, address), for the Python path); a signal or a\n"
"set stop flag (None, after the handlers ran); a callback raising an Exception on one\n"
"request (that exception; its datagram is done with).  recvfrom() failing for another\n"
"reason than a signal raises OSError, unless the stop flag is set (None).\n"
"ctx: (stage, outcome, drop, settle_failed): stage(method, params, id_text, budget) ->\n"
"bytes, (reply, settle) or other work for outcome(work) -> (reply or None, settle or\n"
"None); drop(address, errno) for a reply not sent (errno 0: no address to send to);\n"
"settle_failed(sent, exc) for a settle(sent) that raised.  stop: a bytearray whose first\n"
"byte the listener's stop-signal handler sets.");

static PyObject *serve(PyObject *module, PyObject *args) {
    int read_fd;
    Py_ssize_t size;
    PyObject *ctx;
    Py_buffer stop = {0};
    server s;
    if (!PyArg_ParseTuple(args, "iinO!w*:serve", &read_fd, &s.send_fd, &size, &PyTuple_Type,
                          &ctx, &stop))
        return NULL;
    PyObject *result = NULL;
    char *buf = NULL;
    s.budget_obj = NULL;
    if (!PyArg_ParseTuple(ctx, "OOOO:ctx", &s.stage, &s.outcome, &s.drop, &s.settle_failed))
        goto out;
    if (size < 2 || stop.len < 1 || !PyCallable_Check(s.stage) || !PyCallable_Check(s.outcome)
            || !PyCallable_Check(s.drop) || !PyCallable_Check(s.settle_failed)) {
        PyErr_SetString(PyExc_ValueError, "serve: bad size, stop flag or callbacks");
        goto out;
    }
    /* the bytearray cannot be resized while its buffer is held: the pointer stays valid */
    s.stop = (const volatile char *)stop.buf;
    s.budget = size - 1;
    s.budget_obj = PyLong_FromSsize_t(s.budget);
    buf = PyMem_Malloc((size_t)size);
    if (s.budget_obj == NULL || buf == NULL) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto out;
    }
    for (;;) {
        /* handlers of signals that came while answering run now; one arriving between
         * this check and recvfrom() is seen at the next datagram, as with socket.recvfrom
         * in the Python loop */
        if (PyErr_CheckSignals() < 0)
            goto out;
        if (s.stop[0]) {
            result = Py_NewRef(Py_None);
            goto out;
        }
        peer from;
        from.len = (socklen_t)sizeof from.sa;
        memset(&from.sa, 0, sizeof from.sa);
        ssize_t got;
        int err;
        Py_BEGIN_ALLOW_THREADS
        got = recvfrom(read_fd, buf, (size_t)size, 0, (struct sockaddr *)&from.sa, &from.len);
        err = errno;
        Py_END_ALLOW_THREADS
        if (got < 0) {
            if (err == EINTR) {  /* a signal: its handler runs now, the caller looks */
                if (PyErr_CheckSignals() == 0)
                    result = Py_NewRef(Py_None);
                goto out;
            }
            if (s.stop[0]) {  /* /dev/null swapped in by the stop handler: ENOTSOCK */
                result = Py_NewRef(Py_None);
                goto out;
            }
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            goto out;
        }
        request r;
        if (got == 0 || got > s.budget || !narrow_datagram(buf, got, &r)) {
            PyObject *address = address_object(&from);
            if (address != NULL)
                result = Py_BuildValue("(y#N)", buf, (Py_ssize_t)got, address);
            goto out;
        }
        if (serve_one(&s, &r, &from) < 0) {
            /* a callback raised (they are written not to): the caller logs it and comes
             * back; KeyboardInterrupt and the like propagate */
            if (PyErr_ExceptionMatches(PyExc_Exception))
                result = take_exception();
            goto out;
        }
    }
out:
    PyMem_Free(buf);
    Py_XDECREF(s.budget_obj);
    PyBuffer_Release(&stop);
    return result;
}

static PyMethodDef methods[] = {
    {"serve", serve, METH_VARARGS, serve_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "mi_server.datagram._fastpath",
    "The datagram listener's common request, compiled (optional; see "
    "mi_server.datagram.fastpath).", -1, methods,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    return PyModule_Create(&module);
}
