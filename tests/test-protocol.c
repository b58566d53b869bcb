/* nbdkit-raid: tests of the control protocol module (protocol/protocol.h)
 * without a server: errno names both ways, the op table, line parsing
 * (EPROTO, NUL in names), argument checking, and requests built by the
 * client side read back unchanged by the server side.  The end-to-end
 * refusals over a real socket are tests/e2e_control.py's. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "protocol.h"

static int checks, failures;
#define CHECK(cond, ...) do { checks++; if (!(cond)) { failures++; \
      fprintf (stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);          \
      fprintf (stderr, __VA_ARGS__); fprintf (stderr, "\n"); } } while (0)

static json_tokener *tok;
static json_object *last;       /* the request server_read read last */

/* Parse and decode one line as the server does; returns the code (0 ok).
 * rq's strings point into the request object, kept in `last` until the
 * next call. */
static int
server_read (const char *line, struct proto_request *rq, char *err)
{
  int r;

  json_object_put (last);
  r = proto_parse_line (tok, line, strlen (line), &last, err, PROTO_ERRLEN);
  if (r == 0)
    r = proto_decode (last, rq, err, PROTO_ERRLEN);
  return r;
}

/* line gets code, and a message containing want. */
static void
refused (const char *line, int code, const char *want)
{
  char err[PROTO_ERRLEN] = "";
  struct proto_request rq;
  int r = server_read (line, &rq, err);

  CHECK (r == code && strstr (err, want) != NULL,
         "%s: got %s '%s', expected %s '...%s...'", line, proto_errno_name (r),
         err, proto_errno_name (code), want);
}

static void
test_errno_names (void)
{
  static const int errs[] = { EPROTO, ENOSYS, EINVAL, EBUSY, ENOSPC, ENODEV,
                              EIO, EACCES, EROFS, EAGAIN };

  for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++)
    CHECK (proto_errno_value (proto_errno_name (errs[i])) == errs[i],
           "errno %d round trip via %s", errs[i], proto_errno_name (errs[i]));
  CHECK (strcmp (proto_errno_name (EHOSTDOWN), "EHOSTDOWN") == 0,
         "glibc's name for an errno not in the table");
  CHECK (strcmp (proto_errno_name (99999), "EIO") == 0, "no name: EIO");
  CHECK (proto_errno_value ("ENOPE") == 0 && proto_errno_value (NULL) == 0,
         "unknown names are 0");
}

static void
test_op_table (void)
{
  for (int op = 0; op < PROTO_NOPS; op++)
    CHECK (proto_op_lookup (proto_op_name (op)) == op, "op %d by name", op);
  CHECK (proto_op_lookup ("STATUS") == PROTO_OP_NONE, "names are exact");
  CHECK (proto_op_name (PROTO_NOPS) == NULL && proto_arg_name (PROTO_NARGS) == NULL,
         "out of range");
  for (int a = 0; a < PROTO_NARGS; a++)
    CHECK (proto_arg_name (a) != NULL, "argument %d has a name", a);
}

