/* mi_server.http._fastpath: the HTTP worker's common request, compiled.
 *
 * Optional accelerator, like mi_fifo._fastpath: the worker (mi_server/http/server.py)
 * works without it, and everything this does is defined by the Python path (server.py's
 * httptools loop and the WSGI app in app.py), which it hands every other case.
 *
 * serve(fd, ctx) reads a connected socket once and answers, without running Python
 * bytecode for the HTTP parse, the WSGI app or the reply head, exactly one request shape:
 *
 *     POST <root> HTTP/1.1 CRLF            (root exactly, or root + "/")
 *     field-name ":" OWS value CRLF ...    (tokens; values printable ASCII, no trailing
 *     CRLF                                  whitespace; counted as MAX_HEAD counts them)
 *     body of Content-Length bytes: the FIFO fast path's narrow JSON-RPC request
 *
 * the whole request and nothing else in this one read, Content-Length 1..limit, Connection
 * absent, "close" or "keep-alive", no Transfer-Encoding, Expect, Upgrade,
 * Proxy-Connection, Origin or Sec-Fetch-Site (browsers: the guard decides with Origin),
 * no field of those or Content-Length/Host/Connection twice, and a Host the guard of
 * mi_server/http/guard.py accepts (it is called for each new Host value; the answers are
 * kept in the `hosts` dict).  For those the Python path would build the environ, pass
 * the guard, the root, auth (the worker turns this path off when auth is configured),
 * the method and the body checks, call the MI core's handle, and answer 200 with the
 * JSON reply; here the MI's compiled commands (mi_server/mi/compiled.h, when the worker
 * has them) answer mq_get_size, mq_get_sizes and mq_fetch of their common shapes without
 * Python, and every other request goes to the MI core's checked stage
 * (MICore.run_checked), called with the decoded method, params and id exactly as
 * mi_fifo._fastpath does; the same reply bytes are written either way: status line,
 * Content-Type, Content-Length, Date, and "Connection: close" when the connection is not
 * kept.
 *
 * Anything else -- another method, path, version or field, a request split over reads or
 * followed by another (pipelining), a body not of the narrow shape -- comes back as the
 * bytes read, for the Python parser, and nothing has run for them.
 *
 * accept(listen_fd, ctx) accepts up to 16 connections and serves each one's first read
 * the same way; a served `Connection: close` exchange is closed here, so that it never
 * becomes a Python object.  The rest come back to the worker as (fd, result of serve).
 *
 * poll(epoll_fd, ctx, fast, seen, timeout, maxevents) is the worker's epoll_wait: the read
 * events of the connections the worker lists in `fast` (between requests) are served
 * here, and while each leaves its connection as it was (answered and kept), the wait goes
 * on without returning to Python; a keep-alive client's requests then cost no Python
 * bytecode but the MI command's.  Everything else is returned to the worker's loop.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RECV_SIZE 65536  /* server.RECV_SIZE */
#define ACCEPT_BATCH 16  /* server.Worker.accept: a few per wake-up */
#define HOSTS_MAX 256    /* guard._CACHE_MAX: distinct Host values remembered */

/* the body: the FIFO fast path's narrow JSON-RPC request */
#include "../../mi_fifo/jsonrpc_request.h"
/* the MI's compiled commands, asked before the MI core */
#include "../mi/compiled.h"
#include "../../mi_fifo/exception_value.h"  /* take_exception() */

/* ---- the head ---- */

static inline int is_tchar(unsigned char c) {
    /* RFC 9110 token characters, as llhttp reads a field name */
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int name_is(const char *p, Py_ssize_t n, const char *lower) {
    size_t len = strlen(lower);
    if ((size_t)n != len)
        return 0;
    for (size_t k = 0; k < len; k++) {
        unsigned char c = (unsigned char)p[k];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + 32);
        if (c != (unsigned char)lower[k])
            return 0;
    }
    return 1;
}

typedef struct {
    span host;
    int has_host, has_length, has_connection;
    int keep_alive;
    Py_ssize_t length;
    Py_ssize_t body;  /* offset of the body */
} head;

