/* nbdkit-raid: the control protocol, defined once (see protocol.h).
 *
 * The op table below is the whole of what a request may contain.  Each op
 * lists its parameters: the argument (which names the field on the wire
 * and the member of struct proto_args it fills), its type, its range, and
 * whether it is required; a parameter may add a rule on its value, and an
 * op a rule across its arguments.  proto_decode reads a request against
 * the table, proto_build writes one from it and reads it back with
 * proto_decode, so both sides apply one set of rules.
 *
 * Messages name the field first ("chunk: 3000 is not a power of two..."),
 * as nbdkit-raid-control(7) shows them; tests match some of them.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array.h"
#include "protocol.h"
#include "util.h"

_Static_assert (PROTO_SPEC_MAX == sizeof ((struct raid_member_status *) 0)->spec,
                "a spec the protocol accepts fits raidcore's status");

/* ------------------------------------------------------------------ */
/* JSON helpers */

int
proto_json_add (json_object *o, const char *key, json_object *v)
{
  if (v == NULL)
    return -1;
  if (json_object_object_add (o, key, v) != 0) {
    json_object_put (v);
    return -1;
  }
  return 0;
}

json_object *
proto_json_uint (uint64_t v)
{
  return v <= INT64_MAX ? json_object_new_int64 ((int64_t) v)
                        : json_object_new_uint64 (v);
}

/* ------------------------------------------------------------------ */
/* Errno names */

static const struct { int err; const char *name; } errno_names[] = {
  { EPROTO, "EPROTO" }, { ENOSYS, "ENOSYS" }, { EINVAL, "EINVAL" },
  { EBUSY, "EBUSY" }, { ENOSPC, "ENOSPC" }, { ENODEV, "ENODEV" },
  { EIO, "EIO" }, { EACCES, "EACCES" }, { ENOENT, "ENOENT" },
  { EEXIST, "EEXIST" }, { ENOTSUP, "ENOTSUP" }, { ENOMEM, "ENOMEM" },
  { ERANGE, "ERANGE" }, { EAGAIN, "EAGAIN" }, { EPERM, "EPERM" },
  { ETIMEDOUT, "ETIMEDOUT" }, { ENOTCONN, "ENOTCONN" },
  { ECONNREFUSED, "ECONNREFUSED" }, { EROFS, "EROFS" }, { ENXIO, "ENXIO" },
  { ENAMETOOLONG, "ENAMETOOLONG" }, { EPROTONOSUPPORT, "EPROTONOSUPPORT" },
  { EALREADY, "EALREADY" }, { EFBIG, "EFBIG" }, { ENOTDIR, "ENOTDIR" },
  { EISDIR, "EISDIR" }, { ECANCELED, "ECANCELED" }, { EINTR, "EINTR" },
  { ESHUTDOWN, "ESHUTDOWN" }, { ECONNRESET, "ECONNRESET" },
};

#define NR_ERRNO_NAMES (sizeof errno_names / sizeof errno_names[0])

const char *
proto_errno_name (int err)
{
  const char *n;

  for (size_t i = 0; i < NR_ERRNO_NAMES; i++)
    if (errno_names[i].err == err)
      return errno_names[i].name;
  n = strerrorname_np (err);
  return n ? n : "EIO";
}

int
proto_errno_value (const char *name)
{
  for (size_t i = 0; name && i < NR_ERRNO_NAMES; i++)
    if (strcmp (errno_names[i].name, name) == 0)
      return errno_names[i].err;
  return 0;
}

/* ------------------------------------------------------------------ */
/* The table */

/* Wire types.  The C type of the field each fills is in the comment. */
enum ptype {
  T_END,                        /* ends an op's parameter list */
  T_SIZE,                       /* uint64_t: integer, or "64K" string */
  T_INT,                        /* int: integer in [lo, hi] */
  T_STRING,                     /* const char *: non-empty, < hi bytes */
  T_SPEC,                       /* struct proto_member: a spec (string) */
  T_MEMBER,                     /* struct proto_member: a spec or a role */
  T_SPECS,                      /* nadd/add: a list of specs */
  T_SECONDS,                    /* double: number in [0, hi] */
  T_BOOL,                       /* bool: true or false */
};

struct msg {                    /* where a refusal's message goes */
  char *buf;
  size_t len;
};

