/* nbdkit-raid: the control protocol, defined once (documented in
 * nbdkit-raid-control(7); nbdraid(8) is its command-line client).
 *
 * WHAT IT OWNS.  The definition of the protocol: the op table (each op's
 * name and the arguments it takes: their names on the wire, types, ranges,
 * and whether they are required), the errno names replies carry (both
 * ways), what makes a request line a JSON object, and the one function that
 * turns a request object into a typed C request (struct proto_request) or
 * refuses it with an errno value and a message naming the field.  The
 * reverse too: building a request object from a typed request.  The status
 * reply fields are status-json.h's.
 *
 * WHO CALLS IT.  The server (plugin/control.c) reads each line with
 * proto_parse_line, checks it with proto_decode, and dispatches on the op
 * proto_decode names; it never reads an argument out of the JSON itself.
 * The client (nbdraid/control-client.c) fills a struct proto_args from its
 * command line and gets its request from proto_build, which writes each
 * argument under the table's name in the table's type and then runs
 * proto_decode on the result.  So nbdraid cannot send a field name or a
 * type the server would not accept, and a request the server would refuse
 * for its arguments is refused before connecting, with the server's code
 * and message.
 *
 * INVARIANTS.
 *  - Every op's arguments are checked by the same code, proto_decode, on
 *    both sides; no caller checks an argument's type or range again
 *    (nbdraid only parses its command line into C values).  What remains
 *    for the server is what depends on the array's state, which raidcore
 *    decides.
 *  - proto_decode accepts a request only when every field is "id", "op" or
 *    an argument of that op, every argument has its type and is in its
 *    range, and every required one is present.  The server calls raidcore
 *    only with an accepted request, so a refused request is refused before
 *    any raidcore call and changes nothing.
 *  - No name on the wire (the op, a field name at any depth, a string
 *    argument) may contain a NUL character: json-c keeps object keys as C
 *    strings, so "member\u0000x" would otherwise be read as "member", and
 *    "fail\u0000zzz" compared as "fail".
 *  - Nothing here calls raidcore's array functions, takes a lock or does
 *    I/O: it uses raidcore's pure helpers (sizes, layout names, limits).
 *    Any thread may call any function here.
 */
#ifndef PROTOCOL_PROTOCOL_H
#define PROTOCOL_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "geometry.h"

/* Largest `timeout` of a `wait` request, in seconds. */
#define PROTO_MAX_WAIT_S 86400

/* Longest member spec, in bytes with its terminator (raid_member_status). */
#define PROTO_SPEC_MAX 1024

/* A message buffer large enough for every message written here. */
#define PROTO_ERRLEN 512

/* ------------------------------------------------------------------ */
/* JSON helpers of the protocol's encoders (here and status-json.c) */

/* Add v under key to o.  v == NULL means json-c could not allocate it.
 * Returns 0, or -1 (out of memory; v is released). */
int proto_json_add (json_object *o, const char *key, json_object *v);

/* A JSON integer holding v (json-c's uint64 above INT64_MAX, still plain
 * digits on the wire); NULL when out of memory. */
json_object *proto_json_uint (uint64_t v);

/* ------------------------------------------------------------------ */
/* Errno names: replies carry "error": NAME. */

/* The name of err ("EINVAL"); never NULL (an errno without a name here or
 * in glibc is reported as "EIO"). */
const char *proto_errno_name (int err);

/* The errno value of name, or 0 when name is not one. */
int proto_errno_value (const char *name);

/* ------------------------------------------------------------------ */
/* The op table */

enum proto_op {
  PROTO_OP_NONE = -1,           /* no op could be read from the request */
  PROTO_OP_STATUS, PROTO_OP_WAIT, PROTO_OP_RESHAPE,
  PROTO_OP_START, PROTO_OP_FREEZE, PROTO_OP_ABORT,
  PROTO_OP_CHECK, PROTO_OP_REPAIR,
  PROTO_OP_FAIL, PROTO_OP_REMOVE, PROTO_OP_ADD, PROTO_OP_REPLACE,
  PROTO_OP_RESIZE, PROTO_OP_SET,
  PROTO_NOPS
};

/* The op's name on the wire (also nbdraid's subcommand). */
const char *proto_op_name (enum proto_op op);

/* The op called name, or PROTO_OP_NONE. */
enum proto_op proto_op_lookup (const char *name);

/* Every argument any op takes; each fills one field of struct proto_args.
 * Which ops take it, in which type, is the op table's (protocol.c). */