/* Lines the server refuses: the code, and part of the message. */
static const struct { const char *line; int code; const char *want; } refusals[] = {
  { "not json", EPROTO, "not a JSON object: " },
  { "[1]", EPROTO, "must be a JSON object" },
  { "{\"op\":\"status\"} x", EPROTO, "not a JSON object: " },
  { "{\"op\":\"status\"}{}", EPROTO, "not a JSON object: " },
  { "{\"op\":\"status\"", EPROTO, "incomplete JSON" },
  { "{\"op\":\"status\",\"id\":\"\xff\"}", EPROTO, "not a JSON object" },
  /* json-c would read these names as "member", "op" and "fail" */
  { "{\"op\":\"fail\",\"member\\u0000x\":1}", EINVAL,
    "field name \"member\\u0000x\" contains a NUL" },
  { "{\"op\\u0000x\" : \"fail\", \"member\":1}", EINVAL, "contains a NUL character" },
  { "{\"op\":\"status\",\"id\":{\"k\\u0000\":1}}", EINVAL, "contains a NUL" },
  { "{\"op\":\"fail\\u0000zzz\",\"member\":1}", EINVAL, "op: contains a NUL character" },
  { "{}", EINVAL, "missing op" },
  { "{\"op\":5}", EINVAL, "op: expected a string" },
  { "{\"op\":\"nosuch\"}", ENOSYS, "unknown op 'nosuch'" },
  { "{\"op\":\"status\",\"x\":1}", EINVAL, "unknown field 'x' for op 'status'" },
  { "{\"op\":\"wait\",\"timeout\":86401}", EINVAL, "timeout: must be between" },
  { "{\"op\":\"wait\",\"timeout\":NaN}", EINVAL, "timeout: must be between" },
  { "{\"op\":\"fail\"}", EINVAL, "member: missing" },
  { "{\"op\":\"fail\",\"member\":32}", EINVAL, "member: role 32 is outside 0..31" },
  { "{\"op\":\"fail\",\"member\":\"-1\"}", EINVAL, "member: role -1 is negative" },
  { "{\"op\":\"add\",\"member\":3}", EINVAL, "member: expected a string" },
  { "{\"op\":\"replace\",\"member\":0,\"with\":\"\"}", EINVAL, "with: must not be empty" },
  { "{\"op\":\"resize\",\"size\":0}", EINVAL, "size: must be positive" },
  { "{\"op\":\"resize\",\"size\":\"5MiB\"}", EINVAL, "size: '5MiB' is not a size" },
  { "{\"op\":\"resize\",\"size\":9223372036854775808}", EINVAL, "size: number too large" },
  { "{\"op\":\"resize\",\"size\":\"Max\"}", EINVAL, "size: 'Max' is not a size" },
  { "{\"op\":\"resize\",\"size\":1,\"force\":1}", EINVAL, "force: expected true or false" },
  { "{\"op\":\"resize\",\"size\":1,\"force\":\"true\"}", EINVAL,
    "force: expected true or false" },
  { "{\"op\":\"set\",\"speed_max\":\"max\"}", EINVAL, "speed_max: 'max' is not a size" },
  { "{\"op\":\"set\"}", EINVAL, "nothing to set" },
  { "{\"op\":\"set\",\"speed_min\":2,\"speed_max\":1}", EINVAL, "is above speed_max" },
  { "{\"op\":\"reshape\",\"add\":[]}", EINVAL, "nothing to change" },
  { "{\"op\":\"reshape\",\"force\":true}", EINVAL, "nothing to change" },
  { "{\"op\":\"add\",\"member\":\"/a\",\"force\":\"yes\"}", EINVAL,
    "force: expected true or false" },
  { "{\"op\":\"replace\",\"member\":0,\"force\":true}", EINVAL,
    "unknown field 'force' for op 'replace'" },
  { "{\"op\":\"reshape\",\"level\":3}", EINVAL, "level: 3 is not 0, 1, 4, 5 or 6" },
  { "{\"op\":\"reshape\",\"level\":5.0}", EINVAL, "level: expected a non-negative integer" },
  { "{\"op\":\"reshape\",\"chunk\":3000}", EINVAL, "chunk: 3000 is not a power of two" },
  { "{\"op\":\"reshape\",\"raid_devices\":1}", EINVAL, "raid_devices: 1 is outside 2..32" },
  { "{\"op\":\"reshape\",\"layout\":\"nonsense\"}", EINVAL, "unknown layout 'nonsense'" },
  { "{\"op\":\"reshape\",\"add\":[\"/a\",\"/a\"]}", EINVAL, "add: /a is named twice" },
  { "{\"op\":\"reshape\",\"add\":[\"/a\",5]}", EINVAL, "add[1]: expected a string" },
};

static void
test_refusals (void)
{
  for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++)
    refused (refusals[i].line, refusals[i].code, refusals[i].want);
}