struct param {
  enum proto_arg arg;
  enum ptype type;
  bool required;
  bool null_absent;             /* a JSON null counts as absent */
  bool max_ok;                  /* T_SIZE: "max" means PROTO_SIZE_MAX */
  int lo, hi;                   /* T_INT: the range; T_STRING: the buffer
                                   size; T_MEMBER: the highest role;
                                   T_SECONDS: the most seconds */
  int (*rule) (struct proto_args *a, struct msg *m);   /* after the type */
};

#define MAX_PARAMS 6

struct op_def {
  const char *name;
  struct param params[MAX_PARAMS + 1];                 /* up to T_END */
  int (*rule) (const struct proto_args *a, struct msg *m);
};

static const struct {
  const char *name;
  size_t off;                   /* of its field in struct proto_args */
} args[PROTO_NARGS] = {
#define ARG(id, name, field) [id] = { name, offsetof (struct proto_args, field) }
  ARG (PROTO_ARG_LEVEL, "level", level),
  ARG (PROTO_ARG_LAYOUT, "layout", layout),
  ARG (PROTO_ARG_CHUNK, "chunk", chunk),
  ARG (PROTO_ARG_RAID_DEVICES, "raid_devices", raid_devices),
  ARG (PROTO_ARG_ADD, "add", add),
  ARG (PROTO_ARG_MEMBER, "member", member),
  ARG (PROTO_ARG_WITH, "with", with),
  ARG (PROTO_ARG_SIZE, "size", size),
  ARG (PROTO_ARG_SPEED_MIN, "speed_min", speed_min),
  ARG (PROTO_ARG_SPEED_MAX, "speed_max", speed_max),
  ARG (PROTO_ARG_TIMEOUT, "timeout", timeout),
  ARG (PROTO_ARG_FORCE, "force", force),
#undef ARG
};

static int __attribute__ ((format (printf, 2, 3)))
bad (struct msg *m, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (m->buf, m->len, fmt, ap);
  va_end (ap);
  return EINVAL;
}

static int
rule_level (struct proto_args *a, struct msg *m)
{
  int l = a->level;

  if (l != 0 && l != 1 && l != 4 && l != 5 && l != 6)
    return bad (m, "level: %d is not 0, 1, 4, 5 or 6", l);
  return 0;
}

static int
rule_layout (struct proto_args *a, struct msg *m)
{
  if ((a->layout_id = raid_layout_parse (a->layout)) == -1)
    return bad (m, "layout: unknown layout '%s'", a->layout);
  return 0;
}

static int
rule_chunk (struct proto_args *a, struct msg *m)
{
  if (!raid_is_pow2 (a->chunk) || a->chunk < RAID_CHUNK_MIN ||
      a->chunk > RAID_CHUNK_MAX)
    return bad (m, "chunk: %" PRIu64 " is not a power of two between 4K and 64M",
                a->chunk);
  return 0;
}

static int
rule_size (struct proto_args *a, struct msg *m)
{
  return a->size == 0 ? bad (m, "size: must be positive") : 0;
}

static int
rule_reshape (const struct proto_args *a, struct msg *m)
{
  if ((a->present & ~(1u << PROTO_ARG_ADD | 1u << PROTO_ARG_FORCE)) == 0 &&
      a->nadd == 0)
    return bad (m, "nothing to change: give level, layout, chunk, "
                "raid_devices or add");
  return 0;
}

static int
rule_set (const struct proto_args *a, struct msg *m)
{
  bool min = proto_has (a, PROTO_ARG_SPEED_MIN);
  bool max = proto_has (a, PROTO_ARG_SPEED_MAX);

  if (!min && !max)
    return bad (m, "nothing to set: give speed_min and/or speed_max");
  if (min && max && a->speed_max != 0 && a->speed_min > a->speed_max)
    return bad (m, "speed_min (%" PRIu64 ") is above speed_max (%" PRIu64 ")",
                a->speed_min, a->speed_max);
  return 0;
}

#define MEMBER_REQUIRED { PROTO_ARG_MEMBER, T_MEMBER, .required = true, \
                          .hi = RAID_MAX_MEMBERS - 1 }

