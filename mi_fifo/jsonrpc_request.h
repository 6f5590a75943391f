/* The narrow JSON-RPC request that both compiled fast paths serve without Python
 * bytecode (mi_fifo/_fastpath.c, mi_server/http/_fastpath.c): a JSON object with the four
 * lower-case members, each at most once, "jsonrpc":"2.0", a method and params of simple
 * strings (printable ASCII, no escapes), an id that is a simple string or a small
 * canonical integer.  Anything else makes these functions return 0 and the request goes
 * the Python way, which defines every behaviour.  Included by both extensions (static
 * functions: each gets its own copy); Python.h must be included first. */

#ifndef MQMI_JSONRPC_REQUEST_H
#define MQMI_JSONRPC_REQUEST_H

#define MAX_PARAMS 16    /* more go the Python way */

typedef struct {
    const char *p;
    Py_ssize_t n;
} span;

static inline int is_ws(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static inline Py_ssize_t skip_ws(const char *b, Py_ssize_t i, Py_ssize_t n) {
    while (i < n && is_ws((unsigned char)b[i]))
        i++;
    return i;
}

/* A string with no escapes and printable ASCII only, b[*i] being its opening quote.
 * Such a string decodes to itself and json's encoder writes it back unchanged. */
static int simple_string(const char *b, Py_ssize_t n, Py_ssize_t *i, span *out) {
    Py_ssize_t j = *i + 1, start = j;
    while (j < n) {
        unsigned char c = (unsigned char)b[j];
        if (c == '"') {
            out->p = b + start;
            out->n = j - start;
            *i = j + 1;
            return 1;
        }
        if (c < 0x20 || c > 0x7e || c == '\\')
            return 0;
        j++;
    }
    return 0;
}

/* An integer of 1 to 9 digits in canonical form (no "-0", no leading zero), followed by
 * a delimiter: str(int(literal)) is the literal itself, and it is inside int32. */
static int small_int(const char *b, Py_ssize_t n, Py_ssize_t *i, span *out) {
    Py_ssize_t j = *i, start = j;
    if (j < n && b[j] == '-')
        j++;
    Py_ssize_t d = j;
    while (j < n && b[j] >= '0' && b[j] <= '9')
        j++;
    Py_ssize_t digits = j - d;
    if (digits < 1 || digits > 9 || (b[d] == '0' && (digits > 1 || d > start)))
        return 0;
    if (j >= n || !(is_ws((unsigned char)b[j]) || b[j] == ',' || b[j] == '}'))
        return 0;
    out->p = b + start;
    out->n = j - start;
    *i = j;
    return 1;
}

typedef struct {
    span method, id;
    int has_params, params_named;     /* params: [..] or {..} */
    int nparams;
    span pname[MAX_PARAMS], pval[MAX_PARAMS];
} request;

/* params: an array of simple strings or an object of simple string values */
static int parse_params(const char *b, Py_ssize_t n, Py_ssize_t *i, request *r) {
    Py_ssize_t j = *i;
    int named = b[j] == '{';
    char close = named ? '}' : ']';
    r->params_named = named;
    r->nparams = 0;
    j = skip_ws(b, j + 1, n);
    if (j < n && b[j] == close) {
        *i = j + 1;
        return 1;
    }
    for (;;) {
        if (r->nparams == MAX_PARAMS || j >= n || b[j] != '"')
            return 0;
        if (named) {
            if (!simple_string(b, n, &j, &r->pname[r->nparams]))
                return 0;
            j = skip_ws(b, j, n);
            if (j >= n || b[j] != ':')
                return 0;
            j = skip_ws(b, j + 1, n);
            if (j >= n || b[j] != '"')
                return 0;
        }
        if (!simple_string(b, n, &j, &r->pval[r->nparams]))
            return 0;
        r->nparams++;
        j = skip_ws(b, j, n);
        if (j < n && b[j] == ',') {
            j = skip_ws(b, j + 1, n);
            continue;
        }
        if (j < n && b[j] == close) {
            *i = j + 1;
            return 1;
        }
        return 0;
    }
}

static int span_is(span s, const char *lit) {
    size_t len = strlen(lit);
    return (size_t)s.n == len && memcmp(s.p, lit, len) == 0;
}

/* The JSON object at b[*i] == '{' in the narrow shape; *i moves past its '}'. */
static int parse_request(const char *b, Py_ssize_t n, Py_ssize_t *i, request *r) {
    enum { JSONRPC = 1, METHOD = 2, PARAMS = 4, ID = 8 };
    int seen = 0;
    Py_ssize_t j = skip_ws(b, *i + 1, n);
    r->has_params = r->params_named = r->nparams = 0;
    r->id.p = r->method.p = NULL;
    r->id.n = r->method.n = 0;
    for (;;) {
        span key, v;
        if (j >= n || b[j] != '"' || !simple_string(b, n, &j, &key))
            return 0;
        j = skip_ws(b, j, n);
        if (j >= n || b[j] != ':')
            return 0;
        j = skip_ws(b, j + 1, n);
        if (j >= n)
            return 0;
        if (span_is(key, "jsonrpc") && !(seen & JSONRPC)) {
            seen |= JSONRPC;
            if (b[j] != '"' || !simple_string(b, n, &j, &v) || !span_is(v, "2.0"))
                return 0;
        } else if (span_is(key, "method") && !(seen & METHOD)) {
            seen |= METHOD;
            if (b[j] != '"' || !simple_string(b, n, &j, &r->method))
                return 0;
        } else if (span_is(key, "params") && !(seen & PARAMS)) {
            seen |= PARAMS;
            if ((b[j] != '[' && b[j] != '{') || !parse_params(b, n, &j, r))
                return 0;
            r->has_params = 1;
        } else if (span_is(key, "id") && !(seen & ID)) {
            seen |= ID;
            if (b[j] == '"') {
                Py_ssize_t q = j;
                if (!simple_string(b, n, &j, &v))
                    return 0;
                r->id.p = b + q;           /* echoed with its quotes, as encode_str writes it */
                r->id.n = j - q;
            } else if (!small_int(b, n, &j, &r->id)) {
                return 0;
            }
        } else {
            return 0;  /* another member, a duplicate or a case variant: the exact walk */
        }
        j = skip_ws(b, j, n);
        if (j < n && b[j] == ',') {
            j = skip_ws(b, j + 1, n);
            continue;
        }
        if (j < n && b[j] == '}') {
            *i = j + 1;
            /* no id: a notification, which the Python path runs */
            return (seen & (JSONRPC | METHOD | ID)) == (JSONRPC | METHOD | ID);
        }
        return 0;
    }
}

static PyObject *str_of(span s) {
    return PyUnicode_DecodeASCII(s.p, s.n, NULL);
}

static PyObject *params_object(const request *r) {
    if (!r->has_params)
        Py_RETURN_NONE;
    PyObject *seq = r->params_named ? PyTuple_New(r->nparams) : PyList_New(r->nparams);
    if (seq == NULL)
        return NULL;
    for (int k = 0; k < r->nparams; k++) {
        PyObject *item;
        if (r->params_named) {  /* a JObject: the tuple of (name, value) pairs */
            PyObject *name = str_of(r->pname[k]);
            PyObject *value = name ? str_of(r->pval[k]) : NULL;
            item = value ? PyTuple_Pack(2, name, value) : NULL;
            Py_XDECREF(name);
            Py_XDECREF(value);
        } else {
            item = str_of(r->pval[k]);
        }
        if (item == NULL) {
            Py_DECREF(seq);
            return NULL;
        }
        if (r->params_named)
            PyTuple_SET_ITEM(seq, k, item);
        else
            PyList_SET_ITEM(seq, k, item);
    }
    return seq;
}

#endif  /* MQMI_JSONRPC_REQUEST_H */