/* The head in b[0:n] of the one shape; 0 for anything else. */
static int parse_head(const char *b, Py_ssize_t n, const char *root, Py_ssize_t root_len,
                      Py_ssize_t max_head, head *h) {
    static const char tail[] = " HTTP/1.1\r\n";
    if (n < 5 || memcmp(b, "POST ", 5) != 0)
        return 0;
    Py_ssize_t i = 5, url = i;
    while (i < n && b[i] != ' ')
        i++;
    Py_ssize_t url_len = i - url;
    if (!((url_len == root_len && memcmp(b + url, root, (size_t)root_len) == 0)
            || (url_len == root_len + 1 && memcmp(b + url, root, (size_t)root_len) == 0
                && b[url + root_len] == '/')))
        return 0;
    if (n - i < (Py_ssize_t)sizeof(tail) - 1 || memcmp(b + i, tail, sizeof(tail) - 1) != 0)
        return 0;
    i += (Py_ssize_t)sizeof(tail) - 1;
    Py_ssize_t counted = url_len;  /* as Connection.on_url / on_header count them */
    h->has_host = h->has_length = h->has_connection = 0;
    h->keep_alive = 1;
    h->host.p = NULL;
    h->host.n = h->length = 0;
    for (;;) {
        if (n - i >= 2 && b[i] == '\r' && b[i + 1] == '\n') {
            i += 2;
            break;
        }
        Py_ssize_t name = i;
        while (i < n && is_tchar((unsigned char)b[i]))
            i++;
        Py_ssize_t name_len = i - name;
        if (name_len == 0 || i >= n || b[i] != ':')
            return 0;
        i++;
        while (i < n && (b[i] == ' ' || b[i] == '\t'))
            i++;
        Py_ssize_t value = i;
        while (i < n) {
            unsigned char c = (unsigned char)b[i];
            if (c == '\r')
                break;
            if ((c < 0x20 && c != '\t') || c > 0x7e)
                return 0;
            i++;
        }
        Py_ssize_t value_len = i - value;
        if (n - i < 2 || b[i + 1] != '\n')
            return 0;
        if (value_len > 0 && (b[i - 1] == ' ' || b[i - 1] == '\t'))
            return 0;
        i += 2;
        counted += name_len + value_len + 4;
        if (counted > max_head)
            return 0;
        const char *np = b + name, *vp = b + value;
        if (name_is(np, name_len, "content-length")) {
            if (h->has_length || value_len < 1 || value_len > 9)
                return 0;
            Py_ssize_t len = 0;
            for (Py_ssize_t k = 0; k < value_len; k++) {
                if (vp[k] < '0' || vp[k] > '9')
                    return 0;
                len = len * 10 + (vp[k] - '0');
            }
            h->has_length = 1;
            h->length = len;
        } else if (name_is(np, name_len, "host")) {
            if (h->has_host)
                return 0;
            h->has_host = 1;
            h->host.p = vp;
            h->host.n = value_len;
        } else if (name_is(np, name_len, "connection")) {
            if (h->has_connection)
                return 0;
            h->has_connection = 1;
            if (name_is(vp, value_len, "close"))
                h->keep_alive = 0;
            else if (!name_is(vp, value_len, "keep-alive"))
                return 0;
        } else if (name_is(np, name_len, "transfer-encoding")
                   || name_is(np, name_len, "expect")
                   || name_is(np, name_len, "upgrade")
                   || name_is(np, name_len, "proxy-connection")
                   || name_is(np, name_len, "origin")
                   || name_is(np, name_len, "sec-fetch-site")) {
            return 0;
        }
    }
    if (!h->has_length)
        return 0;
    h->body = i;
    return 1;
}

/* ---- the reply ---- */