static const struct op_def ops[PROTO_NOPS] = {
  [PROTO_OP_STATUS] = { "status" },
  [PROTO_OP_WAIT] = { "wait", {
      { PROTO_ARG_TIMEOUT, T_SECONDS, .hi = PROTO_MAX_WAIT_S } } },
  [PROTO_OP_RESHAPE] = { "reshape", {
      { PROTO_ARG_LEVEL, T_INT, .lo = 0, .hi = 6, .rule = rule_level },
      { PROTO_ARG_CHUNK, T_SIZE, .rule = rule_chunk },
      { PROTO_ARG_RAID_DEVICES, T_INT, .lo = 2, .hi = RAID_MAX_MEMBERS },
      { PROTO_ARG_LAYOUT, T_STRING, .hi = 64, .rule = rule_layout },
      { PROTO_ARG_ADD, T_SPECS },
      { PROTO_ARG_FORCE, T_BOOL } }, rule_reshape },
  [PROTO_OP_START] = { "start" },
  [PROTO_OP_FREEZE] = { "freeze" },
  [PROTO_OP_ABORT] = { "abort" },
  [PROTO_OP_CHECK] = { "check" },
  [PROTO_OP_REPAIR] = { "repair" },
  [PROTO_OP_FAIL] = { "fail", { MEMBER_REQUIRED } },
  [PROTO_OP_REMOVE] = { "remove", { MEMBER_REQUIRED } },
  [PROTO_OP_ADD] = { "add", {
      { PROTO_ARG_MEMBER, T_SPEC, .required = true },
      { PROTO_ARG_FORCE, T_BOOL } } },
  [PROTO_OP_REPLACE] = { "replace", {
      MEMBER_REQUIRED,
      { PROTO_ARG_WITH, T_STRING, .null_absent = true, .hi = PROTO_SPEC_MAX } } },
  [PROTO_OP_RESIZE] = { "resize", {
      { PROTO_ARG_SIZE, T_SIZE, .required = true, .max_ok = true,
        .rule = rule_size },
      { PROTO_ARG_FORCE, T_BOOL } } },
  [PROTO_OP_SET] = { "set", {
      { PROTO_ARG_SPEED_MIN, T_SIZE },
      { PROTO_ARG_SPEED_MAX, T_SIZE } }, rule_set },
};

const char *
proto_op_name (enum proto_op op)
{
  return op >= 0 && op < PROTO_NOPS ? ops[op].name : NULL;
}

enum proto_op
proto_op_lookup (const char *name)
{
  for (int i = 0; i < PROTO_NOPS; i++)
    if (strcmp (ops[i].name, name) == 0)
      return (enum proto_op) i;
  return PROTO_OP_NONE;
}

const char *
proto_arg_name (enum proto_arg arg)
{
  return arg >= 0 && arg < PROTO_NARGS ? args[arg].name : NULL;
}

/* ------------------------------------------------------------------ */
/* Reading values.  Each returns 0 (value stored) or EINVAL (message). */

/* A non-negative JSON integer up to INT64_MAX (json-c saturates larger
 * literals, so anything at or above 2^63 is refused as too large). */
static int
as_count (struct msg *m, const char *key, json_object *v, uint64_t *out)
{
  if (json_object_get_type (v) != json_type_int)
    return bad (m, "%s: expected a non-negative integer", key);
  if (json_object_get_int64 (v) < 0)
    return bad (m, "%s: must not be negative", key);
  *out = json_object_get_uint64 (v);
  if (*out > INT64_MAX)
    return bad (m, "%s: number too large", key);
  return 0;
}

/* A JSON string, not empty, no NUL, shorter than max (with terminator). */
static int
as_string (struct msg *m, const char *key, json_object *v, size_t max,
           const char **out)
{
  const char *s;
  size_t len;

  if (json_object_get_type (v) != json_type_string)
    return bad (m, "%s: expected a string", key);
  s = json_object_get_string (v);
  len = (size_t) json_object_get_string_len (v);
  if (len == 0)
    return bad (m, "%s: must not be empty", key);
  if (strlen (s) != len)
    return bad (m, "%s: contains a NUL character", key);
  if (len >= max)
    return bad (m, "%s: longer than %zu bytes", key, max - 1);
  *out = s;
  return 0;
}

/* SIZE: a non-negative integer, or a string with an optional K/M/G/T
 * suffix (raid_parse_size); where max_ok, also "max". */
static int
get_size (struct msg *m, const char *key, json_object *v, bool max_ok,
          uint64_t *out)
{
  const char *s;
  int r;

  if (json_object_get_type (v) != json_type_string)
    return as_count (m, key, v, out);
  if ((r = as_string (m, key, v, 64, &s)) != 0)
    return r;
  if (max_ok && strcmp (s, "max") == 0) {
    *out = PROTO_SIZE_MAX;
    return 0;
  }
  if (raid_parse_size (s, out) == -1)
    return bad (m, "%s: '%s' is not a size (bytes, or a number with K, M, G "
                "or T)%s", key, s, errno == ERANGE ? ": too large" : "");
  if (*out > INT64_MAX)
    return bad (m, "%s: number too large", key);
  return 0;
}