enum proto_arg {
  PROTO_ARG_LEVEL,              /* reshape: int, one of 0 1 4 5 6 */
  PROTO_ARG_LAYOUT,             /* reshape: a layout name */
  PROTO_ARG_CHUNK,              /* reshape: SIZE, a power of two 4K..64M */
  PROTO_ARG_RAID_DEVICES,       /* reshape: int 2..RAID_MAX_MEMBERS */
  PROTO_ARG_ADD,                /* reshape: list of member specs */
  PROTO_ARG_MEMBER,             /* fail, remove, replace: MEMBER; add: spec */
  PROTO_ARG_WITH,               /* replace: a spec (null: any spare) */
  PROTO_ARG_SIZE,               /* resize: SIZE, positive, or "max"
                                   (PROTO_SIZE_MAX) */
  PROTO_ARG_SPEED_MIN,          /* set: SIZE (bytes/s) */
  PROTO_ARG_SPEED_MAX,          /* set: SIZE (bytes/s), 0: no limit */
  PROTO_ARG_TIMEOUT,            /* wait: SECONDS up to PROTO_MAX_WAIT_S */
  PROTO_ARG_FORCE,              /* resize: true allows a shrink; add,
                                   reshape: true takes new members holding
                                   a foreign signature */
  PROTO_NARGS
};

/* The argument's field name on the wire ("raid_devices"). */
const char *proto_arg_name (enum proto_arg arg);

/* A member: a role number, or a spec (path or NBD URI) when role < 0. */
struct proto_member {
  int role;
  const char *spec;
};

/* The arguments of one request.  A field holds a value only when its bit
 * is set in `present` (proto_has / proto_set).  Strings point into the
 * JSON object they were decoded from, or for proto_build to the caller's
 * strings: they live as long as those. */
struct proto_args {
  uint32_t present;             /* 1u << enum proto_arg */
  int level;
  const char *layout;           /* as on the wire: a layout name */
  int layout_id;                /* decoded: raid_layout_parse (layout) */
  uint64_t chunk;
  int raid_devices;
  int nadd;                     /* add: nadd specs, no two the same */
  const char *add[RAID_MAX_MEMBERS];
  struct proto_member member;
  const char *with;
  uint64_t size;
  uint64_t speed_min, speed_max;
  double timeout;
  bool force;
};

/* resize's size "max": all the room the members have now. */
#define PROTO_SIZE_MAX UINT64_MAX

static inline bool
proto_has (const struct proto_args *a, enum proto_arg arg)
{
  return (a->present >> arg) & 1u;
}

static inline void
proto_set (struct proto_args *a, enum proto_arg arg)
{
  a->present |= 1u << arg;
}

/* Append spec to a's `add` list (and mark it present), by the rule
 * proto_decode applies to each element: at most RAID_MAX_MEMBERS, no spec
 * twice.  Returns 0, or EINVAL with the message the server would give. */
int proto_add_spec (struct proto_args *a, const char *spec,
                    char *err, size_t errlen);

struct proto_request {
  enum proto_op op;
  struct proto_args args;
};

/* ------------------------------------------------------------------ */
/* Server side */

/* Whether line[0..len) holds only blanks (space, tab, CR): such a line is
 * no request and gets no reply. */
bool proto_blank (const char *line, size_t len);

/* Parse one request line (without its '\n') with tok (reset here; made
 * with JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8).  Returns:
 *   0       *obj is the request object (the caller releases it);
 *   EPROTO  the line is not exactly one JSON object; the message starts
 *           "not a JSON object: ";
 *   EINVAL  the line is a JSON object, but a field name in it (at any
 *           depth, "id" and inside it too) contains a NUL character, so
 *           not even its id can be read as sent: reply with id null.
 * *obj is NULL whenever the result is not 0.  Messages go to err (errlen
 * bytes, PROTO_ERRLEN is enough). */
int proto_parse_line (json_tokener *tok, const char *line, size_t len,
                      json_object **obj, char *err, size_t errlen);

/* Check the request object obj against the op table and fill *rq.
 * Returns 0, or EINVAL (missing op, a wrong type or value, an unknown or
 * missing field) or ENOSYS (unknown op) with a message naming the field.
 * rq->op is the op named by the request when it could be read (also on
 * most refusals, for logging), else PROTO_OP_NONE.  Reads obj only. */
int proto_decode (json_object *obj, struct proto_request *rq,
                  char *err, size_t errlen);

/* ------------------------------------------------------------------ */
/* Client side */

/* Build the request object for op with the arguments present in a (a may
 * be NULL: none), then check it with proto_decode.  Every argument in a
 * must be one the op takes (a programming error otherwise: it asserts).
 * Returns 0 and *out (release with json_object_put; add an "id" before
 * sending), ENOMEM, or the refusal of proto_decode (*out NULL, message in
 * err). */
int proto_build (enum proto_op op, const struct proto_args *a,
                 json_object **out, char *err, size_t errlen);

#endif