static const char *const DAYS[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const MONTHS[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
static time_t date_second = -1;
static char date_line[64];
static int date_len;

/* "Date: <IMF-fixdate>\r\n", as email.utils.formatdate(usegmt=True) writes it */
static void refresh_date(void) {
    time_t now = time(NULL);
    if (now == date_second)
        return;
    struct tm tm;
    gmtime_r(&now, &tm);
    date_len = snprintf(date_line, sizeof(date_line),
                        "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n", DAYS[tm.tm_wday],
                        tm.tm_mday, MONTHS[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour,
                        tm.tm_min, tm.tm_sec);
    date_second = now;
}

/* ---- serving ---- */

/* ctx: (root: bytes, limit: int, max_head: int, checked, guard, hosts: dict,
 *       stop: bytearray, commands: the MI's compiled commands' capsule or None) */
typedef struct {
    const char *root;
    Py_ssize_t root_len, limit, max_head;
    PyObject *checked, *guard, *hosts;
    const char *stop;
    mqmi_commands *commands;
} context;

static int unpack(PyObject *ctx, context *c) {
    if (!PyTuple_CheckExact(ctx) || PyTuple_GET_SIZE(ctx) != 8
            || !PyBytes_CheckExact(PyTuple_GET_ITEM(ctx, 0))
            || !PyDict_CheckExact(PyTuple_GET_ITEM(ctx, 5))
            || !PyByteArray_CheckExact(PyTuple_GET_ITEM(ctx, 6))
            || PyByteArray_GET_SIZE(PyTuple_GET_ITEM(ctx, 6)) < 1) {
        PyErr_SetString(PyExc_TypeError,
                        "ctx: (root, limit, max_head, checked, guard, hosts, stop, "
                        "commands)");
        return -1;
    }
    c->root = PyBytes_AS_STRING(PyTuple_GET_ITEM(ctx, 0));
    c->root_len = PyBytes_GET_SIZE(PyTuple_GET_ITEM(ctx, 0));
    c->limit = PyLong_AsSsize_t(PyTuple_GET_ITEM(ctx, 1));
    c->max_head = PyLong_AsSsize_t(PyTuple_GET_ITEM(ctx, 2));
    if (PyErr_Occurred())
        return -1;
    c->checked = PyTuple_GET_ITEM(ctx, 3);
    c->guard = PyTuple_GET_ITEM(ctx, 4);
    c->hosts = PyTuple_GET_ITEM(ctx, 5);
    c->stop = PyByteArray_AS_STRING(PyTuple_GET_ITEM(ctx, 6));
    PyObject *commands = PyTuple_GET_ITEM(ctx, 7);
    c->commands = NULL;
    if (commands != Py_None
            && (c->commands = PyCapsule_GetPointer(commands, MQMI_COMMANDS_CAPSULE)) == NULL)
        return -1;
    return 0;
}

/* Whether the guard accepts this Host (1), refuses it (0), or failed (-1). */
static int host_allowed(const context *c, span host) {
    PyObject *key = PyBytes_FromStringAndSize(host.p, host.n);
    if (key == NULL)
        return -1;
    PyObject *known = PyDict_GetItemWithError(c->hosts, key);
    if (known != NULL) {
        Py_DECREF(key);
        return known == Py_True;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(key);
        return -1;
    }
    PyObject *text = PyUnicode_DecodeLatin1(host.p, host.n, NULL);
    PyObject *res = text ? PyObject_CallFunctionObjArgs(c->guard, text, Py_None, Py_None,
                                                        NULL) : NULL;
    Py_XDECREF(text);
    int ok = res == NULL ? -1 : PyObject_IsTrue(res);
    Py_XDECREF(res);
    if (ok >= 0 && PyDict_GET_SIZE(c->hosts) < HOSTS_MAX
            && PyDict_SetItem(c->hosts, key, ok ? Py_True : Py_False) < 0)
        ok = -1;
    Py_DECREF(key);
    return ok;
}

static char buf[RECV_SIZE];
/* a compiled command's reply: apart from buf, which holds the request it reads; small
 * enough that the head and it fit in buf, where send_reply puts them together */
#define ANSWER_MAX (RECV_SIZE - 256)
static char answer_buf[ANSWER_MAX];

/* The served request's answer: True / False (kept open or not, all sent), or
 * (keep_alive, the bytes the socket did not take). */
#define NODELAY_ABOVE 16384  /* a reply this big may go in several segments */

static void set_nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* *nodelay: TCP_NODELAY is still to be set on fd (a connection accept() took).  It is set
 * before a reply on a connection that stays open, or one big enough to need several
 * segments; a small last reply, the whole exchange of a Connection: close client, goes
 * in one segment whatever the flag (Nagle holds back only data sent while earlier data
 * is unacknowledged), so that exchange saves the system call. */
static PyObject *send_reply(int fd, const char *body, Py_ssize_t blen, int keep_alive,
                            int *nodelay) {
    refresh_date();
    char headbuf[256];
    int hlen = snprintf(headbuf, sizeof(headbuf),
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        "Content-Length: %zd\r\n%.*s%s\r\n", blen, date_len, date_line,
                        keep_alive ? "" : "Connection: close\r\n");
    Py_ssize_t total = hlen + blen;
    char *out = total <= (Py_ssize_t)sizeof(buf) ? buf : PyMem_Malloc((size_t)total);
    if (out == NULL)
        return PyErr_NoMemory();
    memcpy(out, headbuf, (size_t)hlen);
    memcpy(out + hlen, body, (size_t)blen);
    if (*nodelay && (keep_alive || total > NODELAY_ABOVE)) {
        set_nodelay(fd);
        *nodelay = 0;
    }
    /* A reply after which the connection closes is held back (MSG_MORE) for the close
     * that follows at once (here in accept(), or the worker's close): the FIN then goes
     * in the same segment as the reply, so the client is woken once, for the reply and
     * its end together, instead of once for each; the bytes are the same.  What the
     * socket did not take is sent by the worker without the flag, which pushes it. */
    ssize_t sent = send(fd, out, (size_t)total, MSG_NOSIGNAL | (keep_alive ? 0 : MSG_MORE));
    PyObject *result;
    if (sent == total) {
        result = Py_NewRef(keep_alive ? Py_True : Py_False);
    } else if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        result = Py_BuildValue("(Oy#)", Py_False, "", (Py_ssize_t)0);  /* gone: close */
    } else {
        Py_ssize_t done = sent < 0 ? 0 : sent;
        result = Py_BuildValue("(Oy#)", keep_alive ? Py_True : Py_False, out + done,
                               total - done);
    }
    if (out != buf)
        PyMem_Free(out);
    return result;
}

/* One read of fd: None (nothing to read), b"" (end of file or an error: close), the bytes
 * read (not ours), or the answer of send_reply (served); NULL with an exception set when
 * a callback raised (the request was read and not answered). */
static PyObject *serve_fd(int fd, const context *c, int *nodelay) {
    ssize_t got = recv(fd, buf, sizeof(buf), 0);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            Py_RETURN_NONE;
        return PyBytes_FromStringAndSize("", 0);
    }
    if (got == 0)
        return PyBytes_FromStringAndSize("", 0);
    Py_ssize_t n = got;
    head h;
    request r;
    if (!parse_head(buf, n, c->root, c->root_len, c->max_head, &h) || h.length < 1
            || h.length > c->limit || h.body + h.length != n)
        return PyBytes_FromStringAndSize(buf, n);
    Py_ssize_t j = skip_ws(buf, h.body, n);
    if (j >= n || buf[j] != '{' || !parse_request(buf, n, &j, &r) || skip_ws(buf, j, n) != n)
        return PyBytes_FromStringAndSize(buf, n);
    if (h.has_host) {
        int ok = host_allowed(c, h.host);
        if (ok < 0)
            return NULL;
        if (!ok)
            return PyBytes_FromStringAndSize(buf, n);  /* the Python path's 403 */
    }
    if (c->commands != NULL) {
        /* the common commands, compiled: answered there (the same bytes as the MI core's)
         * or left to the core with nothing run */
        Py_ssize_t len = c->commands->answer(c->commands, &r, answer_buf, ANSWER_MAX);
        if (len > 0) {
            if (PyErr_CheckSignals() < 0)  /* as below */
                return NULL;
            return send_reply(fd, answer_buf, len, h.keep_alive && !c->stop[0], nodelay);
        }
    }
    PyObject *method = str_of(r.method);
    PyObject *params = method ? params_object(&r) : NULL;
    PyObject *id_text = params ? str_of(r.id) : NULL;
    PyObject *reply = NULL;
    if (id_text != NULL) {
        PyObject *argv[4] = {NULL, method, params, id_text};
        reply = PyObject_Vectorcall(c->checked, argv + 1,
                                    3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    }
    Py_XDECREF(method);
    Py_XDECREF(params);
    Py_XDECREF(id_text);
    if (reply == NULL)
        return NULL;
    if (!PyBytes_Check(reply)) {
        Py_DECREF(reply);
        PyErr_SetString(PyExc_TypeError, "checked() must return bytes");
        return NULL;
    }
    /* a stop signal that arrived while the command ran: this reply is the last one (its
     * handler runs here at the latest) */
    if (PyErr_CheckSignals() < 0) {
        Py_DECREF(reply);
        return NULL;
    }
    PyObject *result = send_reply(fd, PyBytes_AS_STRING(reply), PyBytes_GET_SIZE(reply),
                                  h.keep_alive && !c->stop[0], nodelay);
    Py_DECREF(reply);
    return result;
}

PyDoc_STRVAR(serve_doc,
"serve(fd, ctx) -> None | bytes | bool | (bool, bytes)\n\n"
"One read of the connected non-blocking socket fd.  None: nothing to read; b'': end of\n"
"file or a socket error (close it); other bytes: what was read, not served (feed them\n"
"to the parser); True / False: one request served and its reply sent whole, the\n"
"connection kept or to be closed; (keep, rest): served, `rest` not sent yet.\n"
"ctx: (root, limit, max_head, checked, guard, hosts, stop, commands), see server.Worker.");

static PyObject *serve(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    context c;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "serve(fd, ctx)");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    if (unpack(args[1], &c) < 0)
        return NULL;
    int nodelay = 0;  /* the worker's connections have it */
    return serve_fd((int)fd, &c, &nodelay);
}

PyDoc_STRVAR(accept_doc,
"accept(listen_fd, ctx, room) -> list of (fd, result) | (fd, exception)\n\n"
"Accept up to 16 connections (non-blocking), and no more once `room` of them are\n"
"listed, and serve each one's first read as serve() does.  A served exchange that\n"
"closes, with its reply sent whole, is closed here; every other connection gets\n"
"TCP_NODELAY and is listed with serve()'s result (or the exception a callback raised)\n"
"for the worker to take over.");

static PyObject *accept_batch(long lfd, context c, Py_ssize_t room);

static PyObject *accept_(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    context c;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "accept(listen_fd, ctx, room)");
        return NULL;
    }
    long lfd = PyLong_AsLong(args[0]);
    Py_ssize_t room = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred())
        return NULL;
    if (unpack(args[1], &c) < 0)
        return NULL;
    return accept_batch(lfd, c, room);
}