static int
get_int (struct msg *m, const struct param *p, const char *key,
         json_object *v, int *out)
{
  uint64_t u;
  int r;

  if ((r = as_count (m, key, v, &u)) != 0)
    return r;
  if (u < (uint64_t) p->lo || u > (uint64_t) p->hi)
    return bad (m, "%s: %" PRIu64 " is outside %d..%d", key, u, p->lo, p->hi);
  *out = (int) u;
  return 0;
}

/* MEMBER: a spec string or a role number up to p->hi. */
static int
get_member (struct msg *m, const struct param *p, const char *key,
            json_object *v, struct proto_member *out)
{
  const char *s;
  uint64_t role;
  char *end;
  int r;

  if (json_object_get_type (v) == json_type_int) {
    if ((r = as_count (m, key, v, &role)) != 0)
      return r;
    if (role > (uint64_t) p->hi)
      return bad (m, "%s: role %" PRIu64 " is outside 0..%d", key, role, p->hi);
    *out = (struct proto_member) { .role = (int) role };
    return 0;
  }
  if (json_object_get_type (v) != json_type_string)
    return bad (m, "%s: expected a member spec (string) or a role (integer)", key);
  if ((r = as_string (m, key, v, PROTO_SPEC_MAX, &s)) != 0)
    return r;
  /* raidcore reads an all-digit string as a role; a negative one is none. */
  if (strtol (s, &end, 10) < 0 && *end == '\0')
    return bad (m, "%s: role %s is negative", key, s);
  *out = (struct proto_member) { .role = -1, .spec = s };
  return 0;
}

static int
get_spec (struct msg *m, const char *key, json_object *v,
          struct proto_member *out)
{
  *out = (struct proto_member) { .role = -1 };
  return as_string (m, key, v, PROTO_SPEC_MAX, &out->spec);
}

static int
too_many_specs (struct msg *m)
{
  return bad (m, "add: more than %d members", RAID_MAX_MEMBERS);
}

static int
add_spec (struct proto_args *a, const char *spec, struct msg *m)
{
  if (a->nadd >= RAID_MAX_MEMBERS)
    return too_many_specs (m);
  for (int i = 0; i < a->nadd; i++)
    if (strcmp (a->add[i], spec) == 0)
      return bad (m, "add: %s is named twice", spec);
  a->add[a->nadd++] = spec;
  return 0;
}

int
proto_add_spec (struct proto_args *a, const char *spec, char *err, size_t errlen)
{
  struct msg m = { err, errlen };
  int r = add_spec (a, spec, &m);

  if (r == 0)
    proto_set (a, PROTO_ARG_ADD);
  return r;
}

static int
get_specs (struct msg *m, const char *key, json_object *v, struct proto_args *a)
{
  size_t n;
  int r;

  if (json_object_get_type (v) != json_type_array)
    return bad (m, "%s: expected a list of member specs", key);
  if ((n = json_object_array_length (v)) > RAID_MAX_MEMBERS)
    return too_many_specs (m);
  a->nadd = 0;
  for (size_t i = 0; i < n; i++) {
    char ikey[32];
    const char *s;

    snprintf (ikey, sizeof ikey, "%s[%zu]", key, i);
    if ((r = as_string (m, ikey, json_object_array_get_idx (v, i),
                        PROTO_SPEC_MAX, &s)) != 0 ||
        (r = add_spec (a, s, m)) != 0)
      return r;
  }
  return 0;
}

/* SECONDS: a JSON integer or fraction in [0, p->hi]; NaN is refused. */
static int
get_seconds (struct msg *m, const struct param *p, const char *key,
             json_object *v, double *out)
{
  double t;

  if (json_object_get_type (v) == json_type_int)
    t = json_object_get_int64 (v) < 0 ? -1
      : json_object_get_uint64 (v) > (uint64_t) p->hi ? INFINITY
      : (double) json_object_get_uint64 (v);
  else if (json_object_get_type (v) == json_type_double)
    t = json_object_get_double (v);
  else
    return bad (m, "%s: expected a number of seconds", key);
  if (!(t >= 0 && t <= p->hi))
    return bad (m, "%s: must be between 0 and %d seconds", key, p->hi);
  *out = t;
  return 0;
}

