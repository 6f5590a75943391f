/* The MI's compiled commands, as a transport's compiled fast path calls them.
 *
 * mi_server.mi._compiled builds one of these per serving process over its engine
 * (mi_server/mi/compiled.py says when) and hands it over in a capsule named
 * MQMI_COMMANDS_CAPSULE.  A fast path that has checked a request's envelope exactly as
 * MICore does (jsonrpc_request.h's narrow shape: version "2.0", a simple method and
 * params, an id) asks it first; when it answers, the reply bytes are the ones
 * MICore.run_checked would have returned for the same request, the command has run, and
 * no Python ran; when it does not (0), nothing ran or changed and the request goes to
 * MICore as before.  Include jsonrpc_request.h first. */

#ifndef MQMI_COMPILED_H
#define MQMI_COMPILED_H

#define MQMI_COMMANDS_CAPSULE "mi_server.mi._compiled.commands"

typedef struct mqmi_commands {
    /* The reply to r written to out[0:cap]: its length; 0 when this does not answer r
     * (another command, params or queue it leaves to Python, a busy engine, a reply over
     * cap): nothing ran then.  Called with the GIL held; never sets an exception. */
    Py_ssize_t (*answer)(struct mqmi_commands *self, const request *r, char *out,
                         Py_ssize_t cap);
} mqmi_commands;

#endif  /* MQMI_COMPILED_H */