static void
test_accepted (void)
{
  char err[PROTO_ERRLEN];
  struct proto_request rq;

  /* An escaped backslash before u0000 is no NUL; a NUL in a value of id is
   * echoed, not refused. */
  CHECK (server_read ("{\"op\":\"status\",\"id\":{\"a\\\\u0000\":\"\\u0000\"}} \r",
                      &rq, err) == 0 && rq.op == PROTO_OP_STATUS, "%s", err);
  CHECK (server_read ("{\"op\":\"add\",\"member\":\"/a\",\"force\":true}", &rq, err) == 0 &&
         rq.args.force && proto_has (&rq.args, PROTO_ARG_FORCE), "add force: %s", err);
  CHECK (server_read ("{\"op\":\"reshape\",\"add\":[\"/a\"],\"force\":false}", &rq,
                      err) == 0 && !rq.args.force && rq.args.nadd == 1, "reshape force: %s", err);
  CHECK (server_read ("{\"op\":\"wait\",\"timeout\":0.5}", &rq, err) == 0 &&
         proto_has (&rq.args, PROTO_ARG_TIMEOUT) && rq.args.timeout == 0.5, "%s", err);
  CHECK (server_read ("{\"op\":\"replace\",\"member\":\"2\",\"with\":null}", &rq, err) == 0 &&
         rq.args.member.role == -1 && strcmp (rq.args.member.spec, "2") == 0 &&
         !proto_has (&rq.args, PROTO_ARG_WITH), "replace with null: %s", err);
  CHECK (server_read ("{\"op\":\"resize\",\"size\":\"64K\"}", &rq, err) == 0 &&
         rq.args.size == 65536, "resize 64K: %s", err);
  CHECK (server_read ("{\"op\":\"resize\",\"size\":\"max\",\"force\":true}", &rq,
                      err) == 0 && rq.args.size == PROTO_SIZE_MAX && rq.args.force &&
         proto_has (&rq.args, PROTO_ARG_FORCE), "resize max force: %s", err);
  CHECK (server_read ("{\"op\":\"resize\",\"size\":4096}", &rq, err) == 0 &&
         !rq.args.force && !proto_has (&rq.args, PROTO_ARG_FORCE), "resize: %s", err);
  CHECK (server_read ("{\"op\":\"reshape\",\"layout\":\"parity-last\"}", &rq, err) == 0 &&
         rq.args.layout_id == raid_layout_parse ("parity-last"), "layout: %s", err);
}

/* Every op, every argument: built by the client side, read back by the
 * server side with the same values. */
static void
test_build_round_trip (void)
{
  char err[PROTO_ERRLEN];
  struct proto_request rq;
  struct proto_args a = { .level = 6, .layout = "left-symmetric-6", .chunk = 1 << 20,
                          .raid_devices = 7, .member = { .role = 3 }, .with = "/w",
                          .size = 1ull << 40, .speed_min = 1, .speed_max = 2,
                          .timeout = 1.25 };
  json_object *o;

  for (int i = PROTO_ARG_LEVEL; i <= PROTO_ARG_RAID_DEVICES; i++)
    proto_set (&a, i);
  CHECK (proto_add_spec (&a, "nbd://h/x", err, sizeof err) == 0 &&
         proto_add_spec (&a, "/b", err, sizeof err) == 0, "add: %s", err);
  CHECK (proto_build (PROTO_OP_RESHAPE, &a, &o, err, sizeof err) == 0, "build: %s", err);
  CHECK (proto_decode (o, &rq, err, sizeof err) == 0 && rq.op == PROTO_OP_RESHAPE &&
         rq.args.present == a.present && rq.args.level == 6 && rq.args.chunk == 1 << 20 &&
         rq.args.raid_devices == 7 && strcmp (rq.args.layout, a.layout) == 0 &&
         rq.args.layout_id == raid_layout_parse (a.layout) && rq.args.nadd == 2 &&
         strcmp (rq.args.add[1], "/b") == 0, "reshape read back: %s", err);
  json_object_put (o);

  a.present = 0;
  proto_set (&a, PROTO_ARG_MEMBER);
  proto_set (&a, PROTO_ARG_WITH);
  CHECK (proto_build (PROTO_OP_REPLACE, &a, &o, err, sizeof err) == 0 &&
         proto_decode (o, &rq, err, sizeof err) == 0 && rq.args.member.role == 3 &&
         strcmp (rq.args.with, "/w") == 0, "replace read back: %s", err);
  json_object_put (o);

  a.present = 0;
  a.size = PROTO_SIZE_MAX;
  a.force = true;
  proto_set (&a, PROTO_ARG_SIZE);
  proto_set (&a, PROTO_ARG_FORCE);
  CHECK (proto_build (PROTO_OP_RESIZE, &a, &o, err, sizeof err) == 0 &&
         strstr (json_object_to_json_string (o), "\"max\"") &&
         proto_decode (o, &rq, err, sizeof err) == 0 && rq.args.size == PROTO_SIZE_MAX &&
         rq.args.force, "resize max force read back: %s", err);
  json_object_put (o);

  a.present = 0;
  proto_set (&a, PROTO_ARG_SPEED_MIN);
  proto_set (&a, PROTO_ARG_SPEED_MAX);
  CHECK (proto_build (PROTO_OP_SET, &a, &o, err, sizeof err) == 0 &&
         proto_decode (o, &rq, err, sizeof err) == 0 && rq.args.speed_min == 1 &&
         rq.args.speed_max == 2, "set read back: %s", err);
  json_object_put (o);

  for (int op = 0; op < PROTO_NOPS; op++) {
    int r = proto_build (op, NULL, &o, err, sizeof err);
    bool needs_args = op == PROTO_OP_RESHAPE || op == PROTO_OP_SET ||
      op == PROTO_OP_RESIZE || (op >= PROTO_OP_FAIL && op <= PROTO_OP_REPLACE);
    CHECK (needs_args ? r == EINVAL && o == NULL : r == 0,
           "%s without arguments: %d %s", proto_op_name (op), r, err);
    json_object_put (o);
  }
}