static int
get_bool (struct msg *m, const char *key, json_object *v, bool *out)
{
  if (json_object_get_type (v) != json_type_boolean)
    return bad (m, "%s: expected true or false", key);
  *out = json_object_get_boolean (v);
  return 0;
}

/* One parameter of the op: absent (fine unless required), or read by its
 * type into its field of a, then its rule. */
static int
decode_param (json_object *obj, const struct param *p, struct proto_args *a,
              struct msg *m)
{
  const char *key = args[p->arg].name;
  void *field = (char *) a + args[p->arg].off;
  json_object *v = NULL;
  int r = 0;

  if (!json_object_object_get_ex (obj, key, &v) || (v == NULL && p->null_absent))
    return p->required ? bad (m, "%s: missing", key) : 0;
  switch (p->type) {
  case T_SIZE: r = get_size (m, key, v, p->max_ok, field); break;
  case T_INT: r = get_int (m, p, key, v, field); break;
  case T_STRING: r = as_string (m, key, v, p->hi, field); break;
  case T_SPEC: r = get_spec (m, key, v, field); break;
  case T_MEMBER: r = get_member (m, p, key, v, field); break;
  case T_SPECS: r = get_specs (m, key, v, a); break;
  case T_SECONDS: r = get_seconds (m, p, key, v, field); break;
  case T_BOOL: r = get_bool (m, key, v, field); break;
  case T_END: abort ();
  }
  if (r == 0)
    proto_set (a, p->arg);
  if (r == 0 && p->rule)
    r = p->rule (a, m);
  return r;
}

/* ------------------------------------------------------------------ */
/* Requests */

bool
proto_blank (const char *s, size_t len)
{
  for (size_t i = 0; i < len; i++)
    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
      return false;
  return true;
}

/* The first object key in s[0..len) (JSON that json-c accepted) spelling
 * a NUL character (\u0000), as its raw text without quotes; NULL if none.
 * json-c cuts such a key at the NUL, so only the text can show it. */
