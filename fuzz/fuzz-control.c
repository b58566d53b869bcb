/* nbdkit-raid fuzz target: the control-line handler (protocol/), as the
 * server runs it on every line a client sends.
 *
 * Input: bytes as they arrive on the socket; each '\n'-terminated line
 * (and the rest) goes through proto_blank, proto_parse_line (one tokener
 * for the connection, the server's flags) and proto_decode; a refusal is
 * turned into the reply the server would send.
 * Properties: nothing crashes or leaks; every reply is one line of JSON
 * that parses back with its error code an errno name; a request
 * proto_decode accepts has no NUL in any name it passes on, and
 * proto_build rebuilds an equivalent request from its decoded arguments
 * (the client's path accepts what the server accepted).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "fuzz.h"
#include "protocol.h"

static json_tokener *tok;

/* The server's error reply for (id, err, msg): it must be one JSON line. */
static void
check_reply (json_object *id, int err, const char *msg)
{
  json_object *o = json_object_new_object (), *back;
  const char *line;

  if (!o)
    abort ();
  json_object_object_add (o, "id", id ? json_object_get (id) : NULL);
  json_object_object_add (o, "ok", json_object_new_boolean (0));
  json_object_object_add (o, "error", json_object_new_string (proto_errno_name (err)));
  json_object_object_add (o, "message", json_object_new_string (msg));
  line = json_object_to_json_string_ext (o, JSON_C_TO_STRING_PLAIN);
  if (strchr (line, '\n'))
    fuzz_fail ("a reply spans lines: %s", line);
  if ((back = json_tokener_parse (line)) == NULL)
    fuzz_fail ("a reply does not parse: %s", line);
  if (proto_errno_value (proto_errno_name (err)) == 0)
    fuzz_fail ("error code %d has no errno name", err);
  json_object_put (back);
  json_object_put (o);
}

static void
check_accepted (const struct proto_request *rq)
{
  char err[PROTO_ERRLEN];
  struct proto_request rq2;
  json_object *o = NULL;
  int r;

  if (rq->op < 0 || rq->op >= PROTO_NOPS)
    fuzz_fail ("accepted op %d", rq->op);
  r = proto_build (rq->op, &rq->args, &o, err, sizeof err);
  if (r != 0)
    fuzz_fail ("proto_build refuses what proto_decode accepted (%s): %s",
               proto_op_name (rq->op), err);
  if (proto_decode (o, &rq2, err, sizeof err) != 0 || rq2.op != rq->op ||
      rq2.args.present != rq->args.present)
    fuzz_fail ("a rebuilt %s request decodes differently", proto_op_name (rq->op));
  json_object_put (o);
}

static void
one_line (const char *line, size_t len)
{
  char err[PROTO_ERRLEN];
  struct proto_request rq;
  json_object *obj, *id = NULL;
  int r;

  if (proto_blank (line, len))
    return;
  r = proto_parse_line (tok, line, len, &obj, err, sizeof err);
  if (r != 0) {
    if (obj != NULL || (r != EPROTO && r != EINVAL))
      fuzz_fail ("proto_parse_line: result %d with an object", r);
    check_reply (NULL, r, err);
    return;
  }
  json_object_object_get_ex (obj, "id", &id);
  r = proto_decode (obj, &rq, err, sizeof err);
  if (r == 0)
    check_accepted (&rq);
  else
    check_reply (id, r, err);
  json_object_put (obj);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  const char *p = (const char *) data, *end = p + size;

  if (!tok) {
    if (!(tok = json_tokener_new ()))
      abort ();
    json_tokener_set_flags (tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
  }
  while (p < end) {
    const char *nl = memchr (p, '\n', end - p);
    size_t len = nl ? (size_t) (nl - p) : (size_t) (end - p);
    one_line (p, len);
    p += len + (nl != NULL);
  }
  return 0;
}

void
fuzz_fini (void)
{
  if (tok)
    json_tokener_free (tok);
  tok = NULL;
}