static PyObject *accept_batch(long lfd, context c, Py_ssize_t room) {
    PyObject *left = PyList_New(0);
    if (left == NULL)
        return NULL;
    for (int k = 0; k < ACCEPT_BATCH && PyList_GET_SIZE(left) < room; k++) {
        int fd = accept4((int)lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR
                    || errno == ECONNABORTED)
                break;
            if (PyList_GET_SIZE(left) > 0)
                break;  /* hand over what was taken; the error comes again next time */
            Py_DECREF(left);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        int nodelay = 1;
        PyObject *res = serve_fd(fd, &c, &nodelay);
        if (res == Py_False) {  /* served, sent whole, not kept: done */
            Py_DECREF(res);
            close(fd);
            continue;
        }
        if (nodelay)  /* the worker's connection, as Worker.accept makes it */
            set_nodelay(fd);
        if (res == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception)) {  /* KeyboardInterrupt, ... */
                close(fd);
                for (Py_ssize_t t = 0; t < PyList_GET_SIZE(left); t++)  /* taken before */
                    close((int)PyLong_AsLong(PyTuple_GET_ITEM(PyList_GET_ITEM(left, t), 0)));
                Py_DECREF(left);
                return NULL;
            }
            res = take_exception();
        }
        PyObject *item = Py_BuildValue("(iN)", fd, res);
        if (item == NULL || PyList_Append(left, item) < 0) {
            Py_XDECREF(item);
            close(fd);
            Py_DECREF(left);
            return NULL;
        }
        Py_DECREF(item);
        if (c.stop[0])
            break;
    }
    return left;
}