static const char *
nul_key (const char *s, size_t len, size_t *keylen)
{
  size_t i = 0;

  while (i < len) {
    size_t start;
    bool nul = false;

    if (s[i++] != '"')
      continue;
    for (start = i; i < len && s[i] != '"'; i++)
      if (s[i] == '\\') {
        nul |= i + 5 < len && memcmp (s + i + 1, "u0000", 5) == 0;
        i++;                    /* the escaped character is not a quote */
      }
    *keylen = i - start;
    for (i++; i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r'); i++)
      ;
    if (nul && i < len && s[i] == ':')
      return s + start;
  }
  return NULL;
}

int
proto_parse_line (json_tokener *tok, const char *line, size_t len,
                  json_object **obj, char *err, size_t errlen)
{
  const char *why = NULL, *key;
  size_t end = 0, klen;

  *obj = NULL;
  if (memchr (line, '\0', len))
    why = "NUL byte in the request line";
  else {
    json_tokener_reset (tok);
    *obj = json_tokener_parse_ex (tok, line, (int) len);
    end = json_tokener_get_parse_end (tok);
    if (*obj == NULL)
      why = json_tokener_get_error (tok) == json_tokener_continue
        ? "incomplete JSON (a request is exactly one line)"
        : json_tokener_error_desc (json_tokener_get_error (tok));
    else if (end < len && !proto_blank (line + end, len - end))
      why = "trailing characters after the JSON object";
    else if (!json_object_is_type (*obj, json_type_object))
      why = "a request must be a JSON object";
  }
  if (why != NULL) {
    json_object_put (*obj);
    *obj = NULL;
    snprintf (err, errlen, "not a JSON object: %s", why);
    return EPROTO;
  }
  if ((key = nul_key (line, end, &klen)) != NULL) {
    json_object_put (*obj);
    *obj = NULL;
    snprintf (err, errlen, "field name \"%.*s\" contains a NUL character",
              klen > 64 ? 64 : (int) klen, key);
    return EINVAL;
  }
  return 0;
}

/* The op: present, a string, no NUL, in the table. */
static int
decode_op (json_object *obj, struct proto_request *rq, struct msg *m)
{
  json_object *v;
  const char *s;

  if (!json_object_object_get_ex (obj, "op", &v))
    return bad (m, "missing op");
  if (json_object_get_type (v) != json_type_string)
    return bad (m, "op: expected a string");
  s = json_object_get_string (v);
  if (strlen (s) != (size_t) json_object_get_string_len (v))
    return bad (m, "op: contains a NUL character");
  if ((rq->op = proto_op_lookup (s)) == PROTO_OP_NONE) {
    snprintf (m->buf, m->len, "unknown op '%.64s'", s);
    return ENOSYS;
  }
  return 0;
}

/* Refuse fields other than id, op and the op's own. */
static int
check_fields (json_object *obj, const struct op_def *def, struct msg *m)
{
  json_object_object_foreach (obj, key, val) {
    bool ok = strcmp (key, "id") == 0 || strcmp (key, "op") == 0;
    (void) val;
    for (const struct param *p = def->params; !ok && p->type != T_END; p++)
      ok = strcmp (key, args[p->arg].name) == 0;
    if (!ok)
      return bad (m, "unknown field '%s' for op '%s'", key, def->name);
  }
  return 0;
}

int
proto_decode (json_object *obj, struct proto_request *rq, char *err, size_t errlen)
{
  struct msg m = { err, errlen };
  const struct op_def *def;
  int r;

  memset (rq, 0, sizeof *rq);
  rq->op = PROTO_OP_NONE;
  rq->args.layout_id = -1;
  if ((r = decode_op (obj, rq, &m)) != 0)
    return r;
  def = &ops[rq->op];
  if ((r = check_fields (obj, def, &m)) != 0)
    return r;
  for (const struct param *p = def->params; p->type != T_END; p++)
    if ((r = decode_param (obj, p, &rq->args, &m)) != 0)
      return r;
  return def->rule ? def->rule (&rq->args, &m) : 0;
}

/* ------------------------------------------------------------------ */
/* Building requests (the client) */

static json_object *
jspecs (const struct proto_args *a)
{
  json_object *l = json_object_new_array ();

  for (int i = 0; l != NULL && i < a->nadd; i++) {
    json_object *s = json_object_new_string (a->add[i]);
    if (s == NULL || json_object_array_add (l, s) != 0) {
      json_object_put (s);
      json_object_put (l);
      l = NULL;
    }
  }
  return l;
}

/* The JSON value of parameter p, in its wire type; NULL: out of memory. */
static json_object *
encode_param (const struct param *p, const struct proto_args *a)
{
  const void *field = (const char *) a + args[p->arg].off;
  const struct proto_member *mb = field;

  switch (p->type) {
  case T_SIZE:
    if (p->max_ok && *(const uint64_t *) field == PROTO_SIZE_MAX)
      return json_object_new_string ("max");
    return proto_json_uint (*(const uint64_t *) field);
  case T_INT: return json_object_new_int (*(const int *) field);
  case T_STRING: return json_object_new_string (*(const char *const *) field);
  case T_SPEC: return json_object_new_string (mb->spec);
  case T_MEMBER: return mb->role >= 0 ? json_object_new_int (mb->role)
                                      : json_object_new_string (mb->spec);
  case T_SPECS: return jspecs (a);
  case T_SECONDS: return json_object_new_double (*(const double *) field);
  case T_BOOL: return json_object_new_boolean (*(const bool *) field);
  case T_END: break;
  }
  abort ();
}

int
proto_build (enum proto_op op, const struct proto_args *a,
             json_object **out, char *err, size_t errlen)
{
  static const struct proto_args none;
  struct proto_request check;
  const struct param *p;
  uint32_t taken = 0;
  json_object *o;
  int r;

  assert (op >= 0 && op < PROTO_NOPS);
  a = a ? a : &none;
  *out = NULL;
  if ((o = json_object_new_object ()) == NULL ||
      proto_json_add (o, "op", json_object_new_string (ops[op].name)) == -1)
    goto nomem;
  for (p = ops[op].params; p->type != T_END; p++) {
    taken |= 1u << p->arg;
    if (proto_has (a, p->arg) &&
        proto_json_add (o, args[p->arg].name, encode_param (p, a)) == -1)
      goto nomem;
  }
  assert ((a->present & ~taken) == 0);          /* an argument op does not take */
  if ((r = proto_decode (o, &check, err, errlen)) != 0) {
    json_object_put (o);
    return r;
  }
  *out = o;
  return 0;

 nomem:
  json_object_put (o);
  snprintf (err, errlen, "out of memory");
  return ENOMEM;
}