/* The client cannot send what the server would refuse. */
static void
test_build_refusals (void)
{
  char err[PROTO_ERRLEN];
  struct proto_args a = { .chunk = 96 << 10, .size = 0 };
  json_object *o;

  proto_set (&a, PROTO_ARG_CHUNK);
  CHECK (proto_build (PROTO_OP_RESHAPE, &a, &o, err, sizeof err) == EINVAL && o == NULL &&
         strstr (err, "chunk: 98304 is not a power of two"), "chunk 96K: %s", err);
  a.present = 0;
  proto_set (&a, PROTO_ARG_SIZE);
  CHECK (proto_build (PROTO_OP_RESIZE, &a, &o, err, sizeof err) == EINVAL &&
         strstr (err, "size: must be positive"), "resize 0: %s", err);
  a = (struct proto_args) { .member = { .role = 40 } };
  proto_set (&a, PROTO_ARG_MEMBER);
  CHECK (proto_build (PROTO_OP_FAIL, &a, &o, err, sizeof err) == EINVAL &&
         strstr (err, "role 40 is outside"), "fail 40: %s", err);
  a = (struct proto_args) { .member = { .role = -1, .spec = "/a\n\"b" } };
  proto_set (&a, PROTO_ARG_MEMBER);
  CHECK (proto_build (PROTO_OP_ADD, &a, &o, err, sizeof err) == 0, "odd spec: %s", err);
  json_object_put (o);

  a = (struct proto_args) { 0 };
  CHECK (proto_add_spec (&a, "/d", err, sizeof err) == 0 &&
         proto_add_spec (&a, "/d", err, sizeof err) == EINVAL &&
         strstr (err, "add: /d is named twice") && a.nadd == 1, "a duplicate: %s", err);
  a = (struct proto_args) { 0 };
  for (int i = 0; i < 32; i++) {
    static char specs[32][16];
    snprintf (specs[i], sizeof specs[i], "/s%d", i);
    CHECK (proto_add_spec (&a, specs[i], err, sizeof err) == 0, "spec %d: %s", i, err);
  }
  CHECK (proto_add_spec (&a, "/s32", err, sizeof err) == EINVAL &&
         strstr (err, "more than 32 members"), "a 33rd spec: %s", err);
}

int
main (void)
{
  tok = json_tokener_new ();
  json_tokener_set_flags (tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
  test_errno_names ();
  test_op_table ();
  test_refusals ();
  test_accepted ();
  test_build_round_trip ();
  test_build_refusals ();
  json_object_put (last);
  json_tokener_free (tok);
  if (failures) {
    fprintf (stderr, "test-protocol: %d of %d checks failed\n", failures, checks);
    return 1;
  }
  printf ("test-protocol: %d checks passed\n", checks);
  return 0;
}