PyDoc_STRVAR(poll_doc,
"poll(epoll_fd, ctx, fast, seen, timeout, maxevents, listen_fd, room[, waiting]) -> list of (fd, events) | (fd, events, result)\n\n"
"The worker's epoll_wait, for up to `timeout` seconds.  A read event of a connection in\n"
"the set `fast` (one the worker holds between requests, see Worker.settle) is served here\n"
"as serve() does; when that leaves the connection as it was (a request answered whole and\n"
"kept: its fd goes into the set `seen`; or nothing to read) the wait goes on, without\n"
"returning.  Everything else is returned: (fd, events) for an event not read here, as\n"
"epoll.poll gives it, and (fd, events, result) with serve()'s result (or the exception a\n"
"callback raised) for a connection whose read needs the worker; that fd leaves `fast`.\n"
"An event of `listen_fd` is accepted here as accept(listen_fd, ctx, room) does; the\n"
"connections it hands over come back as (listen_fd, events, that list).  A read event of\n"
"a descriptor in the dict `waiting` (accepted, its request not come yet) is served as\n"
"accept() serves one: an exchange that ends is closed here (and leaves `waiting`),\n"
"returned as (fd, events, False) only when `room` was 0; any other result leaves\n"
"`waiting` and comes back as (fd, events, result) for the worker to adopt.\n"
"Returns at the end of `timeout` (an empty list then), after a signal, or at once while\n"
"the stop flag is set (every event returned unread).");

