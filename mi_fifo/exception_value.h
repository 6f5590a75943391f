/* The exception set now, taken out as one object with its traceback, for a compiled fast
 * path that hands a callback's failure back to its Python loop as a value
 * (PyErr_GetRaisedException does this from Python 3.12).  Included by the HTTP and
 * datagram fast paths; Python.h must be included first. */

#ifndef MQMI_EXCEPTION_VALUE_H
#define MQMI_EXCEPTION_VALUE_H

static PyObject *take_exception(void) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

#endif  /* MQMI_EXCEPTION_VALUE_H */