static double monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define POLL_MAX 64

static PyObject *poll_(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    context c;
    if ((nargs != 8 && nargs != 9) || !PyAnySet_CheckExact(args[2])
            || !PyAnySet_CheckExact(args[3]) || (nargs == 9 && !PyDict_CheckExact(args[8]))) {
        PyErr_SetString(PyExc_TypeError, "poll(epoll_fd, ctx, fast: set, seen: set, timeout, "
                        "maxevents, listen_fd, room[, waiting: dict])");
        return NULL;
    }
    PyObject *waiting = nargs == 9 ? args[8] : NULL;
    long epfd = PyLong_AsLong(args[0]);
    double timeout = PyFloat_AsDouble(args[4]);
    long maxevents = PyLong_AsLong(args[5]);
    long lfd = PyLong_AsLong(args[6]);
    Py_ssize_t room = PyLong_AsSsize_t(args[7]);
    if (PyErr_Occurred())
        return NULL;
    if (unpack(args[1], &c) < 0)
        return NULL;
    PyObject *fast = args[2], *seen = args[3];
    int paused = room <= 0;  /* the worker took the listener out of the set: the cap */
    if (maxevents < 1 || maxevents > POLL_MAX)
        maxevents = POLL_MAX;
    struct epoll_event evs[POLL_MAX];
    double deadline = monotonic() + (timeout > 0 ? timeout : 0);
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (;;) {
        double left = deadline - monotonic();
        int ms = left > 0 ? (int)(left * 1000.0 + 0.999) : 0;
        int n;
        Py_BEGIN_ALLOW_THREADS
        n = epoll_wait((int)epfd, evs, (int)maxevents, ms);
        Py_END_ALLOW_THREADS
        if (n < 0) {
            if (errno == EINTR) {  /* a signal: its handler runs, the worker looks */
                if (PyErr_CheckSignals() < 0) {
                    Py_DECREF(out);
                    return NULL;
                }
                return out;
            }
            Py_DECREF(out);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        for (int k = 0; k < n; k++) {
            int fd = evs[k].data.fd;
            uint32_t ev = evs[k].events;
            PyObject *key = PyLong_FromLong(fd);
            if (key == NULL)
                goto fail;
            int is_fast = 0, is_waiting = 0;
            if (!c.stop[0] && !(ev & EPOLLOUT) && fd != lfd) {
                is_fast = PySet_Contains(fast, key);
                if (is_fast == 0 && waiting != NULL)
                    is_waiting = PyDict_Contains(waiting, key);
                if (is_fast < 0 || is_waiting < 0) {
                    Py_DECREF(key);
                    goto fail;
                }
            }
            PyObject *item, *res = NULL;
            if (is_fast || is_waiting) {  /* read here: what serve() does with it */
                int nodelay = 0;  /* the worker's connections and accept()'s have it */
                res = serve_fd(fd, &c, &nodelay);
                if (res == NULL) {
                    if (!PyErr_ExceptionMatches(PyExc_Exception)) {  /* KeyboardInterrupt */
                        Py_DECREF(key);
                        goto fail;
                    }
                    res = take_exception();
                }
            }
            if (is_waiting) {
                /* the first read of a connection accepted before its request had come
                 * (Worker.waiting, Worker.first_read), served as accept() serves one: an
                 * exchange that ends (served and not kept, or end of file) is closed here
                 * too, and the wait goes on.  Anything else goes back as (fd, events,
                 * result) for the worker to adopt, and so does a close while the worker is
                 * not accepting (the cap), for it to accept again. */
                if (res == Py_None) {  /* woken for nothing */
                    Py_DECREF(res);
                    Py_DECREF(key);
                    continue;
                }
                if (PyDict_DelItem(waiting, key) < 0) {
                    Py_DECREF(res);
                    Py_DECREF(key);
                    goto fail;
                }
                if (res == Py_False || (PyBytes_CheckExact(res) && PyBytes_GET_SIZE(res) == 0)) {
                    Py_DECREF(res);
                    close(fd);  /* it leaves the epoll set */
                    room++;
                    if (!paused) {
                        Py_DECREF(key);
                        continue;
                    }
                    res = Py_NewRef(Py_False);
                }
                item = Py_BuildValue("(iIN)", fd, (unsigned int)ev, res);
            } else if (fd == lfd && !c.stop[0]) {  /* new connections: accept() here */
                PyObject *taken = accept_batch(lfd, c, room);
                if (taken == NULL && PyErr_ExceptionMatches(PyExc_OSError)) {
                    PyErr_Clear();  /* EMFILE and the like: the worker's accept logs it */
                    item = Py_BuildValue("(iI)", fd, (unsigned int)ev);
                } else if (taken == NULL) {
                    Py_DECREF(key);
                    goto fail;
                } else if (PyList_GET_SIZE(taken) == 0) {  /* all served and closed */
                    Py_DECREF(taken);
                    Py_DECREF(key);
                    continue;
                } else {
                    room -= PyList_GET_SIZE(taken);
                    item = Py_BuildValue("(iIN)", fd, (unsigned int)ev, taken);
                }
            } else if (!is_fast) {
                item = Py_BuildValue("(iI)", fd, (unsigned int)ev);
            } else {
                if (res == Py_True || res == Py_None) {  /* as it was: the wait goes on */
                    int bad = res == Py_True ? PySet_Add(seen, key) : 0;
                    Py_DECREF(res);
                    Py_DECREF(key);
                    if (bad < 0)
                        goto fail;
                    continue;
                }
                if (PySet_Discard(fast, key) < 0) {
                    Py_DECREF(res);
                    Py_DECREF(key);
                    goto fail;
                }
                item = Py_BuildValue("(iIN)", fd, (unsigned int)ev, res);
            }
            Py_DECREF(key);
            if (item == NULL || PyList_Append(out, item) < 0) {
                Py_XDECREF(item);
                goto fail;
            }
            Py_DECREF(item);
        }
        if (PyList_GET_SIZE(out) > 0 || c.stop[0] || n == 0 || monotonic() >= deadline)
            return out;
    }
fail:
    /* the connections an accept of this wait took are the worker's only through `out`:
     * close them, as accept_batch closes those it took before such an error */
    if (PyList_GET_SIZE(out) > 0) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        for (Py_ssize_t t = 0; t < PyList_GET_SIZE(out); t++) {
            PyObject *item = PyList_GET_ITEM(out, t);
            if (PyTuple_GET_SIZE(item) != 3 || PyLong_AsLong(PyTuple_GET_ITEM(item, 0)) != lfd)
                continue;
            PyObject *taken = PyTuple_GET_ITEM(item, 2);
            for (Py_ssize_t u = 0; u < PyList_GET_SIZE(taken); u++)
                close((int)PyLong_AsLong(PyTuple_GET_ITEM(PyList_GET_ITEM(taken, u), 0)));
        }
        PyErr_Restore(type, value, tb);
    }
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"serve", (PyCFunction)(void (*)(void))serve, METH_FASTCALL, serve_doc},
    {"accept", (PyCFunction)(void (*)(void))accept_, METH_FASTCALL, accept_doc},
    {"poll", (PyCFunction)(void (*)(void))poll_, METH_FASTCALL, poll_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "mi_server.http._fastpath",
    "The HTTP worker's common request, compiled (optional; see mi_server.http.fastpath).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    return PyModule_Create(&module);
}
